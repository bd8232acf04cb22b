package aster_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/transport/webtransport"
	"github.com/aster-go/aster/trust"
)

// The end-to-end tests that run forEachTransport (unary, server, client
// and bidirectional streams, sessions, deadlines, cancellation, limits,
// contract, shutdown) also run over WebTransport.
func init() {
	transports = append(transports, transportKind{"webtransport", func(t testing.TB, k trust.SecretKey) (transport.Listener, func(trust.SecretKey) transport.Dialer) {
		ln, err := webtransport.Listen("127.0.0.1:0", k, nil)
		if err != nil {
			t.Fatal(err)
		}
		return ln, func(ck trust.SecretKey) transport.Dialer {
			d := webtransport.NewDialer(ck, nil)
			t.Cleanup(func() { d.Close() })
			return d
		}
	}})
}

func webTransportKind(t *testing.T) transportKind {
	for _, tk := range transports {
		if tk.name == "webtransport" {
			return tk
		}
	}
	t.Fatal("no webtransport transport registered")
	return transportKind{}
}

func TestWebTransportPeerMismatchUnauthenticated(t *testing.T) {
	e := newEnv(t, webTransportKind(t))
	wrong := e.addr
	wrong.ID = trust.IDOf(testutil.Key(t, 99))
	_, err := aster.DialAddress(ctxT(t), wrong, aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer { return webtransport.NewDialer(k, nil) }))
	wantCode(t, err, status.Unauthenticated)
	t.Logf("mismatch: %v", err)
}

