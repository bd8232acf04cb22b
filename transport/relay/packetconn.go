package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// Defaults of Config.
const (
	// DefaultConnectTimeout is the default of Config.ConnectTimeout.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultPingInterval is the default of Config.PingInterval.
	DefaultPingInterval = 15 * time.Second
	// MaxReconnectDelay is the longest wait between reconnection attempts.
	MaxReconnectDelay = 5 * time.Second
	// CloseFlushTimeout bounds how long PacketConn.Close waits for the
	// datagrams already queued (such as a QUIC CONNECTION_CLOSE) to be
	// written to the relay.
	CloseFlushTimeout = time.Second
)

// Config configures the endpoint side of the relay transport. A nil
// *Config and zero fields select the defaults.
type Config struct {
	// RootCAs verifies the certificate of a relay whose URL has no pin.
	// Default: the system roots.
	RootCAs *x509.CertPool
	// ConnectTimeout bounds one attempt to connect to the relay: TCP, TLS
	// and registration (default 10s).
	ConnectTimeout time.Duration
	// PingInterval is how often the endpoint pings the relay (default 15s).
	// A relay connection that received nothing for three intervals is
	// considered dead and replaced.
	PingInterval time.Duration
	// QueueLen bounds the datagrams waiting to be sent to the relay and
	// those waiting to be read (default 1024 each). Datagrams beyond it are
	// dropped, as a full UDP socket buffer would drop them.
	QueueLen int
	// QUIC configures the QUIC connections run through the relay. Default:
	// transport/quic's defaults.
	QUIC *quic.Config
	// Logger logs lost and restored relay connections (default
	// slog.Default()).
	Logger *slog.Logger
	// ConnectInBackground makes DialPacketConn (and Listen) return a
	// packet connection even when the first connection to the relay fails
	// for a reason retrying can change (the relay is down or unreachable,
	// not a certificate that fails verification, a refused registration
	// or a proxy that refused the credentials, ErrProxyAuth):
	// it logs a warning and keeps connecting in the background, as after
	// a lost connection; datagrams written meanwhile are dropped. A server
	// that is also reachable directly sets it, so that a relay outage does
	// not keep it from starting. Default false: the first connection must
	// succeed.
	ConnectInBackground bool
	// Proxy, if not nil, chooses an HTTP CONNECT proxy for each connection
	// to a relay (see ProxyFunc, ProxyURL, ProxyFromEnvironment); the
	// relay's TLS runs end to end through the tunnel. Default nil: relays
	// are reached directly, and the proxy environment variables are read
	// only through ProxyFromEnvironment.
	Proxy ProxyFunc
	// ProxyTLS configures TLS to an https:// proxy. Default: the system
	// roots, and the proxy URL's host as the server name.
	ProxyTLS *tls.Config
	// Direct configures the upgrade of relayed connections to direct UDP
	// paths (PathConn, PROTOCOL.md §24), which Listen and Dialer use unless
	// Direct.Disable is set. Default: on, with DirectConfig's defaults.
	Direct DirectConfig
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.ConnectTimeout <= 0 {
		out.ConnectTimeout = DefaultConnectTimeout
	}
	if out.PingInterval <= 0 {
		out.PingInterval = DefaultPingInterval
	}
	if out.QueueLen <= 0 {
		out.QueueLen = DefaultQueueLen
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

// Addr is the net.Addr of an endpoint reached through a relay. Compare
// two addresses by ID and Relay (or by String), not with ==: an Addr that
// PacketConn returns also carries a cache of its String.
type Addr struct {
	// ID is the endpoint's id.
	ID trust.EndpointID
	// Relay is the relay's URL.
	Relay string

	// str caches String for strID and strRelay (set by newAddr): quic-go
	// compares the addresses of non-UDP packets by their String, twice per
	// packet.
	str      string
	strID    trust.EndpointID
	strRelay string

	// path is the PathConn that returned or created this address, if any.
	path *PathConn
}

// PathStats returns the counters of the PathConn that carries this
// endpoint's datagrams, or ok false when the address belongs to no
// PathConn (direct paths disabled).
func (a *Addr) PathStats() (st PathStats, ok bool) {
	if a.path == nil {
		return PathStats{}, false
	}
	return a.path.Stats(), true
}

// Path says how datagrams to this endpoint travel now: "direct <ip:port>"
// when a PathConn (which returned this address, or was dialled with it)
// has confirmed a direct UDP path to it, "relay <url>" otherwise.
func (a *Addr) Path() string {
	if a.path != nil {
		return a.path.PathString(a)
	}
	return "relay " + a.Relay
}

// newAddr returns the *Addr of id at relay with its String precomputed.
func newAddr(id trust.EndpointID, relay string) *Addr {
	a := &Addr{ID: id, Relay: relay}
	a.str, a.strID, a.strRelay = addrString(id, relay), id, relay
	return a
}

func addrString(id trust.EndpointID, relay string) string { return id.String() + "@" + relay }

// Network returns "aster-relay".
func (a *Addr) Network() string { return "aster-relay" }

// String returns "<endpoint id>@<relay URL>".
func (a *Addr) String() string {
	if a.str != "" && a.strID == a.ID && a.strRelay == a.Relay {
		return a.str
	}
	return addrString(a.ID, a.Relay)
}

// maxAddrCache bounds PacketConn's cache of source addresses; it is
// emptied when full (a relay can send datagrams from any number of ids).
const maxAddrCache = 1024

// EndpointAddr returns the aster address of the endpoint: its id and relay.
func (a *Addr) EndpointAddr() discovery.EndpointAddr {
	return discovery.EndpointAddr{ID: a.ID, Relay: a.Relay}
}

type datagram struct {
	from *Addr
	data []byte
}

// PacketConn is a net.PacketConn whose datagrams travel through a relay:
// WriteTo sends a datagram to the endpoint named by an *Addr, ReadFrom
// returns datagrams other endpoints sent to this one. It keeps one TCP+TLS
// connection to the relay, registered with the endpoint key, and replaces
// it when it drops (datagrams sent meanwhile are lost, as on UDP; QUIC
// retransmits). Queues are bounded: datagrams beyond them are dropped.
//
// quic-go runs over it unchanged (quic.ListenPacketConn,
// quic.NewPacketConnDialer).
type PacketConn struct {
	url   *URL
	key   trust.SecretKey
	local *Addr
	cfg   Config
	tls   *tls.Config

	send   chan []byte   // SEND frames
	recv   chan datagram // received datagrams
	closed chan struct{}

	flush     chan struct{} // closed by Close: write what is queued, then CLOSE
	flushed   chan struct{} // closed once the queue and CLOSE were written
	flushOnce sync.Once
	closeMu   sync.Mutex // serializes drain
	closeSent bool       // under mu: the writer sent CLOSE

	// beforeWrite, if set (by tests), runs before each queued frame is
	// written to the relay.
	beforeWrite atomic.Pointer[func()]
	ctx         context.Context // cancelled by Close
	cancel      context.CancelFunc
	once        sync.Once
	wg          sync.WaitGroup

	mu       sync.Mutex
	conn     net.Conn      // the current relay connection
	fatal    error         // why the relay refused this endpoint for good
	deadline chan struct{} // closed when the read deadline passes
	changed  chan struct{} // closed when the read deadline is replaced
	timer    *time.Timer

	// addrs caches the *Addr of each source, so that a datagram's
	// address costs no allocation; only the reading goroutine uses it.
	addrs map[trust.EndpointID]*Addr

	dropped    atomic.Uint64
	reconnects atomic.Uint64
}

var _ net.PacketConn = (*PacketConn)(nil)

// DialPacketConn connects to the relay at relayURL, registers as the
// endpoint key and returns the packet connection. The first connection
// must succeed within ctx and Config.ConnectTimeout; later ones are retried
// in the background until Close. A registration the relay refuses (bad
// proof, replaced by another registration of the same id) is permanent:
// ReadFrom and WriteTo then fail with an error wrapping *CloseError. With
// Config.ConnectInBackground a failed first connection is retried in the
// background instead, unless it cannot succeed by waiting: the relay's
// certificate does not verify, or the HTTP proxy refused the credentials
// (ErrProxyAuth).
func DialPacketConn(ctx context.Context, relayURL string, key trust.SecretKey, cfg *Config) (*PacketConn, error) {
	u, err := ParseURL(relayURL)
	if err != nil {
		return nil, err
	}
	if len(key) == 0 {
		return nil, errors.New("relay: no endpoint key")
	}
	c := cfg.withDefaults()
	pc := &PacketConn{
		url:      u,
		key:      key,
		local:    newAddr(trust.IDOf(key), u.String()),
		cfg:      c,
		tls:      clientTLSConfig(u, c.RootCAs),
		send:     make(chan []byte, c.QueueLen),
		recv:     make(chan datagram, c.QueueLen),
		closed:   make(chan struct{}),
		flush:    make(chan struct{}),
		flushed:  make(chan struct{}),
		deadline: make(chan struct{}),
		changed:  make(chan struct{}),
		addrs:    make(map[trust.EndpointID]*Addr),
	}
	pc.ctx, pc.cancel = context.WithCancel(context.Background())
	conn, br, err := pc.connect(ctx)
	if err != nil {
		if !c.ConnectInBackground || permanent(err) || certError(err) || errors.Is(err, ErrProxyAuth) || ctx.Err() != nil {
			pc.cancel()
			return nil, err
		}
		c.Logger.Warn("relay: cannot reach the relay; connecting in the background", "relay", u.HostPort(), "err", err)
		conn, br = nil, nil
	}
	pc.wg.Add(1)
	go pc.run(conn, br)
	return pc, nil
}

// clientTLSConfig verifies the relay by pin or by the roots.
func clientTLSConfig(u *URL, roots *x509.CertPool) *tls.Config {
	conf := &tls.Config{
		ServerName: u.Host,
		RootCAs:    roots,
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
	}
	if u.HasPin {
		pin := u.Pin
		conf.InsecureSkipVerify = true // the pin replaces chain verification
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("relay: no certificate")
			}
			if h := sha256.Sum256(cs.PeerCertificates[0].Raw); !bytes.Equal(h[:], pin[:]) {
				return fmt.Errorf("relay: certificate SHA-256 %x does not match the pinned %x: %w", h, pin, errPinMismatch)
			}
			return nil
		}
	}
	return conf
}

