// Package middleware holds aster's middleware types, their composition and
// the standard set: deadlines, retries, circuit breaking, rate limiting,
// panic recovery, logging/audit and authentication.
//
// Server middleware is a func(handler.Handler) handler.Handler, exactly like
// net/http middleware: it sees the method (handler.MethodInfo: service,
// name, version, pattern, idempotent flag, required capabilities), the peer
// and the metadata through the handler.Stream, and can wrap the stream to
// observe each message. Install it server-wide (aster.WithMiddleware), per
// service (handler.Service.Use) or per method (handler.Use); server-wide
// runs outermost, per-method innermost.
//
// Client middleware wraps a Caller — the client's call path — the way an
// http.RoundTripper wrapper does: it sees every Call (method, pattern,
// idempotent flag, metadata, peer, session) and, by wrapping the returned
// ClientStream, every message. Install it with aster.WithClientMiddleware;
// it runs for all four call patterns and for session calls.
//
// Chain composes either kind; the first middleware given is the outermost,
// so it sees the call first and the outcome last. The recommended orders:
//
//	server: Recover → Logging/Audit → auth → Deadline → RateLimit → handler
//	client: ClientLogging → ClientDeadline → Retry → CircuitBreaker → transport
//
// Recover goes first so that a panic anywhere inside is contained; Logging
// next so that every outcome, including rejections by the inner
// middleware, is logged once. On the client, a deadline outside Retry is a
// budget for all attempts together; the breaker inside Retry counts each
// attempt, so an OPEN breaker makes the retry give up fast.
package middleware

