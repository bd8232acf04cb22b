package aster

import (
	"context"
	"io"
	"iter"
	"reflect"
	"sync"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
)

// CallOption configures one call: Version, Idempotent, WithHeader, and
// ResponseHeader and ResponseTrailer to read the response metadata. Every
// call function (CallUnary, CallServerStream, CallClientStream,
// CallBidiStream, CallDynamic) takes them.
type CallOption interface{ applyCall(*callSettings) }

// callSettings is what the call options of one call set. The Call is
// embedded so that one allocation holds both.
type callSettings struct {
	c               middleware.Call
	header, trailer *handler.Metadata // ResponseHeader, ResponseTrailer targets
}

type callOptionFunc func(*callSettings)

func (f callOptionFunc) applyCall(s *callSettings) { f(s) }

// Version selects the service version to call. Default 0: the server's
// highest registered version.
func Version(v uint32) CallOption {
	return callOptionFunc(func(s *callSettings) { s.c.Version = v })
}

// Idempotent marks the call as safe to retry (for retry middleware).
// Default: what the server's contract and WithIdempotent say.
func Idempotent() CallOption {
	return callOptionFunc(func(s *callSettings) { s.c.Idempotent = true })
}

// WithHeader adds a request metadata pair. Default: none.
func WithHeader(key, value string) CallOption {
	return callOptionFunc(func(s *callSettings) {
		if s.c.Metadata == nil {
			s.c.Metadata = handler.Metadata{}
		}
		s.c.Metadata[key] = value
	})
}

// ResponseHeader stores the response metadata the server sent before its
// first message (nil if it sent none) in *md once the call has ended: when
// CallUnary or CloseAndRecv returns, or when a stream call's Recv returned
// io.EOF or an error, or it was closed. The stream call types also have a
// Header method.
func ResponseHeader(md *handler.Metadata) CallOption {
	return callOptionFunc(func(s *callSettings) { s.header = md })
}

// ResponseTrailer stores the trailer metadata in *md once the call has
// ended, as ResponseHeader does. The trailer of a failed call is also in
// its error (status.Error.Metadata).
func ResponseTrailer(md *handler.Metadata) CallOption {
	return callOptionFunc(func(s *callSettings) { s.trailer = md })
}

// newCall parses "Service.method" and applies options.
func newCall(method string, p handler.Pattern, opts []CallOption) (*middleware.Call, *callSettings, error) {
	mn, ok := splitMethod(method)
	if !ok {
		return nil, nil, status.Errorf(status.InvalidArgument, "method %q must be Service.method", method)
	}
	s := &callSettings{c: middleware.Call{Service: mn.service, Method: mn.method, Pattern: p}}
	for _, o := range opts {
		o.applyCall(s)
	}
	return &s.c, s, nil
}

// done stores the call's response metadata where ResponseHeader and
// ResponseTrailer asked.
func (s *callSettings) done(cs middleware.ClientStream) {
	if s.header != nil {
		*s.header = cs.Header()
	}
	if s.trailer != nil {
		*s.trailer = cs.Trailer()
	}
}

// CallUnary calls a unary method ("Service.method") with req and decodes the
// response into a new Resp.
//
// When the client has the server's contract (after Client.Contract, or once
// Retry fetched it), the call is checked against it before anything is
// sent: calling a method of another pattern fails with FAILED_PRECONDITION,
// and a request or Resp type whose wire name differs from the method's
// with INVALID_ARGUMENT. The wire name of a Go type is the one the server
// uses in its contract (handler.TypeName): its WireType() if it implements
// handler.WireTyper, else "<import path>.<Name>"; so a client that declares
// its own copy of a server's message type gives it a WireType method
// returning the contract's name (contract/gen does). Only named struct
// types are checked.
func CallUnary[Resp any](ctx context.Context, cc Caller, method string, req any, opts ...CallOption) (*Resp, error) {
	call, set, err := newCall(method, handler.PatternUnary, opts)
	if err != nil {
		return nil, err
	}
	call.RequestType, call.ResponseType = reflect.TypeOf(req), reflect.TypeFor[Resp]()
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	defer cs.Close()
	resp, err := unaryExchange[Resp](cs, req)
	set.done(cs)
	return resp, err
}

func unaryExchange[Resp any](cs middleware.ClientStream, req any) (*Resp, error) {
	if err := sendOne(cs, req); err != nil {
		return nil, err
	}
	return recvOne[Resp](cs)
}

// recvOne reads the one response of a unary or client-streaming call and
// the end of the call (handler.RecvOne's rule for responses).
func recvOne[Resp any](cs middleware.ClientStream) (*Resp, error) {
	resp := new(Resp)
	if err := handler.RecvOne(cs, resp, handler.Responses); err != nil {
		return nil, err
	}
	return resp, nil
}

