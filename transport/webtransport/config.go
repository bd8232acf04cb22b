package webtransport

import (
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// Defaults for the fields of Config.
const (
	// DefaultPath is the default of Config.Path.
	DefaultPath = "/aster"
	// DefaultMaxIncomingStreams is the default of Config.MaxIncomingStreams.
	DefaultMaxIncomingStreams = 10000
	// DefaultKeepAlivePeriod is the default of Config.KeepAlivePeriod.
	DefaultKeepAlivePeriod = time.Second
	// DefaultMaxIdleTimeout is the default of Config.MaxIdleTimeout: a
	// peer that was killed, or whose network vanished, is noticed within
	// it.
	DefaultMaxIdleTimeout = 3 * time.Second
	// DefaultHandshakeTimeout is the default of Config.HandshakeTimeout.
	DefaultHandshakeTimeout = 2500 * time.Millisecond
	// DefaultCertLifetime is the default of Config.CertLifetime.
	DefaultCertLifetime = 13 * 24 * time.Hour
	// MaxCertLifetime is the longest certificate validity browsers accept
	// with serverCertificateHashes (two weeks).
	MaxCertLifetime = 14 * 24 * time.Hour
	// DefaultAcceptBacklog is the default of Config.AcceptBacklog.
	DefaultAcceptBacklog = 32
	// DefaultUnvalidatedHandshakes is the default of
	// Config.UnvalidatedHandshakes.
	DefaultUnvalidatedHandshakes = 1000
	// DefaultMaxPendingConns is the default of Config.MaxPendingConns.
	DefaultMaxPendingConns = 1024
)

// Config tunes the WebTransport transport. A nil *Config and zero fields
// select the documented defaults.
type Config struct {
	// Path is the HTTP path of the WebTransport endpoint. Zero selects
	// DefaultPath ("/aster").
	Path string
	// Host is the host name or IP address the listener puts in the URL it
	// advertises (Listener.URL, Listener.Addr). Zero selects the bound IP
	// address, or 127.0.0.1 when the listener is bound to all interfaces.
	Host string
	// MaxIncomingStreams is how many bidirectional streams the peer may have
	// open at once on one connection (one session per QUIC connection; the
	// client's HTTP/3 CONNECT stream is one of them); the peer's OpenStream
	// blocks beyond it. Zero or negative selects DefaultMaxIncomingStreams
	// (10000).
	MaxIncomingStreams int64
	// KeepAlivePeriod is how long a connection that received nothing
	// waits before it sends a PING (at most every effective
	// MaxIdleTimeout/2). Zero selects DefaultKeepAlivePeriod (1s);
	// negative disables it. Keep-alives cost about 150 bytes/s per idle
	// connection and also hold NAT bindings (typically 30s or more).
	KeepAlivePeriod time.Duration
	// MaxIdleTimeout closes a connection that received nothing for this
	// long (not even the acknowledgement of a keep-alive): a killed peer
	// is noticed within it, and the session's calls fail with UNAVAILABLE.
	// The effective value is the smaller of both sides'. Raise it on
	// networks that lose whole seconds of packets. Zero or negative
	// selects DefaultMaxIdleTimeout (3s). A killed peer is noticed within
	// KeepAlivePeriod + MaxIdleTimeout (4s by default).
	MaxIdleTimeout time.Duration
	// HandshakeTimeout bounds connection set-up: the QUIC handshake, the
	// HTTP/3 CONNECT request and the identity exchange together; a dial to
	// an address where nothing answers fails after it. Zero or negative
	// selects DefaultHandshakeTimeout (2.5s).
	HandshakeTimeout time.Duration
	// CertLifetime is the validity period of the listener's TLS
	// certificates. A certificate is served for half of it, then replaced.
	// Zero or negative selects DefaultCertLifetime (13 days); values above
	// MaxCertLifetime (14 days, the browsers' limit) are lowered to it.
	CertLifetime time.Duration
	// CheckOrigin, if set, decides whether a browser page of the given
	// Origin ("" for non-browser clients) may open a session. Default: all
	// origins may; who may call what is decided by the endpoint identity
	// and admission, not by the origin.
	CheckOrigin func(origin string) bool
	// AcceptBacklog is how many verified connections may wait for Accept;
	// beyond it new sessions are refused. Zero or negative selects
	// DefaultAcceptBacklog (32).
	AcceptBacklog int
	// MaxPendingConns caps the QUIC connections that have not yet
	// identified a session (CONNECT and the identity exchange): a stranger's
	// connections, each of which may hold a goroutine and a few KiB per
	// stream it opens. Beyond it a new connection is closed at once
	// (H3_EXCESSIVE_LOAD); one that has not identified a session within
	// twice HandshakeTimeout (at least 5 s) is closed then. Zero or negative selects
	// DefaultMaxPendingConns (1024).
	MaxPendingConns int
	// UnvalidatedHandshakes is how many handshakes per second (in bursts
	// of as many) the Listener starts for clients whose source address it
	// has not validated; beyond it a new client is first asked to prove
	// its address (a QUIC Retry, one more round trip), so that Initial
	// packets from forged addresses make it hold nothing. Zero selects
	// DefaultUnvalidatedHandshakes (1,000 per second); negative validates
	// every client's address.
	UnvalidatedHandshakes int
	// Now is the clock used for certificate validity and rotation. Zero
	// selects time.Now; tests set it to move time.
	Now func() time.Time

	// dial is set on a Dialer's copy: the connection receive window is
	// then the client's (connWindow).
	dial bool
}

// setupTimeout is how long a listener's QUIC connection may take to
// identify its first session: twice HandshakeTimeout (which bounds the
// client's whole set-up), and at least twice the default, so that a short
// HandshakeTimeout does not cut set-ups slowed by a busy host.
func (c *Config) setupTimeout() time.Duration {
	return max(2*c.HandshakeTimeout, 2*DefaultHandshakeTimeout)
}

func (c *Config) withDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.Path == "" {
		out.Path = DefaultPath
	}
	if out.Path[0] != '/' {
		out.Path = "/" + out.Path
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
	if out.CertLifetime <= 0 {
		out.CertLifetime = DefaultCertLifetime
	}
	out.CertLifetime = min(out.CertLifetime, MaxCertLifetime)
	if out.UnvalidatedHandshakes == 0 {
		out.UnvalidatedHandshakes = DefaultUnvalidatedHandshakes
	}
	if out.MaxPendingConns <= 0 {
		out.MaxPendingConns = DefaultMaxPendingConns
	}
	if out.AcceptBacklog <= 0 {
		out.AcceptBacklog = DefaultAcceptBacklog
	}
	if out.Now == nil {
		out.Now = time.Now
	}
	return out
}

// connWindow is the initial connection receive window: as transport/quic's,
// 1 MiB where the server listens and 16 MiB where a client dials, so that a
// client's unread response streams cannot stall its other calls.
func (c *Config) connWindow() uint64 {
	if c.dial {
		return 16 << 20
	}
	return 1 << 20
}

// quicConfig returns quic-go's configuration; WebTransport needs datagrams
// and partial-delivery resets enabled.
func (c *Config) quicConfig() *quicgo.Config {
	return &quicgo.Config{
		HandshakeIdleTimeout:             c.HandshakeTimeout,
		MaxIdleTimeout:                   c.MaxIdleTimeout,
		KeepAlivePeriod:                  max(c.KeepAlivePeriod, 0),
		InitialStreamReceiveWindow:       512 << 10,
		MaxStreamReceiveWindow:           16 << 20,
		InitialConnectionReceiveWindow:   c.connWindow(),
		MaxConnectionReceiveWindow:       32 << 20,
		MaxIncomingStreams:               c.MaxIncomingStreams,
		MaxIncomingUniStreams:            100, // HTTP/3 control and QPACK streams
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
	}
}
