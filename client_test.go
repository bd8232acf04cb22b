package aster_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// Other is a message type with another wire name than Msg.
type Other struct {
	Text string `cbor:"text"`
}

func (Other) WireType() string { return "test/Other" }

// countingDialer counts dials and keeps the last connection.
type countingDialer struct {
	d     transport.Dialer
	dials atomic.Int64
	mu    sync.Mutex
	last  transport.Conn
}

func (d *countingDialer) Dial(ctx context.Context, a discovery.EndpointAddr) (transport.Conn, error) {
	d.dials.Add(1)
	c, err := d.d.Dial(ctx, a)
	if err == nil {
		d.mu.Lock()
		d.last = c
		d.mu.Unlock()
	}
	return c, err
}

func (d *countingDialer) drop() {
	d.mu.Lock()
	c := d.last
	d.mu.Unlock()
	c.Close(transport.ConnNoError, "test drops the connection")
	<-c.Done()
}

// sessionRig serves the Counter service on mem and returns a client whose
// dials are counted.
func sessionRig(t *testing.T, mw ...middleware.Client) (*aster.Client, *countingDialer) {
	t.Helper()
	nw := mem.NewNetwork()
	key := testutil.Key(t, 1)
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	closed := new(atomic.Int64)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(counterService(closed, nil), newTestService().service())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	d := &countingDialer{d: nw.Dialer(testutil.Key(t, 2))}
	c := aster.NewClient(ln.Addr(), aster.WithDialer(d), aster.WithClientMiddleware(mw...))
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		<-done
	})
	return c, d
}

// A session whose connection is gone fails at once with UNAVAILABLE,
// without a redial, and Close returns at once.
func TestSessionLostFailsWithoutRedial(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testSessionLost(t) })
	t.Run("retry", func(t *testing.T) { testSessionLost(t, middleware.Retry(middleware.RetryOptions{})) })
}

func testSessionLost(t *testing.T, mw ...middleware.Client) {
	c, d := sessionRig(t, mw...)
	ctx := ctxT(t)
	s := c.NewSession()
	if r, err := aster.CallUnary[Msg](ctx, s, "Counter.add", &Msg{N: 5}); err != nil || r.N != 5 {
		t.Fatalf("first session call: %+v, %v", r, err)
	}
	d.drop()
	start := time.Now()
	_, err := aster.CallUnary[Msg](ctx, s, "Counter.add", &Msg{N: 1})
	wantCode(t, err, status.Unavailable)
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close of a lost session: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("lost session call and Close took %v", el)
	}
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1: a lost session must not redial", n)
	}
	// The client itself goes on with a new connection.
	if _, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{}); err != nil {
		t.Fatal(err)
	}
}

// Retry cannot move a session call to another connection: with the
// session's connection gone, the call fails with UNAVAILABLE instead of
// reaching a fresh session instance on a new connection.
func TestSessionLostNotRetried(t *testing.T) {
	var d *countingDialer
	var armed atomic.Bool
	// Inside Retry: the first attempt loses the connection.
	dropper := func(next middleware.Caller) middleware.Caller {
		return middleware.WrapCaller(next, func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			if armed.CompareAndSwap(true, false) {
				d.drop()
				return nil, status.New(status.Unavailable, "connection lost")
			}
			return next.NewStream(ctx, call)
		})
	}
	retry := middleware.Retry(middleware.RetryOptions{InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	c, cd := sessionRig(t, retry, dropper)
	d = cd
	ctx := ctxT(t)
	s := c.NewSession()
	if r, err := aster.CallUnary[Msg](ctx, s, "Counter.add", &Msg{N: 5}, aster.Idempotent()); err != nil || r.N != 5 {
		t.Fatalf("first session call: %+v, %v", r, err)
	}
	armed.Store(true)
	r, err := aster.CallUnary[Msg](ctx, s, "Counter.add", &Msg{N: 1}, aster.Idempotent())
	if err == nil {
		t.Fatalf("retried onto a new connection: got %+v (a fresh session instance), want UNAVAILABLE", r)
	}
	wantCode(t, err, status.Unavailable)
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1", n)
	}
}

// A session call stripped of its connection by middleware is refused.
func TestSessionCallNeedsItsConnection(t *testing.T) {
	strip := func(next middleware.Caller) middleware.Caller {
		return middleware.WrapCaller(next, func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			call.Conn = nil
			return next.NewStream(ctx, call)
		})
	}
	c, _ := sessionRig(t, strip)
	_, err := aster.CallUnary[Msg](ctxT(t), c.NewSession(), "Counter.add", &Msg{N: 1})
	wantCode(t, err, status.FailedPrecondition)
}

// Close while Recv (and Send) block in other goroutines: no data race on
// the call's buffers (run with -race), and both return.
func TestCloseWhileRecv(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		for range 20 {
			ss, err := aster.CallBidiStream[Msg, Msg](ctx, e.client, "Test.chat")
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(2)
			recvErr := make(chan error, 1)
			first := make(chan struct{})
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					if _, err := ss.Recv(); err != nil {
						recvErr <- err
						return
					}
					if n == 0 {
						close(first)
					}
				}
			}()
			go func() {
				defer wg.Done()
				for ss.Send(&Msg{Text: strings.Repeat("x", 512)}) == nil {
				}
			}()
			<-first // Send and Recv are going
			ss.Close()
			wg.Wait()
			if err := <-recvErr; err == io.EOF || err == nil {
				t.Fatalf("Recv after Close: %v, want an error", err)
			}
			ss.Close() // twice is fine
		}
		// The client still works.
		if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{}); err != nil {
			t.Fatal(err)
		}
	})
}

