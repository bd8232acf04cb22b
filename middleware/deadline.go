package middleware

import (
	"context"
	"errors"
	"sync"
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
	def, maxd := o.limits(service, method)
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
	if d <= 0 {
		return ctx, nil
	}
	return context.WithTimeout(ctx, d)
}

// expired is the DEADLINE_EXCEEDED (or CANCELED) error for a spent context.
func expired(ctx context.Context, when string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return status.New(status.DeadlineExceeded, "deadline exceeded "+when)
	}
	return status.FromError(ctx.Err())
}

// Deadline is server middleware that gives calls without a deadline a
// default timeout (per method or service), caps long ones at Max, rejects a
// call whose budget is already spent with DEADLINE_EXCEEDED, and cancels the
// handler's context when the budget runs out. A handler that returns after
// its budget ran out — with a context error, or even with success — ends the
// call with DEADLINE_EXCEEDED.
func Deadline(opts DeadlineOptions) Server {
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
// context is already done fails at once without being sent.
func ClientDeadline(opts DeadlineOptions) Client {
	return func(next Caller) Caller {
		return CallerFunc(func(ctx context.Context, call *Call) (ClientStream, error) {
			ctx, cancel := opts.apply(ctx, call.Service, call.Method)
			if ctx.Err() != nil {
				if cancel != nil {
					cancel()
				}
				return nil, expired(ctx, "before the call started")
			}
			cs, err := next.NewStream(ctx, call)
			if cancel == nil {
				return cs, err
			}
			if err != nil {
				cancel()
				return nil, err
			}
			return &deadlineStream{ClientStream: cs, cancel: cancel}, nil
		})
	}
}

// deadlineStream releases the derived context when the call ends.
type deadlineStream struct {
	ClientStream
	cancel context.CancelFunc
	once   sync.Once
}

func (d *deadlineStream) Recv(msg any) error {
	err := d.ClientStream.Recv(msg)
	if err != nil { // the call has ended (io.EOF or its status)
		d.once.Do(d.cancel)
	}
	return err
}

func (d *deadlineStream) Close() {
	d.ClientStream.Close()
	d.once.Do(d.cancel)
}

// Unwrap returns the wrapped stream.
func (d *deadlineStream) Unwrap() ClientStream { return d.ClientStream }