// connect makes one connection to the relay and registers.
func (c *PacketConn) connect(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	raw, err := c.cfg.dialRelay(ctx, c.url) // directly or through Config.Proxy
	if err != nil {
		return nil, nil, fmt.Errorf("relay: connect to %s: %w", c.url.HostPort(), err)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	conn, br, err := c.register(ctx, raw)
	if !stop() || err != nil {
		raw.Close()
		if err == nil || ctx.Err() != nil {
			err = fmt.Errorf("relay: connect to %s: %w", c.url.HostPort(), context.Cause(ctx))
		}
		return nil, nil, err
	}
	return conn, br, nil
}

func (c *PacketConn) register(ctx context.Context, raw net.Conn) (net.Conn, *bufio.Reader, error) {
	conn := tls.Client(raw, c.tls)
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("relay: TLS handshake with %s: %w", c.url.HostPort(), err)
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	buf := make([]byte, MaxFrameBody)
	typ, body, err := readFrame(br, buf)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: reading CHALLENGE: %w", err)
	}
	f, err := parseFrame(typ, body)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: reading CHALLENGE: %w", err)
	}
	if typ == frameClose {
		return nil, nil, f.close
	}
	if typ != frameChallenge {
		return nil, nil, fmt.Errorf("%w: expected a version 1 CHALLENGE, got frame type %#x of %d bytes", ErrProtocol, typ, len(body))
	}
	cs := conn.ConnectionState()
	exporter, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		return nil, nil, fmt.Errorf("relay: TLS exporter: %w", err)
	}
	if _, err := conn.Write(registerFrame(c.key, f.nonce, exporter)); err != nil {
		return nil, nil, fmt.Errorf("relay: sending REGISTER: %w", err)
	}
	typ, body, err = readFrame(br, buf)
	if err == nil {
		f, err = parseFrame(typ, body)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("relay: reading the registration result: %w", err)
	}
	switch typ {
	case frameAccepted:
		return conn, br, nil
	case frameClose:
		return nil, nil, f.close
	}
	return nil, nil, fmt.Errorf("%w: expected ACCEPTED or CLOSE, got frame type %#x", ErrProtocol, typ)
}

