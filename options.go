package aster

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/aster-go/aster/codec"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Options: one vocabulary for both sides.
//
// An Option means the same on a Server and a Client (the endpoint's key,
// codec, frame limit, QUIC configuration, logger, IP transports) and can be
// passed to NewServer, NewClient and Dial alike. A ServerOption or a
// ClientOption is specific to its side and named for what it does.
//
// An option given a bad value (a frame size of 0 or above the protocol's
// cap, a negative count, a nil codec, ...) is recorded: Serve and
// ListenAndServe, or Dial and every call of the client, then fail with
// INVALID_ARGUMENT naming the option. The first bad option is reported.

// ServerOption configures a Server (NewServer).
type ServerOption interface{ applyServer(*serverOptions) }

// ClientOption configures a Client (NewClient, Dial, DialAddress).
type ClientOption interface{ applyClient(*clientOptions) }

// Option configures either side the same way: it is both a ServerOption
// and a ClientOption.
type Option interface {
	ServerOption
	ClientOption
}

type serverOptionFunc func(*serverOptions)

func (f serverOptionFunc) applyServer(o *serverOptions) { f(o) }

type clientOptionFunc func(*clientOptions)

func (f clientOptionFunc) applyClient(o *clientOptions) { f(o) }

// bothOption applies a setting to either side.
type bothOption struct {
	server func(*serverOptions)
	client func(*clientOptions)
}

func (b bothOption) applyServer(o *serverOptions) { b.server(o) }
func (b bothOption) applyClient(o *clientOptions) { b.client(o) }

// optionError is the error a bad option value records: INVALID_ARGUMENT,
// naming the option.
func optionError(option string, format string, args ...any) error {
	return status.Errorf(status.InvalidArgument, "aster.%s: "+format, append([]any{option}, args...)...)
}

// keep records err unless an earlier option failed.
func keep(dst *error, err error) {
	if *dst == nil {
		*dst = err
	}
}

// both builds an Option from one check and one setter per side. check
// returns the error to record, or nil.
func both(check func() error, server func(*serverOptions), client func(*clientOptions)) Option {
	err := check()
	return bothOption{
		server: func(o *serverOptions) {
			if err != nil {
				keep(&o.err, err)
				return
			}
			server(o)
		},
		client: func(o *clientOptions) {
			if err != nil {
				keep(&o.err, err)
				return
			}
			client(o)
		},
	}
}

func noCheck() error { return nil }

// ---- Options for both sides ----

// WithSecretKey sets the endpoint's identity key: the server's (its
// endpoint id is the public key) or the client's (the key its default
// dialer presents, and the one WithDialerFor builds dialers from). A key
// that is not an ed25519 private key is rejected. Default: a fresh random
// key (a server's endpoint id then changes on every start).
func WithSecretKey(k trust.SecretKey) Option {
	return both(func() error {
		if len(k) != ed25519.PrivateKeySize {
			return optionError("WithSecretKey", "key has %d bytes, want an ed25519 private key (%d)", len(k), ed25519.PrivateKeySize)
		}
		return nil
	}, func(o *serverOptions) { o.key = k }, func(o *clientOptions) { o.key = k })
}

// WithCodec sets a codec. On a server it adds (or replaces, by name) a codec
// the server accepts; on a client it is the codec requests are sent in and
// responses decoded with. A nil codec is rejected. Default: a server
// accepts cbor and json; a client uses cbor.
func WithCodec(c codec.Codec) Option {
	return both(func() error {
		if c == nil {
			return optionError("WithCodec", "nil codec")
		}
		return nil
	}, func(o *serverOptions) { o.codecs[c.Name()] = c }, func(o *clientOptions) { o.codec = c })
}

// WithMaxFrameSize caps the size of one received frame (and of one
// decompressed message), 1 byte to 16 MiB (wire.DefaultMaxFrameSize); a
// value outside is rejected. Larger frames fail the call with
// RESOURCE_EXHAUSTED before anything is allocated. Default: 16 MiB.
func WithMaxFrameSize(n uint32) Option {
	return both(func() error {
		if n == 0 || n > wire.DefaultMaxFrameSize {
			return optionError("WithMaxFrameSize", "%d is outside 1..%d", n, wire.DefaultMaxFrameSize)
		}
		return nil
	}, func(o *serverOptions) { o.maxFrame = n }, func(o *clientOptions) { o.maxFrame = n })
}

// WithQUICConfig sets the QUIC configuration: the listener's of
// ListenAndServe, and the client's default dialer's. nil means the
// defaults. Default: quic.Config's documented defaults.
func WithQUICConfig(c *quic.Config) Option {
	return both(noCheck, func(o *serverOptions) { o.quic = c }, func(o *clientOptions) { o.quic = c })
}

