// Package webtransport is aster's WebTransport transport (HTTP/3, built on
// quic-go/webtransport-go), for browsers and networks where raw QUIC with
// the aster/1 ALPN cannot be used.
//
// The listener serves HTTP/3 on a UDP address and accepts WebTransport
// sessions at one path (default "/aster"); each session runs on its own QUIC
// connection and is one transport.Conn. Its streams are WebTransport
// bidirectional streams, so the aster framing runs on them unchanged.
//
// Identity. Browsers only accept a self-signed certificate through
// serverCertificateHashes, which requires an ECDSA P-256 certificate valid
// for at most 14 days; the listener generates such certificates, serves each
// for half its lifetime and publishes the hashes of the served one and its
// successor (Listener.CertHashes, and in Listener.Addr). The endpoint's
// ed25519 key is proven on top, in an identity exchange on the session's
// first stream (PROTOCOL.md section 18): the server signs the hash of the
// certificate it served, and the client signs a fresh server nonce bound to
// the server's endpoint id. Conn.RemoteID is therefore proven on both sides,
// as on direct QUIC, and a Dial whose peer proves another key fails with an
// error wrapping transport.ErrPeerMismatch.
package webtransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	wt "github.com/quic-go/webtransport-go"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/internal/quicwrap"
	"github.com/aster-go/aster/trust"
)

// ErrInvalidKey is wrapped by errors caused by a secret key that is not a
// well-formed ed25519 private key.
var ErrInvalidKey = errors.New("webtransport: invalid secret key")

// connSlotKey finds a connection's certSlot in its context.
type connSlotKey struct{}

// certSlot records which certificate was served on a QUIC connection.
type certSlot struct {
	mu   sync.Mutex
	cert *serverCert
}

// Listener accepts WebTransport sessions on one UDP socket. It implements
// transport.Listener.
//
// Closing the Listener stops accepting; sessions already accepted keep
// working, and the socket is released when the last of them ends.
type Listener struct {
	key   trust.SecretKey
	id    trust.EndpointID
	cfg   Config
	certs *certSet
	udp   *net.UDPConn
	tr    *quicgo.Transport
	ln    *quicgo.Listener
	wts   *wt.Server
	url   string

	accepted chan *conn
	closedCh chan struct{}
	bg       sync.WaitGroup // accept loop, QUIC connection servers

	mu       sync.Mutex
	closed   bool
	live     int
	released bool
	pending  int // QUIC connections without an identified session yet
}

// connSetup follows a QUIC connection from its handshake to its first
// identified session (setupPending, then setupDone), or to its refusal
// for taking too long (setupExpired).
type connSetup struct{ state atomic.Int32 }

const (
	setupPending = iota
	setupDone
	setupExpired
)

type connSetupKey struct{}

var _ transport.Listener = (*Listener)(nil)

// Listen opens a UDP socket on addr ("host:port"; "" means ":0") and serves
// WebTransport sessions at cfg.Path as the endpoint key. cfg may be nil for
// the defaults.
func Listen(addr string, key trust.SecretKey, cfg *Config) (*Listener, error) {
	id, err := checkKey(key)
	if err != nil {
		return nil, fmt.Errorf("webtransport: listen: %w", err)
	}
	c := cfg.withDefaults()
	if addr == "" {
		addr = ":0"
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("webtransport: listen: %w", err)
	}
	certs, err := newCertSet(key, id, c.CertLifetime, c.Now)
	if err != nil {
		return nil, fmt.Errorf("webtransport: listen: %w", err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("webtransport: listen: %w", err)
	}
	l := &Listener{
		key: key, id: id, cfg: c, certs: certs, udp: udp,
		accepted: make(chan *conn, c.AcceptBacklog),
		closedCh: make(chan struct{}),
	}
	l.url = l.makeURL()
	l.tr = &quicgo.Transport{
		Conn:                udp,
		VerifySourceAddress: quicwrap.VerifySourceAddress(c.UnvalidatedHandshakes),
		ConnContext: func(ctx context.Context, _ *quicgo.ClientInfo) (context.Context, error) {
			ctx = context.WithValue(ctx, connSetupKey{}, &connSetup{})
			return context.WithValue(ctx, connSlotKey{}, &certSlot{}), nil
		},
	}
	tlsConf := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		NextProtos:             []string{http3.NextProtoH3},
		SessionTicketsDisabled: true,
		GetCertificate:         l.getCertificate,
	}
	ln, err := l.tr.Listen(tlsConf, c.quicConfig())
	if err != nil {
		_ = l.tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("webtransport: listen: %w", err)
	}
	l.ln = ln
	mux := http.NewServeMux()
	mux.HandleFunc(c.Path, l.serveSession)
	l.wts = &wt.Server{
		H3: &http3.Server{
			Handler:    mux,
			QUICConfig: c.quicConfig(),
			ConnContext: func(ctx context.Context, qc *quicgo.Conn) context.Context {
				return context.WithValue(ctx, quicConnKey{}, qc)
			},
		},
		CheckOrigin: func(r *http.Request) bool {
			return c.CheckOrigin == nil || c.CheckOrigin(r.Header.Get("Origin"))
		},
	}
	l.bg.Go(l.acceptLoop)
	return l, nil
}

