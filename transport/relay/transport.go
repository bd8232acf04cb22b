package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// ErrNoRelay is wrapped by Dial errors when the address names no relay.
var ErrNoRelay = errors.New("relay: the address has no relay")

// ErrDialerClosed is wrapped by Dial errors after Dialer.Close.
var ErrDialerClosed = errors.New("relay: dialer closed")

// Listen connects to the relay at relayURL as the endpoint key (see
// DialPacketConn) and accepts QUIC connections that peers dial through it.
// The listener's Addr carries the endpoint id and the relay URL; closing it
// closes the relay connection once its accepted connections are closed.
func Listen(ctx context.Context, relayURL string, key trust.SecretKey, cfg *Config) (*quic.Listener, error) {
	pc, err := DialPacketConn(ctx, relayURL, key, cfg)
	if err != nil {
		return nil, err
	}
	var qcfg *quic.Config
	if cfg != nil {
		qcfg = cfg.QUIC
	}
	under, err := withPath(pc, key, cfg)
	if err != nil {
		return nil, err
	}
	return quic.ListenPacketConn(under, key, qcfg)
}

// withPath returns the packet connection QUIC runs over: a PathConn over
// pc unless cfg disables direct paths, pc itself then.
func withPath(pc *PacketConn, key trust.SecretKey, cfg *Config) (net.PacketConn, error) {
	if cfg != nil && cfg.Direct.Disable {
		return pc, nil
	}
	var dc *DirectConfig
	if cfg != nil {
		dc = &cfg.Direct
	}
	return NewPathConn(pc, key, dc)
}

// Dialer dials endpoints through the relay named in their address. It
// connects to each relay on first use and keeps the connection (one per
// relay URL, registered with the dialer's key) for later dials. It
// implements transport.Dialer; Close releases the relay connections.
//
// A relay holds one registration per endpoint id, so the dialer's key
// should not be the key of a server registered at the same relay (the
// newer registration would replace the server's); aster clients use a key
// of their own by default.
type Dialer struct {
	key trust.SecretKey
	cfg *Config

	mu     sync.Mutex
	closed bool
	relays map[string]*quic.Dialer
	pcs    map[string]*PacketConn
	paths  map[string]*PathConn
}

var _ transport.Dialer = (*Dialer)(nil)

// NewDialer returns a relay dialer that registers as key. cfg may be nil.
func NewDialer(key trust.SecretKey, cfg *Config) *Dialer {
	return &Dialer{key: key, cfg: cfg, relays: map[string]*quic.Dialer{}, pcs: map[string]*PacketConn{}, paths: map[string]*PathConn{}}
}

// Dial connects to addr.ID through addr.Relay. The peer proves its key
// in the QUIC handshake, end to end: a relay that routes to another
// endpoint makes Dial fail with an error wrapping transport.ErrPeerMismatch.
func (d *Dialer) Dial(ctx context.Context, addr discovery.EndpointAddr) (transport.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("relay: dial %s: %w", addr.ID.Short(), err)
	}
	if addr.Relay == "" {
		return nil, fmt.Errorf("relay: dial %s: %w", addr.ID.Short(), ErrNoRelay)
	}
	qd, pc, path, err := d.relay(ctx, addr.Relay)
	if err != nil {
		return nil, fmt.Errorf("relay: dial %s: %w", addr.ID.Short(), err)
	}
	remote := newAddr(addr.ID, addr.Relay)
	if path != nil {
		remote = path.peerAddr(addr.ID, remote)
	}
	c, err := qd.DialAddr(ctx, addr.ID, remote)
	if err != nil && pc.isClosed() {
		d.forget(addr.Relay, qd)
	}
	return c, err
}

