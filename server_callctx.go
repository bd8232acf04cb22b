package aster

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/internal/ctxkey"
)

// callCtx is the context a handler runs with. It behaves as
// context.WithTimeout (or WithCancel) of handler.NewContext(st.Context(),
// call) would — it carries the call's Stream, ends when the stream's
// context does (the caller reset the stream, the connection or server
// closed), when the header's deadline passes, or when the call ends — but
// costs one allocation and registers with nothing while nobody waits on it:
//
//   - Err checks the parent and the deadline itself, so a handler that
//     never calls Done needs no timer and no registration with the parent;
//   - the first Done (or AfterFunc) arms them: it registers with the parent
//     (context.AfterFunc) and starts a timer for the deadline;
//   - it implements AfterFunc (the interface package context looks for), so
//     contexts a handler derives from it (WithCancel, WithTimeout,
//     AfterFunc) are cancelled synchronously by cancel, without the
//     goroutine context starts for parents it does not know.
//
// A callCtx is never reused: a handler may keep it after it returns, and
// must then see it cancelled for good.
type callCtx struct {
	parent context.Context
	call   *serverCall
	// monoDeadline is the header's deadline on monoNow's clock (with
	// hasDeadline); maxDuration stands for one too far to matter.
	monoDeadline time.Duration

	// err is set once, by cancel; done is closed then (if it exists).
	err atomic.Pointer[error]

	mu         sync.Mutex
	done       chan struct{} // made by the first Done
	armed      bool          // registered with the parent, timer started
	stopParent func() bool
	timer      *time.Timer
	afters     map[*afterEntry]struct{}
	byParent   bool // cancelled because the parent was
	// deadline is monoDeadline as a time.Time, made by the first Deadline
	// (a wall clock read is twice a monotonic one, and most handlers never
	// ask).
	deadline time.Time
	// hasDeadline is set when deadline is (here to pack the bools).
	hasDeadline bool
}

// maxDuration is the largest time.Duration.
const maxDuration = time.Duration(1<<63 - 1)

// afterEntry is one AfterFunc registration; its address identifies it.
type afterEntry struct{ f func() }

// newCallCtx returns the context of call c on a stream whose context is
// parent; timeout > 0 sets a deadline.
func newCallCtx(parent context.Context, c *serverCall, timeout time.Duration) *callCtx {
	x := &callCtx{parent: parent, call: c}
	if timeout > 0 {
		x.hasDeadline = true
		// Saturating: monoNow may be negative (a synctest bubble's clock
		// starts before clockBase).
		if now := monoNow(); now > 0 && timeout > maxDuration-now {
			x.monoDeadline = maxDuration
		} else {
			x.monoDeadline = now + timeout
		}
	}
	return x
}

// Deadline returns the header's deadline, or the parent's if it is
// earlier or the header set none.
func (x *callCtx) Deadline() (time.Time, bool) {
	pd, pok := x.parent.Deadline()
	if !x.hasDeadline {
		return pd, pok
	}
	x.mu.Lock()
	if x.deadline.IsZero() {
		left := x.monoDeadline - monoNow()
		if x.monoDeadline == maxDuration {
			left = maxDuration // a time.Time that far out saturates
		}
		x.deadline = time.Now().Add(left)
	}
	d := x.deadline
	x.mu.Unlock()
	if pok && pd.Before(d) {
		return pd, true
	}
	return d, true
}

// Err returns nil until the context is cancelled. It notices the parent's
// end and the deadline itself, so it is right even before anything armed.
func (x *callCtx) Err() error {
	if e := x.err.Load(); e != nil {
		return *e
	}
	if err := x.parent.Err(); err != nil {
		x.cancel(err, true)
		return *x.err.Load()
	}
	if x.hasDeadline && monoNow() >= x.monoDeadline {
		x.cancel(context.DeadlineExceeded, false)
		return *x.err.Load()
	}
	return nil
}

// Done returns a channel closed when the context is cancelled. The first
// call arms the parent registration and the deadline timer.
func (x *callCtx) Done() <-chan struct{} {
	x.mu.Lock()
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err.Load() != nil {
			close(x.done)
		}
	}
	d := x.done
	x.mu.Unlock()
	x.arm()
	return d
}

