package quic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
	"unicode/utf8"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/aster-go/aster/internal/resetstate"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// maxReasonLen caps the close reason sent to the peer: quic-go does not
// truncate it, and a CONNECTION_CLOSE frame must fit in one packet.
const maxReasonLen = 512

// connError maps a quic-go connection-level error to a *transport.ConnError,
// or returns nil if err is not one.
func connError(err error) *transport.ConnError {
	var (
		appErr   *quicgo.ApplicationError
		tErr     *quicgo.TransportError
		idleErr  *quicgo.IdleTimeoutError
		hsErr    *quicgo.HandshakeTimeoutError
		resetErr *quicgo.StatelessResetError
		vnErr    *quicgo.VersionNegotiationError
	)
	switch {
	case errors.As(err, &appErr):
		return &transport.ConnError{Code: transport.ConnErrorCode(appErr.ErrorCode), Reason: appErr.ErrorMessage, Remote: appErr.Remote}
	case errors.As(err, &tErr):
		code := transport.ConnProtocolError
		if tErr.ErrorCode == quicgo.ConnectionRefused {
			code = transport.ConnRefused
		}
		return &transport.ConnError{Code: code, Reason: "quic: " + tErr.Error(), Remote: tErr.Remote}
	case errors.As(err, &idleErr):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "quic: idle timeout: no network activity"}
	case errors.As(err, &hsErr):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "quic: handshake timeout"}
	case errors.As(err, &resetErr):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "quic: stateless reset by peer", Remote: true}
	case errors.As(err, &vnErr):
		return &transport.ConnError{Code: transport.ConnProtocolError, Reason: "quic: " + vnErr.Error()}
	case errors.Is(err, net.ErrClosed):
		// quic-go's transport (the UDP socket) was closed.
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "quic: transport closed"}
	}
	return nil
}

// streamError maps an error from a quic-go stream operation to the errors
// transport.Stream documents: io.EOF, *transport.StreamError,
// *transport.ConnError and os.ErrDeadlineExceeded. quic-go types never
// escape.
func streamError(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var se *quicgo.StreamError
	if errors.As(err, &se) {
		return &transport.StreamError{Code: transport.StreamErrorCode(se.ErrorCode), Remote: se.Remote}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return os.ErrDeadlineExceeded
	}
	if ce := connError(err); ce != nil {
		return ce
	}
	return errors.New("quic: " + err.Error())
}

// opError maps an error from OpenStream, AcceptStream or Accept: connection
// errors become *transport.ConnError, context errors are wrapped.
func opError(op string, err error) error {
	if ce := connError(err); ce != nil {
		return ce
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("quic: %s: %w", op, err)
	}
	return fmt.Errorf("quic: %s: %s", op, err.Error())
}

// stream wraps a quic-go stream as a transport.Stream.
type stream struct {
	qs *quicgo.Stream
	rs resetstate.State // local resets: Read after Reset fails, Close sends no FIN
}

// maxCode is the largest code QUIC can carry (2^62-1); quic-go panics on
// larger ones.
const maxCode = quicvarint.Max

// streamCode converts a reset code for quic-go, replacing codes QUIC cannot
// carry with CodeInternal.
func streamCode(code transport.StreamErrorCode) quicgo.StreamErrorCode {
	if uint64(code) > maxCode {
		code = transport.CodeInternal
	}
	return quicgo.StreamErrorCode(code)
}

var _ transport.Stream = (*stream)(nil)

// Read reads from the stream; see transport.Stream.
func (s *stream) Read(b []byte) (int, error) {
	n, err := s.qs.Read(b)
	switch {
	case err == nil:
	case err == io.EOF:
		err = s.rs.EOF()
	default:
		err = streamError(err)
	}
	return n, err
}

// Write writes to the stream; see transport.Stream.
func (s *stream) Write(b []byte) (int, error) {
	n, err := s.qs.Write(b)
	if err != nil {
		err = streamError(err)
	}
	return n, err
}

