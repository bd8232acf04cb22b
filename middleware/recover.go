package middleware

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// RecoverOptions configure Recover. The zero value gives the defaults.
type RecoverOptions struct {
	// Logger receives one ERROR record per panic with the method, peer,
	// panic value and stack. Default: slog.Default().
	Logger *slog.Logger
	// Handle, if set, turns the panic value into the call's error (it runs
	// after logging). Default: INTERNAL "handler panic" — the panic value is
	// not sent to the caller, as it may hold internals.
	Handle func(ctx context.Context, s handler.Stream, panicValue any) error
}

// Recover is server middleware that turns a handler panic into an error
// (INTERNAL by default) and logs it with its stack; the connection and other
// calls carry on. Put it outermost so it also covers the other middleware.
// The server keeps a last-resort guard of its own; Recover is the part you
// configure and place.
func Recover(opts RecoverOptions) Server {
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) (err error) {
			defer func() {
				r := recover()
				if r == nil {
					return
				}
				logger := opts.Logger
				if logger == nil {
					logger = slog.Default()
				}
				logger.LogAttrs(ctx, slog.LevelError, "aster: handler panic",
					slog.String("method", s.Method().FullName()),
					slog.String("peer", s.Peer().ID.Short()),
					slog.String("panic", fmt.Sprint(r)),
					slog.String("stack", string(debug.Stack())))
				if opts.Handle != nil {
					err = opts.Handle(ctx, s, r)
					return
				}
				err = status.New(status.Internal, "handler panic")
			}()
			return next.ServeRPC(ctx, s)
		})
	}
}