// errPinMismatch is wrapped by the error of a relay whose certificate is
// not the one its URL pins.
var errPinMismatch = errors.New("wrong relay certificate")

// certError reports whether err is a relay certificate that failed
// verification: a configuration error that waiting does not fix.
func certError(err error) bool {
	var ve *tls.CertificateVerificationError
	return errors.Is(err, errPinMismatch) || errors.As(err, &ve)
}

// permanent reports whether a relay's refusal will not change by retrying.
func permanent(err error) bool {
	var ce *CloseError
	return errors.As(err, &ce) && (ce.Code == CloseBadProof || ce.Code == CloseReplaced)
}

// run serves relay connections until Close, reconnecting when one drops;
// a nil conn starts by connecting.
func (c *PacketConn) run(conn net.Conn, br *bufio.Reader) {
	defer c.wg.Done()
	for {
		var err error
		if conn != nil {
			err = c.serve(conn, br)
			if c.isClosed() {
				return
			}
			if permanent(err) {
				c.fail(err)
				return
			}
			c.cfg.Logger.Warn("relay: connection lost, reconnecting", "relay", c.url.HostPort(), "err", err)
		}
		delay := 50 * time.Millisecond
		for {
			t := time.NewTimer(delay)
			select {
			case <-c.closed:
				t.Stop()
				return
			case <-t.C:
			}
			conn, br, err = c.connect(c.ctx)
			if err == nil {
				break
			}
			if c.isClosed() {
				return
			}
			if permanent(err) {
				c.fail(err)
				return
			}
			if errors.Is(err, ErrProxyAuth) {
				// A credential problem an operator must fix, not a
				// passing outage: at each attempt, not only in debug logs.
				c.cfg.Logger.Warn("relay: reconnect failed: the proxy refused the credentials", "relay", c.url.HostPort(), "err", err)
			} else {
				c.cfg.Logger.Debug("relay: reconnect failed", "relay", c.url.HostPort(), "err", err)
			}
			delay = min(2*delay, MaxReconnectDelay)
		}
		c.reconnects.Add(1)
		c.cfg.Logger.Info("relay: reconnected", "relay", c.url.HostPort())
	}
}

