package middleware

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// The circuit breaker is built on sony/gobreaker; its options and states
// are this package's own types, so users need not import it.

// BreakerOpenKey is the metadata key set on the error of a call refused by
// an open circuit breaker; its value is the breaker's name. Retry does not
// retry such errors.
const BreakerOpenKey = "aster-breaker"

// BreakerState is the state of one circuit breaker.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed lets calls through and counts their outcomes.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen lets BreakerOptions.Probes calls through to test
	// whether the target has recovered; other calls fail fast.
	BreakerHalfOpen
	// BreakerOpen fails every call fast until BreakerOptions.OpenTimeout
	// has passed.
	BreakerOpen
)

// String returns "closed", "half-open" or "open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerCounts are the outcomes a breaker has counted since it last
// changed state (or, when CLOSED with an Interval, since the interval
// began). Calls the caller abandoned and CANCELED calls are not counted.
type BreakerCounts struct {
	// Requests is the number of calls let through.
	Requests uint32
	// TotalSuccesses and TotalFailures count finished calls.
	TotalSuccesses, TotalFailures uint32
	// ConsecutiveSuccesses and ConsecutiveFailures count the latest run
	// of equal outcomes.
	ConsecutiveSuccesses, ConsecutiveFailures uint32
}

// BreakerOptions configure CircuitBreaker. The zero value gives the
// documented defaults.
type BreakerOptions struct {
	// ConsecutiveFailures trips the breaker (CLOSED → OPEN) when it sees
	// that many failed calls in a row. Default 3. Ignored if ReadyToTrip
	// is set.
	ConsecutiveFailures uint32
	// ReadyToTrip, if set, decides instead of ConsecutiveFailures: it is
	// called with the counts after each failed call while CLOSED, and
	// the breaker opens when it returns true. It must not block.
	ReadyToTrip func(BreakerCounts) bool
	// Interval is how often a CLOSED breaker clears its counts. Default
	// 0: counts are cleared only when the state changes.
	Interval time.Duration
	// OpenTimeout is how long the breaker stays OPEN before letting probes
	// through (HALF-OPEN). Default 5 s.
	OpenTimeout time.Duration
	// Probes is how many calls HALF-OPEN lets through; if they all succeed
	// the breaker closes, one failure opens it again. Default 1.
	Probes uint32
	// PerMethod keeps one breaker per target endpoint and method instead of
	// one per target endpoint. Default false.
	PerMethod bool
	// FailureCodes are the codes that count as failures. Default:
	// UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, DATA_LOSS.
	// Application codes (>= 100), INVALID_ARGUMENT, NOT_FOUND and
	// PERMISSION_DENIED never count, even if listed. CANCELED (the caller
	// gave up) is neither a failure nor a success.
	FailureCodes []status.Code
	// OnStateChange, if set, is called when a breaker changes state, with
	// the breaker's name (see Breakers.Name). It runs while the breaker
	// holds its lock: it must not block or call into the breaker.
	OnStateChange func(name string, from, to BreakerState)
}

func (o *BreakerOptions) setDefaults() {
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 3
	}
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = 5 * time.Second
	}
	if o.Probes == 0 {
		o.Probes = 1
	}
	if o.Interval < 0 {
		o.Interval = 0
	}
	if o.FailureCodes == nil {
		o.FailureCodes = []status.Code{status.Unavailable, status.DeadlineExceeded, status.Internal, status.Unknown, status.DataLoss}
	}
}

// breakerState converts gobreaker's state.
func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	case gobreaker.StateOpen:
		return BreakerOpen
	}
	return BreakerClosed
}

// isFailure reports whether err counts against the breaker.
func (o *BreakerOptions) isFailure(err error) bool {
	if err == nil {
		return false
	}
	switch c := status.CodeOf(err); {
	case c.IsApplication(), c == status.InvalidArgument, c == status.NotFound, c == status.PermissionDenied:
		return false
	default:
		return slices.Contains(o.FailureCodes, c)
	}
}

// errCanceledCall marks a call the caller abandoned: excluded from counts.
var errCanceledCall = errors.New("call abandoned")

// Breakers holds the circuit breakers of one CircuitBreaker middleware,
// one per target endpoint (and method, with PerMethod): per server for a
// Client, per producer for a Fleet. Use Middleware to install it and State
// to inspect a breaker. Breakers implements PeerGuard. It keeps at most
// 4096 breakers: past that, closed breakers are forgotten first (their
// counts start again), so producers that come and go with new keys do not
// grow it without end.
type Breakers struct {
	opts BreakerOptions
	mu   sync.Mutex
	m    map[breakerKey]*gobreaker.TwoStepCircuitBreaker[struct{}]
	// unguided is set once a call without a peer came back without a
	// Caller below consulting the breakers (see Middleware).
	unguided atomic.Bool
}

type breakerKey struct {
	peer            [32]byte
	service, method string
}

