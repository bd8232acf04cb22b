package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// ErrNoAddress is wrapped by Dial errors when the EndpointAddr has no direct
// address this transport could try.
var ErrNoAddress = errors.New("quic: no direct address to dial")

// ErrDialerClosed is wrapped by Dial errors after Dialer.Close.
var ErrDialerClosed = errors.New("quic: dialer closed")

// Dialer dials QUIC connections from one UDP socket, opened on the first
// Dial and shared by all its connections. It implements transport.Dialer.
// Close releases the socket.
type Dialer struct {
	id     trust.EndpointID
	key    trust.SecretKey
	keyErr error
	cfg    Config
	qcfg   *quicgo.Config

	mu     sync.Mutex
	closed bool
	tls    *tls.Config    // base client config, presenting cert's certificate
	cert   *certFuture    // our certificate, made on the first Dial
	given  net.PacketConn // NewPacketConnDialer's connection, or nil
	udp    net.PacketConn // the socket in use (given, or opened on first Dial)
	tr     *quicgo.Transport
	conns  map[*quicgo.Conn]struct{}
}

// certFuture is the Dialer's certificate, checked and built by a goroutine
// while the first handshake is under way: the client presents it only in
// its second flight, after a round trip to the server, and on a quiet
// two-core machine the round trip (the server's half of the key exchange
// and its signature) leaves this side idle long enough to hide the key
// check and the certificate's signature (about 45 µs together, a scalar
// multiplication and a signature) from the connection's set-up time.
type certFuture struct {
	done chan struct{} // closed when cert or err is set
	cert tls.Certificate
	err  error // wraps ErrInvalidKey for a key whose halves do not match
}

// startCertificate checks key (whose length is right and whose public half
// is id) and builds its certificate in a goroutine; Dialer.Close waits for
// it. A key whose certificate is cached passed the check before.
func startCertificate(key trust.SecretKey, id trust.EndpointID) *certFuture {
	f := &certFuture{done: make(chan struct{})}
	if der, ok := certs.get(certCacheKey(key)); ok {
		f.cert = certificateOf(key, der)
		close(f.done)
		return f
	}
	go func() {
		defer close(f.done)
		if _, err := checkKey(key); err != nil {
			f.err = err
			return
		}
		f.cert, f.err = newCertificate(key, id)
	}()
	return f
}

// wait returns the certificate once it is built.
func (f *certFuture) wait() (*tls.Certificate, error) {
	<-f.done
	if f.err != nil {
		return nil, f.err
	}
	return &f.cert, nil
}

// failed returns the certificate's error if it is known already.
func (f *certFuture) failed() error {
	select {
	case <-f.done:
		return f.err
	default:
		return nil
	}
}

var _ transport.Dialer = (*Dialer)(nil)

// NewDialer returns a dialer that authenticates as key. cfg may be nil for
// the defaults. An invalid key makes every Dial fail with an error wrapping
// ErrInvalidKey.
func NewDialer(key trust.SecretKey, cfg *Config) *Dialer {
	// The length is checked here; whether the public half matches the seed
	// (a scalar multiplication) is checked with the certificate, off the
	// handshake's critical path (see certFuture).
	id, err := checkKeyLength(key)
	c := cfg.withDefaults()
	if cfg == nil || cfg.InitialConnectionReceiveWindow == 0 {
		c.InitialConnectionReceiveWindow = DefaultDialInitialConnectionReceiveWindow
		c.MaxConnectionReceiveWindow = max(c.MaxConnectionReceiveWindow, c.InitialConnectionReceiveWindow)
	}
	return &Dialer{
		id:     id,
		key:    key,
		keyErr: err,
		cfg:    c,
		qcfg:   c.quicConfig(),
		conns:  make(map[*quicgo.Conn]struct{}),
	}
}

// NewPacketConnDialer is NewDialer over an existing packet connection
// instead of a UDP socket of its own, such as the relay transport's
// (transport/relay), whose peers are reached with DialAddr. The Dialer
// takes ownership of pc and closes it in Close.
func NewPacketConnDialer(pc net.PacketConn, key trust.SecretKey, cfg *Config) *Dialer {
	d := NewDialer(key, cfg)
	d.given = pc
	return d
}

// transport returns the shared quic-go transport, opening the socket and
// starting the certificate on first use. It fails once the certificate
// failed (the key's halves do not match).
func (d *Dialer) transport() (*quicgo.Transport, *tls.Config, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, ErrDialerClosed
	}
	if d.tr != nil {
		if err := d.cert.failed(); err != nil {
			return nil, nil, err
		}
		return d.tr, d.tls, nil
	}
	var udp net.PacketConn = d.given
	if udp == nil {
		u, err := net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			return nil, nil, fmt.Errorf("quic: open dialer socket: %w", err)
		}
		udp = u
	}
	d.udp = udp
	d.tr = &quicgo.Transport{Conn: udp, StatelessResetKey: statelessResetKey(d.key)}
	d.cert = startCertificate(d.key, d.id)
	d.tls = dialerTLSConfig(d.cert)
	return d.tr, d.tls, nil
}

