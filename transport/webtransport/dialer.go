package webtransport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	wt "github.com/quic-go/webtransport-go"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/internal/quicwrap"
	"github.com/aster-go/aster/trust"
)

// ErrNoAddress is wrapped by Dial errors when the EndpointAddr has no
// WebTransport URL.
var ErrNoAddress = errors.New("webtransport: no WebTransport URL to dial")

// ErrDialerClosed is wrapped by Dial errors after Dialer.Close.
var ErrDialerClosed = errors.New("webtransport: dialer closed")

// Dialer dials WebTransport sessions, each on its own QUIC connection, from
// one UDP socket opened on the first Dial. It implements transport.Dialer.
// Close releases the socket.
type Dialer struct {
	id     trust.EndpointID
	key    trust.SecretKey
	keyErr error
	cfg    Config

	mu     sync.Mutex
	closed bool
	udp    *net.UDPConn
	tr     *quicgo.Transport
	wtr    *wt.Transport
	conns  map[*conn]struct{}
}

var _ transport.Dialer = (*Dialer)(nil)

// NewDialer returns a dialer that proves key. cfg may be nil for the
// defaults (only the QUIC and handshake settings apply). An invalid key
// makes every Dial fail with an error wrapping ErrInvalidKey.
func NewDialer(key trust.SecretKey, cfg *Config) *Dialer {
	id, err := checkKey(key)
	c := cfg.withDefaults()
	c.dial = true
	return &Dialer{id: id, key: key, keyErr: err, cfg: c, conns: map[*conn]struct{}{}}
}

func (d *Dialer) transport() (*quicgo.Transport, *wt.Transport, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, ErrDialerClosed
	}
	if d.tr != nil {
		return d.tr, d.wtr, nil
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		return nil, nil, fmt.Errorf("webtransport: open dialer socket: %w", err)
	}
	d.udp = udp
	d.tr = &quicgo.Transport{Conn: udp}
	d.wtr = &wt.Transport{}
	return d.tr, d.wtr, nil
}

// Dial opens a session at addr.WebTransport and verifies that the server
// proves the key addr.ID (otherwise the error wraps
// transport.ErrPeerMismatch). The whole set-up is bounded by
// Config.HandshakeTimeout; running out of it (e.g. nothing listens at the
// address) is an error wrapping transport.ErrHandshakeTimeout.
func (d *Dialer) Dial(ctx context.Context, addr discovery.EndpointAddr) (transport.Conn, error) {
	if d.keyErr != nil {
		return nil, fmt.Errorf("webtransport: dial %s: %w", addr.ID.Short(), d.keyErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("webtransport: dial %s: %w", addr.ID.Short(), err)
	}
	if addr.WebTransport == "" {
		return nil, fmt.Errorf("webtransport: dial %s: %w", addr.ID.Short(), ErrNoAddress)
	}
	u, err := url.Parse(addr.WebTransport)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("webtransport: dial %s: bad URL %q: %w", addr.ID.Short(), addr.WebTransport, ErrNoAddress)
	}
	tr, wtr, err := d.transport()
	if err != nil {
		return nil, fmt.Errorf("webtransport: dial %s: %w", addr.ID.Short(), err)
	}
	hctx, cancel := context.WithTimeout(ctx, d.cfg.HandshakeTimeout)
	defer cancel()
	c, err := d.dial(hctx, tr, wtr, u, addr.ID)
	if err != nil {
		if ctx.Err() == nil && hctx.Err() != nil {
			err = fmt.Errorf("no handshake within %v: %w", d.cfg.HandshakeTimeout, transport.ErrHandshakeTimeout)
		}
		return nil, fmt.Errorf("webtransport: dial %s at %s: %w", addr.ID.Short(), addr.WebTransport, err)
	}
	return c, nil
}

