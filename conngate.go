package aster

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// Connection gates (PROTOCOL.md 3.3): the first step of every incoming
// connection. A server runs its gates once per connection, right after the
// transport's handshake proved the peer's key and before it accepts any
// stream of the connection, so no call is served, no admission request is
// read and no contract is sent before the gates admit the peer. The chain a
// connection goes through is:
//
//	connection gates (WithConnGate)   who may connect at all: allow-lists, rate limits
//	admission (WithGate/WithAdmission) which credential the peer holds (PROTOCOL.md 17)
//	per-method capabilities            what each call may do (handler.Requires)
//
// The configuration's enable_hooks ("connection hooks, Gate 0") and
// hook_timeout_ms are this step: see package config.

// ConnInfo describes an incoming connection to a ConnGate.
type ConnInfo struct {
	// ID is the peer's endpoint id, proven by the transport's handshake.
	ID trust.EndpointID
	// Addr is where the connection comes from: the peer's UDP address for
	// direct QUIC, the HTTP/3 connection's remote address for WebTransport,
	// a *relay.Addr ("<endpoint id>@<relay URL>") for a connection through a
	// relay (the relay hides the peer's IP address), a mem.Addr in memory.
	Addr net.Addr
}

// ConnGate decides whether a server serves an incoming connection: nil
// admits it, an error refuses it and the server closes the connection at
// once. It is called once per connection, before any stream of the
// connection is served (see WithConnGate). ctx ends when the decision's
// timeout (WithConnGateTimeout) passes or the connection closes; a gate
// that waits on something (a policy service, a database) must return when
// ctx is done.
//
// How the refusal reaches the peer depends on the error's status code
// (package status):
//
//   - UNAVAILABLE or RESOURCE_EXHAUSTED (a temporary refusal, such as a rate
//     limit): the connection closes with code SHUTDOWN (0x3); the client
//     reports UNAVAILABLE, and a retry may succeed later or elsewhere.
//   - any other error (a refusal of the peer itself): the connection closes
//     with code DENIED (0x4); the client reports PERMISSION_DENIED and does
//     not retry.
//
// The message of a *status.Error is sent to the peer in the close reason
// (cut to MaxConnGateReason bytes, control characters replaced); the text
// of any other error is only logged, and the peer reads a generic reason.
type ConnGate func(ctx context.Context, info ConnInfo) error

// Connection gate limits.
const (
	// DefaultConnGateTimeout is how long a server waits for its connection
	// gates' decision (WithConnGateTimeout), as the configuration's
	// hook_timeout_ms default of 5000.
	DefaultConnGateTimeout = 5 * time.Second
	// MaxConnGateTimeout is the longest decision timeout accepted. A
	// client waits at most 5 s for its admission verdict, so a gate slower
	// than that has lost the client anyway.
	MaxConnGateTimeout = time.Minute
	// MaxConnGateReason caps the part of a connection close reason that
	// comes from a gate's error message.
	MaxConnGateReason = 200
)

// Connection close reasons of refusals by a connection gate (PROTOCOL.md
// 3.3). A gate's status message follows the first two after ": ".
const (
	reasonGateDenied  = "connection refused"    // DENIED
	reasonGateLater   = "connection not served" // SHUTDOWN: a temporary refusal
	reasonGateTimeout = "connection gate timed out"
	reasonGatePanic   = "connection gate failed"
)

// errGateTimeout and errGatePanic are the refusals when the gates did not
// answer in time or panicked.
var (
	errGateTimeout = errors.New("aster: connection gate did not decide within its timeout")
	errGatePanic   = errors.New("aster: connection gate panicked")
)

// WithConnGate adds connection gates: each incoming connection is served
// only if every gate, in the order given, admits it (see ConnGate). They
// run before admission (WithGate, WithAdmission) and before any stream of
// the connection is accepted: streams the peer opens meanwhile wait in the
// transport (bounded by its stream limit, such as QUIC's
// MaxIncomingStreams) and are reset when the connection is refused. A
// connection being decided on counts against WithMaxConns and
// WithMaxConnsPerPeer. The gates together must decide within the timeout
// (WithConnGateTimeout, default 5 s), or the connection is refused; a gate
// that panics refuses too (the panic is logged with its stack, the server
// keeps running). Metrics.ConnsGateRefused counts refusals. A nil gate is
// rejected. Default: no gates (every connection goes on to admission).
// AllowPeers and ConnRateLimit are ready-made gates.
func WithConnGate(gates ...ConnGate) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		for _, g := range gates {
			if g == nil {
				keep(&o.err, optionError("WithConnGate", "nil gate"))
				return
			}
		}
		o.gates = append(o.gates, gates...)
	})
}

