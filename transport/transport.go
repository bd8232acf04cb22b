// Package transport defines how aster moves bytes: a Conn between two
// endpoints that opens and accepts bidirectional Streams.
//
// Transports know nothing about handlers, codecs or frames. A transport only
// has to provide authenticated connections (the remote endpoint id is proven
// by the transport's handshake) carrying many independent, ordered,
// flow-controlled byte streams with half-close and reset. Direct QUIC
// (transport/quic), relayed QUIC, WebTransport and in-memory pipes
// (transport/mem) all fit this shape; internal/testutil holds the conformance
// suite each one passes.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/trust"
)

// ALPN is the TLS application protocol aster speaks on QUIC-based transports.
const ALPN = "aster/1"

// StreamErrorCode is the code carried by a stream reset.
type StreamErrorCode uint64

// Stream reset codes used by aster. A reset without a trailer means the call
// failed with UNAVAILABLE unless the code says otherwise.
const (
	// CodeNoError closes a read side the application is no longer interested in.
	CodeNoError StreamErrorCode = 0x0
	// CodeCancel is sent when the caller cancels a call (maps to CANCELED).
	CodeCancel StreamErrorCode = 0x1
	// CodeInternal aborts a stream because of a local failure (maps to UNAVAILABLE).
	CodeInternal StreamErrorCode = 0x2
	// CodeProtocol aborts a stream whose peer broke the framing rules.
	CodeProtocol StreamErrorCode = 0x3
	// CodeDeadline aborts a stream whose deadline passed (maps to DEADLINE_EXCEEDED).
	CodeDeadline StreamErrorCode = 0x4
)

// ConnErrorCode is the code carried by a connection close.
type ConnErrorCode uint64

// Connection close codes used by aster.
const (
	// ConnNoError is a graceful close.
	ConnNoError ConnErrorCode = 0x0
	// ConnProtocolError closes a connection whose peer broke the protocol.
	ConnProtocolError ConnErrorCode = 0x1
	// ConnRefused closes a connection that failed admission.
	ConnRefused ConnErrorCode = 0x2
	// ConnShutdown closes connections when a server shuts down.
	ConnShutdown ConnErrorCode = 0x3
	// ConnDenied closes a connection that a server's connection gate
	// refused (the peer is not allowed to connect; PROTOCOL.md 3.3).
	ConnDenied ConnErrorCode = 0x4
)

// StreamError is returned by Read or Write on a stream that was reset.
type StreamError struct {
	Code   StreamErrorCode
	Remote bool // true if the peer reset the stream
}

// Error describes the reset.
func (e *StreamError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	return fmt.Sprintf("stream reset %s with code %#x", who, uint64(e.Code))
}

// ConnError is returned by operations on a closed connection.
type ConnError struct {
	Code   ConnErrorCode
	Reason string
	Remote bool // true if the peer closed the connection
}

// Error describes the close.
func (e *ConnError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	if e.Reason != "" {
		return fmt.Sprintf("connection closed %s with code %#x: %s", who, uint64(e.Code), e.Reason)
	}
	return fmt.Sprintf("connection closed %s with code %#x", who, uint64(e.Code))
}

// ErrPeerMismatch is wrapped by Dial errors when the peer's proven key does
// not match the endpoint id that was dialled.
var ErrPeerMismatch = errors.New("transport: peer key does not match the dialled endpoint id")

// ErrHandshakeTimeout is wrapped by Dial errors when the transport's own
// handshake bound ran out while the caller's context was still live: the
// address did not answer (nothing listens there, or it is unreachable).
// It is not a context error, so clients report it as UNAVAILABLE (PROTOCOL.md
// 14.2) and retry elsewhere, not as DEADLINE_EXCEEDED.
var ErrHandshakeTimeout = errors.New("transport: handshake timed out")

// ErrListenerClosed is returned by Accept after the listener was closed.
var ErrListenerClosed = errors.New("transport: listener closed")

// Stream is one bidirectional, ordered byte stream within a Conn.
//
// Read and Write may be called concurrently with each other, but not each
// concurrently with itself. Read returns io.EOF after the peer's CloseWrite and
// a *StreamError after a reset.
type Stream interface {
	io.Reader
	io.Writer

	// CloseWrite closes the write direction gracefully: the peer reads io.EOF
	// after all written data. Reading continues to work.
	CloseWrite() error
	// Reset aborts both directions with code. Pending and later Reads and
	// Writes fail with a *StreamError; the peer's do too (Remote == true).
	Reset(code StreamErrorCode)
	// Close releases the stream: it closes the write direction (like
	// CloseWrite) and stops reading, discarding unread data. It is safe to call
	// after Reset and more than once.
	Close() error

	// Context is done when the stream's write direction is finished: after
	// Close, CloseWrite, Reset, or when the peer stops reading (its Reset or
	// Close before reading everything), or the connection closes. Servers use
	// it to cancel a handler whose caller went away.
	Context() context.Context

	// SetReadDeadline sets the deadline for pending and future Reads; a Read
	// past it fails with an error for which os.IsTimeout is true. Zero clears.
	SetReadDeadline(t time.Time) error
	// SetWriteDeadline is SetReadDeadline for Writes.
	SetWriteDeadline(t time.Time) error
}

// Conn is an authenticated connection between two endpoints.
type Conn interface {
	// OpenStream opens a new stream, blocking while the peer's stream limit
	// is reached until ctx is done.
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the next stream the peer opened.
	AcceptStream(ctx context.Context) (Stream, error)

	// LocalID is this side's endpoint id.
	LocalID() trust.EndpointID
	// RemoteID is the peer's endpoint id, proven by the handshake.
	RemoteID() trust.EndpointID
	// RemoteAddr is the peer's network address, for logs.
	RemoteAddr() net.Addr

	// Close closes the connection with a code and a reason the peer sees.
	// Open streams fail with a *ConnError.
	Close(code ConnErrorCode, reason string) error
	// Done is closed when the connection is closed by either side.
	Done() <-chan struct{}
}

// Listener accepts incoming connections.
type Listener interface {
	// Accept waits for the next connection. After Close it returns
	// an error wrapping ErrListenerClosed.
	Accept(ctx context.Context) (Conn, error)
	// Close stops listening. Connections already accepted stay open.
	Close() error
	// Addr returns where the listener can be reached: its endpoint id and the
	// network addresses a peer can dial.
	Addr() discovery.EndpointAddr
}

// Dialer opens connections to endpoints.
type Dialer interface {
	// Dial connects to the endpoint described by addr and verifies that the
	// peer proves the key addr.ID; on mismatch the error wraps
	// ErrPeerMismatch.
	Dial(ctx context.Context, addr discovery.EndpointAddr) (Conn, error)
}
