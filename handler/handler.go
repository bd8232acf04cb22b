// Package handler defines aster services the way net/http defines web
// handlers: a method is a Handler that serves one call through a Stream.
//
// Most code never implements Handler directly. The typed adapters Unary,
// ServerStream, ClientStream and BidiStream turn ordinary Go functions over
// request and response structs into method definitions, and a Service groups
// them under a name and version:
//
//	svc := handler.NewService("MissionControl", 1)
//	svc.Handle("getStatus", handler.Unary(mc.GetStatus), handler.Requires(trust.Cap("ops.status")))
//
// A session-scoped service (NewSessionService) gets a fresh instance per
// client session, created by a factory given the peer and closed (io.Closer)
// when the session or connection ends; On binds its methods to the instance.
//
// A handler's context carries its call: IncomingMetadata, PeerFromContext and
// MethodFromContext read the request metadata, the caller (endpoint id,
// capabilities, credential attributes) and the method; SetHeader and
// SetTrailer set response metadata and trailer metadata. Like the Stream,
// they are valid only until the handler returns.
//
// Middleware is a func(Handler) Handler, exactly like net/http middleware.
package handler

import (
	"context"
	"net"
	"reflect"

	"github.com/aster-go/aster/trust"
)

// Handler serves one call. ServeRPC reads requests from s and sends responses
// to it; the returned error becomes the call's status (nil is OK; use
// status.New or status.Errorf for a specific code, anything else is UNKNOWN).
// ctx is cancelled when the caller cancels, its deadline passes or the
// connection drops.
type Handler interface {
	ServeRPC(ctx context.Context, s Stream) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, s Stream) error

// ServeRPC calls f(ctx, s).
func (f HandlerFunc) ServeRPC(ctx context.Context, s Stream) error { return f(ctx, s) }

// Middleware wraps a Handler, like net/http middleware wraps http.Handler.
type Middleware = func(Handler) Handler

// Stream is the server's side of one call.
//
// A Stream, and everything obtained from it (its metadata map, its Peer's
// slices and maps), is valid only until the handler's ServeRPC returns: the
// server reuses the memory of finished calls. A handler that starts
// goroutines must stop them using the Stream before it returns. Use after
// return fails with FAILED_PRECONDITION while the call's memory has not been
// reused yet, and is undefined after that. The same holds for the accessors
// of a call's context (IncomingMetadata, PeerFromContext, SetHeader, ...).
//
// Recv and Send may be called from different goroutines; SetHeader,
// SetTrailer and Send must not be called concurrently with each other.
type Stream interface {
	// Method describes the method being called.
	Method() *MethodInfo
	// Peer describes the caller.
	Peer() Peer
	// Header returns the request metadata the caller sent. Do not modify it.
	Header() Metadata
	// SetHeader adds a key/value pair to the response metadata, which the
	// server sends before the first response message (PROTOCOL.md 5.4). It
	// fails once a response has been sent, or when the pair breaks the
	// metadata limits (at most 64 pairs, keys 1–8192 bytes, values at most
	// 8192 bytes).
	SetHeader(key, value string) error
	// SetTrailer adds key/value pairs to the metadata sent in the trailer.
	SetTrailer(key, value string)
	// Recv decodes the next request message into msg (a pointer). It returns
	// io.EOF when the caller has finished sending. A message that does not
	// decode is an INVALID_ARGUMENT error.
	Recv(msg any) error
	// Send encodes and sends one response message. Streamed messages may be
	// coalesced into larger writes; they are flushed when the sender pauses.
	Send(msg any) error
}

// Peer describes the other end of a connection.
type Peer struct {
	// ID is the peer's endpoint id, proven by the transport handshake.
	ID trust.EndpointID
	// Addr is the peer's network address (for logs; may be nil).
	Addr net.Addr
	// Capabilities are the capabilities granted to the peer at admission.
	Capabilities []string
	// Attributes are the key/value pairs of the enrollment credential the
	// peer was admitted with (signed by the root), or nil when it presented
	// none.
	Attributes map[string]string
	// Unrestricted is true when the server admits everyone (open gate): then
	// capability requirements are not enforced.
	Unrestricted bool
}

// Metadata is a set of call metadata pairs. Keys are case-sensitive; by
// convention lowercase.
type Metadata map[string]string

// Get returns the value of key, or "".
func (m Metadata) Get(key string) string { return m[key] }

// Pattern is a method's call pattern.
type Pattern uint8

// The four call patterns.
const (
	PatternUnary        Pattern = iota + 1 // one request, one response
	PatternServerStream                    // one request, many responses
	PatternClientStream                    // many requests, one response
	PatternBidiStream                      // many requests, many responses
)

var patternNames = [...]string{"", "unary", "server_stream", "client_stream", "bidi_stream"}

// String returns the pattern's contract name ("unary", "server_stream", ...).
func (p Pattern) String() string {
	if int(p) < len(patternNames) && p > 0 {
		return patternNames[p]
	}
	return "invalid"
}

// ParsePattern parses a pattern's contract name.
func ParsePattern(s string) (Pattern, bool) {
	for i, n := range patternNames {
		if i > 0 && n == s {
			return Pattern(i), true
		}
	}
	return 0, false
}

// ClientStreams reports whether the caller sends many messages.
func (p Pattern) ClientStreams() bool { return p == PatternClientStream || p == PatternBidiStream }

// ServerStreams reports whether the server sends many messages.
func (p Pattern) ServerStreams() bool { return p == PatternServerStream || p == PatternBidiStream }

// Scope says whether a service has one shared instance or one per session.
type Scope uint8

// Service scopes.
const (
	ScopeShared  Scope = iota // one instance serves every caller
	ScopeSession              // a fresh instance per client session
)

// String returns "shared" or "session".
func (s Scope) String() string {
	if s == ScopeSession {
		return "session"
	}
	return "shared"
}

// MethodInfo describes a registered method. Middleware reads it to decide
// what to do (retry only idempotent methods, check capabilities, ...).
type MethodInfo struct {
	Service    string
	Name       string
	Version    uint32
	Pattern    Pattern
	Scope      Scope
	Idempotent bool
	// Requires is the capability requirement (method's, else service's); nil
	// requires nothing.
	Requires trust.Requirement
	// Request and Response are the message struct types.
	Request, Response reflect.Type
}

// FullName returns "Service.method".
func (m *MethodInfo) FullName() string { return m.Service + "." + m.Name }
