package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

var quiet = slog.New(slog.DiscardHandler)

// Msg is the test message.
type Msg struct {
	Text string `cbor:"text"`
	N    int    `cbor:"n"`
}

func (Msg) WireType() string { return "relaytest/Msg" }

// testService has one method of each pattern.
func testService() *handler.Service {
	return handler.NewService("T", 1).
		Handle("echo", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil })).
		Handle("count", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
			for i := range m.N {
				if err := send(&Msg{Text: m.Text, N: i}); err != nil {
					return err
				}
			}
			return nil
		})).
		Handle("tick", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
			// m.N messages, one every 10 ms.
			for i := range m.N {
				if err := send(&Msg{Text: m.Text, N: i}); err != nil {
					return err
				}
				select {
				case <-time.After(10 * time.Millisecond):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})).
		Handle("sum", handler.ClientStream(func(_ context.Context, reqs iter.Seq2[*Msg, error]) (*Msg, error) {
			var out Msg
			for m, err := range reqs {
				if err != nil {
					return nil, err
				}
				out.N += m.N
				out.Text += m.Text
			}
			return &out, nil
		})).
		Handle("chat", handler.BidiStream(func(_ context.Context, b *handler.Bidi[Msg, Msg]) error {
			for m, err := range b.All() {
				if err != nil {
					return err
				}
				if err := b.Send(&Msg{Text: strings.ToUpper(m.Text), N: m.N}); err != nil {
					return err
				}
			}
			return nil
		}))
}

type testRelay struct {
	srv  *relay.Server
	url  string
	addr string
	done chan error
}

func startRelay(t *testing.T, addr string, cfg relay.ServerConfig) *testRelay {
	return startRelayTB(t, addr, cfg)
}

