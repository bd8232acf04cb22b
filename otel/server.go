package otel

import (
	"context"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
)

// Server returns server middleware that traces and measures every call and
// continues the caller's trace from the call metadata. Install it as the
// outermost server middleware (aster.WithMiddleware(otel.Server(), ...)).
func Server(opts ...Option) middleware.Server {
	in := newInstruments(newConfig(opts), true)
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			info := s.Method()
			ctx = in.prop.Extract(ctx, metadataCarrier(s.Header()))
			ctx, t := in.begin(ctx, info.Service, info.Name)
			if t.span.IsRecording() {
				peer := s.Peer()
				t.span.SetAttributes(KeyPattern.String(info.Pattern.String()), KeyVersion.Int64(int64(info.Version)),
					KeyPeerID.String(peer.ID.String()))
				if peer.Addr != nil {
					t.span.SetAttributes(KeyPeerAddress.String(peer.Addr.String()))
				}
			}
			t.sizes.Store(hasStats(s))
			err := next.ServeRPC(ctx, &serverStream{Stream: s, t: t})
			t.end(ctx, err)
			return err
		})
	}
}

// serverStream counts the messages of one call; their sizes come from the
// framework's stream counts (middleware.StatsOf).
type serverStream struct {
	handler.Stream
	t *tracker
	// Each sizer is only touched by the goroutine doing Send or Recv.
	sentZ, recvZ msgSizer
}

func (s *serverStream) Recv(msg any) error {
	err := s.Stream.Recv(msg)
	if err == nil {
		s.t.recvMsg(s.recvZ.received(s.Stream))
	}
	return err
}

func (s *serverStream) Send(msg any) error {
	err := s.Stream.Send(msg)
	if err == nil {
		s.t.sentMsg(s.sentZ.sent(s.Stream))
	}
	return err
}

// Unwrap returns the wrapped stream (for middleware.StatsOf and other
// middleware that look through wrappers).
func (s *serverStream) Unwrap() handler.Stream { return s.Stream }
