package aster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// callResult is the outcome of a call run in the background.
type callResult struct {
	err     error
	elapsed time.Duration
}

// goCall runs fn in the background and reports its error and duration.
func goCall(fn func() error) <-chan callResult {
	ch := make(chan callResult, 1)
	t0 := time.Now()
	go func() {
		err := fn()
		ch <- callResult{err, time.Since(t0)}
	}()
	return ch
}

// waitCall waits at most bound for a background call; not returning within
// it fails the test.
func waitCall(t *testing.T, ch <-chan callResult, bound time.Duration, what string) callResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(bound):
		t.Fatalf("%s: no result within %v", what, bound)
		return callResult{}
	}
}

// refusingListener accepts connections and closes each at once with the
// SHUTDOWN code, as a draining server does (PROTOCOL.md 3.3).
func refusingListener(t *testing.T, ln transport.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			c.Close(transport.ConnShutdown, "server shutting down")
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
}

// A connection refused with SHUTDOWN right after it was accepted is
// UNAVAILABLE for the caller, at once: not a hang and not
// DEADLINE_EXCEEDED, so Retry moves on.
func TestShutdownRefusalIsUnavailable(t *testing.T) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) {
			ln, dialer := tk.setup(t, testutil.Key(t, 1))
			refusingListener(t, ln)
			c := aster.NewClient(ln.Addr(), aster.WithDialer(dialer(testutil.Key(t, 2))))
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i := range 3 { // the first dial and redials
				r := waitCall(t, goCall(func() error {
					_, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{N: i})
					return err
				}), 10*time.Second, "call to a refusing server")
				wantCode(t, r.err, status.Unavailable)
			}
		})
	}
}

// capturingListener hands out the connections it accepts on conns.
type capturingListener struct {
	transport.Listener
	conns chan transport.Conn
}

func (l *capturingListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err == nil {
		l.conns <- c
	}
	return c, err
}

// A connection closed with SHUTDOWN while a call (without a deadline) is
// in flight fails the call with UNAVAILABLE promptly.
func TestShutdownCloseInFlightIsUnavailable(t *testing.T) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) {
			key := testutil.Key(t, 1)
			svc := newTestService()
			srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
			srv.MustRegister(svc.service())
			inner, dialer := tk.setup(t, key)
			ln := &capturingListener{Listener: inner, conns: make(chan transport.Conn, 4)}
			serveErr := make(chan error, 1)
			go func() { serveErr <- srv.Serve(ln) }()
			defer func() { srv.Close(); <-serveErr }()
			c := aster.NewClient(ln.Addr(), aster.WithDialer(dialer(testutil.Key(t, 2))))
			defer c.Close()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			res := goCall(func() error {
				_, err := aster.CallUnary[Msg](ctx, c, "Test.hold", &Msg{})
				return err
			})
			waitEvent(t, svc.holding, "hold handler")
			sc := waitEvent(t, ln.conns, "accepted connection")
			sc.Close(transport.ConnShutdown, "server shutting down")
			r := waitCall(t, res, 10*time.Second, "call in flight on a connection closed with SHUTDOWN")
			wantCode(t, r.err, status.Unavailable)
		})
	}
}

// deadUDPAddr returns an address on loopback where nothing listens.
func deadUDPAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ap := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return ap
}

// A dial to an address where nothing listens fails with UNAVAILABLE
// (PROTOCOL.md 14.2) within the default handshake bound, although the
// caller's own context is live: DEADLINE_EXCEEDED is only for the caller's
// deadline, and Retry must be able to move on.
func TestDialDeadAddressUnavailable(t *testing.T) {
	a := aster.Address{ID: trust.IDOf(testutil.Key(t, 9)), Direct: []netip.AddrPort{deadUDPAddr(t)}}
	for _, withDeadline := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		if withDeadline {
			ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
		}
		r := waitCall(t, goCall(func() error {
			c, err := aster.DialAddress(ctx, a, aster.WithSecretKey(testutil.Key(t, 2)))
			if err == nil {
				c.Close()
			}
			return err
		}), 3*quic.DefaultHandshakeTimeout, "dial of a dead address")
		cancel()
		wantCode(t, r.err, status.Unavailable)
		if !errors.Is(r.err, transport.ErrHandshakeTimeout) {
			t.Errorf("dial error %v does not wrap transport.ErrHandshakeTimeout", r.err)
		}
	}

	// The caller's own deadline is still DEADLINE_EXCEEDED.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := aster.DialAddress(ctx, a, aster.WithSecretKey(testutil.Key(t, 2)))
	wantCode(t, err, status.DeadlineExceeded)
}

// streamCountingDialer counts the streams opened on the connections it dials.
type streamCountingDialer struct {
	transport.Dialer
	opened *atomic.Int64
}

func (d streamCountingDialer) Dial(ctx context.Context, a discovery.EndpointAddr) (transport.Conn, error) {
	c, err := d.Dialer.Dial(ctx, a)
	if err != nil {
		return nil, err
	}
	return streamCountingConn{c, d.opened}, nil
}

type streamCountingConn struct {
	transport.Conn
	opened *atomic.Int64
}

func (c streamCountingConn) OpenStream(ctx context.Context) (transport.Stream, error) {
	c.opened.Add(1)
	return c.Conn.OpenStream(ctx)
}

