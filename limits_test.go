package aster_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// A first frame whose prefix is not a HEADER is refused from its 5 prefix
// bytes: the server does not wait for (or reserve) the 16 MiB it claims.
func TestFirstFrameBoundedByHeaderLimit(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	start := time.Now()
	err, _ := exchange(t, c, []byte{0x00, 0x00, 0x00, 0x01, 0x00}, false)
	wantCode(t, err, status.InvalidArgument)
	if !strings.Contains(err.Error(), "must be a header") {
		t.Errorf("refusal %q does not say the first frame must be a header", err)
	}
	t.Logf("refused in %v", time.Since(start))
	// The connection and other callers are unaffected.
	if err, frames := exchange(t, c, append(header(t, wire.Header{Service: "Test", Method: "echo"}), data(t, Msg{Text: "ok"})...), true); err != nil || len(frames) != 1 {
		t.Fatalf("valid raw call after the refusal: %v, %d frames", err, len(frames))
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
		t.Fatal(err)
	}
}

// readReset reads st until it fails and returns the reset's code.
func readReset(t *testing.T, st transport.Stream) transport.StreamErrorCode {
	t.Helper()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for {
		_, err := st.Read(buf)
		if err == nil {
			continue
		}
		var se *transport.StreamError
		if !errors.As(err, &se) {
			t.Fatalf("read: %v, want a stream reset", err)
		}
		return se.Code
	}
}