// sendOne sends the single request of a unary or server-streaming call.
// io.EOF from Send means the server already ended the call; its outcome is
// then read by Recv.
func sendOne(cs middleware.ClientStream, req any) error {
	if err := cs.Send(req); err != nil && err != io.EOF {
		return err
	}
	if err := cs.CloseSend(); err != nil && err != io.EOF {
		return err
	}
	return nil
}

// CallServerStream starts a server-streaming call; read the responses from
// the returned stream and Close it when done. It is checked against the
// contract as CallUnary is.
func CallServerStream[Resp any](ctx context.Context, cc Caller, method string, req any, opts ...CallOption) (*ServerStreamCall[Resp], error) {
	call, set, err := newCall(method, handler.PatternServerStream, opts)
	if err != nil {
		return nil, err
	}
	call.RequestType, call.ResponseType = reflect.TypeOf(req), reflect.TypeFor[Resp]()
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	if err := sendOne(cs, req); err != nil {
		cs.Close()
		set.done(cs)
		return nil, err
	}
	return &ServerStreamCall[Resp]{stream: stream{cs: cs, set: set}}, nil
}

// stream is what the typed stream calls share.
//
// Concurrency: Send and CloseSend from one goroutine, Recv (and All) from
// one, possibly another; Close may be called from any goroutine at any
// time, also while Send or Recv is blocked: it cancels the call, and the
// blocked Send or Recv returns an error.
type stream struct {
	cs  middleware.ClientStream
	set *callSettings
}

func (s *stream) recv(msg any) error {
	err := s.cs.Recv(msg)
	if err != nil {
		s.set.done(s.cs)
	}
	return err
}

func recvTyped[T any](s *stream) (*T, error) {
	m := new(T)
	if err := s.recv(m); err != nil {
		return nil, err
	}
	return m, nil
}

func allTyped[T any](s *stream) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		for {
			m, err := recvTyped[T](s)
			if err == io.EOF {
				return
			}
			if !yield(m, err) || err != nil {
				return
			}
		}
	}
}

// Header returns the response metadata the server sent before its first
// message (nil if none), once Recv has returned a message or the call has
// ended.
func (s *stream) Header() handler.Metadata { return s.cs.Header() }

// Trailer returns the trailer metadata once the call has ended.
func (s *stream) Trailer() handler.Metadata { return s.cs.Trailer() }

// Close cancels the call if it is still running and releases it. It is
// safe to call more than once and concurrently with Send and Recv.
func (s *stream) Close() {
	s.cs.Close()
	s.set.done(s.cs)
}

// ServerStreamCall is the caller's side of a server-streaming call. Recv
// and All run in one goroutine; Close may be called from any goroutine,
// also while Recv is blocked.
type ServerStreamCall[Resp any] struct{ stream }

// Recv returns the next response, io.EOF at a successful end, or the call's
// error.
func (s *ServerStreamCall[Resp]) Recv() (*Resp, error) { return recvTyped[Resp](&s.stream) }

// All yields responses until the stream ends (then stops) or fails (the error
// is yielded once). Breaking out of the loop does not close the call.
func (s *ServerStreamCall[Resp]) All() iter.Seq2[*Resp, error] { return allTyped[Resp](&s.stream) }

// CallClientStream starts a client-streaming call: Send requests, then
// CloseAndRecv for the response. It is checked against the contract as
// CallUnary is.
func CallClientStream[Req, Resp any](ctx context.Context, cc Caller, method string, opts ...CallOption) (*ClientStreamCall[Req, Resp], error) {
	call, set, err := newCall(method, handler.PatternClientStream, opts)
	if err != nil {
		return nil, err
	}
	call.RequestType, call.ResponseType = reflect.TypeFor[Req](), reflect.TypeFor[Resp]()
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	return &ClientStreamCall[Req, Resp]{stream: stream{cs: cs, set: set}}, nil
}

// ClientStreamCall is the caller's side of a client-streaming call. Send
// and CloseAndRecv run in one goroutine; Close may be called from any
// goroutine, also while Send or CloseAndRecv is blocked.
type ClientStreamCall[Req, Resp any] struct{ stream }

// Send sends one request. Messages are batched into large writes. Send
// returns io.EOF when the server has already ended the call (with a response
// or an error); CloseAndRecv then returns the outcome.
func (s *ClientStreamCall[Req, Resp]) Send(m *Req) error { return s.cs.Send(m) }

