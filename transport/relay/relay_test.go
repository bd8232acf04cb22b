package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

var quietLog = slog.New(slog.DiscardHandler)

// testRelay is a relay serving on loopback for one test.
type testRelay struct {
	srv *Server
	url string // pinned URL
	ln  net.Listener
}

func startRelay(t testing.TB, cfg ServerConfig) *testRelay {
	t.Helper()
	if len(cfg.Certificate.Certificate) == 0 {
		cert, err := SelfSignedCertificate()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificate = cert
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLog
	}
	return startRelayOn(t, cfg, "127.0.0.1:0")
}

func startRelayOn(t testing.TB, cfg ServerConfig, addr string) *testRelay {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// The address-observation service on the same port number, over UDP.
	udp, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ln) }()
	go func() { done <- srv.ServeUDP(udp) }()
	r := &testRelay{srv: srv, url: PinnedURL(ln.Addr().String(), cfg.Certificate.Certificate[0]), ln: ln}
	t.Cleanup(func() {
		srv.Close()
		for range 2 {
			if err := <-done; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		}
	})
	return r
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func clientCfg() *Config { return &Config{Logger: quietLog} }

// dialRelay connects to r as the test key of seed, with clientCfg, and
// closes the connection when the test ends.
func dialRelay(t testing.TB, r *testRelay, seed int) *PacketConn {
	t.Helper()
	pc, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, seed), clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func TestConformance(t *testing.T) {
	testutil.TestTransport(t, func(t *testing.T) testutil.Setup {
		r := startRelay(t, ServerConfig{})
		ln, err := Listen(ctxT(t), r.url, testutil.Key(t, 1), clientCfg())
		if err != nil {
			t.Fatal(err)
		}
		d := NewDialer(testutil.Key(t, 2), clientCfg())
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("Dialer.Close: %v", err)
			}
		})
		return testutil.Setup{
			Dialer: d, DialerID: testutil.ID(t, 2), Listener: ln,
			// A relay that routes the claimed id to another endpoint (as a
			// malicious relay could) does not fool the dialer: the peer's
			// key is checked end to end.
			Impostor: func(t *testing.T, claimed trust.EndpointID) discovery.EndpointAddr {
				r.srv.mu.Lock()
				r.srv.routes = map[trust.EndpointID]trust.EndpointID{claimed: testutil.ID(t, 1)}
				r.srv.mu.Unlock()
				return discovery.EndpointAddr{ID: claimed, Relay: r.url}
			},
		}
	})
}

func TestListenerAddr(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	ln, err := Listen(ctxT(t), r.url, testutil.Key(t, 1), clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := ln.Addr()
	if a.ID != testutil.ID(t, 1) || a.Relay != r.url || len(a.Direct) != 0 {
		t.Fatalf("Addr() = %+v", a)
	}
	back, err := discovery.ParseAddress(a.String())
	if err != nil || back.Relay != r.url {
		t.Fatalf("address %s parsed back as %+v, %v", a, back, err)
	}
}

func TestParseURL(t *testing.T) {
	pin := strings.Repeat("ab", 32)
	good := map[string]string{
		"https://relay.example:3340":               "relay.example:3340",
		"https://relay.example":                    "relay.example:443",
		"https://127.0.0.1:3340/#sha256=" + pin:    "127.0.0.1:3340",
		"https://[::1]:3340#sha256=" + pin:         "[::1]:3340",
		"https://relay.example:3340#sha256=" + pin: "relay.example:3340",
	}
	for s, hp := range good {
		u, err := ParseURL(s)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", s, err)
			continue
		}
		if u.HostPort() != hp || u.String() != s || u.HasPin != strings.Contains(s, "#") {
			t.Errorf("ParseURL(%q) = %s pin %v", s, u.HostPort(), u.HasPin)
		}
	}
	for _, s := range []string{
		"", "relay.example:3340", "http://relay.example", "https://", "https://relay.example:0",
		"https://relay.example:99999", "https://relay.example/path", "https://relay.example?x=1",
		"https://relay.example#sha256=abc", "https://relay.example#pin=" + pin, "https://u@relay.example",
	} {
		if _, err := ParseURL(s); err == nil {
			t.Errorf("ParseURL(%q) succeeded", s)
		}
	}
}

func TestPinMismatch(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	other, err := SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	u := PinnedURL(r.ln.Addr().String(), other.Certificate[0])
	_, err = DialPacketConn(ctxT(t), u, testutil.Key(t, 1), clientCfg())
	if err == nil || !strings.Contains(err.Error(), "does not match the pinned") {
		t.Fatalf("DialPacketConn with the wrong pin: %v", err)
	}
	// Without a pin the self-signed certificate does not verify either.
	_, err = DialPacketConn(ctxT(t), "https://"+r.ln.Addr().String(), testutil.Key(t, 1), clientCfg())
	var uerr *tls.CertificateVerificationError
	if !errors.As(err, &uerr) {
		t.Fatalf("DialPacketConn without a pin: %v, want a certificate verification error", err)
	}
}