// A stream that does not complete its HEADER within the header timeout is
// reset with DEADLINE (0x4); a call whose header arrived in time is not
// bound by it afterwards.
func TestHeaderTimeout(t *testing.T) {
	tk := transports[1]
	const timeout = 300 * time.Millisecond
	e := newEnv(t, tk, aster.WithHeaderTimeout(timeout))
	c := rawConn(t, tk, e)
	echo := header(t, wire.Header{Service: "Test", Method: "echo"})
	for name, sent := range map[string][]byte{
		"one byte":      {0x07},
		"prefix only":   echo[:5],
		"half a header": echo[:len(echo)/2],
		// The largest HEADER the limit allows, announced and not sent.
		"claimed 64 KiB": frame(wire.MaxHeaderSize+1, wire.FlagHeader, nil),
	} {
		t.Run(name, func(t *testing.T) {
			st, err := c.OpenStream(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write(sent); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if code := readReset(t, st); code != transport.CodeDeadline {
				t.Fatalf("stalled stream reset with %#x, want DEADLINE (0x4)", uint64(code))
			}
			if d := time.Since(start); d < timeout/2 {
				t.Fatalf("reset after %v, before the header timeout %v", d, timeout)
			}
		})
	}
	// A client-streaming call whose header came in time may wait longer
	// than the header timeout for its messages.
	st, err := c.OpenStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write(header(t, wire.Header{Service: "Test", Method: "sum"})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * timeout)
	if _, err := st.Write(data(t, Msg{N: 5})); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := wire.NewReader(st, 0)
	defer r.Release()
	for {
		flags, payload, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("slow client stream: %v", err)
		}
		if flags&wire.FlagTrailer != 0 {
			tr, err := wire.DecodeTrailer(payload)
			if err != nil || tr.Err() != nil {
				t.Fatalf("slow client stream trailer: %v %v", tr, err)
			}
			break
		}
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderTimeoutDefault(t *testing.T) {
	if aster.DefaultHeaderTimeout != 10*time.Second {
		t.Fatalf("DefaultHeaderTimeout = %v; PROTOCOL.md and the option document 10 s", aster.DefaultHeaderTimeout)
	}
}

// During Shutdown a new connection is refused at once with SHUTDOWN, which
// the client reports as UNAVAILABLE, while the call in flight finishes.
func TestShutdownRefusesNewConnections(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	ctx := ctxT(t)
	held := make(chan error, 1)
	go func() {
		_, err := aster.CallUnary[Msg](ctx, e.client, "Test.hold", &Msg{})
		held <- err
	}()
	waitEvent(t, e.svc.holding, "the call reached the handler")
	shut := make(chan error, 1)
	go func() { shut <- e.srv.Shutdown(ctx) }()
	waitFor(t, func() bool { return !e.srv.Ready() }, "Shutdown to begin")

	for i := range 3 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		c, err := aster.DialAddress(cctx, e.addr, aster.WithDialer(e.dialer(testutil.Key(t, 60+i))))
		if err == nil {
			_, err = aster.CallUnary[Msg](cctx, c, "Test.echo", &Msg{})
			c.Close()
		}
		cancel()
		d := time.Since(start)
		wantCode(t, err, status.Unavailable)
		// The figure the drain promises is 100 ms; allow for a loaded
		// machine, but far less than a handshake timeout.
		if d > 2*time.Second {
			t.Fatalf("refusal took %v", d)
		}
		t.Logf("new connection during Shutdown: %v after %v", status.CodeOf(err), d)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a call in flight", err)
	default:
	}
	close(e.svc.release)
	if err := waitEvent(t, held, "the held call"); err != nil {
		t.Fatalf("in-flight call failed during the drain: %v", err)
	}
	if err := waitEvent(t, shut, "Shutdown"); err != nil {
		t.Fatal(err)
	}
}

// Calls refused for a missing capability go through the server middleware
// (logging and audit record the peer and the requirement) and are counted
// by code, but never reach the handler; the caller learns only "permission
// denied".
func TestDeniedCallReachesMiddleware(t *testing.T) {
	var logBuf, auditBuf testutil.SyncBuffer
	var ran atomic.Int64
	key := testutil.Key(t, 1)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()),
		aster.WithMiddleware(
			middleware.Audit(middleware.AuditOptions{Logger: slog.New(slog.NewTextHandler(&auditBuf, nil))}),
			middleware.Logging(middleware.LogOptions{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})),
		aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
			return handler.Peer{ID: c.RemoteID(), Addr: c.RemoteAddr(), Capabilities: []string{"ops.status"}}, nil
		}))
	srv.MustRegister(handler.NewService("Ops", 1).
		Handle("admin", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { ran.Add(1); return m, nil }),
			handler.Requires(trust.Cap("ops.admin"))))
	ln, dialer := transports[0].setup(t, key)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	ck := testutil.Key(t, 5)
	c, err := aster.DialAddress(ctxT(t), ln.Addr(), aster.WithDialer(dialer(ck)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = aster.CallUnary[Msg](ctxT(t), c, "Ops.admin", &Msg{})
	wantCode(t, err, status.PermissionDenied)
	if msg := status.FromError(err).Message(); msg != "permission denied" {
		t.Errorf("caller told %q, want only \"permission denied\"", msg)
	}
	if ran.Load() != 0 {
		t.Fatal("the handler ran for a denied call")
	}
	peer := trust.IDOf(ck)
	logged := logBuf.String()
	for _, want := range []string{"code=PERMISSION_DENIED", "method=admin", "peer=" + peer.Short(), "ops.admin"} {
		if !strings.Contains(logged, want) {
			t.Errorf("logging record %q lacks %q", logged, want)
		}
	}
	audited := auditBuf.String()
	for _, want := range []string{"code=PERMISSION_DENIED", "method=Ops.admin", "peer=" + peer.String(), "requires=ops.admin", "capabilities=[ops.status]"} {
		if !strings.Contains(audited, want) {
			t.Errorf("audit record %q lacks %q", audited, want)
		}
	}
	if n := srv.Metrics().Calls["PERMISSION_DENIED"]; n != 1 {
		t.Errorf("Metrics counts %d PERMISSION_DENIED calls, want 1", n)
	}
}

// dialCall dials e's server with key k and makes one call; it returns the
// client (nil if the dial failed) and the error.
func dialCall(t *testing.T, e *env, k trust.SecretKey) (*aster.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctxT(t), 5*time.Second)
	defer cancel()
	c, err := aster.DialAddress(ctx, e.addr, aster.WithDialer(e.dialer(k)))
	if err != nil {
		return nil, err
	}
	_, err = aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{})
	if err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// Connections beyond WithMaxConns are closed with SHUTDOWN (the caller gets
// UNAVAILABLE); those being served keep working, and a slot freed is
// usable again.
func TestMaxConns(t *testing.T) {
	forEachTransportOpts(t, []aster.ServerOption{aster.WithMaxConns(3)}, func(t *testing.T, e *env) {
		// e.client holds one connection.
		var clients []*aster.Client
		for i := range 2 {
			c, err := dialCall(t, e, testutil.Key(t, 20+i))
			if err != nil {
				t.Fatalf("connection %d within the cap: %v", i+2, err)
			}
			clients = append(clients, c)
		}
		_, err := dialCall(t, e, testutil.Key(t, 30))
		wantCode(t, err, status.Unavailable)
		wantReason(t, err, "too many connections")
		for _, c := range append(clients, e.client) {
			if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{}); err != nil {
				t.Fatalf("served connection after a refusal: %v", err)
			}
		}
		clients[0].Close()
		waitFor(t, func() bool { return e.srv.Metrics().Connections == 2 }, "the closed connection to end")
		if _, err := dialCall(t, e, testutil.Key(t, 31)); err != nil {
			t.Fatalf("connection after a slot was freed: %v", err)
		}
	})
}

