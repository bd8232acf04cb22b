package aster_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/trust"
)

// TestConnHook: the hook sees each admitted connection's peer, and its end
// function runs once the connection is gone.
func TestConnHook(t *testing.T) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) { testConnHook(t, tk) })
	}
}

func testConnHook(t *testing.T, tk transportKind) {
	var mu sync.Mutex
	var peers []trust.EndpointID
	ended := make(chan trust.EndpointID, 4)
	hook := func(p handler.Peer) func() {
		mu.Lock()
		peers = append(peers, p.ID)
		mu.Unlock()
		return func() { ended <- p.ID }
	}
	e := newEnv(t, tk, aster.WithConnHook(hook))
	if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{Text: "x"}); err != nil {
		t.Fatal(err)
	}
	want := trust.IDOf(testutil.Key(t, 2)) // newEnv's first client key
	mu.Lock()
	if len(peers) != 1 || peers[0] != want {
		t.Errorf("hook saw peers %v, want [%v]", peers, want.Short())
	}
	mu.Unlock()
	e.client.Close()
	select {
	case id := <-ended:
		if id != want {
			t.Errorf("end called for %v, want %v", id.Short(), want.Short())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the hook's end function did not run after the client closed")
	}
}

// TestStreamByteCounts: both sides' streams report the message payload
// bytes, and what one side sent is what the other received.
func TestStreamByteCounts(t *testing.T) {
	type counter interface {
		SentBytes() uint64
		ReceivedBytes() uint64
	}
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) {
			type counts struct {
				ok         bool
				sent, recv uint64
			}
			server := make(chan counts, 1)
			mw := func(next handler.Handler) handler.Handler {
				return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
					err := next.ServeRPC(ctx, s)
					c, ok := s.(counter)
					if ok {
						server <- counts{true, c.SentBytes(), c.ReceivedBytes()}
					} else {
						server <- counts{}
					}
					return err
				})
			}
			e := newEnv(t, tk, aster.WithMiddleware(mw))
			ctx := ctxT(t)
			// No client middleware: NewStream returns the transport stream.
			cs, err := e.client.NewStream(ctx, &middleware.Call{Service: "Test", Method: "sum", Pattern: handler.PatternClientStream})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			for i := range 5 {
				if err := cs.Send(&Msg{Text: "some text", N: i}); err != nil {
					t.Fatal(err)
				}
			}
			if err := cs.CloseSend(); err != nil {
				t.Fatal(err)
			}
			var resp Msg
			if err := cs.Recv(&resp); err != nil {
				t.Fatal(err)
			}
			if err := cs.Recv(nil); err != io.EOF {
				t.Fatalf("want io.EOF, got %v", err)
			}
			cc, ok := cs.(counter)
			if !ok {
				t.Fatalf("client stream %T does not count bytes", cs)
			}
			sc := <-server
			if !sc.ok {
				t.Fatal("server stream does not count bytes")
			}
			if sc.recv == 0 || sc.recv != cc.SentBytes() || sc.sent == 0 || sc.sent != cc.ReceivedBytes() {
				t.Errorf("server sent %d received %d; client sent %d received %d", sc.sent, sc.recv, cc.SentBytes(), cc.ReceivedBytes())
			}
		})
	}
}
