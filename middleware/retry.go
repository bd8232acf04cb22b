package middleware

import (
	"context"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// Metadata keys the standard middleware reads and writes.
const (
	// AttemptKey is the request metadata key Retry sets on the second and
	// later attempts of a call: "2", "3", ...
	AttemptKey = "aster-attempt"
	// AttemptsKey is the trailer metadata key Retry adds (on the caller's
	// side) when a call took more than one attempt: the number of attempts.
	AttemptsKey = "aster-attempts"
	// RetryAfterKey is the trailer metadata key carrying a server's hint, in
	// milliseconds, of when to try again (set by RateLimit). Retry waits at
	// least that long, and retries RESOURCE_EXHAUSTED only when it is present.
	// A hint beyond RetryOptions.MaxBackoff is not waited for: the call
	// fails at once with the error, which carries the hint, so that no
	// server can hold a call without a deadline for longer than MaxBackoff.
	RetryAfterKey = "retry-after-ms"
)

// RetryOptions configure Retry. The zero value gives the documented defaults.
type RetryOptions struct {
	// MaxAttempts is the most attempts a call makes, the first included.
	// Default 3.
	MaxAttempts int
	// InitialBackoff is the wait before the first retry. Default 100 ms.
	InitialBackoff time.Duration
	// MaxBackoff caps the wait between attempts, a server's retry-after
	// hint included (a longer hint ends the call). Default 30 s.
	MaxBackoff time.Duration
	// Multiplier grows the backoff after each retry. Default 2.
	Multiplier float64
	// Jitter randomises each wait by up to ±Jitter of it (0–1). Default 0.2.
	// Negative: no jitter.
	Jitter float64
	// Codes are the status codes that are retried. Default: UNAVAILABLE.
	// RESOURCE_EXHAUSTED is also retried when the server sent a retry-after
	// hint (RetryAfterKey). Application codes (>= 100) are never retried,
	// even if listed.
	Codes []status.Code
	// Idempotent decides whether a call may be retried at all. Default:
	// call.Idempotent, which is true for methods the server's contract marks
	// idempotent, for methods declared with the aster.WithIdempotent client
	// option and for calls made with the aster.Idempotent() call option
	// (the explicit per-call opt-in). Before asking, Retry sets
	// call.Idempotent from the server's contract when the Caller it wraps
	// can describe methods (MethodDescriber, which the aster client
	// implements): the client fetches the contract once per connection, so
	// no explicit Client.Contract call is needed.
	Idempotent func(*Call) bool
	// Budget limits retries across all calls through this middleware so
	// that retries cannot amplify an outage. Default: NewRetryBudget(0.2, 10)
	// — at most 20% extra load once the initial 10 tokens are spent.
	Budget *RetryBudget
	// MaxReplayMessages is how many sent messages a streaming call keeps to
	// replay on a new attempt; a call that sends more is not retried.
	// Default 64. Messages are replayed by reference: do not modify a message
	// after sending it on a retried call.
	MaxReplayMessages int
	// OnRetry, if set, is called before each retry with the attempt about to
	// start (2, 3, ...), the error that ended the previous one and the wait.
	OnRetry func(call *Call, attempt int, err error, wait time.Duration)
}

func (o *RetryOptions) setDefaults() {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Multiplier < 1 {
		o.Multiplier = 2
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = 0.2
	case o.Jitter < 0:
		o.Jitter = 0
	case o.Jitter > 1:
		o.Jitter = 1
	}
	if o.Codes == nil {
		o.Codes = []status.Code{status.Unavailable}
	}
	if o.Idempotent == nil {
		o.Idempotent = func(c *Call) bool { return c.Idempotent }
	}
	if o.Budget == nil {
		o.Budget = NewRetryBudget(0.2, 10)
	}
	if o.MaxReplayMessages <= 0 {
		o.MaxReplayMessages = 64
	}
}

// RetryBudget is a token bucket shared by the calls of one Retry
// middleware: every call deposits Ratio of a token, every retry withdraws
// one, and the balance never exceeds Burst. In a sustained outage retries
// therefore add at most Ratio extra load. It is safe for concurrent use.
type RetryBudget struct {
	mu     sync.Mutex
	ratio  float64
	burst  float64
	tokens float64
}

// NewRetryBudget returns a budget allowing ratio retries per call (e.g. 0.2
// for 20%) and a burst of up to burst retries; it starts full.
func NewRetryBudget(ratio float64, burst int) *RetryBudget {
	return &RetryBudget{ratio: ratio, burst: float64(burst), tokens: float64(burst)}
}

func (b *RetryBudget) deposit() {
	b.mu.Lock()
	b.tokens = min(b.burst, b.tokens+b.ratio)
	b.mu.Unlock()
}

func (b *RetryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Tokens returns the retries the budget allows right now.
func (b *RetryBudget) Tokens() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokens
}

type attemptCtxKey struct{}

// Attempt returns the attempt number of the call ctx belongs to as set by
// Retry for the middleware inside it (tracing, logging): 1 for a first
// attempt or a call without Retry, then 2, 3, ...
func Attempt(ctx context.Context) int {
	if n, ok := ctx.Value(attemptCtxKey{}).(int); ok {
		return n
	}
	return 1
}

// Retry is client middleware that retries failed calls with exponential
// backoff and jitter. A call is retried only when it is idempotent (see
// RetryOptions.Idempotent) or the server marked its failure not processed
// (status.IsNotProcessed: refused before its handler ran, PROTOCOL.md
// §7.5), failed with a retryable code, has attempts and
// budget left, its deadline leaves room for the wait, and — for streams —
// no response message has been delivered to the caller yet. A call pinned
// to a connection (a session call, see Call.Conn) is not retried once that
// connection is gone: the session went with it. Sent messages
// (up to MaxReplayMessages) are replayed on the new attempt; while a call
// can still be retried, Send hides the io.EOF of an attempt that ended (the
// message is kept for the next attempt, and Recv reports the outcome), and
// once a Send has reported an error to the caller the call is no longer
// retried. Later attempts carry AttemptKey
// in their metadata and Attempt(ctx) for inner middleware; the caller sees
// AttemptsKey in the trailer.
func Retry(opts RetryOptions) Client {
	opts.setDefaults()
	o := &opts
	return func(next Caller) Caller {
		describer, _ := FindDescriber(next)
		return WrapCaller(next, func(ctx context.Context, call *Call) (ClientStream, error) {
			if !call.Idempotent && describer != nil {
				spec, err := describer.DescribeMethod(ctx, call)
				switch {
				case err == nil:
					call.Idempotent = spec.Idempotent
				case failsCall(err):
					// No connection could be made: the call would fail
					// the same way, and dialling again only doubles the
					// wait. Its idempotency is unknown, so no retry.
					return nil, err
				}
				// Otherwise (e.g. a method the contract lacks) the call
				// goes ahead as it is and the server answers.
			}
			idem := o.Idempotent(call)
			o.Budget.deposit()
			rs := &retryStream{o: o, next: next, ctx: ctx, call: call, onlyNotProcessed: !idem}
			cs, err := rs.open(1, nil)
			if err != nil {
				return nil, err
			}
			rs.cur = cs
			return rs, nil
		})
	}
}

// failsCall reports whether a failed DescribeMethod means the call cannot
// be made either: the connection or admission failed, the caller's context
// ended, or the client is misconfigured.
func failsCall(err error) bool {
	switch status.CodeOf(err) {
	case status.Unavailable, status.DeadlineExceeded, status.Canceled, status.Unauthenticated, status.InvalidArgument:
		return true
	}
	return false
}

// retryable reports whether err may be retried by code.
func (o *RetryOptions) retryable(err error) bool {
	se := status.FromError(err)
	c := se.Code()
	if c.IsApplication() || se.Metadata()[BreakerOpenKey] != "" {
		return false
	}
	if d, ok := retryAfter(se); ok && d > o.MaxBackoff {
		return false // the server asks for a longer wait than allowed
	}
	if slices.Contains(o.Codes, c) {
		return true
	}
	return c == status.ResourceExhausted && se.Metadata()[RetryAfterKey] != ""
}

// retryAfter returns the server's retry-after hint (RetryAfterKey) in
// se, if it carries a valid one.
func retryAfter(se *status.Error) (time.Duration, bool) {
	h := se.Metadata()[RetryAfterKey]
	if h == "" {
		return 0, false
	}
	ms, err := strconv.ParseUint(h, 10, 32)
	return time.Duration(ms) * time.Millisecond, err == nil
}

// backoff returns the wait before attempt n (n >= 2), at least the server's
// retry-after hint.
func (o *RetryOptions) backoff(n int, err error) time.Duration {
	d := float64(o.InitialBackoff)
	for i := 2; i < n && d < float64(o.MaxBackoff); i++ {
		d *= o.Multiplier
	}
	d = min(d, float64(o.MaxBackoff))
	if o.Jitter > 0 {
		d *= 1 - o.Jitter + 2*o.Jitter*rand.Float64()
	}
	wait := time.Duration(d)
	if after, ok := retryAfter(status.FromError(err)); ok {
		wait = max(wait, after)
	}
	return wait
}

// retryStream is a call that may be retried until it commits.
type retryStream struct {
	o    *RetryOptions
	next Caller
	ctx  context.Context
	call *Call
	// onlyNotProcessed: the call is not idempotent, so only a failure the
	// server marked not processed (PROTOCOL.md §7.5) is retried.
	onlyNotProcessed bool

	mu        sync.Mutex
	done      chan struct{} // made by the first wait, closed by Close
	cur       ClientStream
	attempt   int
	sent      []any
	sentBuf   [1]any // sent's first backing array: a unary call's request
	closeSent bool
	committed bool // no more retries
	// settled is committed for Recv's lock-free path: once it is set, a
	// later Recv reads rs.cur without the lock, which is safe because only
	// Recv replaces rs.cur and Recv is not called concurrently with itself.
	settled atomic.Bool
	closed  bool
}

// open starts attempt n, retrying failures to start. prevErr is the error
// that ended the previous attempt (nil for the first).
func (rs *retryStream) open(n int, prevErr error) (ClientStream, error) {
	for ; ; n++ {
		if n > 1 {
			if err := rs.wait(n, prevErr); err != nil {
				return nil, err
			}
		}
		ctx, call := rs.ctx, rs.call
		if n > 1 {
			ctx = context.WithValue(ctx, attemptCtxKey{}, n)
			c := *rs.call
			c.Metadata = maps.Clone(c.Metadata)
			if c.Metadata == nil {
				c.Metadata = handler.Metadata{}
			}
			c.Metadata[AttemptKey] = strconv.Itoa(n)
			call = &c
		}
		if n > 1 {
			rs.mu.Lock()
			rs.attempt = n
			rs.mu.Unlock()
		} else { // the first attempt: rs is not shared yet
			rs.attempt = n
		}
		cs, err := rs.next.NewStream(ctx, call)
		if err == nil {
			return cs, nil
		}
		if !rs.mayRetry(n, err) {
			return nil, err
		}
		prevErr = err
	}
}

// mayRetry decides whether attempt n's failure err is retried, withdrawing
// from the budget if so.
func (rs *retryStream) mayRetry(n int, err error) bool {
	if c := rs.call.Conn; c != nil {
		select {
		case <-c.Done():
			return false // a pinned call cannot move to another connection
		default:
		}
	}
	if rs.onlyNotProcessed && !status.IsNotProcessed(err) {
		return false
	}
	return n < rs.o.MaxAttempts && rs.o.retryable(err) && rs.o.Budget.withdraw()
}

// wait sleeps before attempt n, unless the deadline leaves no room, the
// context ends or the call is closed; then it returns the error to report.
func (rs *retryStream) wait(n int, prevErr error) error {
	d := rs.o.backoff(n, prevErr)
	if dl, ok := rs.ctx.Deadline(); ok && time.Until(dl) <= d {
		return prevErr
	}
	if rs.o.OnRetry != nil {
		rs.o.OnRetry(rs.call, n, prevErr, d)
	}
	rs.mu.Lock()
	if rs.closed {
		rs.mu.Unlock()
		return status.New(status.Canceled, "call closed by caller")
	}
	if rs.done == nil {
		rs.done = make(chan struct{})
	}
	done := rs.done
	rs.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-rs.ctx.Done():
		return status.FromError(rs.ctx.Err())
	case <-done:
		return status.New(status.Canceled, "call closed by caller")
	}
}

