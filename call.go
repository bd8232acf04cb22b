package aster

import (
	"context"
	"io"
	"iter"
	"strings"
	"sync"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// CallOption configures one call.
type CallOption func(*middleware.Call)

// Version selects the service version to call. Default 0: the server's
// highest registered version.
func Version(v uint32) CallOption { return func(c *middleware.Call) { c.Version = v } }

// Idempotent marks the call as safe to retry (for retry middleware).
func Idempotent() CallOption { return func(c *middleware.Call) { c.Idempotent = true } }

// WithHeader adds a request metadata pair.
func WithHeader(key, value string) CallOption {
	return func(c *middleware.Call) {
		if c.Metadata == nil {
			c.Metadata = handler.Metadata{}
		}
		c.Metadata[key] = value
	}
}

// newCall parses "Service.method" and applies options.
func newCall(method string, p handler.Pattern, opts []CallOption) (*middleware.Call, error) {
	// Service names may contain dots; the method is after the last one.
	i := strings.LastIndexByte(method, '.')
	if i <= 0 || i == len(method)-1 {
		return nil, status.Errorf(status.InvalidArgument, "method %q must be Service.method", method)
	}
	c := &middleware.Call{Service: method[:i], Method: method[i+1:], Pattern: p}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// CallUnary calls a unary method ("Service.method") with req and decodes the
// response into a new Resp.
func CallUnary[Resp any](ctx context.Context, cc Caller, method string, req any, opts ...CallOption) (*Resp, error) {
	call, err := newCall(method, handler.PatternUnary, opts)
	if err != nil {
		return nil, err
	}
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	defer cs.Close()
	if err := sendOne(cs, req); err != nil {
		return nil, err
	}
	resp := new(Resp)
	if err := cs.Recv(resp); err != nil {
		if err == io.EOF {
			return nil, status.New(status.Internal, "server sent no response")
		}
		return nil, err
	}
	if err := cs.Recv(nil); err != io.EOF {
		if err == nil {
			err = status.New(status.Internal, "server sent more than one response")
		}
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
// the returned stream and Close it when done.
func CallServerStream[Resp any](ctx context.Context, cc Caller, method string, req any, opts ...CallOption) (*ServerStreamCall[Resp], error) {
	call, err := newCall(method, handler.PatternServerStream, opts)
	if err != nil {
		return nil, err
	}
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	if err := sendOne(cs, req); err != nil {
		cs.Close()
		return nil, err
	}
	return &ServerStreamCall[Resp]{cs: cs}, nil
}

// ServerStreamCall is the caller's side of a server-streaming call.
type ServerStreamCall[Resp any] struct{ cs middleware.ClientStream }

// Recv returns the next response, io.EOF at a successful end, or the call's
// error.
func (s *ServerStreamCall[Resp]) Recv() (*Resp, error) { return recvTyped[Resp](s.cs) }

// All yields responses until the stream ends (then stops) or fails (the error
// is yielded once). Breaking out of the loop does not close the call.
func (s *ServerStreamCall[Resp]) All() iter.Seq2[*Resp, error] { return allTyped[Resp](s.cs) }

// Trailer returns the trailer metadata once the stream has ended.
func (s *ServerStreamCall[Resp]) Trailer() handler.Metadata { return s.cs.Trailer() }

// Close cancels the call if it is still running and releases it.
func (s *ServerStreamCall[Resp]) Close() { s.cs.Close() }

func recvTyped[T any](cs middleware.ClientStream) (*T, error) {
	m := new(T)
	if err := cs.Recv(m); err != nil {
		return nil, err
	}
	return m, nil
}

func allTyped[T any](cs middleware.ClientStream) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		for {
			m, err := recvTyped[T](cs)
			if err == io.EOF {
				return
			}
			if !yield(m, err) || err != nil {
				return
			}
		}
	}
}

// CallClientStream starts a client-streaming call: Send requests, then
// CloseAndRecv for the response.
func CallClientStream[Req, Resp any](ctx context.Context, cc Caller, method string, opts ...CallOption) (*ClientStreamCall[Req, Resp], error) {
	call, err := newCall(method, handler.PatternClientStream, opts)
	if err != nil {
		return nil, err
	}
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	return &ClientStreamCall[Req, Resp]{cs: cs}, nil
}

// ClientStreamCall is the caller's side of a client-streaming call.
type ClientStreamCall[Req, Resp any] struct{ cs middleware.ClientStream }

// Send sends one request. Messages are batched into large writes. Send
// returns io.EOF when the server has already ended the call (with a response
// or an error); CloseAndRecv then returns the outcome.
func (s *ClientStreamCall[Req, Resp]) Send(m *Req) error { return s.cs.Send(m) }

// CloseAndRecv finishes sending and waits for the response.
func (s *ClientStreamCall[Req, Resp]) CloseAndRecv() (*Resp, error) {
	defer s.cs.Close()
	if err := s.cs.CloseSend(); err != nil && err != io.EOF {
		return nil, err
	}
	resp, err := recvTyped[Resp](s.cs)
	if err == io.EOF {
		return nil, status.New(status.Internal, "server sent no response")
	}
	if err != nil {
		return nil, err
	}
	if err := s.cs.Recv(nil); err != io.EOF {
		if err == nil {
			err = status.New(status.Internal, "server sent more than one response")
		}
		return nil, err
	}
	return resp, nil
}

// Close cancels the call if it has not finished.
func (s *ClientStreamCall[Req, Resp]) Close() { s.cs.Close() }

// CallBidiStream starts a bidirectional call.
func CallBidiStream[Req, Resp any](ctx context.Context, cc Caller, method string, opts ...CallOption) (*BidiStreamCall[Req, Resp], error) {
	call, err := newCall(method, handler.PatternBidiStream, opts)
	if err != nil {
		return nil, err
	}
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	return &BidiStreamCall[Req, Resp]{cs: cs}, nil
}

// BidiStreamCall is the caller's side of a bidirectional call. Send and
// CloseSend may run concurrently with Recv.
type BidiStreamCall[Req, Resp any] struct{ cs middleware.ClientStream }

// Send sends one request. It returns io.EOF if the call has ended; Recv then
// reports its status.
func (s *BidiStreamCall[Req, Resp]) Send(m *Req) error { return s.cs.Send(m) }

// CloseSend signals that no more requests follow.
func (s *BidiStreamCall[Req, Resp]) CloseSend() error { return s.cs.CloseSend() }

// Recv returns the next response, io.EOF at a successful end, or the call's
// error.
func (s *BidiStreamCall[Req, Resp]) Recv() (*Resp, error) { return recvTyped[Resp](s.cs) }

// All yields responses until the stream ends or fails.
func (s *BidiStreamCall[Req, Resp]) All() iter.Seq2[*Resp, error] { return allTyped[Resp](s.cs) }

// Trailer returns the trailer metadata once the stream has ended.
func (s *BidiStreamCall[Req, Resp]) Trailer() handler.Metadata { return s.cs.Trailer() }

// Close cancels the call if it is still running and releases it.
func (s *BidiStreamCall[Req, Resp]) Close() { s.cs.Close() }

// Session is a client session: calls made through it reach one instance of
// each session-scoped service on the server. End it with Close. A session is
// bound to the connection it started on; if that connection is lost, calls
// fail with UNAVAILABLE.
type Session struct {
	c  *Client
	id uint64

	mu     sync.Mutex
	conn   any // the connection the session lives on, set by the first call
	closed bool
}

// NewSession starts a session. Nothing is sent until the first call.
func (c *Client) NewSession() *Session {
	return &Session{c: c, id: c.sessID.Add(1)}
}

// ID returns the session id.
func (s *Session) ID() uint64 { return s.id }

// NewStream implements Caller: it starts a call within the session.
func (s *Session) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	conn, err := s.c.getConn(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, status.New(status.FailedPrecondition, "session closed")
	case s.conn == nil:
		s.conn = conn
	case s.conn != conn:
		s.mu.Unlock()
		return nil, status.New(status.Unavailable, "session lost: its connection closed")
	}
	s.mu.Unlock()
	call.SessionID = s.id
	return s.c.NewStream(ctx, call)
}

// Close ends the session on the server, which closes the instances.
func (s *Session) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.conn != nil
	s.mu.Unlock()
	if !started {
		return nil
	}
	conn, err := s.c.getConn(ctx)
	if err != nil {
		return err
	}
	if conn != s.conn {
		return nil // the connection and with it the session are gone
	}
	cs, err := s.c.openStream(ctx, conn, &middleware.Call{
		Service: wire.ControlService, Method: wire.MethodEndSession, Pattern: handler.PatternUnary, SessionID: s.id,
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
			return err
		}
	}
}
