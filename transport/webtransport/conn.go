package webtransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	wt "github.com/quic-go/webtransport-go"

	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/internal/quicwrap"
	"github.com/aster-go/aster/trust"
)

// closeLinger is how long a connection closed locally keeps its QUIC
// connection open so the session-close capsule reaches the peer, which
// closes the QUIC connection when it receives it.
const closeLinger = 2 * time.Second

// reasonConnGone is the reason reported when the QUIC connection under a session
// ends without a session close.
const reasonConnGone = "webtransport: connection closed"

// connError maps an error ending a session or its QUIC connection to a
// *transport.ConnError, or returns nil if err is not one.
func connError(err error) *transport.ConnError {
	var (
		sessErr *wt.SessionError
		appErr  *quicgo.ApplicationError
		tErr    *quicgo.TransportError
		idleErr *quicgo.IdleTimeoutError
		hsErr   *quicgo.HandshakeTimeoutError
		rstErr  *quicgo.StatelessResetError
		h3Err   *http3.Error
	)
	switch {
	case errors.As(err, &sessErr):
		return &transport.ConnError{Code: transport.ConnErrorCode(sessErr.ErrorCode), Reason: sessErr.Message, Remote: sessErr.Remote}
	case errors.As(err, &appErr):
		// HTTP/3 connection-level codes are not aster codes.
		code := transport.ConnNoError
		if appErr.ErrorCode != quicgo.ApplicationErrorCode(http3.ErrCodeNoError) {
			code = transport.ConnProtocolError
		}
		return &transport.ConnError{Code: code, Reason: reasonConnGone, Remote: appErr.Remote}
	case errors.As(err, &h3Err):
		return &transport.ConnError{Code: transport.ConnProtocolError, Reason: "webtransport: " + h3Err.Error(), Remote: h3Err.Remote}
	case errors.As(err, &tErr):
		return &transport.ConnError{Code: transport.ConnProtocolError, Reason: "webtransport: " + tErr.Error(), Remote: tErr.Remote}
	case errors.As(err, &idleErr):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "webtransport: idle timeout: no network activity"}
	case errors.As(err, &hsErr):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "webtransport: handshake timeout"}
	case errors.As(err, &rstErr):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "webtransport: stateless reset by peer", Remote: true}
	case errors.Is(err, net.ErrClosed):
		return &transport.ConnError{Code: transport.ConnNoError, Reason: "webtransport: transport closed"}
	}
	return nil
}

// wtErrors is what transport/webtransport adds to the shared stream
// wrapper.
type wtErrors struct{}

func (wtErrors) Prefix() string { return "webtransport" }

// MaxCode is the largest code WebTransport carries: codes are 32-bit.
func (wtErrors) MaxCode() uint64 { return math.MaxUint32 }

func (wtErrors) Stream(err error) (*transport.StreamError, bool) {
	var se *wt.StreamError
	if errors.As(err, &se) {
		return &transport.StreamError{Code: transport.StreamErrorCode(se.ErrorCode), Remote: se.Remote}, true
	}
	var qse *quicgo.StreamError
	if errors.As(err, &qse) {
		// A reset whose code is outside the WebTransport range (a broken
		// or foreign peer).
		return &transport.StreamError{Code: transport.CodeProtocol, Remote: qse.Remote}, true
	}
	return nil, false
}

func (wtErrors) Conn(err error) *transport.ConnError { return connError(err) }

// CloseWrite: webtransport-go's Close error is the reset itself.
func (wtErrors) CloseWrite(context.Context, error) error { return nil }

// stream wraps a WebTransport stream as a transport.Stream.
type stream = quicwrap.Stream[*wt.Stream, wt.StreamErrorCode, wtErrors]

var (
	newStream = quicwrap.NewStream[*wt.Stream, wt.StreamErrorCode, wtErrors]
	opError   = quicwrap.OpError[wtErrors]
)

var _ transport.Stream = (*stream)(nil)

// conn is one WebTransport session (on its own QUIC connection) as a
// transport.Conn.
type conn struct {
	sess   *wt.Session
	qc     *quicgo.Conn
	local  trust.EndpointID
	remote trust.EndpointID

	closeOnce   sync.Once
	localClosed atomic.Bool
}

var _ transport.Conn = (*conn)(nil)