// serve runs one relay connection until it fails or Close.
func (c *PacketConn) serve(conn net.Conn, br *bufio.Reader) error {
	c.mu.Lock()
	if c.isClosed() {
		c.mu.Unlock()
		conn.Close()
		return net.ErrClosed
	}
	c.conn = conn
	c.mu.Unlock()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { c.writeLoop(conn, stop) })
	err := c.readLoop(conn, br)
	close(stop)
	conn.Close()
	wg.Wait()
	c.mu.Lock()
	c.conn = nil
	flushing := isDone(c.flush)
	c.mu.Unlock()
	if flushing {
		// Close is waiting for the queue to be written on this
		// connection, which is gone: nothing is left to wait for.
		c.flushOnce.Do(func() { close(c.flushed) })
	}
	return err
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (c *PacketConn) readLoop(conn net.Conn, br *bufio.Reader) error {
	buf := make([]byte, MaxFrameBody)
	var pushed time.Time
	for {
		if now := time.Now(); now.Sub(pushed) > deadlineEvery {
			_ = conn.SetReadDeadline(now.Add(3 * c.cfg.PingInterval))
			pushed = now
		}
		typ, body, err := readFrame(br, buf)
		if err != nil {
			return err
		}
		f, err := parseFrame(typ, body)
		if err != nil {
			return err
		}
		switch {
		case typ == frameRecv:
			d := datagram{from: c.addrOf(f.id), data: append(getBuf(), f.data...)}
			select {
			case c.recv <- d:
			default:
				putBuf(d.data)
				c.dropped.Add(1)
			}
		case typ == framePing:
			select {
			case c.send <- appendFrame(nil, framePong, f.data):
			default:
			}
		case typ == framePong:
		case typ == frameClose:
			return f.close
		case typ >= frameOptional:
		default:
			return fmt.Errorf("%w: unexpected %s frame", ErrProtocol, frameName(typ))
		}
	}
}

