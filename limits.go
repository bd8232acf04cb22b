package aster

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Default limits (see the options below and PROTOCOL.md 3.3 and 8.1).
const (
	// DefaultHeaderTimeout is how long a stream may take to deliver its
	// complete HEADER frame before the server resets it.
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultStreamIdleTimeout is how long a server keeps a reusable
	// stream whose call ended waiting for the stream's next call
	// (PROTOCOL.md 23): 30 s, longer than a client keeps one idle
	// (ClientStreamIdleTimeout).
	DefaultStreamIdleTimeout = 30 * time.Second
	// DefaultMaxIdleStreams is the number of idle reusable streams per
	// connection a server offers in its admission verdict, and so the most
	// a client keeps.
	DefaultMaxIdleStreams = 64
	// DefaultMaxConns caps the connections a server serves at once.
	DefaultMaxConns = 10_000
	// DefaultMaxConnsPerPeer caps the connections one endpoint id may hold
	// open to a server at once.
	DefaultMaxConnsPerPeer = 100
	// DefaultMaxConnsPerAddr caps the connections one network address (an
	// IP address; an IPv6 /64) may hold open to a server at once.
	DefaultMaxConnsPerAddr = 256
	// DefaultMaxStreamsAwaitingHeader caps the streams of one connection
	// whose HEADER the server is still waiting for.
	DefaultMaxStreamsAwaitingHeader = 1000
	// DefaultMaxConcurrentStreams caps the streams (calls) of one
	// connection the server serves at once. Calls beyond it wait in the
	// transport rather than being refused.
	DefaultMaxConcurrentStreams = 1000
	// DefaultConnSendBudget caps the bytes the server holds for the
	// responses of one connection: 4 MiB.
	DefaultConnSendBudget = 4 << 20
)

// serverLimits holds the server's resource limits.
type serverLimits struct {
	headerTimeout     time.Duration
	maxConns          int
	maxConnsPerPeer   int
	maxConnsPerAddr   int
	maxAwaitingHeader int
	maxStreams        int
	sendBudget        int
	streamIdle        time.Duration // <= 0: stream reuse not offered
}

func defaultLimits() serverLimits {
	return serverLimits{
		headerTimeout:     DefaultHeaderTimeout,
		maxConns:          DefaultMaxConns,
		maxConnsPerPeer:   DefaultMaxConnsPerPeer,
		maxConnsPerAddr:   DefaultMaxConnsPerAddr,
		maxAwaitingHeader: DefaultMaxStreamsAwaitingHeader,
		maxStreams:        DefaultMaxConcurrentStreams,
		sendBudget:        DefaultConnSendBudget,
		streamIdle:        DefaultStreamIdleTimeout,
	}
}

// WithHeaderTimeout sets how long a new stream may take to deliver its
// complete HEADER frame (the first frame of a call). A stream that has not
// done so in time is reset with code 0x4 (DEADLINE) and the resources it
// held are released, so a peer that opens streams and stalls cannot pin
// goroutines and buffers. The caller's own deadline is not affected: it
// starts once the header has arrived. Default DefaultHeaderTimeout (10 s);
// d <= 0 disables the timeout.
func WithHeaderTimeout(d time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.headerTimeout = d })
}

// WithStreamIdleTimeout sets how long a reusable stream (PROTOCOL.md 23)
// whose call ended may wait for its next call before the server resets it
// (checked every eighth of d, so it is reset within 1⅛ d).
// While it waits it holds a goroutine and no read buffer (about 10 KiB
// with the transport's stream), and it is neither a call in flight
// (Metrics.ActiveCalls) nor one of the streams WithMaxConcurrentStreams
// counts; a client keeps at most DefaultMaxIdleStreams of them per
// connection, or as many as it has calls in flight there (beyond, it
// retires them). The server keeps at most the larger of
// DefaultMaxIdleStreams and WithMaxConcurrentStreams (1,000 by default)
// idle streams per connection: beyond, it resets the one idle the longest,
// as the idle timeout would (with no stream cap, only the transport's
// stream limit, 10,000 on QUIC, bounds them). Its next HEADER, once its
// first byte arrived, must be complete within the header timeout
// (WithHeaderTimeout). Default DefaultStreamIdleTimeout
// (30 s); d <= 0 turns stream reuse off: the server does not offer it,
// and every call has its own stream.
func WithStreamIdleTimeout(d time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.streamIdle = d })
}