// WithLogger sets the logger: the server logs connection and call
// failures to it, the client its dials and lost connections (at debug
// level). A nil logger is rejected. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return both(func() error {
		if l == nil {
			return optionError("WithLogger", "nil logger")
		}
		return nil
	}, func(o *serverOptions) { o.logger = l }, func(o *clientOptions) { o.logger = l })
}

// WithIPTransports(false) turns direct QUIC over UDP off: a server's
// ListenAndServe then listens only through its home relay
// (WithHomeRelay) and fails without one; a client's default dialer dials
// only through the relay named in the server's address. Default: true.
func WithIPTransports(enabled bool) Option {
	return both(noCheck, func(o *serverOptions) { o.noIP = !enabled }, func(o *clientOptions) { o.noIP = !enabled })
}

// ---- Server options ----

type serverOptions struct {
	key         trust.SecretKey
	mw          []handler.Middleware
	codecs      map[string]codec.Codec
	maxFrame    uint32
	maxSessions int
	logger      *slog.Logger
	quic        *quic.Config
	// admit runs admission; it returns the connection to accept calls from
	// (the same, or one that first hands back a stream admission read).
	admit    func(ctx context.Context, c transport.Conn) (handler.Peer, transport.Conn, error)
	linger   time.Duration
	connHook func(handler.Peer) func()
	// gates run on each connection before anything else (conngate.go),
	// within gateTimeout.
	gates       []ConnGate
	gateTimeout time.Duration

	bindAddr string // ListenAndServe("") address (WithBindAddr)
	relayURL string // home relay (WithHomeRelay)
	noIP     bool   // no direct QUIC (WithIPTransports(false))
	manifest string // WithContractManifest path
	err      error  // the first bad option, returned by Serve

	limits serverLimits // limits.go

	relayProxy func(*url.URL) (*url.URL, error) // WithRelayProxy
	noDirect   bool                             // WithDirectPaths(false)

	cred      *enroll.Credential // WithCredential: published in registry entries
	registry  discovery.Registry // WithRegistry
	regPrefix string
	regCheck  time.Duration // WithRegistryRefresh; 0: DefaultRegistryRefresh

	advertised func() []netip.AddrPort // WithAdvertisedAddrs (advertise.go)
}

// failed returns the error Serve and ListenAndServe return before doing
// anything: a bad option value.
func (o *serverOptions) failed() error { return o.err }

// WithMiddleware adds server-wide middleware around every method (outermost
// first). Service and method middleware run inside it. Default: none.
func WithMiddleware(mw ...handler.Middleware) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.mw = append(o.mw, mw...) })
}

// WithMaxSessionsPerConn caps the active sessions one connection may hold
// (at least 1). Default 1024; beyond it new sessions fail with
// RESOURCE_EXHAUSTED.
func WithMaxSessionsPerConn(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if n < 1 {
			keep(&o.err, optionError("WithMaxSessionsPerConn", "%d sessions: want at least 1", n))
			return
		}
		o.maxSessions = n
	})
}

// WithAdmission installs the admission gate: it runs once per connection
// before any call on it is served (after the connection gates,
// WithConnGate) and returns the peer (with its granted capabilities) or an
// error, which closes the connection. Default: every peer is admitted
// unrestricted (open gate). See also WithGate.
func WithAdmission(fn func(ctx context.Context, c transport.Conn) (handler.Peer, error)) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if fn == nil {
			keep(&o.err, optionError("WithAdmission", "nil function"))
			return
		}
		o.admit = func(ctx context.Context, c transport.Conn) (handler.Peer, transport.Conn, error) {
			p, err := fn(ctx, c)
			return p, c, err
		}
	})
}

// WithGate turns admission on: a connection starts with the admission
// exchange, and only peers gate admits are served, with the capabilities it
// grants (checked against each method's Requires). A connection whose first
// call is not the admission call is served as an anonymous consumer if the
// consumer gate is open (clients of the protocol revision without admission,
// e.g. browsers), and refused otherwise; one that does not complete
// admission within 5 s is refused. A nil gate is rejected. Default: no gate
// (every peer is admitted unrestricted).
func WithGate(g *enroll.Gate) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if g == nil {
			keep(&o.err, optionError("WithGate", "nil gate"))
			return
		}
		o.admit = func(ctx context.Context, c transport.Conn) (handler.Peer, transport.Conn, error) {
			return gateAdmit(ctx, o, g, c)
		}
	})
}

// WithShutdownLinger sets how long Shutdown waits after the last call ends
// before closing connections, so that responses already sent are delivered
// (closing a QUIC connection discards unacknowledged data). A negative
// duration is rejected. Default 250 ms.
func WithShutdownLinger(d time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if d < 0 {
			keep(&o.err, optionError("WithShutdownLinger", "negative duration %v", d))
			return
		}
		o.linger = d
	})
}