import (
	"context"
	"reflect"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// Server is server-side middleware.
type Server = handler.Middleware

// Call describes one outgoing call.
type Call struct {
	Service string
	Method  string
	// Version of the service; 0 asks the server for its highest version.
	Version uint32
	// Pattern is the call pattern.
	Pattern handler.Pattern
	// Idempotent marks the call as safe to retry. The client sets it for
	// methods its fetched contract marks idempotent and for methods declared
	// with the aster.WithIdempotent client option; the aster.Idempotent()
	// call option sets it per call. Retry also asks the client's contract
	// (see MethodDescriber) when a call fails and this is false.
	Idempotent bool
	// Metadata is sent in the call header; middleware may add to it.
	Metadata handler.Metadata
	// SessionID routes the call to a session (0: none).
	SessionID uint64
	// Conn, when set, pins the call to that connection: the client opens
	// the call's stream on it and never dials for it, and a call whose
	// pinned connection is gone fails at once with UNAVAILABLE. A Session
	// sets it on its calls (a session lives on the connection it started
	// on), so no middleware moves a session call to another connection;
	// Retry does not retry a call whose pinned connection is gone.
	// Middleware must not change it; the client refuses a session call
	// (SessionID set) without it.
	Conn transport.Conn
	// Peer is the endpoint being called (set by the client).
	Peer trust.EndpointID
	// Requires is the method's capability requirement as the server's
	// contract states it, when the client has fetched the contract (nil
	// otherwise or when the method requires nothing).
	Requires trust.Requirement
	// RequestType and ResponseType are the Go types of the messages the
	// caller sends and decodes into, set by the typed call functions
	// (aster.CallUnary, ...) and nil for calls without Go types. When the
	// client has the server's contract it checks their wire names
	// (handler.TypeName) against the method's before anything is sent.
	RequestType, ResponseType reflect.Type
}

// FullName returns "Service.method".
func (c *Call) FullName() string { return c.Service + "." + c.Method }

// ClientStream is the caller's side of one call.
//
// Send and CloseSend may be called concurrently with Recv. A unary or
// server-streaming call sends exactly one message, then CloseSend. Close
// may be called at any time, also while Send or Recv is blocked in another
// goroutine: it unblocks them, and they return an error.
type ClientStream interface {
	// Send encodes and sends one request message. Messages may be coalesced
	// into larger writes.
	Send(msg any) error
	// CloseSend flushes and half-closes the request direction.
	CloseSend() error
	// Recv decodes the next response into msg. It returns io.EOF when the
	// call ended OK, or the call's *status.Error.
	Recv(msg any) error
	// Header returns the response metadata the server sent before its
	// first message (nil if none), valid once Recv has returned a message,
	// an error or io.EOF.
	Header() handler.Metadata
	// Trailer returns the trailer metadata, valid once Recv has returned an
	// error or io.EOF.
	Trailer() handler.Metadata
	// Close releases the stream, cancelling the call if it has not ended.
	// It is safe to call more than once.
	Close()
}

// Caller starts calls. The client's transport path implements it; client
// middleware wraps it.
type Caller interface {
	NewStream(ctx context.Context, call *Call) (ClientStream, error)
}

// CallerFunc adapts a function to Caller.
type CallerFunc func(ctx context.Context, call *Call) (ClientStream, error)

// NewStream calls f.
func (f CallerFunc) NewStream(ctx context.Context, call *Call) (ClientStream, error) {
	return f(ctx, call)
}

// Client is client-side middleware.
//
// Middleware that wraps a Caller should return one with an Unwrap() Caller
// method (WrapCaller makes one), so that optional interfaces of the inner
// callers, such as MethodDescriber, stay visible to the middleware outside.
type Client func(Caller) Caller

// WrapCaller returns a Caller that starts calls with f and whose Unwrap
// method returns next, the Caller f wraps.
func WrapCaller(next Caller, f CallerFunc) Caller { return &wrappedCaller{f: f, next: next} }

type wrappedCaller struct {
	f    CallerFunc
	next Caller
}

func (w *wrappedCaller) NewStream(ctx context.Context, call *Call) (ClientStream, error) {
	return w.f(ctx, call)
}

// Unwrap returns the wrapped Caller.
func (w *wrappedCaller) Unwrap() Caller { return w.next }

// MethodSpec is what a server's contract says of one method.
type MethodSpec struct {
	// Pattern is the method's call pattern.
	Pattern handler.Pattern
	// Idempotent reports whether the method is marked safe to retry.
	Idempotent bool
	// Requires is the method's capability requirement (nil: none).
	Requires trust.Requirement
	// Request and Response are the wire type names of its messages.
	Request, Response string
}

// MethodDescriber is an optional interface of a Caller: DescribeMethod
// returns what the server's contract says of call's method (service,
// method and version), fetching the contract if the caller has not yet
// (the client does so once per connection). A method the contract lacks is
// NOT_FOUND. The aster client's transport path implements it; Retry uses
// it to learn whether a failed call is idempotent.
type MethodDescriber interface {
	DescribeMethod(ctx context.Context, call *Call) (MethodSpec, error)
}

// FindDescriber returns the MethodDescriber among c and the callers it
// wraps (followed through Unwrap() Caller methods), if any.
func FindDescriber(c Caller) (MethodDescriber, bool) {
	for c != nil {
		if d, ok := c.(MethodDescriber); ok {
			return d, true
		}
		u, ok := c.(interface{ Unwrap() Caller })
		if !ok {
			return nil, false
		}
		c = u.Unwrap()
	}
	return nil, false
}

// Chain composes middleware of one side; mw[0] is the outermost. It works for
// server middleware (Server) and client middleware (Client) alike:
//
//	srv := aster.NewServer(aster.WithMiddleware(middleware.Chain(
//		middleware.Recover(middleware.RecoverOptions{}),
//		middleware.Logging(middleware.LogOptions{}),
//	)))
func Chain[M Server | Client](mw ...M) M {
	switch ms := any(mw).(type) {
	case []Server:
		return any(ChainServer(ms...)).(M)
	case []Client:
		return any(ChainClient(ms...)).(M)
	}
	panic("unreachable")
}

// ChainServer composes server middleware; mw[0] is the outermost.
func ChainServer(mw ...Server) Server {
	return func(h handler.Handler) handler.Handler {
		for i := len(mw) - 1; i >= 0; i-- {
			h = mw[i](h)
		}
		return h
	}
}

// ChainClient composes client middleware; mw[0] is the outermost.
func ChainClient(mw ...Client) Client {
	return func(c Caller) Caller {
		for i := len(mw) - 1; i >= 0; i-- {
			c = mw[i](c)
		}
		return c
	}
}