// relay returns the QUIC dialer over the relay at u, connecting first if
// needed.
func (d *Dialer) relay(ctx context.Context, u string) (*quic.Dialer, *PacketConn, *PathConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, nil, ErrDialerClosed
	}
	if qd := d.relays[u]; qd != nil {
		if pc := d.pcs[u]; !pc.isClosed() {
			return qd, pc, d.paths[u], nil
		}
		delete(d.relays, u)
		delete(d.pcs, u)
		delete(d.paths, u)
		qd.Close() // its packet connection failed; release the rest
	}
	pc, err := DialPacketConn(ctx, u, d.key, d.cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	var qcfg *quic.Config
	if d.cfg != nil {
		qcfg = d.cfg.QUIC
	}
	under, err := withPath(pc, d.key, d.cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	path, _ := under.(*PathConn)
	qd := quic.NewPacketConnDialer(under, d.key, qcfg)
	d.relays[u] = qd
	d.pcs[u] = pc
	if path != nil {
		d.paths[u] = path
	}
	return qd, pc, path, nil
}

func (d *Dialer) forget(u string, qd *quic.Dialer) {
	d.mu.Lock()
	if d.relays[u] != qd {
		d.mu.Unlock()
		return
	}
	delete(d.relays, u)
	delete(d.pcs, u)
	delete(d.paths, u)
	d.mu.Unlock()
	qd.Close()
}

// Close closes the dialer's connections and relay connections. Later Dials
// fail with ErrDialerClosed.
func (d *Dialer) Close() error {
	d.mu.Lock()
	d.closed = true
	qds := make([]*quic.Dialer, 0, len(d.relays))
	for _, qd := range d.relays {
		qds = append(qds, qd)
	}
	d.relays, d.pcs, d.paths = map[string]*quic.Dialer{}, map[string]*PacketConn{}, map[string]*PathConn{}
	d.mu.Unlock()
	var errs []error
	for _, qd := range qds {
		errs = append(errs, qd.Close())
	}
	return errors.Join(errs...)
}

// DefaultFallbackDelay is the default of FallbackDialer.Delay.
const DefaultFallbackDelay = 250 * time.Millisecond

// FallbackDialer reaches an endpoint directly when it can and through its
// relay when it cannot, without the caller choosing: it dials the direct
// addresses at once and, if that has not succeeded after Delay (or failed
// sooner), also dials through the relay; the first connection wins and the
// other attempt is cancelled (a connection it still makes is closed). An
// address without direct addresses goes straight to the relay, one without
// a relay only direct. Both paths verify the peer's key end to end.
type FallbackDialer struct {
	// Direct dials the direct addresses (e.g. a *quic.Dialer); nil disables
	// the direct path.
	Direct transport.Dialer
	// Relay dials through the relay (a *Dialer); nil disables the relay
	// path.
	Relay transport.Dialer
	// Delay is the direct path's head start (default
	// DefaultFallbackDelay, 250 ms, as in Happy Eyeballs).
	Delay time.Duration
}

var _ transport.Dialer = (*FallbackDialer)(nil)

type dialResult struct {
	conn  transport.Conn
	err   error
	relay bool
}

// Dial connects to addr by the first path that works. If both fail the
// error joins both attempts' errors.
func (f *FallbackDialer) Dial(ctx context.Context, addr discovery.EndpointAddr) (transport.Conn, error) {
	direct := f.Direct != nil && len(addr.Direct) > 0
	relayed := f.Relay != nil && addr.Relay != ""
	switch {
	case direct && !relayed:
		return f.Direct.Dial(ctx, addr)
	case relayed && !direct:
		return f.Relay.Dial(ctx, addr)
	case !direct && !relayed:
		if f.Direct != nil {
			return f.Direct.Dial(ctx, addr) // reports the missing address
		}
		if f.Relay != nil {
			return f.Relay.Dial(ctx, addr)
		}
		return nil, errors.New("relay: no transport enabled")
	}
	delay := f.Delay
	if delay <= 0 {
		delay = DefaultFallbackDelay
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan dialResult, 2)
	startRelay := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := f.Direct.Dial(ctx, addr)
		results <- dialResult{conn: c, err: err}
	})
	wg.Go(func() {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-startRelay:
		case <-ctx.Done():
		}
		c, err := f.Relay.Dial(ctx, addr)
		results <- dialResult{conn: c, err: err, relay: true}
	})
	var winner transport.Conn
	var errs []error
	for range 2 {
		r := <-results
		switch {
		case r.err == nil && winner == nil:
			winner = r.conn
			cancel()
		case r.err == nil:
			_ = r.conn.Close(transport.ConnNoError, "another path won")
		default:
			if winner == nil {
				path := "direct"
				if r.relay {
					path = "relay"
				} else {
					close(startRelay)
				}
				errs = append(errs, fmt.Errorf("%s: %w", path, r.err))
			}
		}
	}
	wg.Wait()
	if winner != nil {
		return winner, nil
	}
	return nil, errors.Join(errs...)
}

// Close closes Direct and Relay if they are io.Closers.
func (f *FallbackDialer) Close() error {
	var errs []error
	for _, d := range []transport.Dialer{f.Direct, f.Relay} {
		if c, ok := d.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