// Dial connects to the endpoint addr.ID at its direct addresses
// (addr.Relay is ignored), racing them as Happy Eyeballs (RFC 8305) does:
// it starts a handshake with the first address, and with each next one
// when Config.DialStagger (250ms) has passed without a connection or as
// soon as an earlier attempt failed, at most Config.MaxConcurrentDials at
// once, in the order addr lists them (the order the peer prefers; listeners
// put loopback first, then IPv4, then IPv6). The first handshake that
// completes, with the peer proving addr.ID, wins; the other attempts are
// cancelled and a connection one of them still made is closed, before Dial
// returns.
//
// An attempt fails when the peer stays silent for Config.HandshakeTimeout
// (or twice that in all), or after Config.LoopbackDialTimeout for a
// loopback address that is not the last one; such failures wrap
// transport.ErrHandshakeTimeout. A peer that proves a key other than
// addr.ID is rejected with an error wrapping transport.ErrPeerMismatch. If
// every attempt fails, the error joins each address's error, in address
// order; if ctx ends first, it also wraps ctx's error.
func (d *Dialer) Dial(ctx context.Context, addr discovery.EndpointAddr) (transport.Conn, error) {
	if d.keyErr != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr.ID.Short(), d.keyErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr.ID.Short(), err)
	}
	if len(addr.Direct) == 0 {
		return nil, fmt.Errorf("quic: dial %s: %w", addr.ID.Short(), ErrNoAddress)
	}
	tr, base, err := d.transport()
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr.ID.Short(), err)
	}
	errs := make([]error, len(addr.Direct))
	var todo []int // indexes of the addresses to try, in order
	for i, ap := range addr.Direct {
		if !ap.IsValid() || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			errs[i] = fmt.Errorf("%v: %w", ap, ErrNoAddress)
			continue
		}
		todo = append(todo, i)
	}
	c := d.race(ctx, tr, base, addr, todo, errs)
	if c != nil {
		return c, nil
	}
	if err := d.certError(); err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", addr.ID.Short(), err)
	}
	err = errors.Join(errs...)
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		err = errors.Join(err, ctx.Err())
	}
	return nil, fmt.Errorf("quic: dial %s: %w", addr.ID.Short(), err)
}

// attemptResult is the outcome of one Dial attempt.
type attemptResult struct {
	i    int // index in addr.Direct
	conn transport.Conn
	err  error
}

// testHookAttempt, when set by tests, is called as each Dial attempt
// starts, with the address's index and the number of attempts then
// running (including it).
var testHookAttempt func(i, running int)

// race runs Dial's attempts at addr.Direct[todo...], recording each
// failure in errs at its address's index, and returns the winning
// connection or nil. It returns only when every attempt it started has
// returned.
func (d *Dialer) race(ctx context.Context, tr *quicgo.Transport, base *tls.Config, addr discovery.EndpointAddr, todo []int, errs []error) transport.Conn {
	if len(todo) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan attemptResult, len(todo)) // never blocks a sender
	attempt := func(i int) {
		ap := addr.Direct[i]
		// quic-go fails a handshake that hears nothing for HandshakeTimeout
		// and bounds a slow one at twice that; the context is a backstop.
		timeout := 2 * d.cfg.HandshakeTimeout
		if ap.Addr().Unmap().IsLoopback() && i < len(addr.Direct)-1 {
			timeout = min(timeout, d.cfg.LoopbackDialTimeout)
		}
		actx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := d.dialOne(actx, tr, base, addr.ID, net.UDPAddrFromAddrPort(ap))
		if err != nil && ctx.Err() == nil && actx.Err() != nil {
			err = fmt.Errorf("no handshake within %v: %w", timeout, transport.ErrHandshakeTimeout)
		}
		if err != nil {
			err = fmt.Errorf("%v: %w", ap, err)
		}
		results <- attemptResult{i: i, conn: c, err: err}
	}

	if len(todo) == 1 {
		// One address: nothing to race, so no goroutine and no timer.
		if h := testHookAttempt; h != nil {
			h(todo[0], 1)
		}
		attempt(todo[0])
		r := <-results
		if r.err != nil {
			errs[r.i] = r.err
		}
		return r.conn
	}

	stagger := time.NewTimer(d.cfg.DialStagger) // reset by every start
	defer stagger.Stop()
	var (
		winner  transport.Conn
		running int
		due     = true // the stagger since the last start passed, or an attempt failed
		done    = ctx.Done()
	)
	for len(todo) > 0 || running > 0 {
		if winner == nil && ctx.Err() == nil && due && len(todo) > 0 && running < d.cfg.MaxConcurrentDials {
			i := todo[0]
			todo = todo[1:]
			running++
			if h := testHookAttempt; h != nil {
				h(i, running)
			}
			go attempt(i)
			due = false
			stagger.Reset(d.cfg.DialStagger)
		}
		if running == 0 && (winner != nil || ctx.Err() != nil) {
			break // nothing runs and nothing more will start
		}
		select {
		case r := <-results:
			running--
			switch {
			case r.err != nil:
				errs[r.i] = r.err
				due = true // the next address need not wait out the stagger
			case winner == nil:
				winner = r.conn
				cancel() // stop the other attempts
				done = nil
			default: // a later success: another attempt won already
				_ = r.conn.Close(transport.ConnNoError, "another address won")
			}
		case <-stagger.C:
			due = true
		case <-done:
			// The caller's ctx ended: start nothing more; the running
			// attempts return with its error (or, if a handshake completed
			// just then, a connection, which wins).
			todo, done = nil, nil
		}
	}
	return winner
}

