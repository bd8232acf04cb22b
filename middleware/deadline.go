package middleware

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// DeadlineOptions configure Deadline (server) and ClientDeadline. The zero
// value sets no timeouts; it only rejects calls whose budget is already spent
// and reports a spent budget as DEADLINE_EXCEEDED.
type DeadlineOptions struct {
	// Default is the timeout of a call that carries no deadline of its own.
	// Default 0: no timeout.
	Default time.Duration
	// Max caps the deadline a call may carry (a caller asking for an hour gets
	// Max). Default 0: no cap.
	Max time.Duration
	// PerMethod sets the timeout of one method ("Service.method") or every
	// method of a service ("Service"); the method's entry wins. An entry
	// replaces both Default and Max for its methods: a call gets at most
	// that long (less if it asks for less). A zero entry means no limit.
	PerMethod map[string]time.Duration
}

// limits returns the default timeout and the cap for a method: a PerMethod
// entry is both.
func (o *DeadlineOptions) limits(service, method string) (def, maxd time.Duration) {
	if len(o.PerMethod) > 0 {
		if d, ok := o.PerMethod[service+"."+method]; ok {
			return d, d
		}
		if d, ok := o.PerMethod[service]; ok {
			return d, d
		}
	}
	return o.Default, o.Max
}

// apply derives the call's context: it adds the default timeout when ctx has
// no deadline and caps it. cancel is nil when ctx is unchanged.
func (o *DeadlineOptions) apply(ctx context.Context, service, method string) (context.Context, context.CancelFunc) {
	d := o.timeout(ctx, service, method)
	if d <= 0 {
		return ctx, nil
	}
	return context.WithTimeout(ctx, d)
}

// timeout returns the timeout to add to ctx, or 0 to leave it unchanged (it
// has a deadline within the limits, or there are none).
func (o *DeadlineOptions) timeout(ctx context.Context, service, method string) time.Duration {
	def, maxd := o.limits(service, method)
	if def <= 0 && maxd <= 0 {
		return 0
	}
	dl, has := ctx.Deadline()
	var d time.Duration
	switch {
	case !has:
		d = def
		if maxd > 0 && (d <= 0 || d > maxd) {
			d = maxd
		}
	case maxd > 0 && time.Until(dl) > maxd:
		d = maxd
	}
	return d
}

// expired is the DEADLINE_EXCEEDED (or CANCELED) error for a spent context.
func expired(ctx context.Context, when string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.New(status.DeadlineExceeded, "deadline exceeded "+when)
	}
	return status.FromError(ctx.Err())
}

// check panics for negative durations: they used to mean "no timeout",
// so a sign slip switched the bound off.
func (o *DeadlineOptions) check(who string) {
	bad := o.Default < 0 || o.Max < 0
	for _, d := range o.PerMethod {
		bad = bad || d < 0
	}
	if bad {
		panic(fmt.Sprintf("middleware: %s: negative duration in %+v (0 means no timeout)", who, *o))
	}
}

// Deadline is server middleware that gives calls without a deadline a
// default timeout (per method or service), caps long ones at Max, rejects a
// call whose budget is already spent with DEADLINE_EXCEEDED, and cancels the
// handler's context when the budget runs out. A handler that returns after
// its budget ran out — with a context error, or even with success — ends the
// call with DEADLINE_EXCEEDED. It panics on a negative duration in opts.
func Deadline(opts DeadlineOptions) Server {
	opts.check("Deadline")
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			info := s.Method()
			ctx, cancel := opts.apply(ctx, info.Service, info.Name)
			if cancel != nil {
				defer cancel()
			}
			if ctx.Err() != nil {
				return expired(ctx, "before the handler started")
			}
			// Recv blocks on the transport, not on ctx: when the caller
			// streams, make it end with the budget too.
			if dl, ok := ctx.Deadline(); ok && info.Pattern.ClientStreams() {
				if rd := readDeadlinerOf(s); rd != nil && rd.SetReadDeadline(dl) == nil {
					defer rd.SetReadDeadline(time.Time{})
				}
			}
			err := next.ServeRPC(ctx, s)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				switch c := status.CodeOf(err); {
				case err == nil, c == status.Unknown, c == status.Canceled:
					return status.New(status.DeadlineExceeded, "deadline exceeded while the handler ran")
				}
			}
			return err
		})
	}
}