// WithMaxStreamsAwaitingHeader caps the streams of one connection whose
// HEADER frame has not yet fully arrived. While n streams are waiting for
// theirs, the server accepts no further stream on that connection: new
// calls on it wait in the transport (their header timeout starts when they
// are accepted) until one of the n completes its HEADER or is reset by the
// header timeout; other connections are not affected. Each waiting stream
// holds about 9 KiB (a goroutine and a read buffer that grows with the
// bytes received), so the cap bounds what a peer that opens streams and
// stalls can make one connection hold: about 9 MiB at the default, for at
// most the header timeout. Headers of
// well-behaved clients arrive with their stream, so the cap is not reached
// in normal use. Default DefaultMaxStreamsAwaitingHeader (1,000); n <= 0
// removes the cap (WithMaxConcurrentStreams, and the transport's stream
// limit, 10,000 on QUIC, remain).
func WithMaxStreamsAwaitingHeader(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.maxAwaitingHeader = n })
}

// WithMaxConcurrentStreams caps the streams (calls) of one connection that
// the server serves at once, whatever the transport (QUIC also limits the
// streams a peer may open to 10,000; other transports may not). While n
// are being served the server accepts no further stream on that
// connection: new calls wait in the transport, as for a transport stream
// limit (they are not refused), and end with their caller's deadline if no
// slot frees in time; other connections are not affected. Each stream
// being served holds a goroutine and its read buffer, about 7–11 KiB while
// it waits for its next frame (measured; see RELIABILITY.md), plus the
// bytes of a message it is receiving and its responses, so the cap bounds
// what one connection of stalled calls holds: about 11 MiB at the
// default, besides the send budget (WithConnSendBudget). Raise it
// for a client that needs more calls in flight on one connection. Default
// DefaultMaxConcurrentStreams (1,000); n <= 0 removes the cap.
func WithMaxConcurrentStreams(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.maxStreams = n })
}

// WithConnSendBudget caps the bytes the server holds for the responses of
// one connection: the frames its calls have encoded and not yet handed to
// the transport, and the batches the transport's Write has not yet
// returned from (a client that stops reading makes Write block). A call
// reserves budget before it encodes a response message, as much as its
// previous message took (for its first, the connection's previous one; at
// least one byte); while the connection's budget
// is used up, Send waits, and ends with the call's cancellation or
// deadline (CANCELLED, DEADLINE_EXCEEDED) if no room frees in time.
// Bytes are returned when the Write that carries them returns, or when
// the call ends. A message larger than the whole budget is still sent,
// once the connection holds nothing else. Response headers and trailers
// are charged without waiting. So streams that nobody reads hold at most
// about n bytes of encoded responses together (plus the growth of
// messages encoded at the moment the budget filled), whatever their
// number and message size; the message a handler passes to Send is the
// application's own memory. Default DefaultConnSendBudget (4 MiB); n <= 0
// removes the budget.
func WithConnSendBudget(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.sendBudget = n })
}

// WithMaxConns caps the connections the server serves at once. A
// connection beyond the cap is closed at once with close code 0x3
// (SHUTDOWN, reason "too many connections"), which clients report as
// UNAVAILABLE, while the connections already served keep working. Default
// DefaultMaxConns (10,000); n <= 0 removes the cap.
func WithMaxConns(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.maxConns = n })
}

// WithMaxConnsPerPeer caps the connections one peer (endpoint id) may hold
// open at once. A connection beyond the cap is closed at once with close
// code 0x3 (SHUTDOWN, reason "too many connections from this peer"), which
// clients report as UNAVAILABLE; the peer's other connections and other
// peers are unaffected. Anyone can make new keys, so this stops one client
// from taking every slot by accident or bug; WithMaxConns is what bounds
// the total. Default DefaultMaxConnsPerPeer (100); n <= 0 removes the cap.
func WithMaxConnsPerPeer(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.maxConnsPerPeer = n })
}