// DialAddr connects to the endpoint want at the packet connection address
// remote (for a relay transport, an address naming the peer on the relay),
// bounded like one attempt of Dial. A peer that proves another key is
// rejected with an error wrapping transport.ErrPeerMismatch.
func (d *Dialer) DialAddr(ctx context.Context, want trust.EndpointID, remote net.Addr) (transport.Conn, error) {
	if d.keyErr != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", want.Short(), d.keyErr)
	}
	tr, base, err := d.transport()
	if err != nil {
		return nil, fmt.Errorf("quic: dial %s: %w", want.Short(), err)
	}
	actx, cancel := context.WithTimeout(ctx, 2*d.cfg.HandshakeTimeout)
	defer cancel()
	c, err := d.dialOne(actx, tr, base, want, remote)
	if err != nil {
		if cerr := d.certError(); cerr != nil {
			return nil, fmt.Errorf("quic: dial %s: %w", want.Short(), cerr)
		}
		if ctx.Err() == nil && actx.Err() != nil {
			err = fmt.Errorf("no handshake within %v: %w", 2*d.cfg.HandshakeTimeout, transport.ErrHandshakeTimeout)
		}
		return nil, fmt.Errorf("quic: dial %s at %v: %w", want.Short(), remote, err)
	}
	return c, nil
}

// dialOne makes one connection attempt at remote.
func (d *Dialer) dialOne(ctx context.Context, tr *quicgo.Transport, base *tls.Config, want trust.EndpointID, remote net.Addr) (transport.Conn, error) {
	var proved atomic.Pointer[trust.EndpointID]
	tlsConf := clientTLSConfig(base, want, func(got trust.EndpointID) { proved.Store(&got) })
	qc, err := tr.Dial(ctx, remote, tlsConf, d.qcfg)
	if err != nil {
		// The TLS error survives quic-go's wrapping today, but rebuild it
		// so neither ErrPeerMismatch nor quic-go types depend on that.
		if got := proved.Load(); got != nil {
			return nil, mismatchError(want, *got)
		}
		return nil, dialError(ctx, err)
	}
	c, err := newConn(qc, d.id)
	if err == nil && c.remote != want { // VerifyConnection already checked; defence in depth
		err = mismatchError(want, c.remote)
	}
	if err != nil {
		_ = qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ConnProtocolError), "peer verification failed")
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		_ = qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ConnNoError), "dialer closed")
		return nil, ErrDialerClosed
	}
	d.conns[qc] = struct{}{}
	d.mu.Unlock()
	context.AfterFunc(qc.Context(), func() {
		d.mu.Lock()
		delete(d.conns, qc)
		d.mu.Unlock()
	})
	return c, nil
}

// certError waits for the Dialer's certificate and returns its error: after
// a failed Dial, that the key's halves do not match explains the failure
// (the server rejected our signature, or the handshake stopped at our
// certificate) better than the handshake's error.
func (d *Dialer) certError() error {
	d.mu.Lock()
	f := d.cert
	d.mu.Unlock()
	if f == nil {
		return nil
	}
	_, err := f.wait()
	return err
}

// dialError maps a failed quic-go Dial to an error free of quic-go types.
func dialError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("handshake: %w", context.Cause(ctx))
	}
	var hsErr *quicgo.HandshakeTimeoutError
	var idleErr *quicgo.IdleTimeoutError
	if errors.As(err, &hsErr) || errors.As(err, &idleErr) {
		return fmt.Errorf("peer silent: %w", transport.ErrHandshakeTimeout)
	}
	if ce := connError(err); ce != nil {
		return ce
	}
	return errors.New(err.Error())
}

// Close closes the dialer's connections (with transport.ConnNoError) and
// its UDP socket (or the NewPacketConnDialer connection). Later Dials fail with ErrDialerClosed. Close is safe to
// call more than once.
func (d *Dialer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	conns := make([]*quicgo.Conn, 0, len(d.conns))
	for qc := range d.conns {
		// A connection closed just before (its removal from conns runs
		// after its context ends) needs no closing goroutine.
		if qc.Context().Err() == nil {
			conns = append(conns, qc)
		}
	}
	tr, udp, given, cert := d.tr, d.udp, d.given, d.cert
	d.mu.Unlock()
	if cert != nil {
		<-cert.done // the goroutine making it ends
	}

	var wg sync.WaitGroup
	for _, qc := range conns {
		wg.Go(func() { _ = qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ConnNoError), "dialer closed") })
	}
	wg.Wait()
	if tr == nil {
		if given != nil {
			return given.Close()
		}
		return nil
	}
	if err := errors.Join(tr.Close(), udp.Close()); err != nil {
		return fmt.Errorf("quic: close dialer: %w", err)
	}
	return nil
}