func startRelayTB(t testing.TB, addr string, cfg relay.ServerConfig) *testRelay {
	t.Helper()
	if len(cfg.Certificate.Certificate) == 0 {
		c, err := relay.SelfSignedCertificate()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificate = c
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	srv, err := relay.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &testRelay{srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	r.url = relay.PinnedURL(r.addr, cfg.Certificate.Certificate[0])
	go func() { r.done <- srv.Serve(ln) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *testRelay) stop(t testing.TB) {
	if r.done == nil {
		return
	}
	r.srv.Close()
	if err := <-r.done; !errors.Is(err, relay.ErrServerClosed) {
		t.Errorf("relay Serve: %v", err)
	}
	r.done = nil
}

func startServer(t *testing.T, opts ...aster.ServerOption) aster.Address {
	return startServerTB(t, opts...)
}

func startServerTB(t testing.TB, opts ...aster.ServerOption) aster.Address {
	t.Helper()
	srv := aster.NewServer(append([]aster.ServerOption{aster.WithLogger(quiet)}, opts...)...)
	if err := srv.Register(testService()); err != nil {
		t.Fatal(err)
	}
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			srv.Close()
			if err := <-errc; !errors.Is(err, aster.ErrServerClosed) {
				t.Errorf("ListenAndServe: %v", err)
			}
		})
		return a
	case err := <-errc:
		t.Fatalf("ListenAndServe: %v", err)
	}
	return aster.Address{}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// allPatterns makes one call of each pattern and checks the results.
func allPatterns(t *testing.T, c *aster.Client, text string) {
	t.Helper()
	ctx := ctxT(t)
	got, err := aster.CallUnary[Msg](ctx, c, "T.echo", &Msg{Text: text, N: 7})
	if err != nil || got.Text != text || got.N != 7 {
		t.Fatalf("unary: %+v, %v", got, err)
	}
	ss, err := aster.CallServerStream[Msg](ctx, c, "T.count", &Msg{Text: text, N: 50})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m, err := range ss.All() {
		if err != nil {
			t.Fatalf("server stream: %v", err)
		}
		if m.N != n || m.Text != text {
			t.Fatalf("server stream message %d: %+v", n, m)
		}
		n++
	}
	if n != 50 {
		t.Fatalf("server stream: %d messages", n)
	}
	cs, err := aster.CallClientStream[Msg, Msg](ctx, c, "T.sum")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if err := cs.Send(&Msg{Text: "x", N: i}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := cs.CloseAndRecv()
	if err != nil || sum.N != 55 || sum.Text != strings.Repeat("x", 10) {
		t.Fatalf("client stream: %+v, %v", sum, err)
	}
	bs, err := aster.CallBidiStream[Msg, Msg](ctx, c, "T.chat")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := bs.Send(&Msg{Text: text, N: i}); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Recv()
		if err != nil || m.Text != strings.ToUpper(text) || m.N != i {
			t.Fatalf("bidi %d: %+v, %v", i, m, err)
		}
	}
	if err := bs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Recv(); err != io.EOF {
		t.Fatalf("bidi end: %v", err)
	}
}

// TestCallsThroughRelay serves only through a relay: the address has no
// direct address, and all four patterns work.
func TestCallsThroughRelay(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	addr := startServer(t, aster.WithHomeRelay(r.url), aster.WithIPTransports(false))
	if len(addr.Direct) != 0 || addr.Relay != r.url {
		t.Fatalf("address %+v, want the relay only", addr)
	}
	c, err := aster.Dial(ctxT(t), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allPatterns(t, c, "through the relay")
	if st := r.srv.Stats(); st.PacketsForwarded == 0 || st.Endpoints != 2 {
		t.Errorf("relay stats %+v: want forwarded packets and 2 endpoints", st)
	}
}

// deadUDP returns a UDP address that swallows datagrams: a socket nobody
// reads, as a firewall that drops UDP looks to a dialer.
func deadUDP(t *testing.T) netip.AddrPort {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestFallbackToRelay dials an address whose direct address does not
// answer: the client falls back to the relay without being told.
func TestFallbackToRelay(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	addr := startServer(t, aster.WithHomeRelay(r.url))
	if len(addr.Direct) == 0 || addr.Relay != r.url {
		t.Fatalf("address %+v, want direct addresses and the relay", addr)
	}
	// Direct works: the same address dials and calls.
	c, err := aster.DialAddress(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	allPatterns(t, c, "direct or relay")
	c.Close()

	blocked := addr
	blocked.Direct = []netip.AddrPort{deadUDP(t)}
	before := r.srv.Stats().PacketsForwarded
	c, err = aster.DialAddress(ctxT(t), blocked)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allPatterns(t, c, "fallback")
	if r.srv.Stats().PacketsForwarded == before {
		t.Error("the relay forwarded nothing, yet the direct address was dead")
	}

	// With relays disabled on the client, the dead address is all there is.
	ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	c2, err := aster.DialAddress(ctx, blocked, aster.WithRelayFallback(false))
	if err == nil {
		c2.Close()
		t.Fatal("dial without relay of a dead direct address succeeded")
	}
	// With IP transports disabled, the relay alone works.
	c3, err := aster.DialAddress(ctxT(t), addr, aster.WithIPTransports(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	allPatterns(t, c3, "relay only")
}

// TestEndToEndEncryption runs calls through a relay that tampers with
// packets and records everything it forwards: the peers reject the
// tampered packets (QUIC's packet protection), so the calls still return
// exactly what was sent, and the relay never sees the plaintext.
func TestEndToEndEncryption(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	var mu sync.Mutex
	var seen bytes.Buffer
	var tampered, shortHeader atomic.Int64
	relay.SetTamper(r.srv, func(src, dst trust.EndpointID, pkt []byte) []byte {
		if pkt[0] == 0x00 {
			// A direct-path message (PROTOCOL.md §24): dropped, so that
			// the connection stays on the relay.
			return nil
		}
		mu.Lock()
		seen.Write(pkt)
		mu.Unlock()
		// Flip one bit in the payload of every 4th 1-RTT (short header)
		// packet: the handshake completes, then data packets are altered.
		if pkt[0]&0x80 == 0 && len(pkt) > 40 {
			if shortHeader.Add(1)%4 == 0 {
				pkt[len(pkt)-20] ^= 0x01
				tampered.Add(1)
			}
		}
		return pkt
	})
	addr := startServer(t, aster.WithHomeRelay(r.url), aster.WithIPTransports(false))
	c, err := aster.Dial(ctxT(t), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const secret = "TOP-SECRET-PLAINTEXT-7f3a9c"
	for i := range 5 {
		allPatterns(t, c, fmt.Sprintf("%s-%d", secret, i))
	}
	if tampered.Load() == 0 {
		t.Fatal("no packet was tampered with")
	}
	t.Logf("%d of %d short-header packets tampered with; every call returned what was sent", tampered.Load(), shortHeader.Load())
	mu.Lock()
	defer mu.Unlock()
	for _, s := range []string{secret, "T.echo", "relaytest/Msg", "echo"} {
		if bytes.Contains(seen.Bytes(), []byte(s)) {
			t.Errorf("the relay saw %q in plaintext", s)
		}
	}
	if seen.Len() == 0 {
		t.Error("the relay recorded nothing")
	}
}

// TestRelayRestartMidStream restarts the relay (same address, same
// certificate) while a server stream runs through it: the endpoints
// reconnect and the stream resumes, or the call fails with UNAVAILABLE;
// it never hangs.
func TestRelayRestartMidStream(t *testing.T) {
	cert, err := relay.SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.ServerConfig{Certificate: cert}
	r := startRelay(t, "127.0.0.1:0", cfg)
	addr := startServer(t, aster.WithHomeRelay(r.url), aster.WithIPTransports(false))
	c, err := aster.Dial(ctxT(t), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctxT(t), 45*time.Second)
	defer cancel()
	ss, err := aster.CallServerStream[Msg](ctx, c, "T.tick", &Msg{Text: "tick", N: 60})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var restarted *testRelay
	for m, err := range ss.All() {
		if err != nil {
			if status.CodeOf(err) != status.Unavailable {
				t.Fatalf("after %d messages: %v, want UNAVAILABLE", n, err)
			}
			t.Logf("the call failed cleanly after %d messages: %v", n, err)
			break
		}
		if m.N != n {
			t.Fatalf("message %d has N %d", n, m.N)
		}
		n++
		if n == 10 {
			r.stop(t)
			restarted = startRelay(t, r.addr, cfg)
		}
	}
	if n == 60 {
		t.Logf("the stream resumed after the relay restart: all %d messages arrived", n)
	}
	if n < 10 || restarted == nil {
		t.Fatalf("only %d messages before the restart", n)
	}
	// New calls work through the restarted relay.
	if got, err := aster.CallUnary[Msg](ctxT(t), c, "T.echo", &Msg{Text: "after"}); err != nil || got.Text != "after" {
		t.Fatalf("call after the restart: %+v, %v", got, err)
	}
}

// TestServerConfigRelay drives the relay settings through config.Config as
// ASTER_RELAY_MODE and ASTER_CLEAR_IP_TRANSPORTS would.
func TestServerConfigRelay(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	cfg := config.Config{RelayMode: r.url, ClearIPTransports: true, LogLevel: "error", SecretKey: testutil.Key(t, 9)}
	srv, err := cfg.NewServer(aster.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv.MustRegister(testService())
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	var addr aster.Address
	select {
	case addr = <-ready:
		t.Cleanup(func() {
			srv.Close()
			if err := <-errc; !errors.Is(err, aster.ErrServerClosed) {
				t.Errorf("ListenAndServe: %v", err)
			}
		})
	case err := <-errc:
		t.Fatalf("ListenAndServe: %v", err)
	}
	if addr.Relay != r.url || len(addr.Direct) != 0 || addr.ID != testutil.ID(t, 9) {
		t.Fatalf("address %+v", addr)
	}
	ccfg := config.Config{RelayMode: "disabled", LogLevel: "error"}
	copts, err := ccfg.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctxT(t), 3*time.Second)
	defer cancel()
	if c, err := aster.DialAddress(ctx, addr, copts...); err == nil {
		c.Close()
		t.Fatal("a client with relay_mode disabled reached a relay-only server")
	}
	c, err := aster.DialAddress(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allPatterns(t, c, "config")
}

// TestListenAndServeErrors: a server without any transport, or whose home
// relay cannot be reached or does not present the pinned certificate,
// fails to start with a clear error.
// A server that also listens directly starts when its home relay is down:
// its address carries the relay, it serves direct calls, and it registers
// once the relay comes up.
func TestListenAndServeRelayDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()
	cert, err := relay.SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	url := relay.PinnedURL(deadAddr, cert.Certificate[0])
	addr := startServer(t, aster.WithHomeRelay(url))
	if addr.Relay != url || len(addr.Direct) == 0 {
		t.Fatalf("address %+v, want the direct addresses and the relay", addr)
	}
	c, err := aster.DialAddress(ctxT(t), addr, aster.WithRelayFallback(false))
	if err != nil {
		t.Fatal(err)
	}
	allPatterns(t, c, "direct while the relay is down")
	c.Close()

	// The relay comes up: the server registers, and the relay alone
	// reaches it.
	r := startRelay(t, deadAddr, relay.ServerConfig{Certificate: cert})
	deadline := time.Now().Add(4 * relay.MaxReconnectDelay)
	for r.srv.Stats().Endpoints == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server never registered at its relay once it was up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err = aster.DialAddress(ctxT(t), addr, aster.WithIPTransports(false))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allPatterns(t, c, "relay after it came up")
}

func TestListenAndServeErrors(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	other, err := relay.SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	for name, tc := range map[string]struct {
		opts []aster.ServerOption
		want string
	}{
		"no transport":              {[]aster.ServerOption{aster.WithIPTransports(false)}, "nothing to listen on"},
		"bad URL":                   {[]aster.ServerOption{aster.WithHomeRelay("relay.example:3340")}, "scheme must be https"},
		"wrong pin":                 {[]aster.ServerOption{aster.WithHomeRelay(relay.PinnedURL(r.addr, other.Certificate[0]))}, "does not match the pinned"},
		"relay is down, relay only": {[]aster.ServerOption{aster.WithHomeRelay(relay.PinnedURL(deadAddr, other.Certificate[0])), aster.WithIPTransports(false)}, "connect to " + deadAddr},
	} {
		t.Run(name, func(t *testing.T) {
			srv := aster.NewServer(append([]aster.ServerOption{aster.WithLogger(quiet)}, tc.opts...)...)
			defer srv.Close()
			err := srv.ListenAndServe("127.0.0.1:0", func(aster.Address) { t.Error("ready called") })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ListenAndServe: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