// CloseAndRecv finishes sending and waits for the response.
func (s *ClientStreamCall[Req, Resp]) CloseAndRecv() (*Resp, error) {
	defer s.Close()
	if err := s.cs.CloseSend(); err != nil && err != io.EOF {
		return nil, err
	}
	return recvOne[Resp](s.cs)
}

// CallBidiStream starts a bidirectional call. It is checked against the
// contract as CallUnary is.
func CallBidiStream[Req, Resp any](ctx context.Context, cc Caller, method string, opts ...CallOption) (*BidiStreamCall[Req, Resp], error) {
	call, set, err := newCall(method, handler.PatternBidiStream, opts)
	if err != nil {
		return nil, err
	}
	call.RequestType, call.ResponseType = reflect.TypeFor[Req](), reflect.TypeFor[Resp]()
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	return &BidiStreamCall[Req, Resp]{stream: stream{cs: cs, set: set}}, nil
}

// BidiStreamCall is the caller's side of a bidirectional call. Send and
// CloseSend may run concurrently with Recv, and Close with any of them.
type BidiStreamCall[Req, Resp any] struct{ stream }

// Send sends one request. It returns io.EOF if the call has ended; Recv then
// reports its status.
func (s *BidiStreamCall[Req, Resp]) Send(m *Req) error { return s.cs.Send(m) }

// CloseSend signals that no more requests follow.
func (s *BidiStreamCall[Req, Resp]) CloseSend() error { return s.cs.CloseSend() }

// Recv returns the next response, io.EOF at a successful end, or the call's
// error.
func (s *BidiStreamCall[Req, Resp]) Recv() (*Resp, error) { return recvTyped[Resp](&s.stream) }

// All yields responses until the stream ends or fails.
func (s *BidiStreamCall[Req, Resp]) All() iter.Seq2[*Resp, error] { return allTyped[Resp](&s.stream) }

// Session is a client session: calls made through it reach one instance of
// each session-scoped service on the server. End it with Close.
//
// A session lives on the connection its first call used, and each of its
// calls carries that connection (middleware.Call.Conn), so no middleware,
// Retry included, can move it to another connection: once that connection
// is gone, the session's calls fail at once with UNAVAILABLE (no redial),
// and Close returns at once. Start a new session to go on.
type Session struct {
	c  *Client
	id uint64
	// A Fleet's session: place picks the producer (c, id, via) at the
	// first call, and via starts the calls (the fleet's middleware around
	// that producer's client).
	place func(ctx context.Context) (*Client, Caller, error)
	via   Caller

	mu     sync.Mutex
	conn   transport.Conn // the connection the session lives on, set by the first call
	closed bool
}

// NewSession starts a session. Nothing is sent until the first call.
func (c *Client) NewSession() *Session {
	return &Session{c: c, id: c.sessID.Add(1)}
}

// ID returns the session id (for a Fleet's session, 0 until its first
// call placed it on a producer).
func (s *Session) ID() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// NewStream implements Caller: it starts a call within the session, pinned
// to the session's connection.
func (s *Session) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	s.mu.Lock()
	closed, conn, cl, via, id := s.closed, s.conn, s.c, s.via, s.id
	s.mu.Unlock()
	if closed {
		return nil, status.New(status.FailedPrecondition, "session closed")
	}
	if cl == nil { // a Fleet's session, not yet on a producer
		pc, pv, err := s.place(ctx)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.c == nil {
			s.c, s.via, s.id = pc, pv, pc.sessID.Add(1)
		}
		cl, via, id = s.c, s.via, s.id
		s.mu.Unlock()
	}
	if conn == nil {
		c, err := cl.getConn(ctx)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		if s.conn == nil {
			s.conn = c
		}
		conn = s.conn
		s.mu.Unlock()
	}
	call.SessionID = id
	call.Conn = conn
	if via != nil {
		return via.NewStream(ctx, call)
	}
	return cl.NewStream(ctx, call)
}

// Close ends the session on the server, which closes the instances. A
// session whose connection is gone (and so the session with it) is closed
// at once without a call.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conn, cl, id := s.conn, s.c, s.id
	s.mu.Unlock()
	if conn == nil || isDone(conn.Done()) {
		return nil // never started, or gone with its connection
	}
	cs, err := cl.openStream(ctx, conn, &middleware.Call{
		Service: wire.ControlService, Method: wire.MethodEndSession, Pattern: handler.PatternUnary, SessionID: id,
	})
	if err != nil {
		return err
	}
	defer cs.Close()
	if err := sendOne(cs, struct{}{}); err != nil {
		return err
	}
	for {
		if err := cs.Recv(nil); err != nil {
			if err == io.EOF {
				return nil
			}
			if isDone(conn.Done()) {
				return nil // the connection, and the session, ended meanwhile
			}
			return err
		}
	}
}