func (d *Dialer) dial(ctx context.Context, tr *quicgo.Transport, wtr *wt.Transport, u *url.URL, want trust.EndpointID) (*conn, error) {
	ua, err := net.ResolveUDPAddr("udp", u.Host)
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{http3.NextProtoH3},
		InsecureSkipVerify: true, // the endpoint key is verified by the identity exchange
		ServerName:         u.Hostname(),
	}
	qc, err := tr.Dial(ctx, ua, tlsConf, d.cfg.quicConfig())
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("handshake: %w", context.Cause(ctx))
		}
		var hsErr *quicgo.HandshakeTimeoutError
		var idleErr *quicgo.IdleTimeoutError
		if errors.As(err, &hsErr) || errors.As(err, &idleErr) {
			return nil, fmt.Errorf("peer silent: %w", transport.ErrHandshakeTimeout)
		}
		if ce := connError(err); ce != nil {
			return nil, ce
		}
		return nil, errors.New(err.Error())
	}
	fail := func(err error) (*conn, error) {
		_ = qc.CloseWithError(quicgo.ApplicationErrorCode(http3.ErrCodeNoError), "")
		return nil, err
	}
	certs := qc.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return fail(errors.New("server sent no certificate"))
	}
	certHash := sha256.Sum256(certs[0].Raw)
	cc, err := wtr.NewClientConn(qc)
	if err != nil {
		return fail(err)
	}
	_, sess, err := cc.Dial(ctx, u.String(), nil)
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("CONNECT: %w", context.Cause(ctx)))
		}
		return fail(fmt.Errorf("CONNECT: %w", err))
	}
	c := newConn(sess, qc, d.id, want)
	remote, err := d.identify(ctx, c, want, certHash)
	if err != nil {
		c.forceClose(transport.ConnProtocolError, "identity exchange failed")
		var ce *transport.ConnError
		if errors.As(err, &ce) || errors.Is(err, transport.ErrPeerMismatch) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("identity exchange: %w", context.Cause(ctx))
		}
		return nil, err
	}
	c.remote = remote
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		c.forceClose(transport.ConnNoError, "dialer closed")
		return nil, ErrDialerClosed
	}
	d.conns[c] = struct{}{}
	d.mu.Unlock()
	context.AfterFunc(qc.Context(), func() {
		d.mu.Lock()
		delete(d.conns, c)
		d.mu.Unlock()
	})
	return c, nil
}

// identify runs the client side of the identity exchange.
func (d *Dialer) identify(ctx context.Context, c *conn, want trust.EndpointID, certHash [32]byte) (trust.EndpointID, error) {
	ws, err := c.sess.AcceptStream(ctx)
	if err != nil {
		return trust.EndpointID{}, fmt.Errorf("waiting for the identity challenge: %w", identityErr(err))
	}
	st := newStream(ws)
	defer st.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = ws.SetDeadline(time.Now()) })
	defer stop()
	ch, err := readChallenge(st)
	if err != nil {
		return trust.EndpointID{}, identityErr(err)
	}
	if ch.server != want || !verifyCertSig(want, certHash, ch.certSig) {
		proved := "an invalid certificate signature"
		if ch.server != want && verifyCertSig(ch.server, certHash, ch.certSig) {
			proved = ch.server.Short()
		}
		return trust.EndpointID{}, fmt.Errorf("%w: dialled %s, peer proved %s", transport.ErrPeerMismatch, want.Short(), proved)
	}
	if _, err := st.Write(signProof(d.key, d.id, want, ch.nonce)); err != nil {
		return trust.EndpointID{}, identityErr(err)
	}
	if err := st.CloseWrite(); err != nil {
		return trust.EndpointID{}, identityErr(err)
	}
	// RESULT: one 0x00 byte (then FIN, which need not be awaited: a server
	// that accepts and closes at once may end the session before it).
	var res [1]byte
	if _, err := io.ReadFull(st, res[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			// A session close explains a missing result best.
			select {
			case <-c.Done():
				if _, serr := c.sess.AcceptStream(context.Background()); serr != nil {
					return trust.EndpointID{}, identityErr(serr)
				}
			case <-time.After(100 * time.Millisecond):
			}
			return trust.EndpointID{}, fmt.Errorf("%w: identity stream ended without a result", errBadProof)
		}
		return trust.EndpointID{}, identityErr(err)
	}
	if res[0] != resultAccepted {
		return trust.EndpointID{}, fmt.Errorf("%w: identity result %#x", errBadProof, res[0])
	}
	return want, nil
}

// identityErr maps an error during the identity exchange; a session the
// server closed (refusing the client) becomes its *transport.ConnError.
func identityErr(err error) error {
	var mapped *transport.ConnError
	if errors.As(err, &mapped) { // mapped already (a stream's Read)
		return mapped
	}
	if ce := connError(err); ce != nil {
		return ce
	}
	return quicwrap.StreamError[wtErrors](err)
}

// Close closes the dialer's connections (with transport.ConnNoError) and
// its UDP socket. Later Dials fail with ErrDialerClosed. Close is safe to
// call more than once.
func (d *Dialer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	conns := make([]*conn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	tr, udp := d.tr, d.udp
	d.mu.Unlock()
	for _, c := range conns {
		c.forceClose(transport.ConnNoError, "dialer closed")
	}
	if tr == nil {
		return nil
	}
	if err := errors.Join(tr.Close(), udp.Close()); err != nil {
		return fmt.Errorf("webtransport: close dialer: %w", err)
	}
	return nil
}