type quicConnKey struct{}

// checkKey validates key and returns its endpoint id.
func checkKey(key trust.SecretKey) (trust.EndpointID, error) {
	if len(key) != 64 {
		return trust.EndpointID{}, fmt.Errorf("%w: %d bytes, want 64", ErrInvalidKey, len(key))
	}
	if k, err := trust.KeyFromSeed(key.Seed()); err != nil || !k.Equal(key) {
		return trust.EndpointID{}, fmt.Errorf("%w: public half does not match the seed", ErrInvalidKey)
	}
	return trust.IDOf(key), nil
}

func (l *Listener) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c, err := l.certs.current()
	if err != nil {
		return nil, err
	}
	if slot, ok := hello.Context().Value(connSlotKey{}).(*certSlot); ok {
		slot.mu.Lock()
		slot.cert = c
		slot.mu.Unlock()
	}
	return c.tls, nil
}

// acceptLoop hands each QUIC connection to the WebTransport server. A
// connection must identify its first session (CONNECT and the identity
// exchange) within setupTimeout, or it is closed: until
// then its peer is a stranger, and HTTP/3 serves each stream it opens
// with a goroutine that waits for the stream's first bytes without a
// deadline. At most MaxPendingConns connections are in that state at
// once; beyond, a new one is closed at once.
func (l *Listener) acceptLoop() {
	for {
		qc, err := l.ln.Accept(context.Background())
		if err != nil {
			return
		}
		cs, _ := qc.Context().Value(connSetupKey{}).(*connSetup)
		if cs == nil || !l.addPending() {
			_ = qc.CloseWithError(quicgo.ApplicationErrorCode(http3.ErrCodeExcessiveLoad), "too many connections setting up")
			continue
		}
		t := time.AfterFunc(l.cfg.setupTimeout(), func() {
			if cs.state.CompareAndSwap(setupPending, setupExpired) {
				l.donePending()
				_ = qc.CloseWithError(quicgo.ApplicationErrorCode(http3.ErrCodeNoError), "no session identified in time")
			}
		})
		context.AfterFunc(qc.Context(), func() {
			t.Stop()
			if cs.state.CompareAndSwap(setupPending, setupExpired) {
				l.donePending()
			}
		})
		l.bg.Go(func() { _ = l.wts.ServeQUICConn(qc) })
	}
}

// addPending counts a connection without an identified session; it
// reports false at MaxPendingConns.
func (l *Listener) addPending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending >= l.cfg.MaxPendingConns {
		return false
	}
	l.pending++
	return true
}

func (l *Listener) donePending() {
	l.mu.Lock()
	l.pending--
	l.mu.Unlock()
}

// identified marks qc's set-up done once one of its sessions proved its
// key; false means qc was refused meanwhile for taking too long.
func (l *Listener) identified(qc *quicgo.Conn) bool {
	cs, _ := qc.Context().Value(connSetupKey{}).(*connSetup)
	if cs == nil {
		return false
	}
	if cs.state.CompareAndSwap(setupPending, setupDone) {
		l.donePending()
		return true
	}
	return cs.state.Load() == setupDone
}

// serveSession upgrades a CONNECT request to a session, runs the identity
// exchange and queues the connection for Accept.
func (l *Listener) serveSession(w http.ResponseWriter, r *http.Request) {
	if l.isClosed() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	qc, _ := r.Context().Value(quicConnKey{}).(*quicgo.Conn)
	if qc == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	slot, _ := qc.Context().Value(connSlotKey{}).(*certSlot)
	var served *serverCert
	if slot != nil {
		slot.mu.Lock()
		served = slot.cert
		slot.mu.Unlock()
	}
	if served == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	sess, err := l.wts.Upgrade(w, r)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		// Out of time (or the listener closed): abort the exchange.
		_ = sess.CloseWithError(wt.SessionErrorCode(transport.ConnRefused), "identity exchange timed out")
	})
	defer stop()
	remote, st, err := l.identify(ctx, sess, served)
	if err != nil {
		// The peer sees the reason; the QUIC connection ends when it has
		// (or after closeLinger).
		_ = newConn(sess, qc, l.id, trust.EndpointID{}).Close(transport.ConnRefused, err.Error())
		return
	}
	c := newConn(sess, qc, l.id, remote)
	if !l.identified(qc) {
		c.forceClose(transport.ConnRefused, "no session identified in time")
		return
	}
	// RESULT: accepted. The client's Dial returns on it; if the connection
	// cannot be queued after all, the client sees it closed with ConnRefused
	// (as on direct QUIC when the accept queue overflows).
	if _, err := st.Write([]byte{resultAccepted}); err != nil {
		c.forceClose(transport.ConnRefused, "identity result not delivered")
		return
	}
	_ = st.Close()
	if !l.enqueue(c) {
		c.Close(transport.ConnShutdown, "listener closed or accept backlog full")
	}
}