// arm registers with the parent and starts the deadline timer, once,
// unless the context is already cancelled. It also catches an end of the
// parent or a deadline that passed before.
func (x *callCtx) arm() {
	if x.Err() != nil {
		return
	}
	x.mu.Lock()
	if x.armed || x.err.Load() != nil {
		x.mu.Unlock()
		return
	}
	x.armed = true
	var stop func() bool
	if x.parent.Done() != nil {
		stop = context.AfterFunc(x.parent, func() { x.cancel(x.parent.Err(), true) })
	}
	x.stopParent = stop
	if x.hasDeadline && x.monoDeadline != maxDuration {
		// No overflow: monoDeadline = an earlier monoNow + the timeout.
		x.timer = time.AfterFunc(x.monoDeadline-monoNow(), func() { x.cancel(context.DeadlineExceeded, false) })
	}
	x.mu.Unlock()
}

// AfterFunc arranges for f to run once the context is cancelled; package
// context calls it to propagate cancellation to contexts derived from this
// one. f runs synchronously in the goroutine that cancels, or in its own
// goroutine when the context is already cancelled. The returned stop
// unregisters f; it reports whether it stopped f from running.
func (x *callCtx) AfterFunc(f func()) func() bool {
	e := &afterEntry{f: f}
	x.mu.Lock()
	if x.err.Load() != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if x.afters == nil {
		x.afters = make(map[*afterEntry]struct{})
	}
	x.afters[e] = struct{}{}
	x.mu.Unlock()
	x.arm()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		if _, ok := x.afters[e]; ok {
			delete(x.afters, e)
			return true
		}
		return false
	}
}

// cancel records err (the first cancel wins), closes done, stops the timer
// and the parent registration, and runs the AfterFunc callbacks.
func (x *callCtx) cancel(err error, byParent bool) {
	x.mu.Lock()
	if x.err.Load() != nil {
		x.mu.Unlock()
		return
	}
	x.byParent = byParent
	x.err.Store(errPtr(err))
	if x.done != nil {
		close(x.done)
	}
	stop, t, afters := x.stopParent, x.timer, x.afters
	x.stopParent, x.timer, x.afters = nil, nil, nil
	x.mu.Unlock()
	if t != nil {
		t.Stop()
	}
	if stop != nil {
		stop()
	}
	for e := range afters {
		e.f()
	}
}

// errCanceled and errDeadline are what errPtr returns for the errors a
// call context ends with nearly always, so that cancel allocates nothing.
var errCanceled, errDeadline = context.Canceled, context.DeadlineExceeded

// errPtr returns a pointer to err for callCtx.err.
func errPtr(err error) *error {
	switch err {
	case context.Canceled:
		return &errCanceled
	case context.DeadlineExceeded:
		return &errDeadline
	}
	p := new(error) // only here: &err would move err to the heap on every call
	*p = err
	return p
}

// end cancels the context when the call ends.
func (x *callCtx) end() { x.cancel(context.Canceled, false) }

// Value returns the call's Stream for handler's key. Package context's own
// key for its cause lookup (context.Cause) is answered as a
// context.WithCancel child would: by the parent only when the parent's end
// cancelled this context, otherwise with nothing, so that Cause returns
// this context's own error. Every other key goes to the parent.
func (x *callCtx) Value(key any) any {
	if _, ok := key.(ctxkey.Stream); ok {
		return x.call
	}
	if key == cancelCtxKey && cancelCtxKey != nil {
		if x.err.Load() == nil {
			return nil
		}
		x.mu.Lock()
		byParent := x.byParent
		x.mu.Unlock()
		if !byParent {
			return nil
		}
	}
	return x.parent.Value(key)
}

func (x *callCtx) String() string { return "aster.callContext" }

// cancelCtxKey is package context's (unexported) key through which
// context.Cause finds a context's cause: context.Cause asks Value for it
// once Err is set; keyProbe records it. Should a later version of package
// context look differently (or panic on the probe), the key stays nil and
// Value forwards every key to the parent: context.Cause of a call context
// then reports the stream context's cause instead of its own, and nothing
// else changes.
var cancelCtxKey = func() (key any) {
	defer func() {
		if recover() != nil {
			key = nil
		}
	}()
	p := &keyProbe{}
	_ = context.Cause(p)
	return p.key
}()

// keyProbe is a cancelled context that records the first key asked of it.
type keyProbe struct{ key any }

func (p *keyProbe) Deadline() (time.Time, bool) { return time.Time{}, false }
func (p *keyProbe) Done() <-chan struct{}       { return closedChan }
func (p *keyProbe) Err() error                  { return context.Canceled }

func (p *keyProbe) Value(key any) any {
	if p.key == nil {
		p.key = key
	}
	return nil
}

// closedChan is a closed channel, the Done of a cancelled keyProbe.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