// readDeadliner is implemented by the server's stream.
type readDeadliner interface{ SetReadDeadline(time.Time) error }

func readDeadlinerOf(s handler.Stream) readDeadliner {
	for range 64 {
		if rd, ok := s.(readDeadliner); ok {
			return rd
		}
		u, ok := s.(interface{ Unwrap() handler.Stream })
		if !ok {
			return nil
		}
		s = u.Unwrap()
	}
	return nil
}

// ClientDeadline is client middleware that gives calls without a deadline a
// default timeout (per method or service) and caps long ones at Max. The
// deadline travels to the server with the call; when it passes, the call is
// cancelled on both sides and fails with DEADLINE_EXCEEDED. A call whose
// context is already done fails at once without being sent. It panics on a
// negative duration in opts.
func ClientDeadline(opts DeadlineOptions) Client {
	opts.check("ClientDeadline")
	return func(next Caller) Caller {
		return WrapCaller(next, func(ctx context.Context, call *Call) (ClientStream, error) {
			d := opts.timeout(ctx, call.Service, call.Method)
			if d <= 0 {
				if ctx.Err() != nil {
					return nil, expired(ctx, "before the call started")
				}
				return next.NewStream(ctx, call)
			}
			// One allocation for the derived context and the stream that
			// releases it when the call ends.
			ds := &deadlineStream{}
			var cctx context.Context
			if ctx.Done() == nil {
				// The parent is never cancelled (Background, WithoutCancel):
				// the deadline, d from now, is the only way the call's
				// context ends, so it has not ended yet.
				ds.dctx.init(ctx, time.Now().Add(d))
				cctx = &ds.dctx
			} else {
				cctx, ds.cancel = context.WithTimeout(ctx, d)
				if cctx.Err() != nil {
					ds.release()
					return nil, expired(cctx, "before the call started")
				}
			}
			cs, err := next.NewStream(cctx, call)
			if err != nil {
				ds.release()
				return nil, err
			}
			ds.ClientStream = cs
			return ds, nil
		})
	}
}

// deadlineStream releases the derived context when the call ends.
type deadlineStream struct {
	ClientStream
	cancel   context.CancelFunc // the context.WithTimeout's, or nil
	dctx     deadlineCtx        // the context when cancel is nil
	released atomic.Bool
}

func (d *deadlineStream) release() {
	if !d.released.CompareAndSwap(false, true) {
		return
	}
	if d.cancel != nil {
		d.cancel()
	} else {
		d.dctx.finish(context.Canceled)
	}
}

func (d *deadlineStream) Recv(msg any) error {
	err := d.ClientStream.Recv(msg)
	if err != nil { // the call has ended (io.EOF or its status)
		d.release()
	}
	return err
}

func (d *deadlineStream) Close() {
	d.ClientStream.Close()
	d.release()
}

// Unwrap returns the wrapped stream.
func (d *deadlineStream) Unwrap() ClientStream { return d.ClientStream }

// deadlineCtx is the context ClientDeadline derives from a parent that is
// never cancelled (parent.Done() == nil), in place of context.WithDeadline:
// it ends with context.DeadlineExceeded when the deadline passes, or with
// context.Canceled when finish is called (the call ended). It arms its timer
// only once something waits for it (Done, or AfterFunc as context.AfterFunc
// and the child contexts of package context use it); until then Err compares
// the clock. A call whose context nobody waits on then costs no timer, and
// context and stream take a single allocation.
//
// It hides nothing package context relies on: Value goes to the parent (which
// has no cancellable context above it, so context.Cause reports Err), and
// children register through AfterFunc rather than a goroutine.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex
	err    error          // set once the context has ended
	done   chan struct{}  // made by Done
	timer  *deadlineTimer // armed by the first Done or AfterFunc
	nextID uint64
	funcs  []afterFunc // registered by AfterFunc, run when the context ends
	// funcBuf is funcs' first backing array: a call's transport and a
	// child context or two.
	funcBuf [2]afterFunc
}

