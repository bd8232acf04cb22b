package handler

import (
	"context"
	"errors"
	"io"
	"iter"
	"reflect"

	"github.com/aster-go/aster/status"
)

// Def is a method definition: its pattern, message types and handler. Build
// one with Unary, ServerStream, ClientStream or BidiStream (or On for session
// services) and register it with Service.Handle.
type Def struct {
	Pattern           Pattern
	Request, Response reflect.Type
	// Handler serves calls of a shared service's method.
	Handler Handler
	// Bind, set by On, returns the handler bound to one session instance.
	Bind func(instance any) Handler
}

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

// Unary defines a method with one request and one response.
func Unary[Req, Resp any](fn func(ctx context.Context, req *Req) (*Resp, error)) Def {
	return Def{
		Pattern: PatternUnary, Request: typeOf[Req](), Response: typeOf[Resp](),
		Handler: HandlerFunc(func(ctx context.Context, s Stream) error {
			req, err := recvOne[Req](s)
			if err != nil {
				return err
			}
			resp, err := fn(ctx, req)
			if err != nil {
				return err
			}
			return s.Send(resp)
		}),
	}
}

// ServerStream defines a method with one request and a stream of responses:
// fn calls send for each response and returns when the stream is done.
func ServerStream[Req, Resp any](fn func(ctx context.Context, req *Req, send func(*Resp) error) error) Def {
	return Def{
		Pattern: PatternServerStream, Request: typeOf[Req](), Response: typeOf[Resp](),
		Handler: HandlerFunc(func(ctx context.Context, s Stream) error {
			req, err := recvOne[Req](s)
			if err != nil {
				return err
			}
			return fn(ctx, req, func(r *Resp) error { return s.Send(r) })
		}),
	}
}

// ClientStream defines a method with a stream of requests and one response.
// The iterator yields each request; on a receive error it yields (nil, err)
// once and stops. fn may stop early; the rest of the stream is discarded.
func ClientStream[Req, Resp any](fn func(ctx context.Context, reqs iter.Seq2[*Req, error]) (*Resp, error)) Def {
	return Def{
		Pattern: PatternClientStream, Request: typeOf[Req](), Response: typeOf[Resp](),
		Handler: HandlerFunc(func(ctx context.Context, s Stream) error {
			resp, err := fn(ctx, Messages[Req](s))
			if err != nil {
				return err
			}
			return s.Send(resp)
		}),
	}
}

// BidiStream defines a method where both sides stream. fn receives with
// b.Recv (io.EOF when the caller is done) and sends with b.Send.
func BidiStream[Req, Resp any](fn func(ctx context.Context, b *Bidi[Req, Resp]) error) Def {
	return Def{
		Pattern: PatternBidiStream, Request: typeOf[Req](), Response: typeOf[Resp](),
		Handler: HandlerFunc(func(ctx context.Context, s Stream) error {
			return fn(ctx, &Bidi[Req, Resp]{s: s})
		}),
	}
}

// Bidi is the typed server side of a bidirectional stream.
type Bidi[Req, Resp any] struct{ s Stream }

// Recv returns the next request, or io.EOF when the caller has finished.
func (b *Bidi[Req, Resp]) Recv() (*Req, error) {
	m := new(Req)
	if err := b.s.Recv(m); err != nil {
		return nil, err
	}
	return m, nil
}

// Send sends one response.
func (b *Bidi[Req, Resp]) Send(m *Resp) error { return b.s.Send(m) }

// All yields requests until the caller finishes (then it stops) or an error
// (yielded once, then it stops).
func (b *Bidi[Req, Resp]) All() iter.Seq2[*Req, error] { return Messages[Req](b.s) }

// Stream returns the underlying untyped stream (metadata, peer, trailers).
func (b *Bidi[Req, Resp]) Stream() Stream { return b.s }

// Messages returns an iterator over the request messages of s, decoded as T.
func Messages[T any](s Stream) iter.Seq2[*T, error] {
	return func(yield func(*T, error) bool) {
		for {
			m := new(T)
			err := s.Recv(m)
			if err == io.EOF {
				return
			}
			if err != nil {
				yield(nil, err)
				return
			}
			if !yield(m, nil) {
				return
			}
		}
	}
}

func recvOne[T any](s Stream) (*T, error) {
	m := new(T)
	if err := RecvOne(s, m, Requests); err != nil {
		return nil, err
	}
	return m, nil
}

// Receiver receives messages: a server's Stream, a client's stream
// (middleware.ClientStream).
type Receiver interface {
	Recv(msg any) error
}

// Direction says which side of a call sends the messages RecvOne reads.
type Direction uint8

// The two directions of a call.
const (
	// Requests: the caller's single request of a unary or server-streaming
	// call, read by the server.
	Requests Direction = iota
	// Responses: the server's single response of a unary or
	// client-streaming call, read by the caller.
	Responses
)

// RecvOne receives the single message of a direction that carries exactly
// one (PROTOCOL.md 8.2–8.4) into msg, with the protocol's errors:
//
//   - Requests (server side): a stream that ends before the request is
//     INVALID_ARGUMENT ("missing request message"). Further messages are
//     not read: the server does not wait for the caller's end of stream.
//   - Responses (client side): a stream that ends before the response is
//     INTERNAL ("server sent no response"); the stream is then read to its
//     end, and a second message is INTERNAL ("server sent more than one
//     response"). A failed call's error is returned as Recv reports it.
func RecvOne(r Receiver, msg any, d Direction) error {
	if err := r.Recv(msg); err != nil {
		if errors.Is(err, io.EOF) {
			if d == Requests {
				return status.New(status.InvalidArgument, "missing request message")
			}
			return status.New(status.Internal, "server sent no response")
		}
		return err
	}
	if d == Requests {
		return nil
	}
	if err := r.Recv(nil); err != io.EOF {
		if err == nil {
			err = status.New(status.Internal, "server sent more than one response")
		}
		return err
	}
	return nil
}

// On binds a session-scoped method to the session's instance. bind receives
// the instance (of the type the service's factory returns) and returns the
// method's definition, typically a method value:
//
//	svc.Handle("register", handler.On(func(a *AgentSession) handler.Def {
//		return handler.Unary(a.Register)
//	}))
//
// bind is also called once with the zero value of S to learn the method's
// types, so it must only build the Def, not call the instance.
func On[S any](bind func(S) Def) Def {
	var zero S
	d := bind(zero)
	return Def{
		Pattern: d.Pattern, Request: d.Request, Response: d.Response,
		Bind: func(inst any) Handler {
			s, ok := inst.(S)
			if !ok {
				return HandlerFunc(func(context.Context, Stream) error {
					return status.Errorf(status.Internal, "session instance is %T, method expects %s", inst, typeOf[S]())
				})
			}
			return bind(s).Handler
		},
	}
}
