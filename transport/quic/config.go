package quic

import (
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Defaults for the fields of Config.
const (
	// DefaultMaxIncomingStreams is the default of Config.MaxIncomingStreams.
	DefaultMaxIncomingStreams = 10000
	// DefaultKeepAlivePeriod is the default of Config.KeepAlivePeriod.
	DefaultKeepAlivePeriod = time.Second
	// DefaultMaxIdleTimeout is the default of Config.MaxIdleTimeout: a
	// peer that was killed, or whose network vanished, is noticed within
	// it.
	DefaultMaxIdleTimeout = 3 * time.Second
	// DefaultHandshakeTimeout is the default of Config.HandshakeTimeout: a
	// dial to an address where nothing answers fails after it.
	DefaultHandshakeTimeout = 2500 * time.Millisecond
	// DefaultInitialStreamReceiveWindow is the default of
	// Config.InitialStreamReceiveWindow.
	DefaultInitialStreamReceiveWindow = 512 << 10
	// DefaultMaxStreamReceiveWindow is the default of
	// Config.MaxStreamReceiveWindow.
	DefaultMaxStreamReceiveWindow = 16 << 20
	// DefaultInitialConnectionReceiveWindow is the default of
	// Config.InitialConnectionReceiveWindow on the listening side.
	DefaultInitialConnectionReceiveWindow = 1 << 20
	// DefaultDialInitialConnectionReceiveWindow is the default of
	// Config.InitialConnectionReceiveWindow for connections a Dialer makes:
	// 32 streams' initial windows, so that a few response streams the
	// application stops reading cannot use up the credit that every other
	// call on the connection needs.
	DefaultDialInitialConnectionReceiveWindow = 16 << 20
	// DefaultMaxConnectionReceiveWindow is the default of
	// Config.MaxConnectionReceiveWindow.
	DefaultMaxConnectionReceiveWindow = 32 << 20
	// DefaultLoopbackDialTimeout is the default of Config.LoopbackDialTimeout.
	DefaultLoopbackDialTimeout = 500 * time.Millisecond
	// DefaultDialStagger is the default of Config.DialStagger: the
	// "Connection Attempt Delay" RFC 8305 (Happy Eyeballs v2) recommends.
	DefaultDialStagger = 250 * time.Millisecond
	// DefaultMaxConcurrentDials is the default of Config.MaxConcurrentDials.
	DefaultMaxConcurrentDials = 4
	// DefaultUnvalidatedHandshakes is the default of
	// Config.UnvalidatedHandshakes.
	DefaultUnvalidatedHandshakes = 1000
)

// Config tunes the QUIC transport. A nil *Config and zero fields select the
// documented defaults, which differ from quic-go's where those do not suit
// an RPC system (quic-go allows only 100 concurrent streams and disables
// keep-alives, so idle connections die after 30s).
//
// Liveness: with the defaults a peer that was killed (or whose network
// vanished without a CONNECTION_CLOSE) is noticed within KeepAlivePeriod +
// MaxIdleTimeout (1s + 3s: the idle timer restarts when the first PING
// after the peer's last packet is sent): calls in flight on the connection
// fail with UNAVAILABLE, new calls redial, and a server cancels the
// handlers of the dead client. The price is keep-alive traffic: an idle
// connection exchanges a PING and its ACK once a KeepAlivePeriod (1s),
// about 150 bytes/s with UDP/IP headers per idle connection; a busy
// connection sends no extra packets. A 1s keep-alive also holds NAT and
// firewall UDP bindings, whose timeouts are typically 30s or more. On
// networks that lose whole seconds of packets (mobile hand-over), raise
// MaxIdleTimeout (and KeepAlivePeriod with it) to trade detection time for
// tolerance; the effective idle timeout is the smaller of both sides'.
type Config struct {
	// MaxIncomingStreams is how many bidirectional streams the peer may have
	// open at once on one connection; the peer's OpenStream blocks beyond
	// it. A stream stops counting once both directions are finished and
	// its data was read or discarded, so streams must be Closed or Reset.
	// Zero or negative selects DefaultMaxIncomingStreams (10000).
	MaxIncomingStreams int64

	// KeepAlivePeriod is how long a connection that received nothing waits
	// before it sends a PING, which the peer acknowledges (quic-go sends
	// one at most every effective MaxIdleTimeout/2). Zero selects
	// DefaultKeepAlivePeriod (1s); a negative value disables keep-alives,
	// and idle connections then close after MaxIdleTimeout.
	KeepAlivePeriod time.Duration

	// MaxIdleTimeout closes a connection that received nothing for this
	// long (not even an acknowledgement of its keep-alive), which is how a
	// dead peer is noticed. The effective value is the smaller of both
	// sides' (and at least three probe timeouts, so a slow path is not
	// cut). Zero or negative selects DefaultMaxIdleTimeout (3s).
	MaxIdleTimeout time.Duration

	// HandshakeTimeout bounds the TLS/QUIC handshake at one address: an
	// attempt that hears nothing from the peer for this long fails (so a
	// dial to an address where nothing listens fails after it), and one
	// that keeps hearing from a slow peer fails after twice as long. The
	// listening side applies the same bounds. Zero or negative selects
	// DefaultHandshakeTimeout (2.5s).
	HandshakeTimeout time.Duration

	// InitialStreamReceiveWindow is the initial per-stream flow-control
	// window; quic-go grows it up to MaxStreamReceiveWindow while the
	// application keeps reading. Zero selects
	// DefaultInitialStreamReceiveWindow (512 KiB).
	InitialStreamReceiveWindow uint64
	// MaxStreamReceiveWindow caps the per-stream window. Zero selects
	// DefaultMaxStreamReceiveWindow (16 MiB); values below the initial
	// window are raised to it.
	MaxStreamReceiveWindow uint64
	// InitialConnectionReceiveWindow is the initial window for all streams
	// of a connection together: how much the peer may send that this side
	// has not read yet. Zero selects DefaultInitialConnectionReceiveWindow
	// (1 MiB) for a Listener — what a peer can make the server buffer — and
	// DefaultDialInitialConnectionReceiveWindow (16 MiB) for a Dialer, whose
	// window only its own application's unread responses can fill: at
	// 1 MiB, two response streams left unread (512 KiB each) would stall
	// every other call on the connection.
	InitialConnectionReceiveWindow uint64
	// MaxConnectionReceiveWindow caps the connection window. Zero selects
	// DefaultMaxConnectionReceiveWindow (32 MiB); values below the initial
	// window are raised to it.
	MaxConnectionReceiveWindow uint64

	// LoopbackDialTimeout bounds a Dial attempt at a loopback address that
	// is not the last address to try. Listeners advertise 127.0.0.1 first so
	// local peers can always reach them; for a remote peer that address
	// leads nowhere and UDP reports no error, so without this bound each
	// remote Dial would wait a full HandshakeTimeout. Zero or negative
	// selects DefaultLoopbackDialTimeout (500ms), so that a dead server
	// with a loopback and one other address fails a Dial within 3s.
	LoopbackDialTimeout time.Duration

	// DialStagger is the head start a Dial gives each direct address
	// before it also tries the next one (as Happy Eyeballs, RFC 8305,
	// does): an address that answers wins within one handshake, and one
	// where packets vanish (a private address seen from outside its NAT)
	// delays the next address by DialStagger instead of a whole
	// HandshakeTimeout. An attempt that fails starts the next at once.
	// Zero or negative selects DefaultDialStagger (250ms).
	DialStagger time.Duration

	// MaxConcurrentDials bounds the handshakes one Dial runs at once; the
	// next address waits until one of them fails. Zero or negative
	// selects DefaultMaxConcurrentDials (4).
	MaxConcurrentDials int

	// UnvalidatedHandshakes is how many handshakes per second (in bursts
	// of as many) a Listener starts for clients whose source address it
	// has not validated. Beyond it, a new client is first asked to prove
	// its address (a QUIC Retry, RFC 9000 8.1.2: one more round trip), so
	// that Initial packets from forged addresses, which never see the
	// answer, make the listener hold nothing; each one it does take holds
	// a connection, its TLS state and a goroutine for up to
	// HandshakeTimeout. Zero selects DefaultUnvalidatedHandshakes (1,000
	// per second); negative validates every client's address.
	UnvalidatedHandshakes int
}

// withDefaults returns a copy of c (which may be nil) with defaults applied.
func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.MaxIncomingStreams <= 0 {
		out.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	if out.KeepAlivePeriod == 0 {
		out.KeepAlivePeriod = DefaultKeepAlivePeriod
	}
	if out.MaxIdleTimeout <= 0 {
		out.MaxIdleTimeout = DefaultMaxIdleTimeout
	}
	if out.HandshakeTimeout <= 0 {
		out.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if out.InitialStreamReceiveWindow == 0 {
		out.InitialStreamReceiveWindow = DefaultInitialStreamReceiveWindow
	}
	if out.MaxStreamReceiveWindow == 0 {
		out.MaxStreamReceiveWindow = DefaultMaxStreamReceiveWindow
	}
	out.MaxStreamReceiveWindow = max(out.MaxStreamReceiveWindow, out.InitialStreamReceiveWindow)
	if out.InitialConnectionReceiveWindow == 0 {
		out.InitialConnectionReceiveWindow = DefaultInitialConnectionReceiveWindow
	}
	if out.MaxConnectionReceiveWindow == 0 {
		out.MaxConnectionReceiveWindow = DefaultMaxConnectionReceiveWindow
	}
	out.MaxConnectionReceiveWindow = max(out.MaxConnectionReceiveWindow, out.InitialConnectionReceiveWindow)
	if out.LoopbackDialTimeout <= 0 {
		out.LoopbackDialTimeout = DefaultLoopbackDialTimeout
	}
	if out.DialStagger <= 0 {
		out.DialStagger = DefaultDialStagger
	}
	if out.MaxConcurrentDials <= 0 {
		out.MaxConcurrentDials = DefaultMaxConcurrentDials
	}
	if out.UnvalidatedHandshakes == 0 {
		out.UnvalidatedHandshakes = DefaultUnvalidatedHandshakes
	}
	return out
}

// quicConfig translates c, which has defaults applied, to quic-go's Config.
func (c *Config) quicConfig() *quicgo.Config {
	keepAlive := c.KeepAlivePeriod
	if keepAlive < 0 {
		keepAlive = 0
	}
	return &quicgo.Config{
		HandshakeIdleTimeout:           c.HandshakeTimeout,
		MaxIdleTimeout:                 c.MaxIdleTimeout,
		KeepAlivePeriod:                keepAlive,
		InitialStreamReceiveWindow:     c.InitialStreamReceiveWindow,
		MaxStreamReceiveWindow:         c.MaxStreamReceiveWindow,
		InitialConnectionReceiveWindow: c.InitialConnectionReceiveWindow,
		MaxConnectionReceiveWindow:     c.MaxConnectionReceiveWindow,
		MaxIncomingStreams:             c.MaxIncomingStreams,
		// aster uses bidirectional streams only.
		MaxIncomingUniStreams: -1,
	}
}