// rawSession connects to the relay by hand, for protocol-level tests.
type rawSession struct {
	conn *tls.Conn
	br   *bufio.Reader
	buf  []byte
}

func dialRaw(t *testing.T, r *testRelay) *rawSession {
	t.Helper()
	u, _ := ParseURL(r.url)
	conn, err := tls.Dial("tcp", u.HostPort(), clientTLSConfig(u, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawSession{conn: conn, br: bufio.NewReader(conn), buf: make([]byte, MaxFrameBody)}
}

func (s *rawSession) read(t *testing.T) (byte, []byte) {
	t.Helper()
	typ, body, err := readFrame(s.br, s.buf)
	if err != nil {
		t.Fatalf("reading a frame: %v", err)
	}
	return typ, append([]byte(nil), body...)
}

func (s *rawSession) exporter(t *testing.T) []byte {
	cs := s.conn.ConnectionState()
	e, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestProofOfPossession(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	victim := testutil.Key(t, 1)
	attacker := testutil.Key(t, 2)

	// The attacker claims the victim's id but can only sign with its own key.
	s := dialRaw(t, r)
	typ, ch := s.read(t)
	if typ != frameChallenge || len(ch) != 33 {
		t.Fatalf("first frame %#x %x", typ, ch)
	}
	f := registerFrame(attacker, ch[1:], s.exporter(t))
	vid := trust.IDOf(victim)
	copy(f[4:4+32], vid[:]) // claim the victim's id with the attacker's signature
	if _, err := s.conn.Write(f); err != nil {
		t.Fatal(err)
	}
	typ, body := s.read(t)
	if typ != frameClose || CloseCode(body[0]) != CloseBadProof {
		t.Fatalf("registering another id answered %#x %q", typ, body)
	}
	if _, err := s.br.ReadByte(); err != io.EOF {
		t.Errorf("connection not closed after the refusal: %v", err)
	}

	// A signature replayed from another TLS connection (another exporter)
	// is refused too: the proof is bound to the connection.
	s = dialRaw(t, r)
	_, ch = s.read(t)
	if _, err := s.conn.Write(registerFrame(victim, ch[1:], make([]byte, exporterLen))); err != nil {
		t.Fatal(err)
	}
	if typ, body := s.read(t); typ != frameClose || CloseCode(body[0]) != CloseBadProof {
		t.Fatalf("a proof for another connection answered %#x %q", typ, body)
	}

	// Through the client code: a key that does not match is refused the
	// same way, and a right one is accepted.
	if st := r.srv.Stats(); st.Registrations != 0 || st.Refused < 2 {
		t.Errorf("stats after refusals: %+v", st)
	}
	pc, err := DialPacketConn(ctxT(t), r.url, victim, clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if ids := r.srv.Endpoints(); len(ids) != 1 || ids[0] != vid {
		t.Errorf("registered endpoints %v, want the victim only", ids)
	}
}

// exchange sends one datagram from a to b and waits for it.
func recvWithin(t *testing.T, pc *PacketConn, d time.Duration) ([]byte, net.Addr, error) {
	t.Helper()
	buf := make([]byte, MaxDatagramSize)
	_ = pc.SetReadDeadline(time.Now().Add(d))
	defer pc.SetReadDeadline(time.Time{})
	n, from, err := pc.ReadFrom(buf)
	return buf[:n], from, err
}

func TestDatagramsAndUnknownPeers(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	a := dialRelay(t, r, 1)
	b := dialRelay(t, r, 2)

	// To an id nobody registered: dropped and counted, nothing arrives.
	unknown := &Addr{ID: testutil.ID(t, 3), Relay: r.url}
	if _, err := a.WriteTo([]byte("to nobody"), unknown); err != nil {
		t.Fatal(err)
	}
	waitStats(t, r.srv, "the unknown-peer drop", func(st Stats) bool { return st.Dropped[DropUnknownPeer] == 1 })

	if _, err := a.WriteTo([]byte("hello b"), &Addr{ID: testutil.ID(t, 2), Relay: r.url}); err != nil {
		t.Fatal(err)
	}
	got, from, err := recvWithin(t, b, 10*time.Second)
	if err != nil || string(got) != "hello b" {
		t.Fatalf("b read %q, %v", got, err)
	}
	if fa, ok := from.(*Addr); !ok || fa.ID != testutil.ID(t, 1) || fa.Relay != r.url {
		t.Fatalf("from %v", from)
	}
	// The reply goes to the address ReadFrom returned.
	if _, err := b.WriteTo([]byte("hello a"), from); err != nil {
		t.Fatal(err)
	}
	if got, _, err := recvWithin(t, a, 10*time.Second); err != nil || string(got) != "hello a" {
		t.Fatalf("a read %q, %v", got, err)
	}
	// The unknown peer's datagram never arrived anywhere.
	if got, _, err := recvWithin(t, a, 50*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a read %q, %v; want a timeout", got, err)
	}

	// Bad writes.
	if _, err := a.WriteTo(make([]byte, MaxDatagramSize+1), from); err == nil {
		t.Error("oversized datagram accepted")
	}
	if _, err := a.WriteTo([]byte("x"), &net.UDPAddr{}); err == nil {
		t.Error("UDP address accepted")
	}
	st := r.srv.Stats()
	if st.PacketsForwarded != 2 || st.Endpoints != 2 {
		t.Errorf("stats %+v", st)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitStats waits until cond holds for s's Stats, checking again after
// each change the relay reports.
func waitStats(t *testing.T, s *Server, what string, cond func(Stats) bool) {
	t.Helper()
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	s.statsHook.Store(&notify)
	defer s.statsHook.Store(nil)
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for !cond(s.Stats()) {
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s; stats %+v", what, s.Stats())
		}
	}
}

func TestBandwidthLimit(t *testing.T) {
	r := startRelay(t, ServerConfig{BytesPerSecond: 10000, Burst: 10000})
	a := dialRelay(t, r, 1)
	dialRelay(t, r, 2) // the receiver
	to := &Addr{ID: testutil.ID(t, 2), Relay: r.url}
	// 100 datagrams of 1000 bytes at once: the burst of 10000 bytes lets
	// about 10 through (a few more if the writes spread over time); the
	// rest exceed the limit and are dropped.
	for range 100 {
		if _, err := a.WriteTo(make([]byte, 1000), to); err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, r.srv, "all 100 datagrams to be handled", func(st Stats) bool {
		return int64(st.PacketsForwarded)+st.Dropped[DropRateLimit] == 100
	})
	st := r.srv.Stats()
	if st.PacketsForwarded < 10 || st.Dropped[DropRateLimit] < 50 {
		t.Errorf("forwarded %d, rate-limited %d; want about 10 and 90", st.PacketsForwarded, st.Dropped[DropRateLimit])
	}
}

func TestPeerLimit(t *testing.T) {
	r := startRelay(t, ServerConfig{MaxPeersPerEndpoint: 2})
	var pcs []*PacketConn
	for i := 1; i <= 4; i++ {
		pc, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, i), clientCfg())
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		pcs = append(pcs, pc)
	}
	for i := 2; i <= 4; i++ {
		if _, err := pcs[0].WriteTo([]byte("hi"), &Addr{ID: testutil.ID(t, i), Relay: r.url}); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{1, 2} {
		if got, _, err := recvWithin(t, pcs[i], 10*time.Second); err != nil || string(got) != "hi" {
			t.Fatalf("peer %d read %q, %v", i+1, got, err)
		}
	}
	waitStats(t, r.srv, "the third peer to be refused", func(st Stats) bool { return st.Dropped[DropPeerLimit] == 1 })
	if _, _, err := recvWithin(t, pcs[3], 50*time.Millisecond); !isTimeout(err) {
		t.Fatalf("third peer read: %v, want a timeout", err)
	}
}

func TestConnLimits(t *testing.T) {
	r := startRelay(t, ServerConfig{MaxConnsPerIP: 2})
	dialRelay(t, r, 1)
	b := dialRelay(t, r, 2)
	if _, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 3), clientCfg()); err == nil {
		t.Fatal("a third connection from one IP was accepted with MaxConnsPerIP 2")
	}
	b.Close()
	waitStats(t, r.srv, "the closed connection to be released", func(st Stats) bool { return st.Conns == 1 })
	c, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 3), clientCfg())
	if err != nil {
		t.Fatalf("after a connection closed: %v", err)
	}
	c.Close()
}