// CloseWrite sends FIN after the data written so far; see transport.Stream.
// If the write direction was reset (locally, or because the peer stopped
// reading) it returns the *transport.StreamError of that reset.
func (s *stream) CloseWrite() error {
	if err := s.qs.Close(); err != nil {
		var se *quicgo.StreamError
		if errors.As(context.Cause(s.qs.Context()), &se) {
			return &transport.StreamError{Code: transport.StreamErrorCode(se.ErrorCode), Remote: se.Remote}
		}
		return streamError(err)
	}
	return nil
}

// Reset aborts both directions with code: RESET_STREAM for the write
// direction and STOP_SENDING for the read direction. Codes above 2^62-1,
// which QUIC cannot carry, are sent as CodeInternal.
func (s *stream) Reset(code transport.StreamErrorCode) {
	qcode := streamCode(code)
	s.rs.Reset(transport.StreamErrorCode(qcode))
	s.qs.CancelWrite(qcode)
	s.qs.CancelRead(qcode)
}

// Close closes the write direction (unless Reset was called) and stops
// reading with CodeNoError; see transport.Stream.
func (s *stream) Close() error {
	var err error
	if !s.rs.WasReset() {
		err = s.CloseWrite()
	}
	s.qs.CancelRead(quicgo.StreamErrorCode(transport.CodeNoError))
	return err
}

// Context is done when the write direction is finished (FIN, reset, the
// peer stopping reading, or connection close). Its cause is quic-go's error
// and is not part of the API; Read and Write return the mapped errors.
func (s *stream) Context() context.Context { return s.qs.Context() }

// SetReadDeadline sets the read deadline; see transport.Stream.
func (s *stream) SetReadDeadline(t time.Time) error { return s.qs.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline; see transport.Stream.
func (s *stream) SetWriteDeadline(t time.Time) error { return s.qs.SetWriteDeadline(t) }

// conn wraps a quic-go connection as a transport.Conn.
type conn struct {
	qc     *quicgo.Conn
	local  trust.EndpointID
	remote trust.EndpointID
}

var _ transport.Conn = (*conn)(nil)

// newConn wraps qc after its handshake, taking the remote id from the peer's
// certificate.
func newConn(qc *quicgo.Conn, local trust.EndpointID) (*conn, error) {
	remote, err := peerID(qc.ConnectionState().TLS)
	if err != nil {
		return nil, err
	}
	return &conn{qc: qc, local: local, remote: remote}, nil
}

// OpenStream opens a stream, blocking while the peer's MaxIncomingStreams
// limit is reached. The peer's AcceptStream returns it only once something
// was written to it (or it was closed).
func (c *conn) OpenStream(ctx context.Context) (transport.Stream, error) {
	qs, err := c.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, opError("open stream", err)
	}
	return &stream{qs: qs}, nil
}

// AcceptStream waits for the next stream the peer opened.
func (c *conn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	qs, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, opError("accept stream", err)
	}
	return &stream{qs: qs}, nil
}

// LocalID is this side's endpoint id.
func (c *conn) LocalID() trust.EndpointID { return c.local }

// RemoteID is the endpoint id the peer proved in the handshake.
func (c *conn) RemoteID() trust.EndpointID { return c.remote }

// RemoteAddr is the peer's UDP address.
func (c *conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Close sends CONNECTION_CLOSE with code and reason (truncated to 512
// bytes) and waits until quic-go has torn the connection down. Codes above
// 2^62-1, which QUIC cannot carry, are sent as ConnProtocolError.
func (c *conn) Close(code transport.ConnErrorCode, reason string) error {
	if uint64(code) > maxCode {
		code = transport.ConnProtocolError
	}
	return c.qc.CloseWithError(quicgo.ApplicationErrorCode(code), truncateReason(reason))
}

// Done is closed when the connection is closed by either side, times out or
// its transport is closed.
func (c *conn) Done() <-chan struct{} { return c.qc.Context().Done() }

func truncateReason(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	i := maxReasonLen
	for i > 0 && !utf8.RuneStart(s[i]) {
		i-- // do not cut a UTF-8 sequence in half
	}
	return s[:i]
}