// addrOf returns the cached *Addr of the source id; only the reading
// goroutine calls it.
func (c *PacketConn) addrOf(id trust.EndpointID) *Addr {
	if a, ok := c.addrs[id]; ok {
		return a
	}
	if len(c.addrs) >= maxAddrCache {
		clear(c.addrs)
	}
	a := newAddr(id, c.local.Relay)
	c.addrs[id] = a
	return a
}

func (c *PacketConn) writeLoop(conn net.Conn, stop <-chan struct{}) {
	bw := bufio.NewWriterSize(conn, 32<<10)
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	fail := func() { conn.Close() } // ends the reader too
	var pushed time.Time
	for {
		var f []byte
		select {
		case <-stop:
			return
		case <-c.flush:
			c.writeQueued(conn, bw)
			return
		case <-ping.C:
			var p [8]byte
			_, _ = rand.Read(p[:])
			f = appendFrame(nil, framePing, p[:])
		case f = <-c.send:
			c.hookWrite()
		}
		if now := time.Now(); now.Sub(pushed) > deadlineEvery {
			_ = conn.SetWriteDeadline(now.Add(3 * c.cfg.PingInterval))
			pushed = now
		}
		_, err := bw.Write(f)
		putBuf(f)
		if err != nil {
			fail()
			return
		}
		// Write what else is queued. When the queue runs dry, yield once
		// and look again: quic-go sends a burst of packets one WriteTo at a
		// time, and a writer that flushed at once would make one TLS record
		// and one write system call per packet (measured with 32 callers:
		// 1.3 packets per flush without the yield, about 11 with it).
		for more, yielded := true, false; more; {
			select {
			case f := <-c.send:
				c.hookWrite()
				_, err := bw.Write(f)
				putBuf(f)
				if err != nil {
					fail()
					return
				}
			default:
				if !yielded {
					yielded = true
					runtime.Gosched()
					continue
				}
				more = false
			}
		}
		if err := bw.Flush(); err != nil {
			fail()
			return
		}
	}
}

func (c *PacketConn) hookWrite() {
	if f := c.beforeWrite.Load(); f != nil {
		(*f)()
	}
}

// writeQueued writes the frames queued when Close was called, and a CLOSE
// after them, within CloseFlushTimeout; then it reports to Close.
func (c *PacketConn) writeQueued(conn net.Conn, bw *bufio.Writer) {
	defer c.flushOnce.Do(func() { close(c.flushed) })
	_ = conn.SetWriteDeadline(time.Now().Add(CloseFlushTimeout))
	for more := true; more; {
		select {
		case f := <-c.send:
			c.hookWrite()
			_, err := bw.Write(f)
			putBuf(f)
			if err != nil {
				return
			}
		default:
			more = false
		}
	}
	if _, err := bw.Write(closeFrame(CloseNormal, "")); err != nil {
		return
	}
	if bw.Flush() == nil {
		c.mu.Lock()
		c.closeSent = true
		c.mu.Unlock()
	}
}

// drain asks the writer of the live relay connection to write what is
// queued and waits for it, at most CloseFlushTimeout.
func (c *PacketConn) drain() {
	// Under mu, as serve clears the connection: either the connection is
	// gone here, or serve sees the flush asked for and releases the wait
	// when the connection ends.
	c.mu.Lock()
	live := c.conn != nil && !c.isClosed()
	if isDone(c.flush) {
		c.mu.Unlock()
		return // an earlier Close asked already
	}
	close(c.flush)
	c.mu.Unlock()
	if !live {
		return
	}
	t := time.NewTimer(CloseFlushTimeout)
	defer t.Stop()
	select {
	case <-c.flushed:
	case <-c.closed:
	case <-t.C:
	}
}

