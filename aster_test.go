package aster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// Test messages.
type Msg struct {
	Text string `cbor:"text" json:"text"`
	N    int    `cbor:"n" json:"n"`
	Data []byte `cbor:"data,omitempty" json:"data,omitempty"`
}

func (Msg) WireType() string { return "test/Msg" }

// testService records what its handlers observe.
type testService struct {
	cancelled chan struct{} // closed when waitCancel's ctx is done
	started   chan struct{} // closed when waitCancel starts
	holding   chan struct{} // receives a value when hold starts
	release   chan struct{} // closed to let hold return
	once      sync.Once
	calls     atomic.Int64
}

func newTestService() *testService {
	return &testService{cancelled: make(chan struct{}), started: make(chan struct{}), holding: make(chan struct{}, 1), release: make(chan struct{})}
}

func (ts *testService) service() *handler.Service {
	return handler.NewService("Test", 1).
		Handle("echo", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) {
			ts.calls.Add(1)
			return m, nil
		})).
		Handle("fail", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) {
			return nil, status.Errorf(status.Code(m.N), "failed: %s", m.Text)
		})).
		Handle("panic", handler.Unary(func(context.Context, *Msg) (*Msg, error) {
			panic("boom")
		})).
		Handle("sleep", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			select {
			case <-time.After(time.Duration(m.N) * time.Millisecond):
				return m, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})).
		Handle("hold", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			ts.holding <- struct{}{}
			select {
			case <-ts.release:
				return m, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})).
		Handle("waitCancel", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			close(ts.started)
			<-ctx.Done()
			ts.once.Do(func() { close(ts.cancelled) })
			return nil, ctx.Err()
		})).
		Handle("count", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
			for i := range m.N {
				if err := send(&Msg{Text: m.Text, N: i}); err != nil {
					return err
				}
			}
			return nil
		})).
		Handle("sum", handler.ClientStream(func(ctx context.Context, in iter.Seq2[*Msg, error]) (*Msg, error) {
			total, n := 0, 0
			for m, err := range in {
				if err != nil {
					return nil, err
				}
				total += m.N
				n++
			}
			return &Msg{Text: fmt.Sprint(n), N: total}, nil
		})).
		Handle("chat", handler.BidiStream(func(ctx context.Context, b *handler.Bidi[Msg, Msg]) error {
			for m, err := range b.All() {
				if err != nil {
					return err
				}
				if err := b.Send(&Msg{Text: "re:" + m.Text, N: m.N * 2}); err != nil {
					return err
				}
			}
			b.Stream().SetTrailer("chat-done", "yes")
			return nil
		}))
}

// counter is a session-scoped service instance.
type counter struct {
	n      int
	closed *atomic.Int64
	events chan<- struct{} // receives one value per Close (nil: none)
}

func (c *counter) add(_ context.Context, m *Msg) (*Msg, error) {
	c.n += m.N
	return &Msg{N: c.n}, nil
}

func (c *counter) Close() error {
	c.closed.Add(1)
	if c.events != nil {
		c.events <- struct{}{}
	}
	return nil
}

// counterService counts closed instances in closed and signals each Close
// on events (which must have room for every instance the test creates).
func counterService(closed *atomic.Int64, events chan<- struct{}) *handler.Service {
	return handler.NewSessionService("Counter", 1, func(context.Context, handler.Peer) (*counter, error) {
		return &counter{closed: closed, events: events}, nil
	}).Handle("add", handler.On(func(c *counter) handler.Def { return handler.Unary(c.add) }))
}

type env struct {
	srv      *aster.Server
	client   *aster.Client
	svc      *testService
	closed   *atomic.Int64
	closes   chan struct{} // one value per closed Counter instance
	addr     aster.Address
	dial     func(t *testing.T) *aster.Client
	dialer   func(trust.SecretKey) transport.Dialer // the transport's dialer, for raw clients
	serveErr chan error
}

// transportKind is one transport the end-to-end tests run on: setup
// returns a listener for the server's key and a function that makes a
// dialer for a client key.
type transportKind struct {
	name  string
	setup func(t testing.TB, srvKey trust.SecretKey) (transport.Listener, func(trust.SecretKey) transport.Dialer)
}

