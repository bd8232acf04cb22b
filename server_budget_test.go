package aster

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

type budgetMsg struct {
	N    int    `cbor:"n"`
	Data []byte `cbor:"d"`
}

// budgetEnv is a server over the mem transport whose "flood" method sends
// messages of m.N bytes until Send fails, reporting that error.
type budgetEnv struct {
	srv      *Server
	ln       transport.Listener
	nw       *mem.Network
	served   chan error
	floodEnd chan error
	sent     sync.Map
}

func newBudgetEnv(t *testing.T, opts ...ServerOption) *budgetEnv {
	key := trust.GenerateKey()
	e := &budgetEnv{served: make(chan error, 1), floodEnd: make(chan error, 1000), nw: mem.NewNetwork()}
	e.srv = NewServer(append([]ServerOption{WithSecretKey(key), WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	e.srv.MustRegister(handler.NewService("T", 1).
		Handle("echo", handler.Unary(func(_ context.Context, m *budgetMsg) (*budgetMsg, error) { return m, nil })).
		Handle("flood", handler.ServerStream(func(ctx context.Context, m *budgetMsg, send func(*budgetMsg) error) error {
			out := &budgetMsg{Data: make([]byte, m.N)}
			for {
				if err := send(out); err != nil {
					e.floodEnd <- err
					return err
				}
			}
		})))
	ln, err := e.nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	go func() { e.served <- e.srv.Serve(ln) }()
	e.ln = ln
	return e
}

func (e *budgetEnv) dial(t *testing.T) *Client {
	c, err := DialAddress(context.Background(), e.ln.Addr(), WithDialer(e.nw.Dialer(trust.GenerateKey())))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// budgetUsed returns the send budget each connection holds now.
func (s *Server) budgetUsed() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var used []int64
	for sc := range s.conns {
		if sc.budget != nil {
			used = append(used, sc.budget.Used())
		}
	}
	return used
}

// Server streams whose client reads nothing hold at most the connection's
// send budget together, whatever their number; their sends end with the
// call's deadline; other connections are served meanwhile, and the budget
// is returned when the calls end.
func TestConnSendBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const budget = 512 << 10
		const msg = 64 << 10
		e := newBudgetEnv(t, WithConnSendBudget(budget))
		c := e.dial(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// One stream first, so that the connection knows its message size;
		// then 49 more. None is read.
		var calls []*ServerStreamCall[budgetMsg]
		for i := range 50 {
			s, err := CallServerStream[budgetMsg](ctx, c, "T.flood", &budgetMsg{N: msg})
			if err != nil {
				t.Fatal(err)
			}
			calls = append(calls, s)
			if i == 0 {
				synctest.Wait()
			}
		}
		synctest.Wait()
		used := e.srv.budgetUsed()
		if len(used) != 1 {
			t.Fatalf("%d connections with a budget, want 1", len(used))
		}
		t.Logf("50 unread streams of %d KiB messages hold %d KiB of a %d KiB budget", msg>>10, used[0]>>10, budget>>10)
		if used[0] > budget {
			t.Fatalf("unread streams hold %d bytes, over the %d-byte budget", used[0], budget)
		}
		if used[0] < budget-msg-1<<10 {
			t.Fatalf("unread streams hold only %d bytes of %d: the budget was not what stopped them", used[0], budget)
		}
		select {
		case err := <-e.floodEnd:
			t.Fatalf("a flood ended early: %v", err)
		default:
		}

		// Another connection is served, including a message larger than
		// the whole budget.
		other := e.dial(t)
		big := &budgetMsg{Data: make([]byte, 2*budget)}
		r, err := CallUnary[budgetMsg](ctx, other, "T.echo", big)
		if err != nil || len(r.Data) != len(big.Data) {
			t.Fatalf("a message larger than the budget on another connection: %v", err)
		}

		// A send waiting for budget ends with its call's deadline.
		short, cancelShort := context.WithTimeout(ctx, time.Second)
		defer cancelShort()
		s, err := CallServerStream[budgetMsg](short, c, "T.flood", &budgetMsg{N: msg})
		if err != nil {
			t.Fatal(err)
		}
		// The server arms the call's deadline and the client resets the
		// stream at the same instant: either ends the wait.
		if err := <-e.floodEnd; status.CodeOf(err) != status.DeadlineExceeded && status.CodeOf(err) != status.Canceled {
			t.Fatalf("send waiting for budget ended with %v, want DEADLINE_EXCEEDED (or CANCELLED)", err)
		}
		s.Close()

		for _, s := range calls {
			s.Close()
		}
		for range calls {
			if err := <-e.floodEnd; status.CodeOf(err) != status.Canceled && status.CodeOf(err) != status.Unavailable {
				t.Errorf("flood ended with %v after its caller went away", err)
			}
		}
		synctest.Wait()
		if used := e.srv.budgetUsed(); len(used) != 2 || used[0] != 0 || used[1] != 0 {
			t.Fatalf("budget held after every call ended: %v", used)
		}
		other.Close()
		c.Close()
		e.srv.Close()
		<-e.served
	})
}

// With the default limits, a connection has DefaultMaxConcurrentStreams
// calls served at once: one more waits (it is not refused) until a slot
// frees, while another connection is served.
func TestDefaultMaxConcurrentStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := trust.GenerateKey()
		srv := NewServer(WithSecretKey(key), WithLogger(slog.New(slog.DiscardHandler)))
		release := make(chan struct{})
		var mu sync.Mutex
		held := 0
		srv.MustRegister(handler.NewService("T", 1).
			Handle("hold", handler.Unary(func(ctx context.Context, m *budgetMsg) (*budgetMsg, error) {
				mu.Lock()
				held++
				mu.Unlock()
				select {
				case <-release:
				case <-ctx.Done():
				}
				return m, nil
			})).
			Handle("echo", handler.Unary(func(_ context.Context, m *budgetMsg) (*budgetMsg, error) { return m, nil })))
		nw := mem.NewNetwork()
		ln, err := nw.Listen(key)
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		dial := func() *Client {
			c, err := DialAddress(context.Background(), ln.Addr(), WithDialer(nw.Dialer(trust.GenerateKey())))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		c := dial()
		errs := make(chan error, DefaultMaxConcurrentStreams+1)
		for range DefaultMaxConcurrentStreams + 1 {
			go func() {
				_, err := CallUnary[budgetMsg](context.Background(), c, "T.hold", &budgetMsg{})
				errs <- err
			}()
		}
		synctest.Wait()
		mu.Lock()
		n := held
		mu.Unlock()
		if n != DefaultMaxConcurrentStreams {
			t.Fatalf("%d calls served at once on one connection, want %d", n, DefaultMaxConcurrentStreams)
		}
		other := dial()
		if _, err := CallUnary[budgetMsg](context.Background(), other, "T.echo", &budgetMsg{N: 1}); err != nil {
			t.Fatalf("another connection: %v", err)
		}
		close(release)
		for range DefaultMaxConcurrentStreams + 1 {
			if err := <-errs; err != nil {
				t.Fatalf("a held call: %v", err)
			}
		}
		if held != DefaultMaxConcurrentStreams+1 {
			t.Fatalf("%d calls served in all, want %d", held, DefaultMaxConcurrentStreams+1)
		}
		other.Close()
		c.Close()
		srv.Close()
		<-served
	})
}
