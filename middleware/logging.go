package middleware

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// DefaultMaskedKeys are the metadata key fragments whose values logging
// masks by default (matched case-insensitively anywhere in the key).
var DefaultMaskedKeys = []string{"authorization", "token", "secret", "password", "cookie", "key", "credential"}

// LogOptions configure Logging and ClientLogging. The zero value gives the
// defaults.
type LogOptions struct {
	// Logger receives the records. Default: slog.Default().
	Logger *slog.Logger
	// Level returns the level of a call's record from its status code.
	// Default: INFO for OK, WARN for other codes, ERROR for INTERNAL,
	// UNKNOWN and DATA_LOSS.
	Level func(status.Code) slog.Level
	// Metadata adds the request metadata to each record, with the values of
	// masked keys replaced by "***". Default false.
	Metadata bool
	// Mask lists key fragments whose values are masked. Default
	// DefaultMaskedKeys.
	Mask []string
}

func defaultLevel(c status.Code) slog.Level {
	switch c {
	case status.OK:
		return slog.LevelInfo
	case status.Internal, status.Unknown, status.DataLoss:
		return slog.LevelError
	}
	return slog.LevelWarn
}

func (o *LogOptions) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Level == nil {
		o.Level = defaultLevel
	}
	if o.Mask == nil {
		o.Mask = DefaultMaskedKeys
	}
}

// masked returns md as a slog group with secrets masked.
func (o *LogOptions) masked(md handler.Metadata) slog.Attr {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	attrs := make([]any, 0, len(keys))
	for _, k := range keys {
		v := md[k]
		if Masked(k, o.Mask) {
			v = "***"
		}
		attrs = append(attrs, slog.String(k, v))
	}
	return slog.Group("metadata", attrs...)
}

// Masked reports whether the value of metadata key should be masked: it
// contains one of fragments, ignoring case.
func Masked(key string, fragments []string) bool {
	k := strings.ToLower(key)
	for _, f := range fragments {
		if strings.Contains(k, strings.ToLower(f)) {
			return true
		}
	}
	return false
}

// Logging is server middleware that writes one structured record per call:
// service, method, version, pattern, peer, status code, duration, messages
// and payload bytes each way, and the error message if any. Records below
// the logger's level cost no allocation.
func Logging(opts LogOptions) Server {
	opts.setDefaults()
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			start := time.Now()
			err := next.ServeRPC(ctx, s)
			code := status.CodeOf(err)
			level := opts.Level(code)
			if !opts.Logger.Enabled(ctx, level) {
				return err
			}
			info := s.Method()
			attrs := make([]slog.Attr, 0, 12)
			attrs = append(attrs,
				slog.String("service", info.Service),
				slog.String("method", info.Name),
				slog.Uint64("version", uint64(info.Version)),
				slog.String("pattern", info.Pattern.String()),
				slog.String("peer", s.Peer().ID.Short()),
				slog.String("code", code.String()),
				slog.Duration("duration", time.Since(start)))
			attrs = appendStats(attrs, s)
			if err != nil {
				attrs = append(attrs, slog.String("error", status.FromError(err).Message()))
			}
			if opts.Metadata {
				attrs = append(attrs, opts.masked(s.Header()))
			}
			opts.Logger.LogAttrs(ctx, level, "aster: call", attrs...)
			return err
		})
	}
}

func appendStats(attrs []slog.Attr, stream any) []slog.Attr {
	if st, ok := StatsOf(stream); ok {
		attrs = append(attrs,
			slog.Int64("msgs_in", st.ReceivedMessages), slog.Int64("bytes_in", st.ReceivedBytes),
			slog.Int64("msgs_out", st.SentMessages), slog.Int64("bytes_out", st.SentBytes))
	}
	return attrs
}

// ClientLogging is client middleware that writes one structured record per
// call when it ends (its last Recv, or Close): service, method, target peer,
// session, attempt (see Attempt), status code, duration, messages and
// payload bytes each way.
func ClientLogging(opts LogOptions) Client {
	opts.setDefaults()
	return func(next Caller) Caller {
		return WrapCaller(next, func(ctx context.Context, call *Call) (ClientStream, error) {
			ls := &loggedStream{o: &opts, ctx: ctx, call: call, start: time.Now()}
			cs, err := next.NewStream(ctx, call)
			if err != nil {
				ls.log(err)
				return nil, err
			}
			ls.ClientStream = cs
			return ls, nil
		})
	}
}

type loggedStream struct {
	ClientStream
	o      *LogOptions
	ctx    context.Context
	call   *Call
	start  time.Time
	logged atomic.Bool
}

func (l *loggedStream) Recv(msg any) error {
	err := l.ClientStream.Recv(msg)
	if err != nil {
		l.log(err)
	}
	return err
}

// errClosedByCaller is logged for a call closed before it ended.
var errClosedByCaller = status.New(status.Canceled, "call closed by caller")

func (l *loggedStream) Close() {
	l.ClientStream.Close()
	l.log(errClosedByCaller)
}

// Unwrap returns the wrapped stream.
func (l *loggedStream) Unwrap() ClientStream { return l.ClientStream }

func (l *loggedStream) log(err error) {
	if !l.logged.CompareAndSwap(false, true) {
		return
	}
	code := status.OK
	if err == io.EOF {
		err = nil
	} else {
		code = status.CodeOf(err)
	}
	level := l.o.Level(code)
	if !l.o.Logger.Enabled(l.ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("service", l.call.Service),
		slog.String("method", l.call.Method),
		slog.String("pattern", l.call.Pattern.String()),
		slog.String("peer", l.call.Peer.Short()),
		slog.String("code", code.String()),
		slog.Duration("duration", time.Since(l.start)))
	if l.call.SessionID != 0 {
		attrs = append(attrs, slog.Uint64("session", l.call.SessionID))
	}
	if l.ClientStream != nil {
		attrs = appendStats(attrs, l.ClientStream)
		if n := l.ClientStream.Trailer()[AttemptsKey]; n != "" {
			attrs = append(attrs, slog.String("attempts", n))
		}
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.FromError(err).Message()))
	}
	if l.o.Metadata {
		attrs = append(attrs, l.o.masked(l.call.Metadata))
	}
	l.o.Logger.LogAttrs(l.ctx, level, "aster: call", attrs...)
}

// AuditOptions configure Audit. The zero value gives the defaults.
type AuditOptions struct {
	// Logger receives the audit records (often a separate, durable sink).
	// Default: slog.Default().
	Logger *slog.Logger
	// Level of the records. Default INFO.
	Level slog.Level
}

// Audit is server middleware that records who called what with which
// capabilities: one record per call with the peer's endpoint id (in full),
// its granted capabilities, whether the gate is open, the method and its
// capability requirement, and the outcome code. Place it outside the auth
// middleware to record refusals too.
func Audit(opts AuditOptions) Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			err := next.ServeRPC(ctx, s)
			if !opts.Logger.Enabled(ctx, opts.Level) {
				return err
			}
			info, peer := s.Method(), s.Peer()
			req := "none"
			if info.Requires != nil {
				req = fmt.Sprint(info.Requires)
			}
			opts.Logger.LogAttrs(ctx, opts.Level, "aster: audit",
				slog.String("peer", peer.ID.String()),
				slog.Any("capabilities", peer.Capabilities),
				slog.Bool("unrestricted", peer.Unrestricted),
				slog.String("method", info.FullName()),
				slog.Uint64("version", uint64(info.Version)),
				slog.String("requires", req),
				slog.String("code", status.CodeOf(err).String()))
			return err
		})
	}
}