var transports = []transportKind{
	{"mem", func(t testing.TB, k trust.SecretKey) (transport.Listener, func(trust.SecretKey) transport.Dialer) {
		nw := mem.NewNetwork()
		ln, err := nw.Listen(k)
		if err != nil {
			t.Fatal(err)
		}
		return ln, func(ck trust.SecretKey) transport.Dialer { return nw.Dialer(ck) }
	}},
	{"quic", func(t testing.TB, k trust.SecretKey) (transport.Listener, func(trust.SecretKey) transport.Dialer) {
		ln, err := quic.Listen("127.0.0.1:0", k, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ln, func(ck trust.SecretKey) transport.Dialer {
			d := quic.NewDialer(ck, nil)
			t.Cleanup(func() { d.Close() })
			return d
		}
	}},
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T, tk transportKind, opts ...aster.ServerOption) *env {
	t.Helper()
	key := testutil.Key(t, 1)
	e := &env{svc: newTestService(), closed: new(atomic.Int64), closes: make(chan struct{}, 64), serveErr: make(chan error, 1)}
	e.srv = aster.NewServer(append([]aster.ServerOption{aster.WithSecretKey(key), aster.WithLogger(quietLogger())}, opts...)...)
	e.srv.MustRegister(e.svc.service(), counterService(e.closed, e.closes))
	ln, dialer := tk.setup(t, key)
	e.addr, e.dialer = ln.Addr(), dialer
	go func() { e.serveErr <- e.srv.Serve(ln) }()
	n := 1
	e.dial = func(t *testing.T) *aster.Client {
		n++
		c, err := aster.DialAddress(context.Background(), e.addr, aster.WithDialer(dialer(testutil.Key(t, n))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	e.client = e.dial(t)
	t.Cleanup(func() {
		e.client.Close()
		e.srv.Close()
		if err := <-e.serveErr; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return e
}

func forEachTransport(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) { fn(t, newEnv(t, tk)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code status.Code) {
	t.Helper()
	if got := status.CodeOf(err); got != code {
		t.Fatalf("got %v (code %v), want code %v", err, got, code)
	}
}

func TestUnary(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		resp, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{Text: "hi", N: 7})
		if err != nil {
			t.Fatal(err)
		}
		if resp.Text != "hi" || resp.N != 7 {
			t.Fatalf("got %+v", resp)
		}
	})
}

func TestApplicationAndStatusErrors(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		_, err := aster.CallUnary[Msg](ctx, e.client, "Test.fail", &Msg{Text: "x", N: 142})
		wantCode(t, err, 142)
		if !bytes.Contains([]byte(err.Error()), []byte("failed: x")) {
			t.Fatalf("message lost: %v", err)
		}
		_, err = aster.CallUnary[Msg](ctx, e.client, "Test.nope", &Msg{})
		wantCode(t, err, status.NotFound)
		_, err = aster.CallUnary[Msg](ctx, e.client, "Nope.echo", &Msg{})
		wantCode(t, err, status.NotFound)
		_, err = aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{}, aster.Version(9))
		wantCode(t, err, status.NotFound)
		_, err = aster.CallUnary[Msg](ctx, e.client, "noDot", &Msg{})
		wantCode(t, err, status.InvalidArgument)
	})
}

func TestPanicBecomesInternal(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		_, err := aster.CallUnary[Msg](ctx, e.client, "Test.panic", &Msg{})
		wantCode(t, err, status.Internal)
		if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{Text: "still here"}); err != nil {
			t.Fatalf("server stopped serving after a panic: %v", err)
		}
	})
}

func TestServerStream(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		s, err := aster.CallServerStream[Msg](ctxT(t), e.client, "Test.count", &Msg{Text: "c", N: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		i := 0
		for m, err := range s.All() {
			if err != nil {
				t.Fatal(err)
			}
			if m.N != i {
				t.Fatalf("message %d has N=%d", i, m.N)
			}
			i++
		}
		if i != 100 {
			t.Fatalf("got %d messages", i)
		}
	})
}

func TestClientStream(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		cs, err := aster.CallClientStream[Msg, Msg](ctxT(t), e.client, "Test.sum")
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		for i := range 10000 {
			want += i
			if err := cs.Send(&Msg{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := cs.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.N != want || resp.Text != "10000" {
			t.Fatalf("got %+v, want N=%d", resp, want)
		}
	})
}

func TestBidiStream(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		b, err := aster.CallBidiStream[Msg, Msg](ctxT(t), e.client, "Test.chat")
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		for i := range 20 {
			if err := b.Send(&Msg{Text: fmt.Sprint(i), N: i}); err != nil {
				t.Fatal(err)
			}
			r, err := b.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if r.Text != "re:"+fmt.Sprint(i) || r.N != 2*i {
				t.Fatalf("got %+v", r)
			}
		}
		if err := b.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Recv(); err != io.EOF {
			t.Fatalf("end of stream: %v", err)
		}
		if b.Trailer().Get("chat-done") != "yes" {
			t.Fatalf("trailer metadata lost: %v", b.Trailer())
		}
	})
}

