package middleware

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/aster-go/aster/status"
)

// BreakerOpenKey is the metadata key set on the error of a call refused by
// an open circuit breaker; its value is the breaker's name. Retry does not
// retry such errors.
const BreakerOpenKey = "aster-breaker"

// BreakerOptions configure CircuitBreaker. The zero value gives the
// documented defaults.
type BreakerOptions struct {
	// ConsecutiveFailures trips the breaker (CLOSED → OPEN). Default 3.
	ConsecutiveFailures uint32
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
	// OnStateChange, if set, is called when a breaker changes state.
	OnStateChange func(name string, from, to gobreaker.State)
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
	if o.FailureCodes == nil {
		o.FailureCodes = []status.Code{status.Unavailable, status.DeadlineExceeded, status.Internal, status.Unknown, status.DataLoss}
	}
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
// one per target endpoint (and method, with PerMethod). Use Middleware to
// install it and State to inspect a breaker.
type Breakers struct {
	opts BreakerOptions
	mu   sync.Mutex
	m    map[breakerKey]*gobreaker.TwoStepCircuitBreaker[struct{}]
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
func (b *Breakers) Name(call *Call) string {
	n := "breaker " + call.Peer.Short()
	if b.opts.PerMethod {
		n += "/" + call.FullName()
	}
	return n
}

func (b *Breakers) key(call *Call) breakerKey {
	k := breakerKey{peer: call.Peer}
	if b.opts.PerMethod {
		k.service, k.method = call.Service, call.Method
	}
	return k
}

func (b *Breakers) get(call *Call) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	k := b.key(call)
	b.mu.Lock()
	defer b.mu.Unlock()
	cb := b.m[k]
	if cb == nil {
		cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        b.Name(call),
			MaxRequests: b.opts.Probes,
			Timeout:     b.opts.OpenTimeout,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				return c.ConsecutiveFailures >= b.opts.ConsecutiveFailures
			},
			OnStateChange: b.opts.OnStateChange,
			IsSuccessful:  func(err error) bool { return !b.opts.isFailure(err) },
			IsExcluded: func(err error) bool {
				return err == errCanceledCall || status.CodeOf(err) == status.Canceled
			},
		})
		b.m[k] = cb
	}
	return cb
}

// State returns the state of the breaker for call (CLOSED if it has none).
func (b *Breakers) State(call *Call) gobreaker.State {
	b.mu.Lock()
	cb := b.m[b.key(call)]
	b.mu.Unlock()
	if cb == nil {
		return gobreaker.StateClosed
	}
	return cb.State()
}

// Middleware returns the client middleware.
func (b *Breakers) Middleware() Client {
	return func(next Caller) Caller {
		return WrapCaller(next, func(ctx context.Context, call *Call) (ClientStream, error) {
			cb := b.get(call)
			done, err := cb.Allow()
			if err != nil {
				msg := "circuit " + cb.Name() + " is open: failing fast"
				if errors.Is(err, gobreaker.ErrTooManyRequests) {
					msg = "circuit " + cb.Name() + " is half-open and its probe is in flight: failing fast"
				}
				return nil, status.New(status.Unavailable, msg).WithMetadata(BreakerOpenKey, cb.Name())
			}
			cs, err := next.NewStream(ctx, call)
			if err != nil {
				done(err)
				return nil, err
			}
			return &breakerStream{ClientStream: cs, done: done}, nil
		})
	}
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
