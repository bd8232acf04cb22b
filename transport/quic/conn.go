package quic

import (
	"context"
	"errors"
	"net"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/internal/quicwrap"
	"github.com/aster-go/aster/trust"
)

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

// quicErrors is what transport/quic adds to the shared stream wrapper.
type quicErrors struct{}

func (quicErrors) Prefix() string { return "quic" }

// MaxCode is the largest code QUIC can carry (2^62-1); quic-go panics on
// larger ones.
func (quicErrors) MaxCode() uint64 { return quicvarint.Max }

func (quicErrors) Stream(err error) (*transport.StreamError, bool) {
	var se *quicgo.StreamError
	if errors.As(err, &se) {
		return &transport.StreamError{Code: transport.StreamErrorCode(se.ErrorCode), Remote: se.Remote}, true
	}
	return nil, false
}

func (quicErrors) Conn(err error) *transport.ConnError { return connError(err) }

// CloseWrite reports the reset that ended the write direction: quic-go's
// Close error does not say, the stream context's cause does.
func (quicErrors) CloseWrite(ctx context.Context, _ error) error {
	var se *quicgo.StreamError
	if errors.As(context.Cause(ctx), &se) {
		return &transport.StreamError{Code: transport.StreamErrorCode(se.ErrorCode), Remote: se.Remote}
	}
	return nil
}

// stream wraps a quic-go stream as a transport.Stream.
type stream = quicwrap.Stream[*quicgo.Stream, quicgo.StreamErrorCode, quicErrors]

var (
	newStream = quicwrap.NewStream[*quicgo.Stream, quicgo.StreamErrorCode, quicErrors]
	opError   = quicwrap.OpError[quicErrors]
)

var _ transport.Stream = (*stream)(nil)

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
	return newStream(qs), nil
}

// AcceptStream waits for the next stream the peer opened.
func (c *conn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	qs, err := c.qc.AcceptStream(ctx)
	if err != nil {
		return nil, opError("accept stream", err)
	}
	return newStream(qs), nil
}

// StreamsAcceptedInOrder reports that the peer's AcceptStream returns this
// side's streams in the order OpenStream opened them: QUIC numbers streams
// as they are opened and quic-go hands them to AcceptStream by number,
// whatever order their first bytes arrive in. aster's client relies on it
// to send its first call right behind the admission request (PROTOCOL.md
// 17.6), which requires any server to take stream 0 as the admission.
func (c *conn) StreamsAcceptedInOrder() bool { return true }

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
	if uint64(code) > quicvarint.Max {
		code = transport.ConnProtocolError
	}
	return c.qc.CloseWithError(quicgo.ApplicationErrorCode(code), quicwrap.TruncateReason(reason))
}

// Done is closed when the connection is closed by either side, times out or
// its transport is closed.
func (c *conn) Done() <-chan struct{} { return c.qc.Context().Done() }