// A call whose header would exceed the 64 KiB limit (PROTOCOL.md 4.3)
// fails with RESOURCE_EXHAUSTED before a stream is opened, and the client
// keeps working.
func TestOversizedCallHeaderResourceExhausted(t *testing.T) {
	e := newEnv(t, transports[0])
	opened := new(atomic.Int64)
	c, err := aster.DialAddress(ctxT(t), e.addr, aster.WithDialer(streamCountingDialer{e.dialer(testutil.Key(t, 7)), opened}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{N: 1}); err != nil {
		t.Fatal(err)
	}
	before := opened.Load()
	var opts []aster.CallOption
	for i := range 10 { // 10 values of 8000 bytes: within the per-value limits, 80 KB in all
		opts = append(opts, aster.WithHeader("k"+string(rune('a'+i)), strings.Repeat("v", 8000)))
	}
	_, err = aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{N: 2}, opts...)
	wantCode(t, err, status.ResourceExhausted)
	if n := opened.Load() - before; n != 0 {
		t.Errorf("%d streams opened for a header over the limit, want 0", n)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{N: 3}); err != nil {
		t.Fatalf("call after the oversized header: %v", err)
	}
}

// killBound is how long a test waits for a dead peer to be noticed: the
// default idle timeout with a wide margin for a loaded machine.
const killBound = 4 * quic.DefaultMaxIdleTimeout

// When the server's UDP socket vanishes without a CONNECTION_CLOSE (as
// when its process is killed), a call in flight without a deadline fails
// with UNAVAILABLE once the idle timeout passes, not after a minute, and
// so does a new call (its redial finds nobody).
func TestKilledServerNoticed(t *testing.T) {
	key := testutil.Key(t, 1)
	svc := newTestService()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc.service())
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenPacketConn(pc, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-serveErr }()
	d := quic.NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	addr := aster.Address{ID: ln.Addr().ID, Direct: []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}}
	c := aster.NewClient(addr, aster.WithDialer(d))
	defer c.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := goCall(func() error {
		_, err := aster.CallUnary[Msg](ctx, c, "Test.hold", &Msg{})
		return err
	})
	waitEvent(t, svc.holding, "hold handler")
	pc.Close() // the server's socket is gone; nothing is sent
	r := waitCall(t, res, killBound, "in-flight call to a killed server")
	wantCode(t, r.err, status.Unavailable)
	t.Logf("in-flight call failed after %v: %v", r.elapsed, r.err)

	r = waitCall(t, goCall(func() error {
		_, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{})
		return err
	}), killBound, "new call to a killed server")
	wantCode(t, r.err, status.Unavailable)
}

// When a client's UDP socket vanishes without a CONNECTION_CLOSE (as when
// its process is killed), the server cancels the handler of its call once
// the idle timeout passes.
func TestKilledClientNoticed(t *testing.T) {
	key := testutil.Key(t, 1)
	svc := newTestService()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc.service())
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-serveErr }()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := quic.NewPacketConnDialer(pc, testutil.Key(t, 2), nil)
	defer d.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(d))
	defer c.Close()

	res := goCall(func() error {
		_, err := aster.CallUnary[Msg](context.Background(), c, "Test.waitCancel", &Msg{})
		return err
	})
	waitEvent(t, svc.started, "waitCancel handler")
	t0 := time.Now()
	pc.Close() // the client's socket is gone; nothing is sent
	select {
	case <-svc.cancelled:
		t.Logf("server noticed the dead client after %v", time.Since(t0))
	case <-time.After(killBound):
		t.Fatalf("the handler of a killed client still runs after %v", killBound)
	}
	waitCall(t, res, killBound, "call of the killed client")
}

// timeoutDialer fails every dial the way a transport's own timer would,
// with an error wrapping context.DeadlineExceeded.
type timeoutDialer struct{}

func (timeoutDialer) Dial(context.Context, discovery.EndpointAddr) (transport.Conn, error) {
	return nil, fmt.Errorf("handshake: %w", context.DeadlineExceeded)
}

// A dial that fails by a timer of the transport's while the caller's
// context is live is UNAVAILABLE, whatever error the transport wraps
// (PROTOCOL.md 14.2).
func TestDialTransportTimeoutUnavailable(t *testing.T) {
	c := aster.NewClient(aster.Address{ID: trust.IDOf(testutil.Key(t, 9))}, aster.WithDialer(timeoutDialer{}))
	defer c.Close()
	_, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{})
	wantCode(t, err, status.Unavailable)
}

// silentListener accepts connections and their streams but never answers.
func silentListener(t *testing.T, ln transport.Listener) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close(transport.ConnNoError, "")
				for {
					if _, err := c.AcceptStream(ctx); err != nil {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
}

// A server that never answers the admission exchange makes the call fail
// with UNAVAILABLE once the exchange's own bound passes, not with
// DEADLINE_EXCEEDED while the caller's deadline is far away.
func TestAdmissionTimeoutUnavailable(t *testing.T) {
	ln, dialer := transports[0].setup(t, testutil.Key(t, 1))
	silentListener(t, ln)
	c := aster.NewClient(ln.Addr(), aster.WithDialer(dialer(testutil.Key(t, 2))))
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := waitCall(t, goCall(func() error {
		_, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{})
		return err
	}), 30*time.Second, "call to a server that never admits")
	wantCode(t, r.err, status.Unavailable)
}
