// Package status defines aster's status codes and the error type that carries
// them across the wire.
//
// Codes 0–16 have the meaning gRPC gives them. Codes 100 and above are
// application codes: the framework forwards them unchanged and never acts on
// them (no retry, no circuit-breaker trip). Every error that crosses an aster
// call is, or is converted to, an *Error.
//
// An Error may carry typed details, messages that tell the caller more than
// the code (a quota, a retry hint): Error.WithDetails attaches them and
// AsDetail reads them back typed on the other side.
//
// The root package re-exports these names (aster.Error, aster.NotFound, ...);
// this package exists so that handler, middleware and transport code can use
// them without importing the root package.
package status

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/aster-go/aster/codec/cbor"
)

// Code is an aster status code.
type Code uint32

// The status codes. Their meaning follows gRPC.
const (
	OK                 Code = 0  // not an error
	Canceled           Code = 1  // the caller cancelled the call
	Unknown            Code = 2  // an error with no better code
	InvalidArgument    Code = 3  // the request is malformed or does not decode
	DeadlineExceeded   Code = 4  // the call's deadline passed
	NotFound           Code = 5  // unknown service, method, version or session
	AlreadyExists      Code = 6  // the entity already exists
	PermissionDenied   Code = 7  // the caller lacks a required capability
	ResourceExhausted  Code = 8  // a limit was hit (frame size, sessions, rate)
	FailedPrecondition Code = 9  // the system is not in a state to serve the call
	Aborted            Code = 10 // the operation was aborted
	OutOfRange         Code = 11 // a value is out of range
	Unimplemented      Code = 12 // the operation is not implemented
	Internal           Code = 13 // an invariant broke on the server (e.g. a handler panic)
	Unavailable        Code = 14 // the peer or connection is unavailable; usually retryable
	DataLoss           Code = 15 // unrecoverable data loss
	Unauthenticated    Code = 16 // the caller could not be authenticated

	// FirstApplicationCode is the lowest application-defined code. Codes at or
	// above it are forwarded unchanged and never interpreted by the framework.
	FirstApplicationCode Code = 100
)

var codeNames = [...]string{
	"OK", "CANCELED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// String returns the upper-snake name of c ("NOT_FOUND"), "APP_<n>" for an
// application code and "CODE_<n>" for an unassigned code.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	if c.IsApplication() {
		return "APP_" + strconv.FormatUint(uint64(c), 10)
	}
	return "CODE_" + strconv.FormatUint(uint64(c), 10)
}

// IsApplication reports whether c is an application code (>= 100).
func (c Code) IsApplication() bool { return c >= FirstApplicationCode }

// ParseCode parses a code name as printed by String (case-insensitive) or a
// decimal number.
func ParseCode(s string) (Code, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	for i, n := range codeNames {
		if n == u {
			return Code(i), nil
		}
	}
	if strings.HasPrefix(u, "APP_") {
		u = u[4:]
	}
	n, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("status: unknown code %q", s)
	}
	return Code(n), nil
}

// Detail is one typed piece of extra error information. Type names the
// payload's schema (e.g. "mission/QuotaInfo"); Value is its encoding, opaque
// to the framework. Details added with WithDetails are named by their wire
// type name (TypeName) and encoded as deterministic CBOR; read them back
// with AsDetail or Error.Detail.
type Detail struct {
	Type  string `cbor:"type" json:"type"`
	Value []byte `cbor:"value" json:"value"`
}

// Error is an error with a status code. It is what crosses the wire in a
// trailer. The zero value is not useful; use New or Errorf.
type Error struct {
	code    Code
	msg     string
	details []Detail
	meta    map[string]string
	cause   error
	// notProcessed: the call was refused before any of it reached the
	// application (see NotProcessed).
	notProcessed bool
}

// New returns an *Error with the given code and message.
func New(code Code, msg string) *Error { return &Error{code: code, msg: msg} }

// Errorf returns an *Error with the given code and a formatted message. A %w
// verb wraps the argument so errors.Is and errors.As see it.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{code: code, msg: err.Error(), cause: errors.Unwrap(err)}
}

// Wrap returns an *Error with the given code whose message is err's message and
// which unwraps to err. Wrap(code, nil) returns nil.
func Wrap(code Code, err error) *Error {
	if err == nil {
		return nil
	}
	return &Error{code: code, msg: err.Error(), cause: err}
}

// Code returns the status code. A nil *Error has code OK.
func (e *Error) Code() Code {
	if e == nil {
		return OK
	}
	return e.code
}

// Message returns the message without the code prefix.
func (e *Error) Message() string { return e.msg }

// Details returns the error details in the order they were added.
func (e *Error) Details() []Detail { return e.details }

// AddDetail appends a raw detail and returns e. WithDetails is the typed
// form.
func (e *Error) AddDetail(d Detail) *Error { e.details = append(e.details, d); return e }