// WithMaxConnsPerAddr caps the connections one network address may hold
// open at once: an IP address, an IPv6 address by its /64 prefix (which
// one host usually holds whole). A connection beyond the cap is closed at
// once with close code 0x3 (SHUTDOWN, reason "too many connections from
// this address"), which clients report as UNAVAILABLE. Since anyone can
// make new keys, WithMaxConnsPerPeer does not bound what one host can
// open; this does, so that one host cannot take every slot of
// WithMaxConns and make the server hold the per-connection worst case
// (RELIABILITY.md) that many times. Connections that carry no IP address
// (through a relay, which hides it, or in memory) are bounded by
// WithMaxConnsPerPeer, and the relay caps the connections it takes from
// one IP address. Loopback addresses are not counted: they are the
// server's own host, whose processes (or a local tunnel or proxy carrying
// many clients) are not strangers on the network. Default
// DefaultMaxConnsPerAddr (256); n <= 0 removes the cap.
func WithMaxConnsPerAddr(n int) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.limits.maxConnsPerAddr = n })
}

// Close reasons for connections the server does not serve (close code
// 0x3, SHUTDOWN).
const (
	reasonShutdown    = "server shutting down"
	reasonTooMany     = "too many connections"
	reasonTooManyPeer = "too many connections from this peer"
	reasonTooManyAddr = "too many connections from this address"
)

// connCounts counts the connections being served, by peer and by network
// address. It is guarded by Server.mu.
type connCounts struct {
	byPeer map[trust.EndpointID]int
	byAddr map[netip.Addr]int
	// Refusals are logged at most once per refusalLogEvery, with the
	// number left out, so that a flood of connections cannot flood the log.
	lastLog    time.Time
	suppressed int
}

// refusalLogEvery is the least time between two log records of refused
// connections.
const refusalLogEvery = time.Second

// logRefusal logs a connection refused for reason, rate-limited.
func (cc *connCounts) logRefusal(s *Server, id trust.EndpointID, reason string) {
	now := time.Now()
	if now.Sub(cc.lastLog) < refusalLogEvery {
		cc.suppressed++
		return
	}
	s.opts.logger.Warn("aster: connection refused", "peer", id.Short(), "reason", reason, "refusals_not_logged", cc.suppressed)
	cc.lastLog, cc.suppressed = now, 0
}

// admit reports why a new connection from id at addr (invalid: none)
// may not be served ("" if it may), counting it if it may. total is the
// number served now.
func (cc *connCounts) admit(l *serverLimits, id trust.EndpointID, addr netip.Addr, total int) string {
	if l.maxConns > 0 && total >= l.maxConns {
		return reasonTooMany
	}
	if cc.byPeer == nil {
		cc.byPeer = map[trust.EndpointID]int{}
		cc.byAddr = map[netip.Addr]int{}
	}
	if l.maxConnsPerPeer > 0 && cc.byPeer[id] >= l.maxConnsPerPeer {
		return reasonTooManyPeer
	}
	if addr.IsValid() && l.maxConnsPerAddr > 0 && cc.byAddr[addr] >= l.maxConnsPerAddr {
		return reasonTooManyAddr
	}
	cc.byPeer[id]++
	if addr.IsValid() {
		cc.byAddr[addr]++
	}
	return ""
}

// release uncounts a connection from id at addr.
func (cc *connCounts) release(id trust.EndpointID, addr netip.Addr) {
	uncount(cc.byPeer, id)
	if addr.IsValid() {
		uncount(cc.byAddr, addr)
	}
}

