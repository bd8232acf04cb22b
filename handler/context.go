package handler

import (
	"context"

	"github.com/aster-go/aster/internal/ctxkey"
	"github.com/aster-go/aster/status"
)

// A call's context carries its Stream, so that code holding only the
// context — typed handlers (Unary, ServerStream, ClientStream), the
// functions they call — reaches the call's metadata and peer and sets
// response metadata and trailers, as grpc-go's metadata.FromIncomingContext
// and peer.FromContext do. The server puts the Stream in once per call, with
// NewContext; the values are valid only until the handler returns (see
// Stream).

// NewContext returns a copy of ctx that carries s, the Stream of the call
// being served. The aster server calls it once per call before running the
// handler; a test that calls a handler directly can use it to give the
// handler a Stream of its own.
func NewContext(ctx context.Context, s Stream) context.Context {
	return context.WithValue(ctx, ctxkey.Stream{}, s)
}

// StreamFromContext returns the Stream of the call ctx belongs to.
func StreamFromContext(ctx context.Context) (Stream, bool) {
	s, ok := ctx.Value(ctxkey.Stream{}).(Stream)
	return s, ok && s != nil
}

// IncomingMetadata returns the request metadata the caller sent, or nil
// when ctx is not a call's context. Do not modify it.
func IncomingMetadata(ctx context.Context) Metadata {
	if s, ok := StreamFromContext(ctx); ok {
		return s.Header()
	}
	return nil
}

// PeerFromContext returns the caller of the call ctx belongs to: its
// endpoint id, address, admitted capabilities and credential attributes.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	if s, ok := StreamFromContext(ctx); ok {
		return s.Peer(), true
	}
	return Peer{}, false
}

// MethodFromContext returns the method the call ctx belongs to is calling,
// or nil when ctx is not a call's context.
func MethodFromContext(ctx context.Context) *MethodInfo {
	if s, ok := StreamFromContext(ctx); ok {
		return s.Method()
	}
	return nil
}

// errNoCall is returned by the setters for a context that is not a call's.
var errNoCall = status.New(status.Internal, "handler: the context does not belong to an aster call")

// SetHeader adds a key/value pair to the response metadata of the call ctx
// belongs to; see Stream.SetHeader. It fails when ctx is not a call's
// context, once a response has been sent, or when the pair breaks the
// metadata limits.
func SetHeader(ctx context.Context, key, value string) error {
	s, ok := StreamFromContext(ctx)
	if !ok {
		return errNoCall
	}
	return s.SetHeader(key, value)
}

// SetTrailer adds a key/value pair to the trailer metadata of the call ctx
// belongs to; see Stream.SetTrailer. It fails only when ctx is not a call's
// context.
func SetTrailer(ctx context.Context, key, value string) error {
	s, ok := StreamFromContext(ctx)
	if !ok {
		return errNoCall
	}
	s.SetTrailer(key, value)
	return nil
}
