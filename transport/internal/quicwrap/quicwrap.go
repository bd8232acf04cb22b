// Package quicwrap holds what the QUIC-based transports (transport/quic
// and transport/webtransport) share in wrapping quic-go streams and
// connections as transport.Stream and transport.Conn: the stream wrapper
// with its local-reset bookkeeping, the mapping of context and deadline
// errors, the truncation of close reasons, and the listeners' source
// address validation (VerifySourceAddress). Each transport supplies
// the parts that differ (its error types and the largest reset code its
// protocol carries) as an Errors type.
package quicwrap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/aster-go/aster/transport"
)

// MaxReasonLen caps the close reason sent to the peer: quic-go does not
// truncate it, and a CONNECTION_CLOSE frame must fit in one packet
// (WebTransport would allow 1024 bytes; aster sends at most 512 on both).
const MaxReasonLen = 512

// TruncateReason cuts s to MaxReasonLen bytes without splitting a UTF-8
// character.
func TruncateReason(s string) string {
	if len(s) <= MaxReasonLen {
		return s
	}
	i := MaxReasonLen
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// Code is the reset code type of a quic-go stream API.
type Code interface{ ~uint32 | ~uint64 }

// Raw is the stream API that quic-go's *quic.Stream and webtransport-go's
// *webtransport.Stream both have.
type Raw[C Code] interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
	CancelRead(C)
	CancelWrite(C)
	Context() context.Context
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Errors is what differs between the transports, as methods of a
// zero-size type.
type Errors interface {
	// Prefix starts the text of errors ("quic", "webtransport").
	Prefix() string
	// MaxCode is the largest reset code the protocol carries; larger
	// codes are sent as transport.CodeInternal.
	MaxCode() uint64
	// Stream maps a stream's own error types (its StreamError) to a
	// *transport.StreamError, reporting false for other errors.
	Stream(err error) (*transport.StreamError, bool)
	// Conn maps an error that ended the connection (or session) to a
	// *transport.ConnError, or returns nil.
	Conn(err error) *transport.ConnError
	// CloseWrite maps the error of Close on a stream whose context is
	// ctx, or returns nil to map it as any stream error.
	CloseWrite(ctx context.Context, err error) error
}

// StreamError maps an error from a stream operation to the errors
// transport.Stream documents: io.EOF, *transport.StreamError,
// *transport.ConnError and os.ErrDeadlineExceeded. quic-go and
// webtransport-go types never escape.
func StreamError[E Errors](err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var e E
	if se, ok := e.Stream(err); ok {
		return se
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	if ce := e.Conn(err); ce != nil {
		return ce
	}
	return errors.New(e.Prefix() + ": " + err.Error())
}

// OpError maps an error from OpenStream, AcceptStream or Accept: context
// errors are wrapped, connection errors become *transport.ConnError.
func OpError[E Errors](op string, err error) error {
	var e E
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %s: %w", e.Prefix(), op, err)
	}
	if ce := e.Conn(err); ce != nil {
		return ce
	}
	return fmt.Errorf("%s: %s: %s", e.Prefix(), op, err.Error())
}

// Stream wraps a quic-go stream S (reset codes C, errors E) as a
// transport.Stream.
type Stream[S Raw[C], C Code, E Errors] struct {
	raw S
	rs  resetState
}

// NewStream wraps raw.
func NewStream[S Raw[C], C Code, E Errors](raw S) *Stream[S, C, E] {
	return &Stream[S, C, E]{raw: raw}
}

// code converts a reset code, replacing codes the protocol cannot carry
// with transport.CodeInternal.
func (s *Stream[S, C, E]) code(code transport.StreamErrorCode) C {
	var e E
	if uint64(code) > e.MaxCode() {
		code = transport.CodeInternal
	}
	return C(code)
}

// Read reads from the stream; see transport.Stream.
func (s *Stream[S, C, E]) Read(b []byte) (int, error) {
	n, err := s.raw.Read(b)
	switch {
	case err == nil:
	case err == io.EOF:
		err = s.rs.eof()
	default:
		err = StreamError[E](err)
	}
	return n, err
}

// Write writes to the stream; see transport.Stream.
func (s *Stream[S, C, E]) Write(b []byte) (int, error) {
	n, err := s.raw.Write(b)
	if err != nil {
		err = StreamError[E](err)
	}
	return n, err
}

// CloseWrite sends FIN after the data written so far; see
// transport.Stream. If the write direction was reset (locally, or because
// the peer stopped reading) it returns the *transport.StreamError of that
// reset.
func (s *Stream[S, C, E]) CloseWrite() error {
	if err := s.raw.Close(); err != nil {
		var e E
		if mapped := e.CloseWrite(s.raw.Context(), err); mapped != nil {
			return mapped
		}
		return StreamError[E](err)
	}
	return nil
}

// Reset aborts both directions with code (see transport.Stream): a reset
// of the write direction and STOP_SENDING for the read direction. Codes
// the protocol cannot carry are sent as transport.CodeInternal.
func (s *Stream[S, C, E]) Reset(code transport.StreamErrorCode) {
	c := s.code(code)
	s.rs.reset(transport.StreamErrorCode(c))
	s.raw.CancelWrite(c)
	s.raw.CancelRead(c)
}

// Close closes the write direction (unless Reset was called) and stops
// reading with transport.CodeNoError; see transport.Stream.
func (s *Stream[S, C, E]) Close() error {
	var err error
	if !s.rs.wasReset() {
		err = s.CloseWrite()
	}
	s.raw.CancelRead(C(transport.CodeNoError))
	return err
}

// Context is done when the write direction is finished (FIN, reset, the
// peer stopping reading, or the connection's end). Its cause is the
// library's error and is not part of the API; Read and Write return the
// mapped errors.
func (s *Stream[S, C, E]) Context() context.Context { return s.raw.Context() }

// SetReadDeadline sets the read deadline; see transport.Stream.
func (s *Stream[S, C, E]) SetReadDeadline(t time.Time) error { return s.raw.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline; see transport.Stream.
func (s *Stream[S, C, E]) SetWriteDeadline(t time.Time) error { return s.raw.SetWriteDeadline(t) }

// resetState keeps the local-reset bookkeeping of one stream; the zero
// value is ready and its methods are safe for concurrent use.
//
// transport.Stream promises that after Reset, Read fails with the reset's
// StreamError and Close sends no FIN. quic-go can report io.EOF after a
// local CancelRead, when the peer's answering RESET_STREAM arrived while a
// Read was pending; resetState turns that io.EOF back into the reset,
// unless the stream had really reached its end before the Reset.
type resetState struct {
	didReset atomic.Bool   // Reset was called
	failEOF  atomic.Uint64 // 1+code of a Reset made before Read saw io.EOF, else 0
	sawEOF   atomic.Bool   // Read returned io.EOF
}

// reset records a local reset with code, the code as sent on the wire.
func (r *resetState) reset(code transport.StreamErrorCode) {
	r.didReset.Store(true)
	if !r.sawEOF.Load() {
		r.failEOF.CompareAndSwap(0, uint64(code)+1)
	}
}

// wasReset reports whether Reset was called (Close then sends no FIN).
func (r *resetState) wasReset() bool { return r.didReset.Load() }

// eof is what Read returns when the underlying stream reports io.EOF: the
// reset's *transport.StreamError if the stream was reset before its end
// was read, else io.EOF (and the end is recorded).
func (r *resetState) eof() error {
	if c := r.failEOF.Load(); c != 0 {
		return &transport.StreamError{Code: transport.StreamErrorCode(c - 1)}
	}
	r.sawEOF.Store(true)
	return io.EOF
}
