// Package mem is an in-memory transport for tests: endpoints on one Network
// dial each other by endpoint id, without sockets or TLS.
//
// Connections behave like the QUIC transport's: streams are ordered byte
// pipes with per-direction flow control (a writer blocks once the peer has
// StreamWindow bytes unread), half close, resets with codes, deadlines and
// connection close codes. Identities are taken from the keys passed to Listen
// and Dialer; nothing is proven cryptographically. Unlike QUIC, a stream is
// visible to the peer's AcceptStream as soon as it is opened, and there is no
// limit on concurrently open streams.
//
// No goroutines are started: blocking operations wait on channels and
// deadlines use timers.
package mem

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// DefaultStreamWindow is the default number of bytes a stream writer may have
// outstanding (written but not read by the peer) per direction.
const DefaultStreamWindow = 1 << 20

// ErrUnknownEndpoint is wrapped by Dial errors when no listener is
// registered under the dialled endpoint id.
var ErrUnknownEndpoint = errors.New("mem: no listener for endpoint id")

// ErrInvalidKey is wrapped by errors caused by a secret key that is not a
// 64-byte ed25519 private key.
var ErrInvalidKey = errors.New("mem: invalid secret key")

// Option configures a Network.
type Option func(*Network)

// WithStreamWindow sets how many bytes a stream writer may have outstanding
// per direction before Write blocks. Values below 1 select
// DefaultStreamWindow.
func WithStreamWindow(n int) Option {
	return func(nw *Network) {
		if n < 1 {
			n = DefaultStreamWindow
		}
		nw.window = n
	}
}

// Network is a set of in-memory endpoints that can dial each other. The zero
// value is not usable; call NewNetwork. It is safe for concurrent use.
type Network struct {
	window int

	mu        sync.Mutex
	listeners map[trust.EndpointID]*listener
	aliases   map[trust.EndpointID]trust.EndpointID
}

// NewNetwork returns an empty network.
func NewNetwork(opts ...Option) *Network {
	nw := &Network{
		window:    DefaultStreamWindow,
		listeners: make(map[trust.EndpointID]*listener),
		aliases:   make(map[trust.EndpointID]trust.EndpointID),
	}
	for _, o := range opts {
		if o != nil {
			o(nw)
		}
	}
	return nw
}

func checkKey(key trust.SecretKey) (trust.EndpointID, error) {
	if len(key) != ed25519.PrivateKeySize {
		return trust.EndpointID{}, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(key), ed25519.PrivateKeySize)
	}
	return trust.IDOf(key), nil
}

// Listen registers a listener under key's endpoint id. It fails if a
// listener is already registered under that id. Closing the listener
// unregisters it.
func (nw *Network) Listen(key trust.SecretKey) (transport.Listener, error) {
	id, err := checkKey(key)
	if err != nil {
		return nil, fmt.Errorf("mem: listen: %w", err)
	}
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if _, ok := nw.listeners[id]; ok {
		return nil, fmt.Errorf("mem: listen: endpoint %s already has a listener", id.Short())
	}
	l := &listener{nw: nw, id: id, done: make(chan struct{})}
	nw.listeners[id] = l
	return l, nil
}

// Alias makes dials of the endpoint id claimed reach the listener of target
// instead. Since that listener proves target, such dials fail with an error
// wrapping transport.ErrPeerMismatch; tests use it to simulate an address
// that leads to the wrong endpoint. Aliasing an id to itself removes the
// alias.
func (nw *Network) Alias(claimed, target trust.EndpointID) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if claimed == target {
		delete(nw.aliases, claimed)
		return
	}
	nw.aliases[claimed] = target
}

// Dialer returns a dialer that connects as key's endpoint. A key that is not
// a valid ed25519 private key makes every Dial fail.
func (nw *Network) Dialer(key trust.SecretKey) transport.Dialer {
	id, err := checkKey(key)
	return &dialer{nw: nw, id: id, keyErr: err}
}

// lookup finds the listener that answers dials of id.
func (nw *Network) lookup(id trust.EndpointID) *listener {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if l, ok := nw.listeners[id]; ok {
		return l
	}
	if target, ok := nw.aliases[id]; ok {
		return nw.listeners[target]
	}
	return nil
}

func (nw *Network) unregister(l *listener) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.listeners[l.id] == l {
		delete(nw.listeners, l.id)
	}
}

// dialer implements transport.Dialer on a Network.
type dialer struct {
	nw     *Network
	id     trust.EndpointID
	keyErr error
}

// Dial connects to the listener registered under addr.ID; addr.Direct and
// addr.Relay are ignored.
func (d *dialer) Dial(ctx context.Context, addr discovery.EndpointAddr) (transport.Conn, error) {
	if d.keyErr != nil {
		return nil, fmt.Errorf("mem: dial %s: %w", addr.ID.Short(), d.keyErr)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mem: dial %s: %w", addr.ID.Short(), err)
	}
	l := d.nw.lookup(addr.ID)
	if l == nil {
		return nil, fmt.Errorf("mem: dial %s: %w", addr.ID.Short(), ErrUnknownEndpoint)
	}
	if l.id != addr.ID {
		return nil, fmt.Errorf("mem: dial %s: %w (peer proved %s)", addr.ID.Short(), transport.ErrPeerMismatch, l.id.Short())
	}
	cs := newConnState(d.nw.window)
	client := &conn{state: cs, side: 0, local: d.id, remote: l.id}
	server := &conn{state: cs, side: 1, local: l.id, remote: d.id}
	cs.ends = [2]*conn{client, server}
	if !l.enqueue(server) {
		return nil, fmt.Errorf("mem: dial %s: %w", addr.ID.Short(), ErrUnknownEndpoint)
	}
	return client, nil
}