// NewBreakers returns an empty set of breakers with the given options.
func NewBreakers(opts BreakerOptions) *Breakers {
	opts.setDefaults()
	return &Breakers{opts: opts, m: map[breakerKey]*gobreaker.TwoStepCircuitBreaker[struct{}]{}}
}

// CircuitBreaker is client middleware that stops calling a target that keeps
// failing: after ConsecutiveFailures failed calls its breaker opens and
// calls fail fast with UNAVAILABLE naming the breaker, until OpenTimeout has
// passed and Probes probe calls succeed. It is NewBreakers(opts).Middleware().
func CircuitBreaker(opts BreakerOptions) Client { return NewBreakers(opts).Middleware() }

// Name returns the name of the breaker for a call: "breaker <peer short id>"
// or, with PerMethod, "breaker <peer short id>/<Service.method>".
func (b *Breakers) Name(call *Call) string { return b.name(call, call.Peer) }

func (b *Breakers) name(call *Call, peer trust.EndpointID) string {
	n := "breaker " + peer.Short()
	if b.opts.PerMethod {
		n += "/" + call.FullName()
	}
	return n
}

func (b *Breakers) key(call *Call) breakerKey { return b.keyPeer(call, call.Peer) }

func (b *Breakers) keyPeer(call *Call, peer trust.EndpointID) breakerKey {
	k := breakerKey{peer: peer}
	if b.opts.PerMethod {
		k.service, k.method = call.Service, call.Method
	}
	return k
}

func (b *Breakers) get(call *Call) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	return b.getPeer(call, call.Peer)
}

// getPeer returns (making it if needed) the breaker of call's method on
// peer.
func (b *Breakers) getPeer(call *Call, peer trust.EndpointID) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	k := b.keyPeer(call, peer)
	b.mu.Lock()
	defer b.mu.Unlock()
	cb := b.m[k]
	if cb == nil {
		var onChange func(string, gobreaker.State, gobreaker.State)
		if f := b.opts.OnStateChange; f != nil {
			onChange = func(name string, from, to gobreaker.State) { f(name, breakerState(from), breakerState(to)) }
		}
		cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        b.name(call, peer),
			MaxRequests: b.opts.Probes,
			Timeout:     b.opts.OpenTimeout,
			Interval:    b.opts.Interval,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				if b.opts.ReadyToTrip != nil {
					return b.opts.ReadyToTrip(BreakerCounts{
						Requests:             c.Requests,
						TotalSuccesses:       c.TotalSuccesses,
						TotalFailures:        c.TotalFailures,
						ConsecutiveSuccesses: c.ConsecutiveSuccesses,
						ConsecutiveFailures:  c.ConsecutiveFailures,
					})
				}
				return c.ConsecutiveFailures >= b.opts.ConsecutiveFailures
			},
			OnStateChange: onChange,
			IsSuccessful:  func(err error) bool { return !b.opts.isFailure(err) },
			IsExcluded: func(err error) bool {
				return err == errCanceledCall || status.CodeOf(err) == status.Canceled
			},
		})
		if len(b.m) >= maxBreakers {
			b.pruneLocked()
		}
		b.m[k] = cb
	}
	return cb
}

// maxBreakers bounds the breakers a Breakers keeps (one per peer, or per
// peer and method): a fleet whose producers come and go with new keys
// must not grow it without end.
const maxBreakers = 4096

// pruneLocked makes room for a breaker: it forgets the closed breakers (a
// closed breaker holds only failure counts below its threshold, so
// forgetting one loses little), and if all are open or half-open, one of
// them. b.mu is held.
func (b *Breakers) pruneLocked() {
	for k, cb := range b.m {
		if cb.State() == gobreaker.StateClosed {
			delete(b.m, k)
		}
	}
	for k := range b.m {
		if len(b.m) < maxBreakers {
			break
		}
		delete(b.m, k)
	}
}

// State returns the state of the breaker for call (BreakerClosed if it has
// none yet).
func (b *Breakers) State(call *Call) BreakerState {
	b.mu.Lock()
	cb := b.m[b.key(call)]
	b.mu.Unlock()
	if cb == nil {
		return BreakerClosed
	}
	return breakerState(cb.State())
}

// Middleware returns the client middleware.
//
// A call whose peer is known when the middleware runs (call.Peer set, as
// an aster.Client sets it) is admitted and counted by that peer's breaker.
// A call whose peer is not known yet (call.Peer zero: an aster.Fleet picks
// the producer below its middleware) is handed on with the breakers in its
// context as a PeerGuard: the Caller that picks the peer leaves out peers
// whose breaker is open and starts the call through the chosen peer's
// breaker (see PeerGuard). If no Caller below consults the guard, the call
// is counted against one breaker for the whole target (that of the zero
// peer, "breaker 0000000000000000"), which then refuses such calls while
// it is open. Give each Caller its own Breakers: once one Caller below did
// not consult the guard, that whole-target breaker also applies to the
// peer-less calls of every other Caller sharing the Breakers.
func (b *Breakers) Middleware() Client {
	return func(next Caller) Caller {
		return WrapCaller(next, func(ctx context.Context, call *Call) (ClientStream, error) {
			if !call.Peer.IsZero() {
				return b.NewPeerStream(ctx, call, next)
			}
			return b.deferToPicker(ctx, call, next)
		})
	}
}

