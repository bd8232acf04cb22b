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
	DefaultKeepAlivePeriod = 15 * time.Second
	// DefaultMaxIdleTimeout is the default of Config.MaxIdleTimeout.
	DefaultMaxIdleTimeout = 60 * time.Second
	// DefaultHandshakeTimeout is the default of Config.HandshakeTimeout.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultInitialStreamReceiveWindow is the default of
	// Config.InitialStreamReceiveWindow.
	DefaultInitialStreamReceiveWindow = 512 << 10
	// DefaultMaxStreamReceiveWindow is the default of
	// Config.MaxStreamReceiveWindow.
	DefaultMaxStreamReceiveWindow = 16 << 20
	// DefaultInitialConnectionReceiveWindow is the default of
	// Config.InitialConnectionReceiveWindow.
	DefaultInitialConnectionReceiveWindow = 1 << 20
	// DefaultMaxConnectionReceiveWindow is the default of
	// Config.MaxConnectionReceiveWindow.
	DefaultMaxConnectionReceiveWindow = 32 << 20
	// DefaultLoopbackDialTimeout is the default of Config.LoopbackDialTimeout.
	DefaultLoopbackDialTimeout = time.Second
)

// Config tunes the QUIC transport. A nil *Config and zero fields select the
// documented defaults, which differ from quic-go's where those do not suit
// an RPC system (quic-go allows only 100 concurrent streams and disables
// keep-alives, so idle connections die after 30s).
type Config struct {
	// MaxIncomingStreams is how many bidirectional streams the peer may have
	// open at once on one connection; the peer's OpenStream blocks beyond
	// it. A stream stops counting once both directions are finished and
	// its data was read or discarded, so streams must be Closed or Reset.
	// Zero or negative selects DefaultMaxIncomingStreams (10000).
	MaxIncomingStreams int64

	// KeepAlivePeriod is how often a PING is sent on an otherwise idle
	// connection (at most every MaxIdleTimeout/2). Zero selects
	// DefaultKeepAlivePeriod (15s); a negative value disables keep-alives.
	KeepAlivePeriod time.Duration

	// MaxIdleTimeout closes a connection that received nothing for this
	// long. The effective value is the smaller of both sides'. Zero or
	// negative selects DefaultMaxIdleTimeout (60s).
	MaxIdleTimeout time.Duration

	// HandshakeTimeout bounds the TLS/QUIC handshake. A Dial attempt at one
	// address fails after it; on the listening side quic-go aborts a
	// handshake that saw no packet for this long, or ran for twice as long.
	// Zero or negative selects DefaultHandshakeTimeout (10s).
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
	// of a connection together. Zero selects
	// DefaultInitialConnectionReceiveWindow (1 MiB).
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
	// selects DefaultLoopbackDialTimeout (1s).
	LoopbackDialTimeout time.Duration
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