// TestServeQUICAndWebTransport serves one Server on both transports at once:
// the same handlers, middleware and admission, one merged address; a client
// given a WebTransport dialer reaches it by its WebTransport URL alone.
func TestServeQUICAndWebTransport(t *testing.T) {
	key := testutil.Key(t, 1)
	var (
		mu   sync.Mutex
		seen []string
	)
	admitCh := make(chan trust.EndpointID, 4)
	mw := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, st handler.Stream) error {
			mu.Lock()
			seen = append(seen, st.Method().Name)
			mu.Unlock()
			return next.ServeRPC(ctx, st)
		})
	}
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()), aster.WithMiddleware(mw),
		aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
			admitCh <- c.RemoteID()
			return handler.Peer{ID: c.RemoteID(), Addr: c.RemoteAddr(), Capabilities: []string{"ops.status"}}, nil
		}))
	ts := newTestService()
	guarded := handler.NewService("Guarded", 1).
		Handle("status", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }), handler.Requires(trust.Cap("ops.status"))).
		Handle("admin", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }), handler.Requires(trust.Cap("ops.admin")))
	srv.MustRegister(ts.service(), guarded)
	qln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	wln, err := webtransport.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(qln) }()
	go func() { errs <- srv.Serve(wln) }()
	t.Cleanup(func() {
		srv.Close()
		for range 2 {
			if err := <-errs; !errors.Is(err, aster.ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	waitFor(t, func() bool { a := srv.Address(); return len(a.Direct) > 0 && a.WebTransport != "" }, "both listeners in the address")
	full := srv.Address()
	if full.WebTransport != wln.URL() || len(full.CertHashes) != 2 || full.CertHashes[0] != wln.CertHashes()[0] {
		t.Fatalf("server address %+v does not carry the WebTransport URL and hashes", full)
	}
	parsed, err := aster.ParseAddress(full.String())
	if err != nil || parsed.WebTransport != full.WebTransport || len(parsed.CertHashes) != 2 {
		t.Fatalf("address round trip: %+v, %v", parsed, err)
	}

	wtOnly := aster.Address{ID: full.ID, WebTransport: full.WebTransport, CertHashes: full.CertHashes}
	quicOnly := aster.Address{ID: full.ID, Direct: full.Direct}
	// The core links no WebTransport client: an address reachable only over
	// WebTransport needs a dialer passed in.
	_, err = aster.Dial(ctxT(t), wtOnly.String())
	if status.CodeOf(err) != status.InvalidArgument || !strings.Contains(err.Error(), "WithDialerFor") {
		t.Fatalf("WebTransport-only address without a dialer: %v, want INVALID_ARGUMENT naming WithDialerFor", err)
	}
	wtDialer := aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer { return webtransport.NewDialer(k, nil) })
	for name, a := range map[string]aster.Address{"webtransport": wtOnly, "quic": quicOnly} {
		ck := testutil.Key(t, 7)
		opts := []aster.ClientOption{aster.WithSecretKey(ck)}
		if name == "webtransport" {
			opts = append(opts, wtDialer)
		}
		c, err := aster.Dial(ctxT(t), a.String(), opts...)
		if err != nil {
			t.Fatalf("%s: Dial: %v", name, err)
		}
		got, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{Text: name})
		if err != nil || got.Text != name {
			t.Fatalf("%s: echo = %+v, %v", name, got, err)
		}
		// Capabilities granted at admission apply per method.
		if _, err := aster.CallUnary[Msg](ctxT(t), c, "Guarded.status", &Msg{}); err != nil {
			t.Errorf("%s: granted capability: %v", name, err)
		}
		_, err = aster.CallUnary[Msg](ctxT(t), c, "Guarded.admin", &Msg{})
		if status.CodeOf(err) != status.PermissionDenied {
			t.Errorf("%s: missing capability: %v, want PERMISSION_DENIED", name, err)
		}
		select {
		case id := <-admitCh:
			if id != trust.IDOf(ck) {
				t.Errorf("%s: admission saw %s, want the client's key %s", name, id.Short(), trust.IDOf(ck).Short())
			}
		default:
			t.Errorf("%s: admission did not run", name)
		}
		c.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	// The denied call reaches the middleware too (so logging and audit
	// record it), though never its handler.
	if want := "[echo status admin echo status admin]"; fmt.Sprint(seen) != want {
		t.Errorf("server middleware saw %v, want %s", seen, want)
	}
}

// TestWebTransportBadInput sends garbage, header-less streams and broken
// frames over a WebTransport connection: each call is refused with a clear
// status, and neither that connection nor other clients are affected.
func TestWebTransportBadInput(t *testing.T) {
	e := newEnv(t, webTransportKind(t))
	d := webtransport.NewDialer(testutil.Key(t, 78), nil)
	t.Cleanup(func() { d.Close() })
	c, err := d.Dial(ctxT(t), e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(transport.ConnNoError, "") })
	echo := header(t, wire.Header{Service: "Test", Method: "echo"})
	for _, tc := range []struct {
		name string
		raw  []byte
		want status.Code
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), status.ResourceExhausted},
		{"zero length", frame(0, 0, nil), status.InvalidArgument},
		{"unknown flags", frame(2, 0x40, []byte{0}), status.InvalidArgument},
		{"no header", data(t, map[string]any{"text": "x"}), status.InvalidArgument},
		{"header not CBOR", frame(4, wire.FlagHeader, []byte{0xff, 0xff, 0xff}), status.InvalidArgument},
		{"huge length", frame(0xFFFFFFFF, 0, nil), status.ResourceExhausted},
		{"truncated data frame", append(echo, frame(100, 0, []byte{1, 2, 3})...), status.InvalidArgument},
		{"missing request", echo, status.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err, _ := exchange(t, c, tc.raw, true)
			if got := status.CodeOf(err); got != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// A stream that is opened and reset before any header.
	st, err := c.OpenStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	st.Write([]byte{1})
	st.Reset(transport.CodeCancel)

	err, frames := exchange(t, c, append(header(t, wire.Header{Service: "Test", Method: "echo"}), data(t, Msg{Text: "ok"})...), true)
	if err != nil || len(frames) != 1 {
		t.Fatalf("valid raw call after the bad ones: %v, %d frames", err, len(frames))
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
		t.Fatal(err)
	}
}