func TestReplacedRegistration(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	first := dialRelay(t, r, 1)
	dialRelay(t, r, 1) // the second registration of the same id
	// The first one learns it was replaced and does not fight back.
	_, _, err := recvWithin(t, first, 10*time.Second)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseReplaced {
		t.Fatalf("replaced connection read: %v, want a CloseError with CloseReplaced", err)
	}
	if _, err := first.WriteTo([]byte("x"), &Addr{ID: testutil.ID(t, 2)}); !errors.As(err, &ce) {
		t.Errorf("write after replacement: %v", err)
	}
	waitStats(t, r.srv, "one registration", func(st Stats) bool { return st.Endpoints == 1 })
}

func TestReconnect(t *testing.T) {
	cert, err := SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := ServerConfig{Certificate: cert, Logger: quietLog}
	r := startRelayOn(t, cfg, "127.0.0.1:0")
	addr := r.ln.Addr().String()
	a := dialRelay(t, r, 1)
	b := dialRelay(t, r, 2)

	// The relay restarts on the same address with the same certificate.
	if err := r.srv.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	r2 := startRelayOn(t, cfg, addr)
	waitStats(t, r2.srv, "both endpoints to register again", func(st Stats) bool { return st.Endpoints == 2 })
	if _, err := a.WriteTo([]byte("after restart"), &Addr{ID: testutil.ID(t, 2), Relay: r.url}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := recvWithin(t, b, 10*time.Second); err != nil || string(got) != "after restart" {
		t.Fatalf("b read %q, %v", got, err)
	}
	// Both sides count a reconnection before they use the new connection
	// (the relay registers them slightly earlier), so the counts are
	// final once a datagram went through.
	if a.Reconnects() != 1 || b.Reconnects() != 1 {
		t.Errorf("reconnects %d and %d, want 1", a.Reconnects(), b.Reconnects())
	}
}

func TestHealthAndMetrics(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	dialRelay(t, r, 1)
	hs := httptest.NewServer(r.srv.Handler())
	defer hs.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	code, body := get("/metrics")
	for _, want := range []string{"aster_relay_endpoints 1\n", "aster_relay_registrations_total 1\n", `aster_relay_packets_dropped_total{reason="unknown_peer"} 0`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q:\n%s", code, want, body)
		}
	}
	if err := r.srv.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("/healthz"); code != 503 {
		t.Errorf("/healthz after Shutdown: %d", code)
	}
}