func (c *PacketConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// fail records a permanent refusal and closes the connection's queues.
func (c *PacketConn) fail(err error) {
	c.cfg.Logger.Error("relay: registration refused", "relay", c.url.HostPort(), "endpoint", c.local.ID.Short(), "err", err)
	c.mu.Lock()
	c.fatal = err
	c.mu.Unlock()
	c.shut()
}

func (c *PacketConn) shut() {
	c.once.Do(func() {
		close(c.closed)
		c.cancel()
		c.mu.Lock()
		if c.conn != nil {
			if !c.closeSent {
				// Best effort: tell the relay before going.
				_ = c.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				_, _ = c.conn.Write(closeFrame(CloseNormal, ""))
			}
			c.conn.Close()
		}
		c.mu.Unlock()
	})
}

func (c *PacketConn) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal != nil {
		return fmt.Errorf("relay: %w", c.fatal)
	}
	return net.ErrClosed
}

// ReadFrom reads the next datagram sent to this endpoint; addr is the
// sender's *Addr.
func (c *PacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, changed := c.deadline, c.changed
		c.mu.Unlock()
		select {
		case d := <-c.recv:
			n := copy(p, d.data)
			putBuf(d.data)
			return n, d.from, nil
		case <-c.closed:
			return 0, nil, &net.OpError{Op: "read", Net: "aster-relay", Addr: c.local, Err: c.closedErr()}
		case <-dl:
			return 0, nil, &net.OpError{Op: "read", Net: "aster-relay", Addr: c.local, Err: os.ErrDeadlineExceeded}
		case <-changed:
		}
	}
}

// WriteTo sends p to the endpoint addr (an *Addr) through the relay. Like
// UDP, it does not wait: when the send queue is full, or the relay
// connection is being replaced, the datagram is dropped.
func (c *PacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*Addr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "aster-relay", Addr: addr, Err: fmt.Errorf("relay: not a relay address: %T", addr)}
	}
	if len(p) == 0 || len(p) > MaxDatagramSize {
		return 0, &net.OpError{Op: "write", Net: "aster-relay", Addr: addr, Err: fmt.Errorf("relay: datagram of %d bytes (1..%d allowed)", len(p), MaxDatagramSize)}
	}
	if c.isClosed() {
		return 0, &net.OpError{Op: "write", Net: "aster-relay", Addr: addr, Err: c.closedErr()}
	}
	f := datagramFrame(frameSend, a.ID, p)
	select {
	case c.send <- f:
	default:
		putBuf(f)
		c.dropped.Add(1)
	}
	return len(p), nil
}

// Close closes the relay connection and stops reconnecting. It first
// writes the datagrams already queued (a QUIC CONNECTION_CLOSE sent just
// before Close among them) to the relay, waiting at most
// CloseFlushTimeout. Pending and later ReadFrom and WriteTo calls fail.
// Close is safe to call more than once and concurrently.
func (c *PacketConn) Close() error {
	c.closeMu.Lock()
	c.drain()
	c.closeMu.Unlock()
	c.shut()
	c.wg.Wait()
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	return nil
}

// LocalAddr returns this endpoint's *Addr (its id and the relay URL).
func (c *PacketConn) LocalAddr() net.Addr { return c.local }

// SetDeadline sets the read deadline; writes never block.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetWriteDeadline does nothing: writes never block.
func (c *PacketConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline sets the deadline of pending and later ReadFrom calls;
// the zero time clears it.
func (c *PacketConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	ch := make(chan struct{})
	c.deadline = ch
	close(c.changed)
	c.changed = make(chan struct{})
	switch {
	case t.IsZero():
	case !t.After(time.Now()):
		close(ch)
	default:
		c.timer = time.AfterFunc(time.Until(t), func() { close(ch) })
	}
	return nil
}

// SetReadBuffer does nothing; it exists so that quic-go does not warn
// about the buffer size of a socket that is not one.
func (c *PacketConn) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing, like SetReadBuffer.
func (c *PacketConn) SetWriteBuffer(int) error { return nil }

// Dropped returns how many datagrams this connection dropped because a
// queue was full.
func (c *PacketConn) Dropped() uint64 { return c.dropped.Load() }

// Reconnects returns how many times the relay connection was replaced.
func (c *PacketConn) Reconnects() uint64 { return c.reconnects.Load() }