func (rs *retryStream) Send(msg any) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.committed {
		if len(rs.sent) < rs.o.MaxReplayMessages {
			if rs.sent == nil {
				rs.sent = rs.sentBuf[:0]
			}
			rs.sent = append(rs.sent, msg)
		} else {
			rs.commit()
		}
	}
	err := rs.cur.Send(msg)
	if err != nil && rs.call.Pattern.ClientStreams() {
		if err == io.EOF && !rs.committed {
			// The attempt ended; the message is kept for the next one,
			// which Recv starts if the failure is retryable.
			return nil
		}
		rs.commit()
	}
	return err
}

func (rs *retryStream) CloseSend() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.closeSent = true
	err := rs.cur.CloseSend()
	if err != nil && rs.call.Pattern.ClientStreams() {
		if err == io.EOF && !rs.committed {
			return nil
		}
		rs.commit()
	}
	return err
}

// commit ends retrying; rs.mu is held.
func (rs *retryStream) commit() {
	rs.committed = true
	rs.settled.Store(true)
	rs.sent = nil
	rs.sentBuf = [1]any{}
}

func (rs *retryStream) Recv(msg any) error {
	if rs.settled.Load() { // no retry any more: Recv goes straight through
		return rs.cur.Recv(msg)
	}
	for {
		rs.mu.Lock()
		cs, n := rs.cur, rs.attempt
		rs.mu.Unlock()
		err := cs.Recv(msg)
		rs.mu.Lock()
		if err == nil || err == io.EOF || rs.committed || rs.closed || !rs.mayRetry(n, err) {
			rs.commit()
			rs.mu.Unlock()
			return err
		}
		rs.mu.Unlock()

		cs.Close()
		ncs, oerr := rs.open(n+1, err)
		if oerr != nil {
			rs.mu.Lock()
			rs.commit()
			rs.mu.Unlock()
			return oerr
		}
		rs.mu.Lock()
		if rs.closed {
			rs.mu.Unlock()
			ncs.Close()
			return status.New(status.Canceled, "call closed by caller")
		}
		rs.cur = ncs
		// Replay what the caller sent; a failure here surfaces from Recv.
		for _, m := range rs.sent {
			if ncs.Send(m) != nil {
				break
			}
		}
		if rs.closeSent {
			ncs.CloseSend()
		}
		rs.mu.Unlock()
	}
}

func (rs *retryStream) Header() handler.Metadata {
	rs.mu.Lock()
	cs := rs.cur
	rs.mu.Unlock()
	return cs.Header()
}

func (rs *retryStream) Trailer() handler.Metadata {
	rs.mu.Lock()
	cs, n := rs.cur, rs.attempt
	rs.mu.Unlock()
	t := cs.Trailer()
	if n <= 1 {
		return t
	}
	t = maps.Clone(t)
	if t == nil {
		t = handler.Metadata{}
	}
	t[AttemptsKey] = strconv.Itoa(n)
	return t
}

func (rs *retryStream) Close() {
	rs.mu.Lock()
	if !rs.closed && rs.done != nil {
		close(rs.done)
	}
	rs.closed = true
	cs := rs.cur
	rs.mu.Unlock()
	cs.Close()
}

// Unwrap returns the current attempt's stream.
func (rs *retryStream) Unwrap() ClientStream {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.cur
}