// One peer beyond WithMaxConnsPerPeer is refused, other peers are not.
func TestMaxConnsPerPeer(t *testing.T) {
	forEachTransportOpts(t, []aster.ServerOption{aster.WithMaxConnsPerPeer(2)}, func(t *testing.T, e *env) {
		k := testutil.Key(t, 40)
		for i := range 2 {
			if _, err := dialCall(t, e, k); err != nil {
				t.Fatalf("connection %d of the peer: %v", i+1, err)
			}
		}
		_, err := dialCall(t, e, k)
		wantCode(t, err, status.Unavailable)
		wantReason(t, err, "too many connections from this peer")
		if _, err := dialCall(t, e, testutil.Key(t, 41)); err != nil {
			t.Fatalf("another peer: %v", err)
		}
		if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
			t.Fatal(err)
		}
	})
}

// Sessions beyond WithMaxSessionsPerConn fail with RESOURCE_EXHAUSTED; the
// sessions already open keep their state, and ending one frees a slot.
func TestMaxSessionsPerConn(t *testing.T) {
	forEachTransportOpts(t, []aster.ServerOption{aster.WithMaxSessionsPerConn(2)}, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		s1, s2, s3 := e.client.NewSession(), e.client.NewSession(), e.client.NewSession()
		for _, s := range []*aster.Session{s1, s2} {
			if _, err := aster.CallUnary[Msg](ctx, s, "Counter.add", &Msg{N: 1}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := aster.CallUnary[Msg](ctx, s3, "Counter.add", &Msg{N: 1})
		wantCode(t, err, status.ResourceExhausted)
		if r, err := aster.CallUnary[Msg](ctx, s1, "Counter.add", &Msg{N: 1}); err != nil || r.N != 2 {
			t.Fatalf("open session after the refusal: %+v, %v", r, err)
		}
		if err := s2.Close(ctx); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, e.closes, "the ended session's instance to close")
		if r, err := aster.CallUnary[Msg](ctx, s3, "Counter.add", &Msg{N: 1}); err != nil || r.N != 1 {
			t.Fatalf("session after a slot was freed: %+v, %v", r, err)
		}
		// Another connection has its own sessions.
		other := e.dial(t)
		if _, err := aster.CallUnary[Msg](ctx, other.NewSession(), "Counter.add", &Msg{N: 1}); err != nil {
			t.Fatal(err)
		}
	})
}

func forEachTransportOpts(t *testing.T, opts []aster.ServerOption, fn func(t *testing.T, e *env)) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) { fn(t, newEnv(t, tk, opts...)) })
	}
}

// wantReason checks that a refusal names its reason, on the transports
// whose clients report the close reason (the WebTransport client reports
// a lost session without it).
func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if strings.Contains(t.Name(), "webtransport") {
		t.Logf("refusal: %v", err)
		return
	}
	if !strings.Contains(err.Error(), reason) {
		t.Errorf("refusal %q does not name the limit (%q)", err, reason)
	}
}

