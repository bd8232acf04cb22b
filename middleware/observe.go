package middleware

import (
	"github.com/aster-go/aster/handler"
)

// MessageHooks observe the messages of one call. Either hook may be nil.
type MessageHooks struct {
	// OnSend runs after each Send with the message and Send's result.
	OnSend func(msg any, err error)
	// OnRecv runs after each Recv with the message and Recv's result
	// (io.EOF at the end of a stream; msg is then not filled in).
	OnRecv func(msg any, err error)
}

// WrapServerStream returns s with hooks observing each message; a server
// middleware passes it to the next handler:
//
//	return next.ServeRPC(ctx, middleware.WrapServerStream(s, hooks))
func WrapServerStream(s handler.Stream, hooks MessageHooks) handler.Stream {
	return &hookedServerStream{Stream: s, hooks: hooks}
}

type hookedServerStream struct {
	handler.Stream
	hooks MessageHooks
}

func (h *hookedServerStream) Send(msg any) error {
	err := h.Stream.Send(msg)
	if h.hooks.OnSend != nil {
		h.hooks.OnSend(msg, err)
	}
	return err
}

func (h *hookedServerStream) Recv(msg any) error {
	err := h.Stream.Recv(msg)
	if h.hooks.OnRecv != nil {
		h.hooks.OnRecv(msg, err)
	}
	return err
}

// Unwrap returns the wrapped stream.
func (h *hookedServerStream) Unwrap() handler.Stream { return h.Stream }

// WrapClientStream returns cs with hooks observing each message; a client
// middleware returns it from NewStream.
func WrapClientStream(cs ClientStream, hooks MessageHooks) ClientStream {
	return &hookedClientStream{ClientStream: cs, hooks: hooks}
}

type hookedClientStream struct {
	ClientStream
	hooks MessageHooks
}

func (h *hookedClientStream) Send(msg any) error {
	err := h.ClientStream.Send(msg)
	if h.hooks.OnSend != nil {
		h.hooks.OnSend(msg, err)
	}
	return err
}

func (h *hookedClientStream) Recv(msg any) error {
	err := h.ClientStream.Recv(msg)
	if h.hooks.OnRecv != nil {
		h.hooks.OnRecv(msg, err)
	}
	return err
}

// Unwrap returns the wrapped stream.
func (h *hookedClientStream) Unwrap() ClientStream { return h.ClientStream }

// StreamStats counts the messages and encoded payload bytes of one call so
// far, as seen by the framework's stream (headers and trailers excluded).
type StreamStats struct {
	SentMessages, ReceivedMessages int64
	SentBytes, ReceivedBytes       int64
}

// StatsReporter is implemented by the framework's server and client streams.
type StatsReporter interface {
	Stats() StreamStats
}

// StatsOf returns the stats of a handler.Stream or ClientStream, looking
// through wrappers that have an Unwrap method returning the wrapped stream.
// It reports false when no stream in the chain keeps stats.
func StatsOf(stream any) (StreamStats, bool) {
	for i := 0; i < 64 && stream != nil; i++ {
		if r, ok := stream.(StatsReporter); ok {
			return r.Stats(), true
		}
		switch u := stream.(type) {
		case interface{ Unwrap() handler.Stream }:
			stream = u.Unwrap()
		case interface{ Unwrap() ClientStream }:
			stream = u.Unwrap()
		default:
			return StreamStats{}, false
		}
	}
	return StreamStats{}, false
}