func TestSessions(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		s1, s2 := e.client.NewSession(), e.client.NewSession()
		for i := 1; i <= 3; i++ {
			r, err := aster.CallUnary[Msg](ctx, s1, "Counter.add", &Msg{N: 10})
			if err != nil {
				t.Fatal(err)
			}
			if r.N != 10*i {
				t.Fatalf("session state not kept: call %d got %d", i, r.N)
			}
		}
		r, err := aster.CallUnary[Msg](ctx, s2, "Counter.add", &Msg{N: 1})
		if err != nil || r.N != 1 {
			t.Fatalf("second session not fresh: %v %+v", err, r)
		}
		// Scope mismatches.
		_, err = aster.CallUnary[Msg](ctx, e.client, "Counter.add", &Msg{N: 1})
		wantCode(t, err, status.FailedPrecondition)
		_, err = aster.CallUnary[Msg](ctx, s1, "Test.echo", &Msg{})
		wantCode(t, err, status.FailedPrecondition)

		if err := s1.Close(ctx); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, e.closes, "session instance closed after end")
		_, err = aster.CallUnary[Msg](ctx, s1, "Counter.add", &Msg{N: 1})
		wantCode(t, err, status.FailedPrecondition) // closed on the client side

		// A connection drop releases the remaining session.
		e.client.Close()
		waitEvent(t, e.closes, "session instance closed after disconnect")
		if n := e.closed.Load(); n != 2 {
			t.Fatalf("%d instances closed, want 2", n)
		}
	})
}

// waitEvent waits for a value on ch, failing the test after 20 s (a hang,
// not a timing assumption).
func waitEvent[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting: %s", what)
		panic("unreachable")
	}
}

// waitFor polls cond until it holds (for state that has no event to wait
// on), failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDeadline(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithTimeout(ctxT(t), 50*time.Millisecond)
		defer cancel()
		_, err := aster.CallUnary[Msg](ctx, e.client, "Test.sleep", &Msg{N: 5000})
		wantCode(t, err, status.DeadlineExceeded)
		if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{}); status.CodeOf(err) != status.DeadlineExceeded {
			t.Fatalf("spent deadline: got %v", err)
		}
	})
}

func TestCancelReachesHandler(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx, cancel := context.WithCancel(ctxT(t))
		errc := make(chan error, 1)
		go func() {
			_, err := aster.CallUnary[Msg](ctx, e.client, "Test.waitCancel", &Msg{})
			errc <- err
		}()
		<-e.svc.started
		cancel()
		wantCode(t, <-errc, status.Canceled)
		select {
		case <-e.svc.cancelled:
		case <-time.After(10 * time.Second):
			t.Fatal("handler context was not cancelled")
		}
	})
}

func TestConcurrentCalls(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		var wg sync.WaitGroup
		errs := make(chan error, 1000)
		for i := range 1000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{N: i})
				if err == nil && r.N != i {
					err = fmt.Errorf("call %d got %d", i, r.N)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := e.svc.calls.Load(); got != 1000 {
			t.Fatalf("server saw %d calls", got)
		}
	})
}

func TestLargeMessages(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		r, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{Data: data})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Data, data) {
			t.Fatal("1 MiB message corrupted")
		}
	})
}

func TestFrameLimit(t *testing.T) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) {
			e := newEnv(t, tk, aster.WithMaxFrameSize(64<<10))
			_, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{Data: make([]byte, 100<<10)})
			wantCode(t, err, status.ResourceExhausted)
			if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{Text: "ok"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestContract(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		c, id, err := e.client.Contract(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 64 {
			t.Fatalf("contract id %q", id)
		}
		s := c.Service("Counter", 0)
		if s == nil || s.Scope != "session" || s.Method("add") == nil {
			t.Fatalf("contract lacks Counter.add: %+v", s)
		}
		m := c.Service("Test", 1).Method("chat")
		if m.Pattern != "bidi_stream" || m.Request != "test/Msg" {
			t.Fatalf("chat described as %+v", m)
		}
		if c.Type("test/Msg") == nil {
			t.Fatal("type test/Msg missing")
		}
	})
}

func TestShutdownDrains(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		errc := make(chan error, 1)
		go func() {
			_, err := aster.CallUnary[Msg](ctx, e.client, "Test.hold", &Msg{})
			errc <- err
		}()
		waitEvent(t, e.svc.holding, "the call reached the handler")
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- e.srv.Shutdown(sctx) }()
		// Shutdown has begun once new calls are refused; the held call is
		// still in flight.
		for {
			_, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{})
			if status.CodeOf(err) == status.Unavailable {
				break
			}
			if err != nil {
				t.Fatalf("call before the drain: %v", err)
			}
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned (%v) with a call in flight", err)
		default:
		}
		close(e.svc.release)
		if err := waitEvent(t, errc, "the held call"); err != nil {
			t.Fatalf("in-flight call failed during graceful shutdown: %v", err)
		}
		if err := waitEvent(t, shut, "Shutdown"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPeerMismatchUnauthenticated(t *testing.T) {
	tk := transports[1] // quic: the handshake proves the key
	e := newEnv(t, tk)
	wrong := e.addr
	wrong.ID = trust.IDOf(testutil.Key(t, 99))
	d := quic.NewDialer(testutil.Key(t, 50), nil)
	defer d.Close()
	_, err := aster.DialAddress(ctxT(t), wrong, aster.WithDialer(d))
	wantCode(t, err, status.Unauthenticated)
}