// With the contract fetched, a call of the wrong pattern or with the wrong
// message types fails before anything is sent.
func TestContractChecks(t *testing.T) {
	for _, tk := range append(transports[:len(transports):len(transports)], relayTransport) { // mem, QUIC, WebTransport, relay
		t.Run(tk.name, func(t *testing.T) {
			e := newEnv(t, tk)
			ctx := ctxT(t)
			// Without the contract nothing is checked: the server decides.
			if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.client.Contract(ctx); err != nil {
				t.Fatal(err)
			}
			before := e.svc.calls.Load()
			_, err := aster.CallUnary[Msg](ctx, e.client, "Test.count", &Msg{N: 1})
			wantCode(t, err, status.FailedPrecondition)
			if !strings.Contains(err.Error(), "server_stream") {
				t.Errorf("pattern error does not name the pattern: %v", err)
			}
			_, err = aster.CallServerStream[Msg](ctx, e.client, "Test.echo", &Msg{})
			wantCode(t, err, status.FailedPrecondition)
			_, err = aster.CallUnary[Other](ctx, e.client, "Test.echo", &Msg{})
			wantCode(t, err, status.InvalidArgument)
			if !strings.Contains(err.Error(), "test/Other") || !strings.Contains(err.Error(), "test/Msg") {
				t.Errorf("type error does not name both types: %v", err)
			}
			_, err = aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Other{})
			wantCode(t, err, status.InvalidArgument)
			_, err = aster.CallBidiStream[Other, Msg](ctx, e.client, "Test.chat")
			wantCode(t, err, status.InvalidArgument)
			if n := e.svc.calls.Load(); n != before {
				t.Fatalf("a refused call reached the server (%d calls)", n-before)
			}
			// Matching calls go through; so do maps, which are not checked.
			if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{}); err != nil {
				t.Fatal(err)
			}
			if _, err := aster.CallUnary[map[string]any](ctx, e.client, "Test.echo", map[string]any{"text": "m"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Bad option values are rejected with INVALID_ARGUMENT naming the option.
func TestOptionValidation(t *testing.T) {
	for name, opt := range map[string]aster.Option{
		"WithMaxFrameSize": aster.WithMaxFrameSize(0),
		"WithCodec":        aster.WithCodec(nil),
		"WithLogger":       aster.WithLogger(nil),
		"WithSecretKey":    aster.WithSecretKey(trust.SecretKey{1, 2, 3}),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := aster.DialAddress(ctxT(t), aster.Address{ID: trust.IDOf(testutil.Key(t, 1))}, opt)
			wantOptionError(t, err, name)
			srv := aster.NewServer(opt)
			err = srv.Serve(mustListen(t))
			wantOptionError(t, err, name)
		})
	}
	for name, opt := range map[string]aster.ServerOption{
		"WithMaxSessionsPerConn": aster.WithMaxSessionsPerConn(-1),
		"WithShutdownLinger":     aster.WithShutdownLinger(-time.Second),
		"WithGate":               aster.WithGate(nil),
	} {
		t.Run(name, func(t *testing.T) {
			err := aster.NewServer(opt).Serve(mustListen(t))
			wantOptionError(t, err, name)
		})
	}
	for name, opt := range map[string]aster.ClientOption{
		"WithIdempotent": aster.WithIdempotent("nodot"),
		"WithDialer":     aster.WithDialer(nil),
		"WithConn":       aster.WithConn(nil),
	} {
		t.Run(name, func(t *testing.T) {
			c := aster.NewClient(aster.Address{ID: trust.IDOf(testutil.Key(t, 1))}, opt)
			defer c.Close()
			_, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{})
			wantOptionError(t, err, name)
		})
	}
	if err := aster.NewServer(aster.WithMaxFrameSize(1 << 30)).Serve(mustListen(t)); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("frame size above the cap: %v", err)
	}
}

func mustListen(t *testing.T) transport.Listener {
	ln, err := mem.NewNetwork().Listen(testutil.Key(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func wantOptionError(t *testing.T, err error, option string) {
	t.Helper()
	if status.CodeOf(err) != status.InvalidArgument || !strings.Contains(err.Error(), "aster."+option) {
		t.Fatalf("got %v, want INVALID_ARGUMENT naming aster.%s", err, option)
	}
	if errors.Is(err, aster.ErrServerClosed) {
		t.Fatal("server started")
	}
}

// WithDialerFor builds the dialer from the client's own key, so a key and
// its credential are given once.
func TestDialerForUsesClientKey(t *testing.T) {
	nw := mem.NewNetwork()
	key := testutil.Key(t, 1)
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(handler.NewService("Who", 1).Handle("ami", handler.Unary(func(ctx context.Context, _ *Msg) (*Msg, error) {
		return &Msg{}, nil
	})))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	ck := testutil.Key(t, 2)
	var got trust.SecretKey
	c := aster.NewClient(ln.Addr(), aster.WithSecretKey(ck), aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer {
		got = k
		return nw.Dialer(k)
	}))
	defer c.Close()
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Who.ami", &Msg{}); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(ck) {
		t.Fatal("WithDialerFor was not given the client's key")
	}
}

// When Retry asks the client for a method's idempotency and no connection
// can be made, the call fails with that error instead of dialling again.
func TestRetryDescribeDialsOnce(t *testing.T) {
	nw := mem.NewNetwork()
	d := &countingDialer{d: nw.Dialer(testutil.Key(t, 2))}
	nobody := aster.Address{ID: trust.IDOf(testutil.Key(t, 1))} // nothing listens
	c := aster.NewClient(nobody, aster.WithDialer(d), aster.WithClientMiddleware(middleware.Retry(middleware.RetryOptions{})))
	defer c.Close()
	_, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{})
	wantCode(t, err, status.Unavailable)
	if n := d.dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1", n)
	}
}