func TestProtocolErrors(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	key := testutil.Key(t, 1)
	register := func(t *testing.T) *rawSession {
		s := dialRaw(t, r)
		_, ch := s.read(t)
		if _, err := s.conn.Write(registerFrame(key, ch[1:], s.exporter(t))); err != nil {
			t.Fatal(err)
		}
		if typ, _ := s.read(t); typ != frameAccepted {
			t.Fatalf("registration answered %#x", typ)
		}
		return s
	}
	expectClose := func(t *testing.T, s *rawSession, code CloseCode) {
		t.Helper()
		for {
			typ, body := s.read(t)
			if typ == frameClose {
				if CloseCode(body[0]) != code {
					t.Fatalf("CLOSE %v %q, want %v", CloseCode(body[0]), body[1:], code)
				}
				return
			}
		}
	}

	t.Run("unknown optional frames are ignored", func(t *testing.T) {
		s := register(t)
		ping := appendFrame(nil, framePing, []byte("12345678"))
		if _, err := s.conn.Write(append(appendFrame(nil, 0x9f, []byte("future")), ping...)); err != nil {
			t.Fatal(err)
		}
		if typ, body := s.read(t); typ != framePong || string(body) != "12345678" {
			t.Fatalf("answer %#x %q, want PONG", typ, body)
		}
	})
	for name, f := range map[string][]byte{
		"oversized frame":       {frameSend, 0xff, 0xff},
		"unknown type":          appendFrame(nil, 0x42, nil),
		"SEND without data":     appendFrame(nil, frameSend, make([]byte, idLen)),
		"REGISTER after":        appendFrame(nil, frameRegister, make([]byte, 97)),
		"short PING":            appendFrame(nil, framePing, []byte{1}),
		"RECV from an endpoint": appendFrame(nil, frameRecv, make([]byte, idLen+1)),
	} {
		t.Run(name, func(t *testing.T) {
			s := register(t)
			if _, err := s.conn.Write(f); err != nil {
				t.Fatal(err)
			}
			expectClose(t, s, CloseProtocol)
		})
	}
	t.Run("no REGISTER", func(t *testing.T) {
		s := dialRaw(t, r)
		s.read(t)
		if _, err := s.conn.Write(appendFrame(nil, framePing, []byte("12345678"))); err != nil {
			t.Fatal(err)
		}
		expectClose(t, s, CloseProtocol)
	})
	t.Run("wrong ALPN", func(t *testing.T) {
		u, _ := ParseURL(r.url)
		conf := clientTLSConfig(u, nil)
		conf.NextProtos = []string{"h2"}
		if c, err := tls.Dial("tcp", u.HostPort(), conf); err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			typ, _, err := readFrame(bufio.NewReader(c), make([]byte, MaxFrameBody))
			c.Close()
			if err == nil && typ != frameClose {
				t.Fatalf("a connection without the relay ALPN got frame %#x", typ)
			}
		}
	})
}
