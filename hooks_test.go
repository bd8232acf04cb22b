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

// TestStreamStatsAcrossSides: both sides' streams report their message and
// payload byte counts (middleware.StatsOf), and what one side sent is what
// the other received.
func TestStreamStatsAcrossSides(t *testing.T) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) {
			type result struct {
				ok bool
				st middleware.StreamStats
			}
			server := make(chan result, 1)
			mw := func(next handler.Handler) handler.Handler {
				return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
					err := next.ServeRPC(ctx, s)
					st, ok := middleware.StatsOf(s)
					server <- result{ok, st}
					return err
				})
			}
			e := newEnv(t, tk, aster.WithMiddleware(mw))
			ctx := ctxT(t)
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
			cst, ok := middleware.StatsOf(cs)
			if !ok {
				t.Fatalf("client stream %T keeps no stats", cs)
			}
			sr := <-server
			if !sr.ok {
				t.Fatal("server stream keeps no stats")
			}
			sst := sr.st
			if cst.SentMessages != 5 || sst.ReceivedMessages != 5 || sst.SentMessages != 1 || cst.ReceivedMessages != 1 {
				t.Errorf("messages: client sent %d received %d; server sent %d received %d; want 5/1/1/5",
					cst.SentMessages, cst.ReceivedMessages, sst.SentMessages, sst.ReceivedMessages)
			}
			if sst.ReceivedBytes == 0 || sst.ReceivedBytes != cst.SentBytes || sst.SentBytes == 0 || sst.SentBytes != cst.ReceivedBytes {
				t.Errorf("bytes: server sent %d received %d; client sent %d received %d", sst.SentBytes, sst.ReceivedBytes, cst.SentBytes, cst.ReceivedBytes)
			}
		})
	}
}
