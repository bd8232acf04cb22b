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
			bc, sizes := s.(byteCounter)
			t.sizes = sizes
			err := next.ServeRPC(ctx, &serverStream{Stream: s, t: t, bc: bc})
			t.end(ctx, err)
			return err
		})
	}
}

// serverStream counts the messages of one call.
type serverStream struct {
	handler.Stream
	t  *tracker
	bc byteCounter
	// Last cumulative byte counts seen, to size each message. Each is only
	// touched by the goroutine doing Send or Recv.
	sentB, recvB uint64
}

func (s *serverStream) Recv(msg any) error {
	err := s.Stream.Recv(msg)
	if err == nil {
		s.t.recvMsg(s.delta(false))
	}
	return err
}

func (s *serverStream) Send(msg any) error {
	err := s.Stream.Send(msg)
	if err == nil {
		s.t.sentMsg(s.delta(true))
	}
	return err
}

// delta returns the size of the message just sent or received, or -1.
func (s *serverStream) delta(sent bool) int64 {
	if s.bc == nil {
		return -1
	}
	if sent {
		n := s.bc.SentBytes()
		d := n - s.sentB
		s.sentB = n
		return int64(d)
	}
	n := s.bc.ReceivedBytes()
	d := n - s.recvB
	s.recvB = n
	return int64(d)
}