// listener implements transport.Listener.
type listener struct {
	nw *Network
	id trust.EndpointID

	mu     sync.Mutex
	closed bool
	queue  []*conn
	ready  notifier
	done   chan struct{} // closed by Close
}

var _ transport.Listener = (*listener)(nil)

// enqueue adds an incoming connection; it reports false after Close.
func (l *listener) enqueue(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.queue = append(l.queue, c)
	l.ready.broadcast()
	return true
}

// Accept waits for the next incoming connection.
func (l *listener) Accept(ctx context.Context) (transport.Conn, error) {
	l.mu.Lock()
	for {
		if l.closed {
			l.mu.Unlock()
			return nil, fmt.Errorf("mem: accept: %w", transport.ErrListenerClosed)
		}
		if err := ctx.Err(); err != nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("mem: accept: %w", err)
		}
		if len(l.queue) > 0 {
			c := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			l.mu.Unlock()
			return c, nil
		}
		ch := l.ready.wait()
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-l.done:
		}
		l.mu.Lock()
	}
}

// Close unregisters the listener. Connections not yet accepted are closed
// with transport.ConnShutdown; accepted ones stay open.
func (l *listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	queued := l.queue
	l.queue = nil
	close(l.done)
	l.mu.Unlock()
	l.nw.unregister(l)
	for _, c := range queued {
		_ = c.Close(transport.ConnShutdown, "listener closed")
	}
	return nil
}

// Addr returns the listener's endpoint id; mem addresses have no direct
// addresses.
func (l *listener) Addr() discovery.EndpointAddr { return discovery.EndpointAddr{ID: l.id} }

// connState is shared by the two ends of a connection.
type connState struct {
	window int
	ends   [2]*conn // 0 is the dialer's end, 1 the acceptor's
	done   chan struct{}
	ctx    context.Context // canceled on close; parent of the stream contexts
	cancel context.CancelCauseFunc

	mu     sync.Mutex
	closed bool
	code   transport.ConnErrorCode
	reason string
	closer int
}

func newConnState(window int) *connState {
	cs := &connState{window: window, done: make(chan struct{})}
	cs.ctx, cs.cancel = context.WithCancelCause(context.Background())
	return cs
}

// err returns the error operations on side see once the connection is
// closed, or nil while it is open.
func (cs *connState) err(side int) error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.closed {
		return nil
	}
	return &transport.ConnError{Code: cs.code, Reason: cs.reason, Remote: side != cs.closer}
}

// conn is one end of an in-memory connection.
type conn struct {
	state  *connState
	side   int
	local  trust.EndpointID
	remote trust.EndpointID

	mu       sync.Mutex // guards incoming and ready
	incoming []*stream
	ready    notifier
}

var _ transport.Conn = (*conn)(nil)

// OpenStream opens a stream; the peer can accept it at once.
func (c *conn) OpenStream(ctx context.Context) (transport.Stream, error) {
	if err := c.state.err(c.side); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mem: open stream: %w", err)
	}
	w := c.state.window
	out := &pipe{conn: c.state, reader: 1 - c.side, window: w}
	in := &pipe{conn: c.state, reader: c.side, window: w}
	local, remote := newStream(in, out), newStream(out, in)
	peer := c.state.ends[1-c.side]
	peer.mu.Lock()
	peer.incoming = append(peer.incoming, remote)
	peer.ready.broadcast()
	peer.mu.Unlock()
	return local, nil
}

// AcceptStream waits for the next stream the peer opened.
func (c *conn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	c.mu.Lock()
	for {
		if err := c.state.err(c.side); err != nil {
			c.mu.Unlock()
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("mem: accept stream: %w", err)
		}
		if len(c.incoming) > 0 {
			s := c.incoming[0]
			c.incoming[0] = nil
			c.incoming = c.incoming[1:]
			c.mu.Unlock()
			return s, nil
		}
		ch := c.ready.wait()
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-c.state.done:
		}
		c.mu.Lock()
	}
}

// LocalID is this end's endpoint id.
func (c *conn) LocalID() trust.EndpointID { return c.local }

// RemoteID is the peer's endpoint id.
func (c *conn) RemoteID() trust.EndpointID { return c.remote }

// RemoteAddr returns an Addr naming the peer's endpoint id.
func (c *conn) RemoteAddr() net.Addr { return Addr{ID: c.remote} }

// Close closes the connection for both ends; all streams fail with a
// *transport.ConnError. Closing an already closed connection does nothing.
func (c *conn) Close(code transport.ConnErrorCode, reason string) error {
	cs := c.state
	cs.mu.Lock()
	if cs.closed {
		cs.mu.Unlock()
		return nil
	}
	cs.closed, cs.code, cs.reason, cs.closer = true, code, reason, c.side
	close(cs.done)
	cs.mu.Unlock()
	cs.cancel(&transport.ConnError{Code: code, Reason: reason})
	for _, end := range cs.ends {
		end.mu.Lock()
		end.incoming = nil
		end.mu.Unlock()
	}
	return nil
}

// Done is closed when either end closes the connection.
func (c *conn) Done() <-chan struct{} { return c.state.done }

// Addr is the net.Addr of an in-memory endpoint.
type Addr struct {
	ID trust.EndpointID
}

// Network returns "mem".
func (Addr) Network() string { return "mem" }

// String returns the endpoint id in hex.
func (a Addr) String() string { return a.ID.String() }