// WithConnGateTimeout sets how long the connection gates (WithConnGate)
// may take to decide on a connection, from 1 ns to MaxConnGateTimeout (1
// minute); other values are rejected. A connection whose gates have not
// decided by then is refused (fail closed) with close code SHUTDOWN, which
// the client reports as UNAVAILABLE. Default: DefaultConnGateTimeout (5 s).
func WithConnGateTimeout(d time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if d <= 0 || d > MaxConnGateTimeout {
			keep(&o.err, optionError("WithConnGateTimeout", "%v is outside (0, %v]", d, MaxConnGateTimeout))
			return
		}
		o.gateTimeout = d
	})
}

// ConnGated reports whether the server runs connection gates
// (WithConnGate) on every incoming connection.
func (s *Server) ConnGated() bool { return len(s.opts.gates) > 0 }

// gateConn runs the server's connection gates on sc's connection. It
// reports whether the connection may be served; when not, the connection
// has been closed (with the refusal's code, unless it was lost meanwhile).
func (sc *serverConn) gateConn() bool {
	s := sc.srv
	info := ConnInfo{ID: sc.conn.RemoteID(), Addr: sc.conn.RemoteAddr()}
	err, lost := decideConn(sc.ctx, s.opts.gates, s.opts.gateTimeout, info, sc.conn.Done(), s.opts.logger)
	if lost {
		return false
	}
	if err == nil {
		return true
	}
	s.stats.gateRefused.Add(1)
	code, reason := gateRefusal(err)
	level := slog.LevelInfo
	if c := status.CodeOf(err); c == status.ResourceExhausted || c == status.Unavailable {
		level = slog.LevelDebug // a rate limit: one line per refusal would flood the log
	}
	s.opts.logger.Log(context.Background(), level, "aster: connection refused by gate", "peer", info.ID.Short(), "addr", addrString(info.Addr), "code", uint64(code), "err", err)
	sc.conn.Close(code, reason)
	return false
}

// decideConn runs gates on info within timeout, in a goroutine of their
// own so that a gate that ignores its ctx cannot hold the connection: it
// returns nil to admit, or the refusal (errGateTimeout, errGatePanic or
// the gate's error). lost reports that done closed (the connection ended)
// before the decision.
func decideConn(ctx context.Context, gates []ConnGate, timeout time.Duration, info ConnInfo, done <-chan struct{}, logger *slog.Logger) (err error, lost bool) {
	if timeout <= 0 {
		timeout = DefaultConnGateTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := make(chan error, 1) // the gate goroutine never blocks on it
	go func() { res <- runGates(ctx, gates, info, logger) }()
	select {
	case err := <-res:
		if err == nil && ctx.Err() != nil {
			// Admitted after the timeout: too late, refuse.
			return errGateTimeout, false
		}
		return err, false
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return errGateTimeout, false
		}
		return ctx.Err(), true
	case <-done:
		return nil, true
	}
}

