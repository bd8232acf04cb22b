package webtransport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	wt "github.com/quic-go/webtransport-go"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
)

// fakeClock is a settable clock for certificate rotation.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// checkCert checks the browser rules and the endpoint signature of c at now.
func checkCert(t *testing.T, l *Listener, c *serverCert, now time.Time) {
	t.Helper()
	leaf := c.tls.Leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("certificate key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if v := leaf.NotAfter.Sub(leaf.NotBefore); v > MaxCertLifetime {
		t.Errorf("certificate valid for %v, more than 14 days", v)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		t.Errorf("certificate served at %v is valid only %v..%v", now, leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.NotAfter.Before(c.rotateAt) {
		t.Errorf("certificate expires at %v, before it is replaced at %v", leaf.NotAfter, c.rotateAt)
	}
	if h := sha256.Sum256(c.tls.Certificate[0]); h != c.hash {
		t.Error("published hash is not the SHA-256 of the DER certificate")
	}
	if !verifyCertSig(l.id, c.hash, c.sig) {
		t.Error("endpoint key signature over the certificate hash does not verify")
	}
}

func TestCertificateRotation(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	l, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	dial := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		res := make(chan transport.Conn, 1)
		go func() {
			c, _ := l.Accept(ctx)
			res <- c
		}()
		c, err := d.Dial(ctx, l.Addr())
		if err != nil {
			t.Fatalf("%s: Dial: %v", what, err)
		}
		// Close only after Accept: a connection the client closes first may
		// be dropped before the listener queues it.
		sc := <-res
		c.Close(transport.ConnNoError, "")
		if sc == nil {
			t.Fatalf("%s: Accept failed", what)
		}
		sc.Close(transport.ConnNoError, "")
	}

	h0 := l.CertHashes()
	cur, err := l.certs.current()
	if err != nil {
		t.Fatal(err)
	}
	if len(h0) != 2 || h0[0] != cur.hash || h0[0] == h0[1] {
		t.Fatalf("hashes %v: want [served, next]", h0)
	}
	checkCert(t, l, cur, clock.Now())
	checkCert(t, l, l.certs.next, l.certs.next.servedAt)
	if a := l.Addr(); a.WebTransport != l.URL() || len(a.CertHashes) != 2 || a.CertHashes[1] != h0[1] {
		t.Errorf("Addr() = %+v", a)
	}
	dial("initial certificate")

	// Just before half the lifetime nothing changes; after it the successor
	// is served and a new successor is published.
	clock.Add(DefaultCertLifetime/2 - time.Second)
	if h := l.CertHashes(); h[0] != h0[0] || h[1] != h0[1] {
		t.Fatalf("rotated early: %v -> %v", h0, h)
	}
	clock.Add(2 * time.Second)
	h1 := l.CertHashes()
	if h1[0] != h0[1] || h1[1] == h0[0] || h1[1] == h0[1] {
		t.Fatalf("after half the lifetime: %v -> %v, want the successor served and a new one published", h0, h1)
	}
	cur, _ = l.certs.current()
	checkCert(t, l, cur, clock.Now())
	dial("rotated certificate")

	// A long jump (nothing consulted the set for weeks) starts over.
	clock.Add(60 * 24 * time.Hour)
	h2 := l.CertHashes()
	if h2[0] == h1[0] || h2[0] == h1[1] || h2[1] == h1[1] {
		t.Fatalf("after a long jump: %v -> %v, want fresh certificates", h1, h2)
	}
	cur, _ = l.certs.current()
	checkCert(t, l, cur, clock.Now())
	dial("after a clock jump")
}

func TestCertLifetimeCapped(t *testing.T) {
	l, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{CertLifetime: 90 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cur, _ := l.certs.current()
	if v := cur.notAfter.Sub(cur.notBefore); v != MaxCertLifetime {
		t.Errorf("validity %v with a 90-day setting, want the 14-day cap", v)
	}
}

// rawSession opens a WebTransport session to l without running the client
// side of the identity exchange, and returns the challenge stream.
func rawSession(t *testing.T, l *Listener) (*wt.Session, *wt.Stream, *challenge) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	u, _ := url.Parse(l.URL())
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quicgo.Transport{Conn: udp}
	t.Cleanup(func() { tr.Close(); udp.Close() })
	ua, _ := net.ResolveUDPAddr("udp", u.Host)
	cfg := (*Config)(nil).withDefaults()
	qc, err := tr.Dial(ctx, ua, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}, cfg.quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	cc, err := (&wt.Transport{}).NewClientConn(qc)
	if err != nil {
		t.Fatal(err)
	}
	_, sess, err := cc.Dial(ctx, l.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sess.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := readChallenge(st)
	if err != nil {
		t.Fatal(err)
	}
	if ch.server != l.id {
		t.Fatalf("challenge names %s, want the listener's id", ch.server.Short())
	}
	return sess, st, ch
}

// waitRefused waits for the server to close sess and checks the code.
func waitRefused(t *testing.T, what string, sess *wt.Session) {
	t.Helper()
	select {
	case <-sess.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: session still open", what)
	}
	_, err := sess.AcceptStream(context.Background())
	var se *wt.SessionError
	if !errors.As(err, &se) || se.ErrorCode != wt.SessionErrorCode(transport.ConnRefused) || !se.Remote {
		t.Fatalf("%s: session ended with %v, want a remote close with ConnRefused", what, err)
	}
	t.Logf("%s: refused: %q", what, se.Message)
}

// TestBadIdentity checks that sessions that break the identity exchange are
// refused and never accepted, without affecting a good client.
func TestBadIdentity(t *testing.T) {
	l, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{HandshakeTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	accepted := make(chan transport.Conn, 8)
	go func() {
		for {
			c, err := l.Accept(ctx)
			if err != nil {
				return
			}
			accepted <- c
		}
	}()

	garbage := make([]byte, proofLen)
	_, _ = rand.Read(garbage)
	garbage[0] = identityVersion
	client := testutil.Key(t, 2)
	cases := map[string]func(st *wt.Stream, ch *challenge){
		"garbage proof": func(st *wt.Stream, _ *challenge) { st.Write(garbage); st.Close() },
		"short proof":   func(st *wt.Stream, _ *challenge) { st.Write(garbage[:40]); st.Close() },
		"long proof": func(st *wt.Stream, ch *challenge) {
			st.Write(signProof(client, trust2(client), l.id, ch.nonce))
			st.Write([]byte{0})
			st.Close()
		},
		"wrong version": func(st *wt.Stream, ch *challenge) {
			p := signProof(client, trust2(client), l.id, ch.nonce)
			p[0] = 2
			st.Write(p)
			st.Close()
		},
		"proof for another server": func(st *wt.Stream, ch *challenge) {
			st.Write(signProof(client, trust2(client), testutil.ID(t, 9), ch.nonce))
			st.Close()
		},
		"replayed nonce": func(st *wt.Stream, _ *challenge) {
			st.Write(signProof(client, trust2(client), l.id, [32]byte{}))
			st.Close()
		},
		"silence":          func(*wt.Stream, *challenge) {}, // times out
		"no FIN":           func(st *wt.Stream, ch *challenge) { st.Write(signProof(client, trust2(client), l.id, ch.nonce)) },
		"stream reset":     func(st *wt.Stream, _ *challenge) { st.CancelWrite(7); st.CancelRead(7) },
		"calls before FIN": func(st *wt.Stream, _ *challenge) { st.Write([]byte("\x05\x00\x00\x00\x04hello")) },
	}
	for name, misbehave := range cases {
		sess, st, ch := rawSession(t, l)
		misbehave(st, ch)
		waitRefused(t, name, sess)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a misbehaving session was accepted (peer %s)", c.RemoteID().Short())
	default:
	}

	// A well-behaved client is unaffected.
	d := NewDialer(client, nil)
	defer d.Close()
	c, err := d.Dial(ctx, l.Addr())
	if err != nil {
		t.Fatalf("good Dial: %v", err)
	}
	defer c.Close(transport.ConnNoError, "")
	select {
	case sc := <-accepted:
		defer sc.Close(transport.ConnNoError, "")
		if sc.RemoteID() != trust2(client) {
			t.Errorf("accepted %s, want the good client", sc.RemoteID().Short())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("good client not accepted")
	}
}

// TestServerKeyMismatch checks that a Dialer rejects a server whose
// challenge signature does not match the dialled id, whether the server
// names another key or forges the signature.
func TestServerKeyMismatch(t *testing.T) {
	l, err := Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	addr := l.Addr()
	addr.ID = testutil.ID(t, 3)
	_, err = d.Dial(t.Context(), addr)
	if !errors.Is(err, transport.ErrPeerMismatch) {
		t.Fatalf("Dial with the wrong id: %v", err)
	}
	t.Logf("mismatch: %v", err)
	// The certificate signature binds the served certificate: a signature
	// over another certificate's hash does not verify.
	cur, _ := l.certs.current()
	if verifyCertSig(l.id, l.certs.next.hash, cur.sig) {
		t.Error("a certificate signature verified for another certificate")
	}
}

func TestBadInput(t *testing.T) {
	if _, err := Listen("127.0.0.1:0", testutil.Key(t, 1)[:10], nil); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Listen with a short key: %v", err)
	}
	bad := append([]byte(nil), testutil.Key(t, 1)...)
	bad[40] ^= 1
	if _, err := Listen("127.0.0.1:0", bad, nil); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Listen with an inconsistent key: %v", err)
	}
	if _, err := Listen("no port", testutil.Key(t, 1), nil); err == nil {
		t.Error("Listen on a malformed address succeeded")
	}
	if _, err := NewDialer(nil, nil).Dial(t.Context(), discovery.EndpointAddr{WebTransport: "https://127.0.0.1:1/aster"}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("Dial with a nil key: %v", err)
	}
	d := NewDialer(testutil.Key(t, 2), nil)
	for _, u := range []string{"", "http://127.0.0.1:1/aster", "https://", "://x"} {
		if _, err := d.Dial(t.Context(), discovery.EndpointAddr{ID: testutil.ID(t, 1), WebTransport: u}); !errors.Is(err, ErrNoAddress) {
			t.Errorf("Dial %q: %v, want ErrNoAddress", u, err)
		}
	}
	// Nothing listens there: the handshake times out.
	d2 := NewDialer(testutil.Key(t, 2), &Config{HandshakeTimeout: 300 * time.Millisecond})
	if _, err := d2.Dial(t.Context(), discovery.EndpointAddr{ID: testutil.ID(t, 1), WebTransport: "https://127.0.0.1:9/aster"}); err == nil {
		t.Error("Dial of a dead address succeeded")
	} else {
		t.Logf("dead address: %v", err)
	}
	d2.Close()
	d.Close()
	if _, err := d.Dial(t.Context(), discovery.EndpointAddr{ID: testutil.ID(t, 1), WebTransport: "https://127.0.0.1:1/aster"}); !errors.Is(err, ErrDialerClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
}

// TestOriginAndPath checks CheckOrigin and that other paths are not served.
func TestOriginAndPath(t *testing.T) {
	l, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{CheckOrigin: func(o string) bool { return o != "" }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	if c, err := d.Dial(t.Context(), l.Addr()); err == nil {
		c.Close(transport.ConnNoError, "")
		t.Error("Dial succeeded although CheckOrigin refuses it")
	}
	l2, err := Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	a := l2.Addr()
	a.WebTransport += "/other"
	if c, err := d.Dial(t.Context(), a); err == nil {
		c.Close(transport.ConnNoError, "")
		t.Error("Dial of another path succeeded")
	} else {
		t.Logf("other path: %v", err)
	}
}

// TestStreamLimit checks that MaxIncomingStreams bounds one connection (the
// session's CONNECT stream counts as one) and not the others.
func TestStreamLimit(t *testing.T) {
	const limit = 5
	cfg := &Config{MaxIncomingStreams: limit}
	l, err := Listen("127.0.0.1:0", testutil.Key(t, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := NewDialer(testutil.Key(t, 2), cfg)
	defer d.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	connect := func() (transport.Conn, transport.Conn) {
		res := make(chan transport.Conn, 1)
		go func() { c, _ := l.Accept(ctx); res <- c }()
		c, err := d.Dial(ctx, l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		s := <-res
		if s == nil {
			t.Fatal("Accept failed")
		}
		t.Cleanup(func() { c.Close(transport.ConnNoError, ""); s.Close(transport.ConnNoError, "") })
		return c, s
	}
	c1, _ := connect()
	for i := range limit - 1 {
		st, err := c1.OpenStream(ctx)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		if _, err := st.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := c1.OpenStream(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("stream beyond the limit: %v, want it to block until the context ends", err)
	}
	// Another connection is not affected.
	c2, s2 := connect()
	st, err := c2.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	got, err := s2.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(got, b); err != nil || b[0] != 'y' {
		t.Fatalf("second connection: %q, %v", b, err)
	}
}

func trust2(k []byte) (id [32]byte) {
	copy(id[:], k[32:])
	return id
}