// uncount takes one from m[k], deleting the key at zero so that the map
// holds only the peers and addresses connected now.
func uncount[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

// connAddrKey is the network address c counts against for
// WithMaxConnsPerAddr: its IP address (an IPv6 /64 prefix's first
// address), or invalid when it carries none or is a loopback address.
func connAddrKey(c transport.Conn) netip.Addr {
	return addrKeyOf(c.RemoteAddr())
}

func addrKeyOf(a net.Addr) netip.Addr {
	if a == nil {
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil && ap.Addr().Unmap().IsLoopback() {
		return netip.Addr{}
	}
	return rateKeyOf(ConnInfo{Addr: a}).ip
}

// errPermissionDenied is what a caller without a method's capabilities is
// told: the same message for every method (PROTOCOL.md 17.2.4).
var errPermissionDenied = status.New(status.PermissionDenied, "permission denied")

// permitted reports whether the peer's capabilities satisfy req. A
// Requirement of the application's whose Satisfied panics denies the call
// (fail closed) and is logged, rather than ending the server.
func (c *serverCall) permitted(me *methodEntry, req trust.Requirement) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			c.sc.srv.opts.logger.Error("aster: a capability requirement panicked; the call is denied", "method", me.info.FullName(), "panic", r)
		}
	}()
	return req.Satisfied(c.sc.peer.Capabilities)
}

// deny ends a call whose peer lacks the capabilities me requires. The
// call still goes through the server's middleware chain, with a handler
// that refuses without running the method's, so that logging, audit and
// metrics middleware see the attempt; the error they see names the peer
// and the requirement, while the caller is told only "permission denied".
func (c *serverCall) deny(me *methodEntry, req trust.Requirement) error {
	p := c.sc.peer
	refuse := handler.HandlerFunc(func(context.Context, handler.Stream) error {
		return status.Errorf(status.PermissionDenied, "permission denied: peer %s lacks %s for %s", p.ID.Short(), req, me.info.FullName())
	})
	err := c.run(handler.NewContext(c.st.Context(), c), me.wrap(refuse))
	if status.CodeOf(err) == status.PermissionDenied {
		return errPermissionDenied
	}
	return err
}

// admitInfo describes the admission exchange to middleware that sees a
// refused one.
var admitInfo = &handler.MethodInfo{Service: wire.ControlService, Name: wire.MethodAdmit, Pattern: handler.PatternUnary}

// reportRefusal shows a refused admission to the server-wide middleware
// (logging and audit record it with the peer and the reason) and counts
// it in the metrics by its code, as a call to _aster.admit that never
// reaches a handler. An error without a status code is UNAUTHENTICATED.
func (sc *serverConn) reportRefusal(err error) {
	se := status.FromError(err)
	var rf *enroll.Refusal
	if errors.As(err, &rf) {
		// The refusal's code, with its private reason for the records.
		se = status.New(rf.Code, rf.Error())
	}
	if se.Code() == status.Unknown || se.Code() == status.OK {
		se = status.Wrap(status.Unauthenticated, err)
	}
	sc.srv.stats.record(uint32(se.Code()))
	mw := sc.srv.opts.mw
	if len(mw) == 0 {
		return
	}
	refused := handler.HandlerFunc(func(context.Context, handler.Stream) error { return se })
	defer func() {
		if r := recover(); r != nil {
			sc.srv.opts.logger.Error("aster: middleware panic on a refused admission", "panic", r)
		}
	}()
	_ = middleware.ChainServer(mw...)(refused).ServeRPC(sc.ctx, &refusedAttempt{peer: sc.peer})
}

// refusedAttempt is the handler.Stream of a refused admission: it carries
// the peer and nothing to receive or send.
type refusedAttempt struct{ peer handler.Peer }

var errRefusedAttempt = status.New(status.FailedPrecondition, "aster: admission was refused")

func (a *refusedAttempt) Method() *handler.MethodInfo { return admitInfo }
func (a *refusedAttempt) Peer() handler.Peer          { return a.peer }
func (a *refusedAttempt) Header() handler.Metadata    { return nil }
func (a *refusedAttempt) SetHeader(_, _ string) error { return errRefusedAttempt }
func (a *refusedAttempt) SetTrailer(_, _ string)      {}
func (a *refusedAttempt) Recv(any) error              { return io.EOF }
func (a *refusedAttempt) Send(any) error              { return errRefusedAttempt }
