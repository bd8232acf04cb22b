package aster

import (
	"context"
	"errors"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// DynamicCall is a call made by name with JSON messages instead of Go
// types: requests are converted to the wire types and responses back to
// JSON values using the server's contract (see contract.FromJSON and
// contract.ToJSON). Tools such as the aster CLI use it to call any method
// without generated code. It works for all four patterns; the pattern comes
// from the contract.
//
// The methods follow the stream's rules: Send and CloseSend from one
// goroutine, Recv from one (possibly another) goroutine, and Close when done.
type DynamicCall struct {
	cs       middleware.ClientStream
	set      *callSettings
	contract *contract.Contract
	service  *contract.Service
	method   *contract.Method
}

// CallDynamic starts a call of method ("Service.method") on cc, a *Client or
// a *Session, described by the contract c (from Client.Contract). The
// service version is the one chosen with the Version option, else the
// highest. A service, version or method the contract lacks is NOT_FOUND,
// reported before anything is sent.
func CallDynamic(ctx context.Context, cc Caller, c *contract.Contract, method string, opts ...CallOption) (*DynamicCall, error) {
	call, set, err := newCall(method, 0, opts)
	if err != nil {
		return nil, err
	}
	svc := c.Service(call.Service, call.Version)
	if svc == nil {
		if call.Version != 0 && c.Service(call.Service, 0) != nil {
			return nil, status.Errorf(status.NotFound, "unknown version %d of service %s", call.Version, call.Service)
		}
		return nil, status.Errorf(status.NotFound, "unknown service %s", call.Service)
	}
	m := svc.Method(call.Method)
	if m == nil {
		return nil, status.Errorf(status.NotFound, "unknown method %s.%s", call.Service, call.Method)
	}
	p, ok := handler.ParsePattern(m.Pattern)
	if !ok {
		return nil, status.Errorf(status.Unimplemented, "method %s.%s has pattern %q, unknown to this client", call.Service, call.Method, m.Pattern)
	}
	call.Version = svc.Version
	call.Pattern = p
	call.Idempotent = call.Idempotent || m.Idempotent
	cs, err := cc.NewStream(ctx, call)
	if err != nil {
		return nil, err
	}
	return &DynamicCall{cs: cs, set: set, contract: c, service: svc, method: m}, nil
}

// Service returns the contract's description of the called service.
func (d *DynamicCall) Service() *contract.Service { return d.service }

// Method returns the contract's description of the called method.
func (d *DynamicCall) Method() *contract.Method { return d.method }

// SendJSON converts one JSON document to the request type and sends it. A
// document that does not fit the type is an INVALID_ARGUMENT error wrapping
// a *contract.JSONError; nothing is sent then. io.EOF means the server
// already ended the call: Recv returns its outcome.
func (d *DynamicCall) SendJSON(doc []byte) error {
	v, err := contract.FromJSON(d.contract, d.method.Request, doc)
	if err != nil {
		return status.Wrap(status.InvalidArgument, err)
	}
	return d.cs.Send(v)
}

// SendValue is SendJSON for a value decoded by encoding/json (ideally with
// Decoder.UseNumber, so integers and floats stay apart).
func (d *DynamicCall) SendValue(v any) error {
	wv, err := contract.FromJSONValue(d.contract, d.method.Request, v)
	if err != nil {
		return status.Wrap(status.InvalidArgument, err)
	}
	return d.cs.Send(wv)
}

// CloseSend ends the request stream.
func (d *DynamicCall) CloseSend() error { return d.cs.CloseSend() }

// Recv returns the next response as a value encoding/json prints (maps
// keyed by wire field names, integers as integers), io.EOF when the call
// ended successfully, or the call's error.
func (d *DynamicCall) Recv() (any, error) {
	var v any
	if err := d.cs.Recv(&v); err != nil {
		d.set.done(d.cs)
		return nil, err
	}
	j, err := contract.ToJSON(d.contract, d.method.Response, v)
	if err != nil {
		return nil, status.Wrap(status.Internal, err)
	}
	return j, nil
}

// Header returns the response metadata the server sent before its first
// message (nil if none), once Recv has returned a message or the call has
// ended.
func (d *DynamicCall) Header() handler.Metadata { return d.cs.Header() }

// Trailer returns the trailer metadata once the call has ended.
func (d *DynamicCall) Trailer() handler.Metadata { return d.cs.Trailer() }

// Close cancels the call if it is still running and releases it. It may
// be called from any goroutine, also while Send or Recv is blocked.
func (d *DynamicCall) Close() {
	d.cs.Close()
	d.set.done(d.cs)
}

// IsJSONError reports whether err (from SendJSON or SendValue) is about the
// JSON input rather than the call.
func IsJSONError(err error) bool {
	var je *contract.JSONError
	return errors.As(err, &je)
}