// WithHomeRelay gives the server a home relay: ListenAndServe registers at
// the relay at url ("https://host[:port]", with "#sha256=<hex>" pinning a
// self-signed relay certificate; see transport/relay), keeps that
// connection (reconnecting when it drops), serves the connections peers
// dial through it, and the server's Address carries the URL so that clients
// that cannot reach it directly go through the relay. When the server also
// listens with direct QUIC, a relay that is down or unreachable at start is
// logged as a warning and retried in the background, and the server starts
// on its direct addresses; a server reachable only through its relay
// (WithIPTransports(false)) fails to start instead. A relay that refuses
// the registration fails the start either way. Default: no relay.
func WithHomeRelay(url string) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.relayURL = url })
}

// WithConnHook sets a function the server calls for each admitted
// connection, with its peer; the function it returns, if not nil, is called
// when the connection has ended and its calls have finished. It must not
// block. It only observes: to admit or refuse connections, use
// WithConnGate. Instrumentation uses it to count active connections (see
// otel.ConnHook). Default: none.
func WithConnHook(fn func(handler.Peer) func()) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.connHook = fn })
}

// WithBindAddr sets the UDP address ListenAndServe("") listens on. Default:
// a free port on all interfaces.
func WithBindAddr(addr string) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.bindAddr = addr })
}

// WithContractManifest makes Serve (and so ListenAndServe) refuse to start
// when the server's contract differs from the manifest committed at path
// (written by "aster contract gen" or contract.WriteManifest). Serve then
// returns a FAILED_PRECONDITION error listing the differences, which catches
// accidental wire-breaking changes before the server takes traffic; an
// intended change is committed by regenerating the manifest. Default: no
// check.
func WithContractManifest(path string) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.manifest = path })
}

// ---- Client options ----

type clientOptions struct {
	key         trust.SecretKey
	dialer      transport.Dialer
	dialerFor   func(trust.SecretKey) transport.Dialer
	conn        transport.Conn
	mw          []middleware.Client
	codec       codec.Codec
	maxFrame    uint32
	quic        *quic.Config
	logger      *slog.Logger
	noRelay     bool                // WithRelayFallback(false)
	noIP        bool                // WithIPTransports(false)
	cred        *enroll.Credential  // presented at admission
	idempotent  map[methodName]bool // WithIdempotent
	streamReuse bool                // WithStreamReuse; default streamReuseDefault
	err         error               // the first bad option, returned by Dial and every call

	fleet fleetOptions // fleet.go: options only a Fleet reads

	relayProxy func(*url.URL) (*url.URL, error) // WithRelayProxy
	noDirect   bool                             // WithDirectPaths(false)
}

// methodName is a "Service.method" pair, split.
type methodName struct{ service, method string }

// splitMethod parses "Service.method" (service names may contain dots; the
// method is after the last one).
func splitMethod(s string) (methodName, bool) {
	i := strings.LastIndexByte(s, '.')
	if i <= 0 || i == len(s)-1 {
		return methodName{}, false
	}
	return methodName{s[:i], s[i+1:]}, true
}

// WithDialer sets the transport used to reach the server. A nil dialer is
// rejected. Default: direct QUIC with the client's key and, when the
// address carries a relay, a fallback to the relay (see WithRelayFallback).
// An address reachable only over WebTransport needs a WebTransport dialer,
// which the aster package does not link: pass one with WithDialerFor.
func WithDialer(d transport.Dialer) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if d == nil {
			keep(&o.err, optionError("WithDialer", "nil dialer"))
			return
		}
		o.dialer, o.dialerFor = d, nil
	})
}

// WithDialerFor sets the transport from a constructor that the client
// calls with its own key (WithSecretKey), so that the key is given once:
//
//	aster.WithDialerFor(nw.Dialer) // transport/mem
//	aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer {
//		return webtransport.NewDialer(k, nil)
//	})
//
// A nil constructor is rejected. Default: as WithDialer's.
func WithDialerFor(newDialer func(key trust.SecretKey) transport.Dialer) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if newDialer == nil {
			keep(&o.err, optionError("WithDialerFor", "nil constructor"))
			return
		}
		o.dialerFor, o.dialer = newDialer, nil
	})
}

// WithConn makes the client use an established connection instead of
// dialling; it still goes through admission on first use. The client does
// not redial when it closes. A nil connection is rejected. Default: none.
func WithConn(c transport.Conn) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if c == nil {
			keep(&o.err, optionError("WithConn", "nil connection"))
			return
		}
		o.conn = c
	})
}

