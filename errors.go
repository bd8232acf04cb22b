package aster

import "github.com/aster-go/aster/status"

// Error is an error with a status code; see package status.
type Error = status.Error

// Code is a status code; see package status.
type Code = status.Code

// Status codes, re-exported from package status.
const (
	OK                 = status.OK
	Canceled           = status.Canceled
	Unknown            = status.Unknown
	InvalidArgument    = status.InvalidArgument
	DeadlineExceeded   = status.DeadlineExceeded
	NotFound           = status.NotFound
	AlreadyExists      = status.AlreadyExists
	PermissionDenied   = status.PermissionDenied
	ResourceExhausted  = status.ResourceExhausted
	FailedPrecondition = status.FailedPrecondition
	Aborted            = status.Aborted
	OutOfRange         = status.OutOfRange
	Unimplemented      = status.Unimplemented
	Internal           = status.Internal
	Unavailable        = status.Unavailable
	DataLoss           = status.DataLoss
	Unauthenticated    = status.Unauthenticated
)

// NewError returns an *Error with a code and message.
func NewError(code Code, msg string) *Error { return status.New(code, msg) }

// Errorf returns an *Error with a code and a formatted message (%w wraps).
func Errorf(code Code, format string, args ...any) *Error {
	return status.Errorf(code, format, args...)
}

// CodeOf returns the status code of any error (nil is OK, a context error
// maps to CANCELED or DEADLINE_EXCEEDED, anything unknown to UNKNOWN).
func CodeOf(err error) Code { return status.CodeOf(err) }

// Detail is one typed piece of extra error information; see status.Detail
// and Error.WithDetails.
type Detail = status.Detail

// AsDetail returns the first error detail of type T that err carries,
// decoded (details are added with Error.WithDetails); see status.AsDetail.
func AsDetail[T any](err error) (*T, bool) { return status.AsDetail[T](err) }