type afterFunc struct {
	id uint64
	f  func()
}

// closedChan is the Done channel of a context that ended before Done was
// called.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *deadlineCtx) init(parent context.Context, deadline time.Time) {
	c.parent, c.deadline = parent, deadline
}

// Deadline implements context.Context.
func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

// Value implements context.Context.
func (c *deadlineCtx) Value(key any) any { return c.parent.Value(key) }

// Err implements context.Context.
func (c *deadlineCtx) Err() error {
	c.mu.Lock()
	err, armed := c.err, c.timer != nil
	c.mu.Unlock()
	if err != nil || armed {
		return err
	}
	// Nobody waits, so no timer: the clock decides.
	if !time.Now().Before(c.deadline) {
		c.finish(context.DeadlineExceeded)
		c.mu.Lock()
		err = c.err
		c.mu.Unlock()
	}
	return err
}

// Done implements context.Context.
func (c *deadlineCtx) Done() <-chan struct{} {
	c.mu.Lock()
	if c.done == nil {
		if c.err != nil {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	d := c.done
	c.arm()
	c.mu.Unlock()
	return d
}

// AfterFunc arranges for f to run once c has ended (at once, in its own
// goroutine, if it has); stop prevents that and reports whether it did. The
// context package uses it for context.AfterFunc and for the children of c.
func (c *deadlineCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.nextID++
	id := c.nextID
	if c.funcs == nil {
		c.funcs = c.funcBuf[:0]
	}
	c.funcs = append(c.funcs, afterFunc{id: id, f: f})
	c.arm()
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range c.funcs {
			if a.id == id {
				c.funcs = slices.Delete(c.funcs, i, i+1)
				return true
			}
		}
		return false
	}
}

// arm starts the timer unless c has ended or it runs already; c.mu is held.
func (c *deadlineCtx) arm() {
	if c.err != nil || c.timer != nil {
		return
	}
	h, _ := deadlineTimers.Get().(*deadlineTimer)
	if h == nil {
		h = &deadlineTimer{}
		h.owner.Store(c)
		h.t = time.AfterFunc(time.Until(c.deadline), h.fire)
	} else {
		h.owner.Store(c)
		h.t.Reset(time.Until(c.deadline))
	}
	c.timer = h
}

// deadlineTimer is the timer of one deadlineCtx at a time. A timer that
// was stopped before it fired goes back to deadlineTimers for the next
// call, which saves creating a timer and its function per call. Only such
// timers are reused: Stop returning true guarantees that fire is not running
// and will not run for the old owner.
type deadlineTimer struct {
	t     *time.Timer
	owner atomic.Pointer[deadlineCtx]
}

var deadlineTimers sync.Pool

func (h *deadlineTimer) fire() {
	if c := h.owner.Load(); c != nil {
		c.finish(context.DeadlineExceeded)
	}
}

// stop stops h for good: it is reused if it had not fired.
func (h *deadlineTimer) stop() {
	if !h.t.Stop() {
		return // fired: fire runs or ran; h is dropped
	}
	h.owner.Store(nil)
	deadlineTimers.Put(h)
}

// finish ends c with err (the first call wins): closes Done, stops the timer
// and runs the AfterFunc functions.
func (c *deadlineCtx) finish(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.stop()
	}
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, a := range funcs {
		a.f()
	}
	// Drop the references; nothing else uses the array once c has ended.
	clear(funcs)
}

// String describes the context like context.WithDeadline's.
func (c *deadlineCtx) String() string {
	return fmt.Sprintf("%v.WithDeadline(%s [%s])", c.parent, c.deadline, time.Until(c.deadline).Truncate(time.Microsecond))
}