// WithClientMiddleware adds client middleware around every call (outermost
// first). Default: none.
func WithClientMiddleware(mw ...middleware.Client) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.mw = append(o.mw, mw...) })
}

// defaultClientOptions are a Client's (and a Fleet's) options before the
// ones given are applied: every default in one place, so that a Fleet's
// producers get the same as a Client.
func defaultClientOptions() clientOptions {
	return clientOptions{codec: cbor.Codec{}, maxFrame: wire.DefaultMaxFrameSize, logger: slog.Default(), streamReuse: streamReuseDefault}
}

// streamReuseDefault is WithStreamReuse's default (tests run the suite with
// it off too).
var streamReuseDefault = true

// WithStreamReuse(false) gives every call a stream of its own. By default
// (true) a client whose server offers stream reuse in its admission
// verdict (PROTOCOL.md 23) starts a call on an idle stream of an earlier
// call when it has one, and keeps the stream of a call that ended cleanly
// (its trailer read: OK or an error status) for another: up to the
// server's offer (at most DefaultMaxIdleStreams) per connection, or as
// many as it has calls in flight there if that is more, each for at most
// ClientStreamIdleTimeout. Concurrent calls still each have their own
// stream, and a call that ended otherwise (cancelled, deadline, reset, not
// read to its end) discards its stream. Client.Metrics counts the streams
// opened and reused.
func WithStreamReuse(enabled bool) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.streamReuse = enabled })
}

// WithRelayFallback(false) keeps the default dialer from going through the
// relay named in the server's address. Default: true, the client dials the
// direct addresses first and falls back to the relay when they do not
// answer (transport/relay.FallbackDialer).
func WithRelayFallback(enabled bool) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.noRelay = !enabled })
}

// WithRelayProxy sends the endpoint's connections to relays (a server's
// home relay, a client's relay fallback) through an HTTP CONNECT proxy:
// proxy is called with the relay as "https://host:port" and returns the
// proxy's URL, or nil to connect directly (transport/relay.Config.Proxy;
// relay.ProxyURL and relay.ProxyFromEnvironment make one). The relay's TLS
// runs end to end through the tunnel. Default: nil, relays are reached
// directly.
func WithRelayProxy(proxy func(target *url.URL) (*url.URL, error)) Option {
	return both(noCheck,
		func(o *serverOptions) { o.relayProxy = proxy },
		func(o *clientOptions) { o.relayProxy = proxy })
}

// WithDirectPaths says whether connections made through a relay move to a
// direct UDP path when the two endpoints can reach each other (hole
// punching, PROTOCOL.md §24; relay.DirectConfig). false keeps every packet
// of relayed connections on the relay, for a server's home relay
// connection and a client's relay dials. Default true.
func WithDirectPaths(enabled bool) Option {
	return both(noCheck,
		func(o *serverOptions) { o.noDirect = !enabled },
		func(o *clientOptions) { o.noDirect = !enabled })
}

// WithIdempotent declares methods ("Service.method") safe to retry, as if
// the server's contract marked them idempotent: calls to them carry
// middleware.Call.Idempotent, which Retry acts on. A name that is not
// Service.method is rejected. Default: only what the contract marks and the
// Idempotent() call option.
func WithIdempotent(methods ...string) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		for _, m := range methods {
			mn, ok := splitMethod(m)
			if !ok {
				keep(&o.err, optionError("WithIdempotent", "%q is not Service.method", m))
				return
			}
			if o.idempotent == nil {
				o.idempotent = map[methodName]bool{}
			}
			o.idempotent[mn] = true
		}
	})
}

// WithCredential sets the endpoint's enrollment credential. A client
// presents it when it connects (admission). A server publishes it, encoded,
// in the registry entries WithRegistry makes, as its producer credential:
// clients that only accept enrolled producers (WithProducerRoot) dial it
// only if the credential is a producer's, signed by their root, issued to
// the server's key and names the service in its "aster.services" attribute.
// The credential is bound to an endpoint: use it with the matching key
// (WithSecretKey); an .aster-identity file holds both (package
// trust/identity: identity.Load, then Identity.Credential). Default: no
// credential (a client is then accepted only by servers with an open
// consumer gate; a server's registry entries carry none).
func WithCredential(cred *enroll.Credential) Option {
	return both(noCheck, func(o *serverOptions) { o.cred = cred }, func(o *clientOptions) { o.cred = cred })
}

// WithClientOptions bundles several client options into one, for helpers
// that return what a client needs as a single option (for example a key
// and the credential that goes with it).
func WithClientOptions(opts ...ClientOption) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		for _, opt := range opts {
			if opt != nil {
				opt.applyClient(o)
			}
		}
	})
}
