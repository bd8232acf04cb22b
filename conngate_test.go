package aster_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// gateTransports are the transports the connection gate tests run on: mem,
// QUIC, WebTransport and through a relay.
func gateTransports() []transportKind {
	return append(transports[:len(transports):len(transports)], relayTransport)
}

// gateEnv is a server with connection gates, serving on one transport, and
// no client yet (a refused client could not be made by newEnv).
type gateEnv struct {
	srv    *aster.Server
	svc    *testService
	admits atomic.Int64 // admission runs (the server's WithAdmission)
	addr   aster.Address
	dialer func(trust.SecretKey) transport.Dialer
}

func newGateEnv(t *testing.T, tk transportKind, opts ...aster.ServerOption) *gateEnv {
	t.Helper()
	e := &gateEnv{}
	e.start(t, tk, opts...)
	return e
}

// start starts e's server (e may be referred to by the gates in opts).
func (e *gateEnv) start(t *testing.T, tk transportKind, opts ...aster.ServerOption) {
	t.Helper()
	key := testutil.Key(t, 1)
	e.svc = newTestService()
	admission := aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
		e.admits.Add(1)
		return handler.Peer{ID: c.RemoteID(), Addr: c.RemoteAddr(), Unrestricted: true}, nil
	})
	e.srv = aster.NewServer(append([]aster.ServerOption{aster.WithSecretKey(key), aster.WithLogger(quietLogger()), admission}, opts...)...)
	e.srv.MustRegister(e.svc.service())
	ln, dialer := tk.setup(t, key)
	e.addr, e.dialer = ln.Addr(), dialer
	serveErr := make(chan error, 1)
	go func() { serveErr <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		e.srv.Close()
		if err := <-serveErr; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
}

// client returns a client with key n that has not connected yet.
func (e *gateEnv) client(t *testing.T, n int) *aster.Client {
	c := aster.NewClient(e.addr, aster.WithDialer(e.dialer(testutil.Key(t, n))), aster.WithLogger(quietLogger()))
	t.Cleanup(func() { c.Close() })
	return c
}

// TestConnGateAllow: the gate sees each connection once, with the peer's
// endpoint id and the address the transport reports, before admission; an
// admitted peer's calls are served.
func TestConnGateAllow(t *testing.T) {
	for _, tk := range gateTransports() {
		t.Run(tk.name, func(t *testing.T) {
			var mu sync.Mutex
			var seen []aster.ConnInfo
			e := &gateEnv{}
			admitsAtGate := int64(-1)
			client := trust.IDOf(testutil.Key(t, 2))
			gate := func(_ context.Context, info aster.ConnInfo) error {
				mu.Lock()
				defer mu.Unlock()
				if info.ID == client { // not a stray handshake of an earlier test
					seen = append(seen, info)
					admitsAtGate = e.admits.Load()
				}
				return nil
			}
			e.start(t, tk, aster.WithConnGate(aster.AllowPeers(client), gate))
			c := e.client(t, 2)
			for range 3 {
				if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{Text: "x"}); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 {
				t.Fatalf("gate called %d times for one connection", len(seen))
			}
			if admitsAtGate != 0 {
				t.Errorf("admission ran %d times before the gate", admitsAtGate)
			}
			info := seen[0]
			if want := trust.IDOf(testutil.Key(t, 2)); info.ID != want {
				t.Errorf("gate saw peer %v, want %v", info.ID.Short(), want.Short())
			}
			switch a := info.Addr.(type) {
			case *net.UDPAddr:
				if tk.name != "quic" && tk.name != "webtransport" || !a.IP.IsLoopback() {
					t.Errorf("%s: gate saw address %v", tk.name, a)
				}
			case *relay.Addr:
				if tk.name != "relay" || a.ID != info.ID || !strings.Contains(a.String(), "@https://") {
					t.Errorf("%s: gate saw relay address %v", tk.name, a)
				}
			case mem.Addr:
				if tk.name != "mem" {
					t.Errorf("%s: gate saw address %v", tk.name, a)
				}
			default:
				t.Errorf("%s: gate saw address %T %v", tk.name, a, a)
			}
			if m := e.srv.Metrics(); m.ConnsGateRefused != 0 {
				t.Errorf("ConnsGateRefused = %d", m.ConnsGateRefused)
			}
		})
	}
}