// A refused admission reaches the server-wide middleware as a call to
// _aster.admit, with the peer and the private reason, and is counted by
// its code; the caller still gets only the public message.
func TestRefusedAdmissionReachesMiddleware(t *testing.T) {
	var logBuf, auditBuf testutil.SyncBuffer
	root := trust.GenerateKey()
	pub := trust.IDOf(root)
	gate, err := enroll.NewGate(enroll.Policy{RootPubKey: &pub}, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv := aster.NewServer(aster.WithGate(gate), aster.WithLogger(quietLogger()),
		aster.WithMiddleware(
			middleware.Audit(middleware.AuditOptions{Logger: slog.New(slog.NewTextHandler(&auditBuf, nil))}),
			middleware.Logging(middleware.LogOptions{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})))
	srv.MustRegister(newTestService().service())
	ln, dialer := transports[1].setup(t, srv.SecretKey())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })

	ck := testutil.Key(t, 9)
	_, err = aster.DialAddress(ctxT(t), ln.Addr(), aster.WithDialer(dialer(ck)))
	wantCode(t, err, status.Unauthenticated)
	if msg := status.FromError(err).Message(); msg != enroll.MsgCredentialRequired {
		t.Errorf("caller told %q, want the public message", msg)
	}
	peer := trust.IDOf(ck)
	waitFor(t, func() bool { return strings.Contains(auditBuf.String(), "UNAUTHENTICATED") }, "the audit record")
	for _, want := range []string{"code=UNAUTHENTICATED", "service=_aster", "method=admit", "peer=" + peer.Short(), "no credential presented"} {
		if !strings.Contains(logBuf.String(), want) {
			t.Errorf("logging record %q lacks %q", logBuf.String(), want)
		}
	}
	for _, want := range []string{"code=UNAUTHENTICATED", "method=_aster.admit", "peer=" + peer.String()} {
		if !strings.Contains(auditBuf.String(), want) {
			t.Errorf("audit record %q lacks %q", auditBuf.String(), want)
		}
	}
	waitFor(t, func() bool { return srv.Metrics().Calls["UNAUTHENTICATED"] == 1 }, "Metrics to count the refusal")
}

// While WithMaxStreamsAwaitingHeader streams of a connection stall before
// their HEADER, that connection's next call waits (until the header timeout
// frees a slot) while other connections are served at once; without
// stalled streams the cap does not limit concurrent calls.
func TestMaxStreamsAwaitingHeader(t *testing.T) {
	tk := transports[1]
	const timeout = 500 * time.Millisecond
	e := newEnv(t, tk, aster.WithMaxStreamsAwaitingHeader(2), aster.WithHeaderTimeout(timeout))

	// Many concurrent calls on one connection, none stalled: all served.
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			_, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.sleep", &Msg{N: 20})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent call under the cap: %v", err)
		}
	}

	c := rawConn(t, tk, e)
	start := time.Now()
	for range 2 {
		st, err := c.OpenStream(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Write([]byte{0x07}); err != nil {
			t.Fatal(err)
		}
	}
	// The transport hands the server streams in order, so the two stalled
	// ones take the slots before any later stream of this connection.
	// Another connection is served at once.
	if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= timeout {
		t.Fatalf("the other connection's call took until %v, the header timeout is %v", d, timeout)
	}
	// The stalling connection's next call waits for a slot, then is served.
	err, frames := exchange(t, c, append(header(t, wire.Header{Service: "Test", Method: "echo"}), data(t, Msg{Text: "ok"})...), true)
	if err != nil || len(frames) != 1 {
		t.Fatalf("call after the stalled streams: %v, %d frames", err, len(frames))
	}
	if d := time.Since(start); d < timeout*8/10 {
		t.Fatalf("call on the stalling connection served after %v, before a slot was freed (header timeout %v)", d, timeout)
	}
}

// Calls beyond WithMaxConcurrentStreams on one connection wait for a slot
// (and end with their deadline if none frees); other connections are
// served, and the waiting call runs once a slot frees.
func TestMaxConcurrentStreams(t *testing.T) {
	forEachTransportOpts(t, []aster.ServerOption{aster.WithMaxConcurrentStreams(2)}, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		held := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := aster.CallUnary[Msg](ctx, e.client, "Test.hold", &Msg{})
				held <- err
			}()
			waitEvent(t, e.svc.holding, "a held call")
		}
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := aster.CallUnary[Msg](short, e.client, "Test.echo", &Msg{})
		cancel()
		wantCode(t, err, status.DeadlineExceeded)
		if e.svc.calls.Load() != 0 {
			t.Fatal("a call beyond the cap reached its handler")
		}
		other := e.dial(t)
		if _, err := aster.CallUnary[Msg](ctx, other, "Test.echo", &Msg{}); err != nil {
			t.Fatalf("another connection: %v", err)
		}
		waiting := make(chan error, 1)
		go func() {
			_, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{})
			waiting <- err
		}()
		close(e.svc.release)
		for range 2 {
			if err := waitEvent(t, held, "a held call to end"); err != nil {
				t.Fatal(err)
			}
		}
		if err := waitEvent(t, waiting, "the waiting call"); err != nil {
			t.Fatalf("call after slots were freed: %v", err)
		}
	})
}