// newConn wraps an identified session and arranges for its QUIC connection
// to end with it: at once when the peer ended the session (or the
// connection died), after at most closeLinger when it was closed locally
// (so the close capsule can still be delivered).
func newConn(sess *wt.Session, qc *quicgo.Conn, local, remote trust.EndpointID) *conn {
	c := &conn{sess: sess, qc: qc, local: local, remote: remote}
	context.AfterFunc(sess.Context(), func() {
		if !c.localClosed.Load() {
			c.closeQUIC()
			return
		}
		t := time.AfterFunc(closeLinger, c.closeQUIC)
		context.AfterFunc(qc.Context(), func() { t.Stop() })
	})
	return c
}

func (c *conn) closeQUIC() {
	_ = c.qc.CloseWithError(quicgo.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

// OpenStream opens a stream. The peer's AcceptStream returns it only once
// something was written to it (or it was closed).
func (c *conn) OpenStream(ctx context.Context) (transport.Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("webtransport: open stream: %w", err)
	}
	ws, err := c.sess.OpenStreamSync(ctx)
	if err != nil {
		return nil, opError("open stream", err)
	}
	return &sessStream{stream: newStream(ws), sess: c.sess}, nil
}

// sessionCloseWait bounds how long a stream whose reset carries no
// WebTransport code waits for its session's close.
const sessionCloseWait = time.Second

// sessStream is a stream this side opened. When the peer closes the
// session, the stream's Read and Write report the session's close (its
// *transport.ConnError, with the code and reason the peer closed it with),
// as a QUIC stream reports the connection's close, rather than what
// reached the stream first: a stream that arrived at the peer after it
// closed the session is reset by webtransport-go with a code of its own
// (WT_BUFFERED_STREAM_REJECTED), which is no application code, and the
// QUIC connection, closed locally once the session ended, may fail the
// stream before the session's close is read.
type sessStream struct {
	*stream
	sess *wt.Session
}

func (s *sessStream) Read(b []byte) (int, error) {
	n, err := s.stream.Read(b)
	return n, s.explain(err)
}

func (s *sessStream) Write(b []byte) (int, error) {
	n, err := s.stream.Write(b)
	return n, s.explain(err)
}

// explain replaces a connection error, or an error that is none of those
// transport.Stream documents, with the session's close, if the session
// closes within sessionCloseWait.
func (s *sessStream) explain(err error) error {
	var se *transport.StreamError
	if err == nil || err == io.EOF || errors.As(err, &se) || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	t := time.NewTimer(sessionCloseWait)
	defer t.Stop()
	select {
	case <-s.sess.Context().Done():
		if _, oerr := s.sess.OpenStream(); oerr != nil {
			if ce := connError(oerr); ce != nil {
				return ce
			}
		}
	case <-t.C:
	}
	return err
}

// AcceptStream waits for the next stream the peer opened.
func (c *conn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("webtransport: accept stream: %w", err)
	}
	ws, err := c.sess.AcceptStream(ctx)
	if err != nil {
		return nil, opError("accept stream", err)
	}
	return newStream(ws), nil
}

// LocalID is this side's endpoint id.
func (c *conn) LocalID() trust.EndpointID { return c.local }

// RemoteID is the endpoint id the peer proved in the identity exchange.
func (c *conn) RemoteID() trust.EndpointID { return c.remote }

// RemoteAddr is the peer's UDP address.
func (c *conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Close closes the session with code and reason (truncated to 512 bytes);
// the peer sees both. Codes above 2^32-1, which WebTransport cannot carry,
// are sent as ConnProtocolError.
func (c *conn) Close(code transport.ConnErrorCode, reason string) error {
	if uint64(code) > math.MaxUint32 {
		code = transport.ConnProtocolError
	}
	c.closeOnce.Do(func() {
		c.localClosed.Store(true)
		_ = c.sess.CloseWithError(wt.SessionErrorCode(code), quicwrap.TruncateReason(reason))
	})
	return nil
}

// forceClose closes the session and the QUIC connection at once.
func (c *conn) forceClose(code transport.ConnErrorCode, reason string) {
	_ = c.Close(code, reason)
	c.closeQUIC()
}

// Done is closed when the session ends.
func (c *conn) Done() <-chan struct{} { return c.sess.Context().Done() }