// NewPeerStream implements PeerGuard: it starts call through next if the
// breaker of call.Peer (and, with PerMethod, of call's method) admits it,
// and counts its outcome; otherwise it fails fast with UNAVAILABLE naming
// the breaker (metadata BreakerOpenKey).
func (b *Breakers) NewPeerStream(ctx context.Context, call *Call, next Caller) (ClientStream, error) {
	cb := b.get(call)
	done, err := cb.Allow()
	if err != nil {
		return nil, openError(cb, err)
	}
	cs, err := next.NewStream(ctx, call)
	if err != nil {
		done(err)
		return nil, err
	}
	return &breakerStream{ClientStream: cs, done: done}, nil
}

// Refusal implements PeerGuard: the error a call like call to peer would
// fail with now (the peer's breaker is open, or half-open with its probes
// in flight), or nil. It changes no count.
func (b *Breakers) Refusal(call *Call, peer trust.EndpointID) error {
	k := b.keyPeer(call, peer)
	b.mu.Lock()
	cb := b.m[k]
	b.mu.Unlock()
	if cb == nil {
		return nil
	}
	switch cb.State() {
	case gobreaker.StateOpen:
		return openError(cb, gobreaker.ErrOpenState)
	case gobreaker.StateHalfOpen:
		if cb.Counts().Requests >= b.opts.Probes {
			return openError(cb, gobreaker.ErrTooManyRequests)
		}
	}
	return nil
}

// openError is the error of a call cb refused with err.
func openError(cb *gobreaker.TwoStepCircuitBreaker[struct{}], err error) error {
	msg := "circuit " + cb.Name() + " is open: failing fast"
	if errors.Is(err, gobreaker.ErrTooManyRequests) {
		msg = "circuit " + cb.Name() + " is half-open and its probe is in flight: failing fast"
	}
	return status.New(status.Unavailable, msg).WithMetadata(BreakerOpenKey, cb.Name())
}

// deferToPicker runs a call whose peer is not known yet: with the breakers
// in its context for the Caller that picks the peer.
func (b *Breakers) deferToPicker(ctx context.Context, call *Call, next Caller) (ClientStream, error) {
	if b.unguided.Load() {
		// A Caller below did not consult the guard before: the breaker of
		// the zero peer (the whole target) decides up front.
		if err := b.Refusal(call, trust.EndpointID{}); err != nil {
			return nil, err
		}
	}
	g := &callGuard{b: b}
	cs, err := next.NewStream(withGuardList(ctx, &g.node, g), call)
	if g.used.Load() {
		return cs, err
	}
	// Nothing below picked the peer through the guard: count the call
	// against the breaker of the zero peer, which stands for the target.
	b.unguided.Store(true)
	cb := b.getPeer(call, trust.EndpointID{})
	done, aerr := cb.Allow()
	if aerr != nil {
		// Open or probing: the call went out anyway (the check above
		// raced with another call's failure); it is not counted.
		return cs, err
	}
	if err != nil {
		done(err)
		return nil, err
	}
	return &breakerStream{ClientStream: cs, done: done}, nil
}

// callGuard is the PeerGuard of one call: the Breakers, noting that a
// Caller below consulted them.
type callGuard struct {
	b    *Breakers
	used atomic.Bool
	node guardList // its context node, allocated with it
}

func (g *callGuard) Refusal(call *Call, peer trust.EndpointID) error {
	g.used.Store(true)
	return g.b.Refusal(call, peer)
}

func (g *callGuard) NewPeerStream(ctx context.Context, call *Call, next Caller) (ClientStream, error) {
	g.used.Store(true)
	return g.b.NewPeerStream(ctx, call, next)
}

// breakerStream reports the call's outcome to its breaker once.
type breakerStream struct {
	ClientStream
	done     func(error)
	reported atomic.Bool
}

func (s *breakerStream) report(err error) {
	if s.reported.CompareAndSwap(false, true) {
		s.done(err)
	}
}

func (s *breakerStream) Recv(msg any) error {
	// A delivered message proves the target alive: the first message or the
	// end of the call decides (a long-lived stream does not hold a probe).
	err := s.ClientStream.Recv(msg)
	if err == io.EOF {
		s.report(nil)
	} else {
		s.report(err)
	}
	return err
}

func (s *breakerStream) Close() {
	s.ClientStream.Close()
	s.report(errCanceledCall)
}

// Unwrap returns the wrapped stream.
func (s *breakerStream) Unwrap() ClientStream { return s.ClientStream }