// WithDetails returns a copy of e with one detail per message added: its
// Type is the message's wire type name (TypeName) and its Value the
// message's deterministic CBOR encoding, whatever the call's codec. Read
// them back with AsDetail or Error.Detail. It fails, returning e unchanged,
// when a message is nil or does not encode.
//
//	err, _ := status.Errorf(status.ResourceExhausted, "quota exceeded").
//		WithDetails(&QuotaInfo{Limit: 1000})
func (e *Error) WithDetails(msgs ...any) (*Error, error) {
	details := slices.Clip(e.details)
	for i, m := range msgs {
		if m == nil {
			return e, fmt.Errorf("status: detail %d is nil", i)
		}
		v, err := cbor.Marshal(m)
		if err != nil {
			return e, fmt.Errorf("status: detail %d (%T) does not encode: %w", i, m, err)
		}
		details = append(details, Detail{Type: TypeName(reflect.TypeOf(m)), Value: v})
	}
	c := *e
	c.details = details
	return &c, nil
}

// Detail decodes into v, a pointer to a message, the first detail whose
// type is v's message type (by TypeName), and reports whether there was
// one. A detail of that type whose value does not decode is an error.
func (e *Error) Detail(v any) (bool, error) {
	if e == nil {
		return false, nil
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return false, fmt.Errorf("status: Detail needs a non-nil pointer, got %T", v)
	}
	name := TypeName(rv.Type())
	for _, d := range e.details {
		if d.Type != name {
			continue
		}
		if err := cbor.Unmarshal(d.Value, v); err != nil {
			return true, fmt.Errorf("status: detail %s does not decode: %w", name, err)
		}
		return true, nil
	}
	return false, nil
}

// AsDetail returns the first detail of type T carried by err's *Error (see
// FromError), decoded, or false when there is none or it does not decode.
//
//	if q, ok := status.AsDetail[QuotaInfo](err); ok { ... q.Limit ... }
func AsDetail[T any](err error) (*T, bool) {
	var se *Error
	if !errors.As(err, &se) {
		return nil, false
	}
	v := new(T)
	if ok, derr := se.Detail(v); !ok || derr != nil {
		return nil, false
	}
	return v, true
}

// TypeName returns the wire type name of t, as contracts and typed error
// details name it: the result of its WireType() string method (on the
// value, after dereferencing pointers) if it has one, else "<import
// path>.<TypeName>", or the type's Go syntax for unnamed types.
func TypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Implements(wireTyper) {
		return reflect.Zero(t).Interface().(interface{ WireType() string }).WireType()
	}
	if t.Name() == "" {
		return t.String()
	}
	if t.PkgPath() == "" {
		return t.Name()
	}
	return t.PkgPath() + "." + t.Name()
}

var wireTyper = reflect.TypeFor[interface{ WireType() string }]()

// Metadata returns the trailer metadata carried with the error (for example a
// retry-after hint). It may be nil.
func (e *Error) Metadata() map[string]string { return e.meta }

// WithMetadata sets a trailer metadata key and returns e.
func (e *Error) WithMetadata(key, value string) *Error {
	if e.meta == nil {
		e.meta = make(map[string]string, 1)
	}
	e.meta[key] = value
	return e
}

// WithNotProcessed marks e as a refusal of a call that no application code
// saw (the server was draining, a limit refused it before dispatch) and
// returns e. The mark crosses the wire (PROTOCOL.md §7.1, notProcessed): a
// client may then retry the call on any connection even when the method is
// not idempotent, because the first attempt had no effect. A handler may
// mark an error it returns only when it has done nothing that a second
// attempt would repeat.
func (e *Error) WithNotProcessed() *Error {
	e.notProcessed = true
	return e
}

// NotProcessed reports whether e is marked WithNotProcessed: the call had
// no effect and may be retried anywhere. A nil *Error reports false.
func (e *Error) NotProcessed() bool { return e != nil && e.notProcessed }

// IsNotProcessed reports whether err is, or wraps, an *Error marked
// WithNotProcessed.
func IsNotProcessed(err error) bool {
	var se *Error
	return errors.As(err, &se) && se.notProcessed
}

// Error formats the error as "CODE: message".
func (e *Error) Error() string {
	if e.msg == "" {
		return e.code.String()
	}
	return e.code.String() + ": " + e.msg
}

// Unwrap returns the wrapped cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// FromWire rebuilds an *Error from the fields of a received trailer.
func FromWire(code Code, msg string, details []Detail, meta map[string]string) *Error {
	return &Error{code: code, msg: msg, details: details, meta: meta}
}

// FromError converts any error to an *Error: nil stays nil, an *Error in the
// chain is returned as is, context.Canceled becomes CANCELED,
// context.DeadlineExceeded becomes DEADLINE_EXCEEDED and anything else UNKNOWN.
func FromError(err error) *Error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return Wrap(DeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return Wrap(Canceled, err)
	}
	return Wrap(Unknown, err)
}

// CodeOf returns the status code of err as FromError would assign it.
func CodeOf(err error) Code { return FromError(err).Code() }