// runGates runs gates in order until one refuses, turning a panic into
// errGatePanic.
func runGates(ctx context.Context, gates []ConnGate, info ConnInfo, logger *slog.Logger) (err error) {
	defer func() {
		if r := recover(); r != nil {
			logger.Error("aster: connection gate panic", "peer", info.ID.Short(), "panic", r, "stack", string(debug.Stack()))
			err = errGatePanic
		}
	}()
	for _, g := range gates {
		if err := g(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// gateRefusal returns the close code and reason for a refusal by the
// connection gates (PROTOCOL.md 3.3).
func gateRefusal(err error) (transport.ConnErrorCode, string) {
	switch {
	case errors.Is(err, errGateTimeout):
		return transport.ConnShutdown, reasonGateTimeout
	case errors.Is(err, errGatePanic):
		return transport.ConnShutdown, reasonGatePanic
	}
	var se *status.Error
	if !errors.As(err, &se) {
		return transport.ConnDenied, reasonGateDenied
	}
	code, reason := transport.ConnDenied, reasonGateDenied
	if c := se.Code(); c == status.Unavailable || c == status.ResourceExhausted {
		code, reason = transport.ConnShutdown, reasonGateLater
	}
	if msg := sanitizeReason(se.Message(), MaxConnGateReason); msg != "" {
		reason += ": " + msg
	}
	return code, reason
}

// sanitizeReason makes s fit a close reason: invalid UTF-8 and control
// characters become '?', and it is cut to at most n bytes, not inside a
// character.
func sanitizeReason(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > n {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// AllowPeers returns a ConnGate that admits only the endpoints ids lists
// and refuses every other peer with PERMISSION_DENIED (close code DENIED).
// The list is copied: its memory is fixed when the gate is made.
func AllowPeers(ids ...trust.EndpointID) ConnGate {
	allowed := make(map[trust.EndpointID]struct{}, len(ids))
	for _, id := range ids {
		allowed[id] = struct{}{}
	}
	return func(_ context.Context, info ConnInfo) error {
		if _, ok := allowed[info.ID]; ok {
			return nil
		}
		return status.New(status.PermissionDenied, "endpoint not on the allow-list")
	}
}

// DefaultConnRateLimitPeers is how many peer addresses a ConnRateLimit
// gate keeps a limiter for.
const DefaultConnRateLimitPeers = 4096

// ConnRateLimit returns a ConnGate that lets each peer address open at most
// r connections per second, with bursts of up to burst (at least 1), and
// refuses the others with RESOURCE_EXHAUSTED (close code SHUTDOWN: the
// client reports UNAVAILABLE and may retry later). A peer address is its
// IP address (an IPv6 address by its /64 prefix, which one host usually
// holds whole); a connection without an IP address (through a relay, which
// hides it, or in memory) is limited by its endpoint id.
//
// Memory is bounded: the gate keeps limiters for the
// DefaultConnRateLimitPeers most recently seen addresses. A new address
// takes the place of the least recently seen one if that one's limiter is
// full again (forgetting it loses nothing); when none is, new addresses
// share one limiter (of the same rate), so that a peer cycling through
// source addresses or endpoint ids cannot grow the table nor escape the
// limit.
func ConnRateLimit(r rate.Limit, burst int) ConnGate {
	return newConnRateLimiter(r, burst, DefaultConnRateLimitPeers).gate
}

// connRateLimiter is ConnRateLimit's state: limiters by peer key in an LRU
// list, most recent first, and the shared overflow limiter.
type connRateLimiter struct {
	r     rate.Limit
	burst int
	max   int

	mu       sync.Mutex
	byKey    map[rateKey]*list.Element // of *rateEntry
	lru      *list.List
	overflow *rate.Limiter
}

// rateKey is a peer address: an IP address (an IPv6 /64 prefix's first
// address), or, without one, the endpoint id.
type rateKey struct {
	ip netip.Addr
	id trust.EndpointID
}

type rateEntry struct {
	key rateKey
	lim *rate.Limiter
}

func newConnRateLimiter(r rate.Limit, burst, maxPeers int) *connRateLimiter {
	burst = max(burst, 1)
	return &connRateLimiter{
		r: r, burst: burst, max: max(maxPeers, 1),
		byKey:    map[rateKey]*list.Element{},
		lru:      list.New(),
		overflow: rate.NewLimiter(r, burst),
	}
}

func (l *connRateLimiter) gate(_ context.Context, info ConnInfo) error {
	if !l.allow(rateKeyOf(info), time.Now()) {
		return status.Errorf(status.ResourceExhausted, "too many connections from this address (limit %g per second)", float64(l.r))
	}
	return nil
}

// allow takes a token for k at now.
func (l *connRateLimiter) allow(k rateKey, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	var lim *rate.Limiter
	switch el := l.byKey[k]; {
	case el != nil:
		l.lru.MoveToFront(el)
		lim = el.Value.(*rateEntry).lim
	case l.lru.Len() < l.max:
		lim = rate.NewLimiter(l.r, l.burst)
		l.byKey[k] = l.lru.PushFront(&rateEntry{key: k, lim: lim})
	default:
		old := l.lru.Back()
		e := old.Value.(*rateEntry)
		if e.lim.TokensAt(now) < float64(l.burst) {
			// Every tracked address connected recently: share.
			lim = l.overflow
			break
		}
		delete(l.byKey, e.key)
		e.key, e.lim = k, rate.NewLimiter(l.r, l.burst)
		l.byKey[k] = old
		l.lru.MoveToFront(old)
		lim = e.lim
	}
	return lim.AllowN(now, 1)
}

// tracked is how many addresses l keeps a limiter for.
func (l *connRateLimiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byKey)
}

// rateKeyOf is the peer address of info for ConnRateLimit.
func rateKeyOf(info ConnInfo) rateKey {
	var ip netip.Addr
	switch a := info.Addr.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case nil:
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	if !ip.IsValid() {
		return rateKey{id: info.ID}
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		ip = netip.PrefixFrom(ip, 64).Masked().Addr()
	}
	return rateKey{ip: ip}
}