// identify runs the server side of the identity exchange.
func (l *Listener) identify(ctx context.Context, sess *wt.Session, served *serverCert) (trust.EndpointID, *wt.Stream, error) {
	st, err := sess.OpenStreamSync(ctx)
	if err != nil {
		return trust.EndpointID{}, nil, fmt.Errorf("opening identity stream: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(dl)
	}
	ch, err := newChallenge(l.id, served.sig)
	if err != nil {
		return trust.EndpointID{}, nil, err
	}
	if _, err := st.Write(ch.marshal()); err != nil {
		return trust.EndpointID{}, nil, fmt.Errorf("writing challenge: %w", err)
	}
	remote, err := readProof(st, l.id, ch.nonce)
	if err != nil {
		st.CancelRead(wt.StreamErrorCode(transport.CodeProtocol))
		return trust.EndpointID{}, nil, err
	}
	_ = st.SetDeadline(time.Time{})
	return remote, st, nil
}

// enqueue queues c for Accept; it reports false after Close or when the
// backlog is full.
func (l *Listener) enqueue(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	select {
	case l.accepted <- c:
		return true
	default:
		return false
	}
}

// Accept waits for the next session that completed the identity exchange.
// After Close it returns an error wrapping transport.ErrListenerClosed.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("webtransport: accept: %w", err)
		}
		select {
		case <-l.closedCh:
			return nil, fmt.Errorf("webtransport: accept: %w", transport.ErrListenerClosed)
		case <-ctx.Done():
			return nil, fmt.Errorf("webtransport: accept: %w", ctx.Err())
		case c := <-l.accepted:
			if isDone(c.Done()) {
				continue // ended while queued
			}
			if !l.track(c) {
				c.forceClose(transport.ConnShutdown, "listener closed")
				return nil, fmt.Errorf("webtransport: accept: %w", transport.ErrListenerClosed)
			}
			return c, nil
		}
	}
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// track counts an accepted connection until its QUIC connection ends.
func (l *Listener) track(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.live++
	context.AfterFunc(c.qc.Context(), l.untrack)
	return true
}

func (l *Listener) untrack() {
	l.mu.Lock()
	l.live--
	release := l.closed && l.live == 0 && !l.released
	if release {
		l.released = true
	}
	l.mu.Unlock()
	if release {
		go l.release() // not on quic-go's goroutine: release waits for it
	}
}

// release stops the HTTP/3 server, frees the socket and waits for the
// listener's goroutines.
func (l *Listener) release() {
	_ = l.ln.Close()
	_ = l.wts.Close()
	_ = l.tr.Close()
	_ = l.udp.Close()
	l.bg.Wait()
}

// Close stops accepting: new sessions are refused (HTTP 503), sessions that
// completed the identity exchange but were not accepted are closed with
// transport.ConnShutdown, and accepted ones stay open; the socket is released
// once they have all ended. Close is safe to call more than once.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.closedCh)
	release := l.live == 0
	l.released = release
	l.mu.Unlock()
	for {
		select {
		case c := <-l.accepted:
			c.forceClose(transport.ConnShutdown, "listener closed")
			continue
		default:
		}
		break
	}
	if release {
		l.release()
	}
	return nil
}

// LocalAddr returns the address the UDP socket is bound to.
func (l *Listener) LocalAddr() net.Addr { return l.udp.LocalAddr() }

// URL returns the "https://host:port/path" URL clients dial.
func (l *Listener) URL() string { return l.url }

// CertHashes returns the SHA-256 hashes of the certificate served now and
// the one that replaces it next, for browsers' serverCertificateHashes.
// They change every Config.CertLifetime/2; republish the address at least
// that often.
func (l *Listener) CertHashes() []discovery.CertHash { return l.certs.hashes() }

// Addr returns the endpoint id, the WebTransport URL and the certificate
// hashes. It has no direct addresses: the socket speaks HTTP/3, not aster's
// direct QUIC.
func (l *Listener) Addr() discovery.EndpointAddr {
	return discovery.EndpointAddr{ID: l.id, WebTransport: l.url, CertHashes: l.CertHashes()}
}

func (l *Listener) makeURL() string {
	bound := l.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	host := l.cfg.Host
	if host == "" {
		ip := bound.Addr().Unmap()
		if ip.IsUnspecified() {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		host = ip.String()
	}
	u := url.URL{Scheme: "https", Host: net.JoinHostPort(host, strconv.Itoa(int(bound.Port()))), Path: l.cfg.Path}
	return u.String()
}