// TestConnGateRefuse: a peer the gate refuses gets PERMISSION_DENIED with
// the gate's message, is never admitted, no call of it is served, and the
// server counts the refusal and keeps serving others.
func TestConnGateRefuse(t *testing.T) {
	for _, tk := range gateTransports() {
		t.Run(tk.name, func(t *testing.T) {
			e := newGateEnv(t, tk, aster.WithConnGate(aster.AllowPeers(trust.IDOf(testutil.Key(t, 2)))))
			stranger := e.client(t, 3)
			_, err := aster.CallUnary[Msg](ctxT(t), stranger, "Test.echo", &Msg{Text: "x"})
			wantCode(t, err, status.PermissionDenied)
			if !strings.Contains(err.Error(), "endpoint not on the allow-list") {
				t.Errorf("refusal %q does not carry the gate's message", err)
			}
			// The refusal is final: a second call (on a new connection, or
			// answered by the refused one) is refused too.
			_, err = aster.CallUnary[Msg](ctxT(t), stranger, "Test.echo", &Msg{Text: "x"})
			wantCode(t, err, status.PermissionDenied)
			if n := e.svc.calls.Load(); n != 0 {
				t.Errorf("handler ran %d times for a refused peer", n)
			}
			if n := e.admits.Load(); n != 0 {
				t.Errorf("admission ran %d times for a refused peer", n)
			}
			m := e.srv.Metrics()
			if m.ConnsGateRefused < 1 || m.ConnsGateRefused > 2 || m.StreamsOpened != 0 {
				t.Errorf("metrics %+v: want 1 or 2 gate refusals, no stream served", m)
			}
			friend := e.client(t, 2)
			if _, err := aster.CallUnary[Msg](ctxT(t), friend, "Test.echo", &Msg{Text: "x"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestConnGateTimeout: a gate that does not decide within the timeout
// refuses (fail closed): the client reports UNAVAILABLE, nothing is served.
func TestConnGateTimeout(t *testing.T) {
	for _, tk := range gateTransports() {
		t.Run(tk.name, func(t *testing.T) {
			release := make(chan struct{})
			gateDone := make(chan struct{})
			// The gate ignores its ctx: the server must not wait for it.
			gate := func(context.Context, aster.ConnInfo) error {
				defer close(gateDone)
				<-release
				return nil
			}
			const timeout = 300 * time.Millisecond
			e := newGateEnv(t, tk, aster.WithConnGate(gate), aster.WithConnGateTimeout(timeout))
			t.Cleanup(func() { <-gateDone }) // after the server closed
			t.Cleanup(func() { close(release) })
			start := time.Now()
			_, err := aster.CallUnary[Msg](ctxT(t), e.client(t, 2), "Test.echo", &Msg{Text: "x"})
			wantCode(t, err, status.Unavailable)
			if !strings.Contains(err.Error(), "connection gate timed out") {
				t.Errorf("refusal %q does not say the gate timed out", err)
			}
			if d := time.Since(start); d < timeout {
				t.Errorf("refused after %v, before the %v timeout", d, timeout)
			}
			if n := e.svc.calls.Load() + e.admits.Load(); n != 0 {
				t.Errorf("%d calls or admissions served during an undecided gate", n)
			}
			if m := e.srv.Metrics(); m.ConnsGateRefused != 1 {
				t.Errorf("ConnsGateRefused = %d, want 1", m.ConnsGateRefused)
			}
		})
	}
}

// TestConnGatePanic: a gate that panics refuses the connection (UNAVAILABLE)
// and the server goes on serving.
func TestConnGatePanic(t *testing.T) {
	for _, tk := range gateTransports() {
		t.Run(tk.name, func(t *testing.T) {
			var n atomic.Int64
			gate := func(context.Context, aster.ConnInfo) error {
				if n.Add(1) == 1 {
					panic("gate bug")
				}
				return nil
			}
			e := newGateEnv(t, tk, aster.WithConnGate(gate))
			_, err := aster.CallUnary[Msg](ctxT(t), e.client(t, 2), "Test.echo", &Msg{Text: "x"})
			wantCode(t, err, status.Unavailable)
			if !strings.Contains(err.Error(), "connection gate failed") {
				t.Errorf("refusal %q does not say the gate failed", err)
			}
			if _, err := aster.CallUnary[Msg](ctxT(t), e.client(t, 3), "Test.echo", &Msg{Text: "x"}); err != nil {
				t.Fatalf("after a gate panic: %v", err)
			}
			if m := e.srv.Metrics(); m.ConnsGateRefused != 1 {
				t.Errorf("ConnsGateRefused = %d, want 1", m.ConnsGateRefused)
			}
		})
	}
}

// TestConnGatePreopenedStreams: streams a peer opens and fills with calls
// while the gate decides reach no handler, and fail with the close code
// DENIED once the gate refuses.
func TestConnGatePreopenedStreams(t *testing.T) {
	for _, tk := range gateTransports() {
		t.Run(tk.name, func(t *testing.T) {
			entered := make(chan struct{})
			decide := make(chan error)
			gate := func(ctx context.Context, _ aster.ConnInfo) error {
				close(entered)
				select {
				case err := <-decide:
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			e := newGateEnv(t, tk, aster.WithConnGate(gate))
			conn, err := e.dialer(testutil.Key(t, 2)).Dial(ctxT(t), e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(transport.ConnNoError, "")
			<-entered
			const n = 8
			var streams []transport.Stream
			for i := range n {
				st, err := conn.OpenStream(ctxT(t))
				if err != nil {
					t.Fatal(err)
				}
				h := wire.Header{Service: "Test", Method: "echo", CallID: uint64(i + 1)}
				buf, _ := wire.AppendHeader(nil, &h, false)
				buf = wire.AppendFrame(buf, 0, []byte{0xa0}) // {}
				if _, err := st.Write(buf); err != nil {
					t.Fatal(err)
				}
				st.CloseWrite()
				streams = append(streams, st)
			}
			decide <- status.New(status.PermissionDenied, "go away\x00\n")
			for i, st := range streams {
				_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
				var b [64]byte
				n, err := st.Read(b[:])
				var ce *transport.ConnError
				if !errors.As(err, &ce) || ce.Code != transport.ConnDenied {
					t.Fatalf("stream %d: read %d bytes %x, %v; want the connection closed with DENIED", i, n, b[:n], err)
				}
				if i == 0 && ce.Reason != "connection refused: go away??" {
					t.Errorf("close reason %q", ce.Reason)
				}
			}
			if calls, admits := e.svc.calls.Load(), e.admits.Load(); calls != 0 || admits != 0 {
				t.Errorf("a refused peer's streams were served: %d calls, %d admissions", calls, admits)
			}
			if m := e.srv.Metrics(); m.StreamsOpened != 0 || m.ConnsGateRefused != 1 {
				t.Errorf("metrics %+v: want no stream served, 1 refusal", m)
			}
		})
	}
}

// TestConnGateRateLimit: ConnRateLimit limits each source address over
// QUIC (every client is on 127.0.0.1), and each endpoint id through a
// relay (which hides the address); a refusal is UNAVAILABLE.
func TestConnGateRateLimit(t *testing.T) {
	t.Run("quic", func(t *testing.T) {
		e := newGateEnv(t, transports[1], aster.WithConnGate(aster.ConnRateLimit(0.001, 2)))
		for n := 2; n <= 3; n++ {
			if _, err := aster.CallUnary[Msg](ctxT(t), e.client(t, n), "Test.echo", &Msg{}); err != nil {
				t.Fatalf("client %d: %v", n, err)
			}
		}
		_, err := aster.CallUnary[Msg](ctxT(t), e.client(t, 4), "Test.echo", &Msg{})
		wantCode(t, err, status.Unavailable)
		if !strings.Contains(err.Error(), "too many connections from this address") {
			t.Errorf("refusal %q", err)
		}
	})
	t.Run("relay", func(t *testing.T) {
		e := newGateEnv(t, relayTransport, aster.WithConnGate(aster.ConnRateLimit(0.001, 1)))
		for n := 2; n <= 3; n++ {
			if _, err := aster.CallUnary[Msg](ctxT(t), e.client(t, n), "Test.echo", &Msg{}); err != nil {
				t.Fatalf("client %d: %v", n, err)
			}
		}
		_, err := aster.CallUnary[Msg](ctxT(t), e.client(t, 2), "Test.echo", &Msg{})
		wantCode(t, err, status.Unavailable)
	})
}

// TestConnGateOptions: bad gate options make Serve fail.
func TestConnGateOptions(t *testing.T) {
	for _, opt := range []aster.ServerOption{
		aster.WithConnGate(nil),
		aster.WithConnGateTimeout(0),
		aster.WithConnGateTimeout(-time.Second),
		aster.WithConnGateTimeout(aster.MaxConnGateTimeout + 1),
	} {
		srv := aster.NewServer(opt, aster.WithLogger(quietLogger()))
		ln, _ := transports[0].setup(t, srv.SecretKey())
		if err := srv.Serve(ln); err == nil || errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve with a bad option: %v", err)
		}
	}
	if aster.NewServer().ConnGated() || !aster.NewServer(aster.WithConnGate(aster.AllowPeers())).ConnGated() {
		t.Error("ConnGated is wrong")
	}
}
