package otel

import (
	"context"
	"io"
	"maps"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// Client returns client middleware that traces and measures every call and
// sends the trace context (and baggage) in the call metadata. Install it as
// the outermost client middleware
// (aster.WithClientMiddleware(otel.Client(), ...)). The span ends when the
// call's outcome is known: Recv returns io.EOF or an error, NewStream fails,
// or the stream is closed early (CANCELED, or the error a Send returned).
func Client(opts ...Option) middleware.Client {
	in := newInstruments(newConfig(opts), false)
	return func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			ctx, t := in.begin(ctx, call.Service, call.Method)
			if t.span.IsRecording() {
				attrs := make([]attribute.KeyValue, 0, 4)
				attrs = append(attrs, KeyPattern.String(call.Pattern.String()))
				if !call.Peer.IsZero() {
					attrs = append(attrs, KeyPeerID.String(call.Peer.String()))
				}
				if call.Version != 0 {
					attrs = append(attrs, KeyVersion.Int64(int64(call.Version)))
				}
				if call.SessionID != 0 {
					attrs = append(attrs, KeySessionID.Int64(int64(call.SessionID)))
				}
				t.span.SetAttributes(attrs...)
			}

			// Inject into a copy: the caller's Call and metadata map stay as
			// they were (a retry above us may reuse them). Nothing to send
			// (no valid span context, no baggage): no copy.
			var ic injectCarrier
			in.prop.Inject(ctx, &ic)
			if ic.len() > 0 {
				c := *call
				md := make(handler.Metadata, len(call.Metadata)+ic.len())
				maps.Copy(md, call.Metadata)
				ic.copyTo(md)
				c.Metadata = md
				call = &c
			}

			cs, err := next.NewStream(ctx, call)
			if err != nil {
				t.end(ctx, err)
				return nil, err
			}
			t.sizes.Store(hasStats(cs))
			return &clientStream{ClientStream: cs, ctx: ctx, t: t}, nil
		})
	}
}

// clientStream counts the messages of one call and ends its span.
type clientStream struct {
	middleware.ClientStream
	ctx context.Context
	t   *tracker
	// Message sizes from the framework's stream counts (middleware.StatsOf);
	// each sizer is only touched by the goroutine doing Send or Recv.
	sentZ, recvZ msgSizer

	mu      sync.Mutex
	sendErr error // a status error from Send, reported if the call is closed without an outcome
}

func (s *clientStream) Send(msg any) error {
	err := s.ClientStream.Send(msg)
	if err == nil {
		s.t.sentMsg(s.sentZ.sent(s.ClientStream))
		return nil
	}
	if _, ok := err.(*status.Error); ok {
		s.mu.Lock()
		if s.sendErr == nil {
			s.sendErr = err
		}
		s.mu.Unlock()
	}
	return err
}

func (s *clientStream) Recv(msg any) error {
	err := s.ClientStream.Recv(msg)
	switch {
	case err == nil:
		s.t.recvMsg(s.recvZ.received(s.ClientStream))
	case err == io.EOF:
		s.t.end(s.ctx, nil)
	default:
		s.t.end(s.ctx, err)
	}
	return err
}

func (s *clientStream) Close() {
	s.ClientStream.Close()
	if s.t.ended.Load() {
		return
	}
	s.mu.Lock()
	err := s.sendErr
	s.mu.Unlock()
	if err == nil {
		err = status.New(status.Canceled, "call closed by caller")
	}
	s.t.end(s.ctx, err)
}

// Unwrap returns the wrapped stream (for middleware.StatsOf and other
// middleware that look through wrappers).
func (s *clientStream) Unwrap() middleware.ClientStream { return s.ClientStream }
