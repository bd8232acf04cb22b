package aster

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/codec"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
)

// The life of a connection and of each call on it, in the order it runs:
//
//	serverConn.serve        connection gates, admission, then accept streams (Server.Serve starts it)
//	Server.dispatch         hand a stream to an idle worker, or start one
//	Server.worker           serve streams one after the other
//	serverConn.serveStream  read the HEADER, find the method, check the caller
//	serverCall.run          the middleware chain and the handler
//	serverCall.finish       pending response header, TRAILER, FIN
//	serverConn.shutdown     the connection ended: wait for calls, end sessions
//
// Sessions, which serveStream looks up, are at the end of the file.

// maxEndedSessions is how many ended session ids a connection remembers (to
// answer NOT_FOUND rather than silently starting a new instance).
const maxEndedSessions = 4096

// serverConn serves the calls of one connection.
type serverConn struct {
	srv    *Server
	conn   transport.Conn
	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc
	peer   handler.Peer
	// connEnd, from the WithConnHook hook, runs at the end of shutdown.
	connEnd func()

	streams sync.WaitGroup
	// awaiting holds a slot for each stream whose HEADER is being read
	// (WithMaxStreamsAwaitingHeader); nil means no cap.
	awaiting chan struct{}
	// active holds a slot for each stream being served
	// (WithMaxConcurrentStreams); nil means no cap.
	active chan struct{}
	// budget bounds the bytes held for the connection's responses
	// (WithConnSendBudget); nil means no budget.
	budget *wire.Budget
	// The connection's reusable streams (listed from their first idle
	// wait to their end), and whether the sweeper that resets those idle
	// for the idle timeout runs.
	idleMu             sync.Mutex
	idleHead, idleTail *idleEntry
	sweeping           bool
	// idleNow counts the streams waiting idle for their next call; beyond
	// idleCap (0: no cap) the one idle the longest is reset.
	idleNow atomic.Int64
	idleCap int64

	mu         sync.Mutex
	sessions   map[uint64]*session
	ended      map[uint64]struct{}
	endedOrder []uint64
	closing    bool
}

func newServerConn(s *Server, c transport.Conn) *serverConn {
	ctx, cancel := context.WithCancel(context.Background())
	var awaiting, active chan struct{}
	if n := s.opts.limits.maxAwaitingHeader; n > 0 {
		awaiting = make(chan struct{}, n)
	}
	if n := s.opts.limits.maxStreams; n > 0 {
		active = make(chan struct{}, n)
	}
	var budget *wire.Budget
	if n := s.opts.limits.sendBudget; n > 0 {
		budget = wire.NewBudget(int64(n))
	}
	return &serverConn{
		srv: s, conn: c, ctx: ctx, cancel: cancel, awaiting: awaiting, active: active, budget: budget,
		idleCap:  int64(maxIdleStreams(&s.opts)),
		sessions: map[uint64]*session{},
		ended:    map[uint64]struct{}{},
	}
}

// serve runs the connection: the connection gates (conngate.go), then
// admission, then each stream it accepts is dispatched to a worker, until
// the connection ends. No stream is accepted before the gates admit the
// connection.
func (sc *serverConn) serve() {
	defer sc.shutdown()
	if len(sc.srv.opts.gates) > 0 && !sc.gateConn() {
		return
	}
	sc.peer = handler.Peer{ID: sc.conn.RemoteID(), Addr: sc.conn.RemoteAddr(), Unrestricted: true}
	streams := sc.conn // where calls are accepted from; admission may replace it
	if admit := sc.srv.opts.admit; admit != nil {
		p, conn, err := admit(sc.ctx, sc.conn)
		if err != nil {
			sc.srv.opts.logger.Info("aster: admission refused", "peer", sc.conn.RemoteID().Short(), "err", err)
			// A connection that was lost during admission was not refused.
			var ce *transport.ConnError
			var se *transport.StreamError
			lost := errors.As(err, &ce) || errors.As(err, &se)
			sc.conn.Close(transport.ConnRefused, "admission refused")
			if !lost {
				sc.peer.Unrestricted = false
				sc.reportRefusal(err)
			}
			return
		}
		sc.peer, streams = p, conn
	}
	if hook := sc.srv.opts.connHook; hook != nil {
		sc.connEnd = hook(sc.peer)
	}
	go func() {
		select {
		case <-sc.conn.Done():
			sc.cancel()
		case <-sc.ctx.Done():
		}
	}()
	for {
		// Take no more streams than there are slots for streams being
		// served and for streams whose HEADER has not arrived: further
		// ones wait in the transport.
		if sc.active != nil {
			select {
			case sc.active <- struct{}{}:
			case <-sc.ctx.Done():
				return
			}
		}
		if sc.awaiting != nil {
			select {
			case sc.awaiting <- struct{}{}:
			case <-sc.ctx.Done():
				return
			}
		}
		st, err := streams.AcceptStream(sc.ctx)
		if err != nil {
			return
		}
		sc.streams.Add(1)
		sc.srv.dispatch(sc, st)
	}
}

// shutdown runs when the connection ends: cancel calls, wait for them, and
// close the session instances.
func (sc *serverConn) shutdown() {
	sc.cancel()
	sc.conn.Close(transport.ConnNoError, "")
	sc.streams.Wait()
	sc.mu.Lock()
	sc.closing = true
	var toClose []*session
	for id, ss := range sc.sessions {
		delete(sc.sessions, id)
		ss.ended = true
		if ss.refs == 0 {
			toClose = append(toClose, ss)
		}
	}
	sc.mu.Unlock()
	for _, ss := range toClose {
		sc.closeInstance(ss)
	}
	if sc.connEnd != nil {
		sc.connEnd()
	}
}

// workerIdle is how long a stream worker waits for another call before it
// exits.
const workerIdle = 2 * time.Second

type workItem struct {
	sc *serverConn
	st transport.Stream
}

// dispatch serves a stream on an idle worker, or a new one.
func (s *Server) dispatch(sc *serverConn, st transport.Stream) {
	w := workItem{sc, st}
	select {
	case s.work <- w:
	default:
		s.workers.Add(1)
		go s.worker(w)
	}
}

func (s *Server) worker(w workItem) {
	defer s.workers.Done()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		w.sc.serveStream(w.st)
		t.Reset(workerIdle)
		select {
		case w = <-s.work:
		case <-t.C:
			return
		case <-s.quit:
			return
		}
	}
}

// serveStream serves the calls of one stream: its first call, and, while
// the calls are marked reusable and end cleanly, the calls that follow it
// on the stream (PROTOCOL.md 23). The active slot serve took for the
// stream is held while a call is served, not while the stream is idle.
func (sc *serverConn) serveStream(st transport.Stream) {
	defer sc.streams.Done()
	held := sc.active != nil
	defer func() {
		if held {
			<-sc.active
		}
	}()
	c := getServerCall()
	c.r.Reset(st, sc.srv.opts.maxFrame)
	var e *idleEntry // the stream's entry in the list of reusable streams
	defer func() {
		if e != nil {
			sc.idleUnlist(e)
		}
	}()
	for reused := false; ; reused = true {
		again := sc.serveCall(st, c, reused)
		if again {
			if e == nil {
				e = &idleEntry{st: st}
				e.since.Store(idleBusy)
				sc.idleList(e)
			}
			again = sc.awaitCall(st, &held, c, e)
		}
		if !again {
			putServerCall(c)
			return
		}
		// The next call continues with the reader of the last, which
		// may hold the start of its HEADER.
		next := getServerCall()
		c.r, next.r = next.r, c.r
		putServerCall(c)
		c = next
	}
}

// awaitCall waits on an idle reusable stream, whose last call was c, for
// the first byte of its next call, unless c's reader holds it already;
// while it waits it holds no read buffer and no active slot, and the wait
// is bounded by the idle timeout. Then it takes an active slot. false means
// the stream ended (it was reset or closed here).
func (sc *serverConn) awaitCall(st transport.Stream, held *bool, c *serverCall, e *idleEntry) bool {
	if *held {
		<-sc.active
		*held = false
	}
	if c.deadline.Swap(false) {
		// The last call left a read deadline (its handler's, or the
		// skipping of its requests): the next call starts without one.
		_ = st.SetReadDeadline(time.Time{})
	}
	if c.r.Buffered() == 0 {
		// The streams idle at once are bounded by idleCap (beyond, one
		// of them is reset) and the idle timeout, which the connection's
		// sweeper enforces (a read deadline would cost a timer per call);
		// a conforming client keeps at most its pool (the verdict's
		// offer, or its calls in flight) of them, the others being on
		// their way to their next call or retired by the client.
		sc.srv.stats.idleStreams.Add(1)
		e.since.Store(int64(monoNow()))
		var err error
		if n := sc.idleNow.Add(1); sc.idleCap > 0 && n > sc.idleCap && sc.evictIdle(e) {
			err = errEvicted
		} else {
			err = c.r.Await()
		}
		expired := e.since.Swap(idleBusy) == idleExpired
		sc.idleNow.Add(-1)
		sc.srv.stats.idleStreams.Add(-1)
		if err == nil && expired {
			// The sweeper took the stream as its call arrived: it resets
			// it, and the client's call fails as on a stream reset while
			// idle.
			return false
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// The client retired the stream: a clean end.
				st.Close()
			}
			st.Reset(transport.CodeNoError)
			return false
		}
	}
	if sc.active != nil {
		select {
		case sc.active <- struct{}{}:
			*held = true
		case <-sc.ctx.Done():
			st.Reset(transport.CodeNoError)
			return false
		}
	}
	return true
}

// errEvicted ends the idle wait of a stream evictIdle took at once.
var errEvicted = errors.New("aster: idle stream evicted")

// idleEntry is a reusable stream in its connection's list, which the
// sweeper goroutine looks through for streams idle for the idle timeout.
// Going idle and busy again is two atomic stores, so the calls of a
// connection do not take a shared lock each: the list changes only when a
// stream first goes idle and when it ends.
type idleEntry struct {
	st transport.Stream
	// since is when the stream's current idle wait began (monoNow),
	// idleBusy while a call is served, idleExpired once the sweeper took
	// it to reset.
	since      atomic.Int64
	prev, next *idleEntry
	unlisted   bool // taken off the list by evictIdle (guarded by idleMu)
}

// The values of idleEntry.since that are not times: a stream serving a
// call, and one the sweeper resets.
const (
	idleBusy    = math.MinInt64
	idleExpired = math.MinInt64 + 1
)

// idleSweeps is how many times per idle timeout the sweeper looks for
// expired streams: a stream is reset between 1 and 1 + 1/idleSweeps idle
// timeouts after its call.
const idleSweeps = 8

// idleList adds e, whose stream is about to go idle for the first time,
// to the connection's list, starting the sweeper if it is not running.
func (sc *serverConn) idleList(e *idleEntry) {
	sc.idleMu.Lock()
	e.next, e.prev = nil, sc.idleTail
	if sc.idleTail != nil {
		sc.idleTail.next = e
	} else {
		sc.idleHead = e
	}
	sc.idleTail = e
	if !sc.sweeping {
		sc.sweeping = true
		sc.streams.Add(1) // the caller's stream holds a count: Add is safe
		go sc.sweep()
	}
	sc.idleMu.Unlock()
}

// maxIdleStreams is how many streams of one connection may wait idle for
// their next call at once: the larger of the reuse offer and the
// per-connection stream limit, since a conforming client keeps at most
// the offer or as many as it had calls in flight (PROTOCOL.md 23.3), and
// the server serves at most the stream limit of those at once. 0 (no
// stream limit) means no cap but the transport's.
func maxIdleStreams(o *serverOptions) int {
	if o.limits.maxStreams <= 0 {
		return 0
	}
	return max(streamReuseOffer(o), o.limits.maxStreams)
}

// evictScan is how many streams from the head of a connection's list
// evictIdle looks through, so that an eviction costs the same however many
// streams the connection has.
const evictScan = 64

// evictIdle resets a stream of the connection that has been idle for long,
// as the sweeper would once it expired: the connection holds more idle
// streams than idleCap. It takes the one idle the longest among the first
// evictScan streams of the list (those first idle the earliest), and self,
// the stream going idle now, only when none of those is idle: a conforming
// client takes its most recently idle stream first, so an old one is the
// least likely to carry another call. It reports whether it took self.
func (sc *serverConn) evictIdle(self *idleEntry) bool {
	var oldest *idleEntry
	var since int64
	sc.idleMu.Lock()
	i := 0
	for e := sc.idleHead; e != nil && i < evictScan; e, i = e.next, i+1 {
		if s := e.since.Load(); e != self && s > idleExpired && (oldest == nil || s < since) {
			oldest, since = e, s
		}
	}
	if oldest != nil && !oldest.since.CompareAndSwap(since, idleExpired) {
		oldest = nil // its call arrived meanwhile
	}
	if oldest != nil {
		// Off the list at once, so that the next eviction finds an idle
		// stream at its head rather than this one until its goroutine
		// takes it off.
		sc.unlinkIdle(oldest)
		oldest.unlisted = true
	}
	sc.idleMu.Unlock()
	if oldest == nil {
		return true
	}
	oldest.st.Reset(transport.CodeNoError) // its Await returns an error
	return false
}

// idleUnlist takes e off the list once its stream ended.
func (sc *serverConn) idleUnlist(e *idleEntry) {
	sc.idleMu.Lock()
	sc.unlinkIdle(e)
	sc.idleMu.Unlock()
}

func (sc *serverConn) unlinkIdle(e *idleEntry) {
	if e.unlisted {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sc.idleHead = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sc.idleTail = e.prev
	}
	e.prev, e.next = nil, nil
}

// sweep resets the streams idle for longer than the idle timeout. It runs
// while the connection has reusable streams, and ends with the
// connection or once it has none.
func (sc *serverConn) sweep() {
	defer sc.streams.Done()
	idle := sc.srv.opts.limits.streamIdle
	every := max(idle/idleSweeps, time.Millisecond)
	t := time.NewTimer(every)
	defer t.Stop()
	var expired []transport.Stream
	for {
		select {
		case <-sc.ctx.Done():
			return
		case <-t.C:
		}
		now := int64(monoNow())
		sc.idleMu.Lock()
		for e := sc.idleHead; e != nil; e = e.next {
			// A stream whose wait ends meanwhile keeps its call: the
			// swap to idleExpired fails.
			if since := e.since.Load(); since > idleExpired && now-since >= int64(idle) && e.since.CompareAndSwap(since, idleExpired) {
				expired = append(expired, e.st)
			}
		}
		if sc.idleHead == nil {
			sc.sweeping = false
		}
		done := !sc.sweeping
		sc.idleMu.Unlock()
		for i, st := range expired {
			st.Reset(transport.CodeNoError) // its Await returns an error
			expired[i] = nil
		}
		expired = expired[:0]
		if done {
			return
		}
		t.Reset(every)
	}
}

// serveCall serves one call on st: it reads the HEADER, finds the method,
// checks the caller may call it, and runs the handler; finish always ends
// the call. It reports whether the stream is clean for another call: the
// call was marked reusable, its trailer was sent and its requests were
// read to their end-of-request frame.
func (sc *serverConn) serveCall(st transport.Stream, c *serverCall, reused bool) (again bool) {
	s := sc.srv
	c.sc, c.st = sc, st
	c.r.TrimWhenIdle() // a waiting call holds at most a 4 KiB buffer
	c.w.Reset(st)
	c.w.SetBudget(st.Context(), sc.budget)
	c.peer = &sc.peer

	// The HEADER must arrive within the header timeout; a stream that
	// stalls before it is reset (abort) so it holds nothing for long. The
	// frame reader bounds it by MaxHeaderSize from its prefix on.
	// On a reused stream awaitCall cleared any deadline of the last call.
	timeout := s.opts.limits.headerTimeout
	if timeout > 0 {
		_ = st.SetReadDeadline(time.Now().Add(timeout))
	}
	_, payload, err := c.r.ReadHeaderFrame()
	if timeout > 0 {
		_ = st.SetReadDeadline(time.Time{})
	}
	if sc.awaiting != nil && !reused {
		<-sc.awaiting
	}
	if err != nil {
		c.abort(err)
		return false
	}
	if reused {
		s.stats.streamsReused.Add(1)
	} else {
		s.stats.streamsOpened.Add(1)
	}
	c.jsonMeta = wire.IsJSON(payload)
	h := &c.hdr
	if err := wire.DecodeHeaderInto(payload, h); err != nil {
		c.finish(err)
		return false
	}
	c.reuse = h.Reuse && s.opts.limits.streamIdle > 0
	s.calls.add()
	defer s.calls.done()
	if s.draining.Load() {
		// Nothing of the call has run: the client may retry it on another
		// server whatever the method (PROTOCOL.md §7.5); the trailer says
		// the server is draining (§7.1).
		return c.end(wire.DrainingRefusal(reasonShutdown))
	}
	if err := c.setCodec(h.SerializationMode); err != nil {
		return c.end(err)
	}
	if h.Service == wire.ControlService {
		return c.end(c.control(h))
	}
	me, err := s.lookup(h)
	if err != nil {
		return c.end(err)
	}
	c.info = me.info
	if req := me.info.Requires; req != nil && !sc.peer.Unrestricted && !c.permitted(me, req) {
		return c.end(c.deny(me, req))
	}
	if me.info.Pattern.ServerStreams() {
		c.w.SetStreaming()
	}

	// The call's context ends when the caller goes away (it resets the
	// stream), the connection closes, the header's deadline passes or the
	// call ends, which is exactly when the handler should stop. It carries
	// the call so that typed handlers reach metadata, peer and SetHeader
	// from it (handler.StreamFromContext). callCtx does all that in one
	// allocation, registering with the stream's context and arming a timer
	// only once something waits on it (server_callctx.go).
	// A timeout beyond what a time.Duration holds (about 292 years) is no
	// deadline at all rather than an overflow.
	var callTimeout time.Duration
	if h.Timeout > 0 && h.Timeout <= maxTimeoutMillis {
		callTimeout = time.Duration(h.Timeout) * time.Millisecond
	}
	cctx := newCallCtx(st.Context(), c, callTimeout)
	defer cctx.end()
	var ctx context.Context = cctx
	if sc.budget != nil {
		// Waits for send budget end with the call.
		c.w.SetBudget(ctx, sc.budget)
	}

	hd := me.h
	switch {
	case me.info.Scope == handler.ScopeSession && h.SessionID == 0:
		return c.end(status.Errorf(status.FailedPrecondition, "%s is session-scoped: call it within a session", me.info.Service))
	case me.info.Scope == handler.ScopeShared && h.SessionID != 0:
		return c.end(status.Errorf(status.FailedPrecondition, "%s is not session-scoped: call it without a session", me.info.Service))
	case me.info.Scope == handler.ScopeSession:
		ss, err := sc.acquireSession(ctx, h.SessionID, me.sv)
		if err != nil {
			return c.end(err)
		}
		defer sc.releaseSession(ss)
		hd = ss.handler(sc, me)
	}
	return c.end(c.run(ctx, hd))
}

// end finishes the call with err and, on a reusable stream, reads what is
// left of the requests up to the end-of-request frame (PROTOCOL.md 23.3):
// it reports whether the stream is clean for another call.
func (c *serverCall) end(err error) bool {
	if !c.finish(err) {
		return false
	}
	st := c.st
	if !c.recvEOF {
		// The handler did not read its requests to their end: skip the
		// rest, within the idle timeout.
		c.deadline.Store(true)
		_ = st.SetReadDeadline(time.Now().Add(c.sc.srv.opts.limits.streamIdle))
		switch err := c.r.SkipRequests(); {
		case err == io.EOF:
			st.Close() // the client ended the stream instead
			return false
		case err != nil:
			st.Reset(transport.CodeNoError)
			return false
		}
		c.recvEOF = true
	}
	if c.sc.ctx.Err() != nil {
		st.Reset(transport.CodeNoError)
		return false
	}
	return true
}

// serverCall is the server's side of one call; it implements handler.Stream.
// Calls are pooled: one serves many calls, one after the other.
type serverCall struct {
	sc       *serverConn
	st       transport.Stream
	r        *wire.Reader
	w        *wire.Writer
	hdr      wire.Header
	info     *handler.MethodInfo
	peer     *handler.Peer
	codec    codec.Codec
	jsonMeta bool
	recvEOF  bool
	// deadline is set once the stream may have a read deadline that
	// outlives the call (SetReadDeadline, or end skipping requests).
	deadline atomic.Bool
	// reuse is set for a call marked reusable (wire.Header.Reuse) on a
	// server that offers stream reuse.
	reuse bool
	// header is the response metadata (SetHeader), sent before the first
	// response; headerSent is set once it was (or the call finished).
	header     map[string]string
	headerSent bool
	trailer    map[string]string
	sent       int
	// returned is set when the handler has returned: later use of the
	// Stream fails until the call is reused.
	returned atomic.Bool
	// Message and byte counts, atomic: a handler may Send and Recv from
	// different goroutines while middleware reads Stats.
	sentMsgs, sentBytes, recvMsgs, recvBytes atomic.Int64
}

var serverCallPool = sync.Pool{New: func() any { return &serverCall{r: new(wire.Reader), w: new(wire.Writer)} }}

func getServerCall() *serverCall { return serverCallPool.Get().(*serverCall) }

func putServerCall(c *serverCall) {
	c.r.Release()
	c.w.Release()
	*c = serverCall{r: c.r, w: c.w}
	serverCallPool.Put(c)
}

func (c *serverCall) setCodec(name string) error {
	if name == "" {
		name = cbor.Name
	}
	cd, ok := c.sc.srv.opts.codecs[name]
	if !ok {
		return status.Errorf(status.InvalidArgument, "unsupported serialization mode %q", name)
	}
	c.codec = cd
	return nil
}

// run calls the handler, turning a panic into INTERNAL.
func (c *serverCall) run(ctx context.Context, h handler.Handler) (err error) {
	defer func() {
		c.returned.Store(true)
		if r := recover(); r != nil {
			c.sc.srv.opts.logger.Error("aster: handler panic", "method", c.info.FullName(), "panic", r, "stack", string(debug.Stack()))
			err = status.Errorf(status.Internal, "handler panic")
		}
	}()
	if err := ctx.Err(); err != nil {
		return status.FromError(err)
	}
	err = h.ServeRPC(ctx, c)
	if err != nil && ctx.Err() == context.DeadlineExceeded && status.CodeOf(err) == status.Unknown {
		err = status.Wrap(status.DeadlineExceeded, err)
	}
	if err == nil && ctx.Err() != nil && c.st.Context().Err() == nil {
		// The budget ran out while the handler ignored it.
		err = status.FromError(ctx.Err())
	}
	return err
}

// finish ends the call: the response header if the handler set one and no
// response carried it, the trailer for err, then FIN, or, for a reusable
// call, no FIN: it then reports true once the trailer was written.
func (c *serverCall) finish(err error) bool {
	if c.header != nil && !c.headerSent {
		if herr := c.sendHeader(); herr != nil && err == nil {
			err = herr
		}
	}
	tr := wire.TrailerFor(err)
	c.sc.srv.stats.record(tr.Code)
	if len(c.trailer) > 0 {
		if tr.Metadata == nil {
			tr.Metadata = c.trailer
		} else {
			for k, v := range c.trailer {
				if _, ok := tr.Metadata[k]; !ok {
					tr.Metadata[k] = v
				}
			}
		}
	}
	aerr := c.w.Append(func(b []byte) ([]byte, error) { return wire.AppendTrailer(b, &tr, c.jsonMeta) })
	if aerr == nil {
		aerr = c.w.Flush()
	}
	if aerr != nil {
		c.w.Wait()
		c.st.Reset(transport.CodeInternal)
		return false
	}
	if c.reuse {
		c.w.Wait()
		return true
	}
	c.st.Close()
	return false
}

// abort handles a failure to read the call's first frame.
func (c *serverCall) abort(err error) {
	var se *transport.StreamError
	var ce *transport.ConnError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		// The header timeout: the peer stalled before completing it.
		c.st.Reset(transport.CodeDeadline)
	case errors.Is(err, io.EOF) || errors.As(err, &se) || errors.As(err, &ce):
		c.st.Reset(transport.CodeNoError)
	default:
		c.finish(err) // a framing error: report it with its status code
	}
}

// control serves the reserved _aster methods.
func (c *serverCall) control(h *wire.Header) error {
	switch h.Method {
	case wire.MethodContract:
		b, err := c.sc.srv.contractBytes()
		if err != nil {
			return status.Errorf(status.Internal, "building contract: %v", err)
		}
		return c.sendRaw(b)
	case wire.MethodEndSession:
		if h.SessionID == 0 {
			return status.New(status.InvalidArgument, "endSession needs a sessionId")
		}
		if err := c.sc.endSession(h.SessionID); err != nil {
			return err
		}
		return c.Send(struct{}{})
	case wire.MethodAdmit:
		return c.admitOpen() // a gated server runs the exchange before serving streams
	}
	return status.Errorf(status.NotFound, "unknown method %s.%s", h.Service, h.Method)
}

// sendRaw sends pre-encoded CBOR as one data frame.
func (c *serverCall) sendRaw(b []byte) error {
	return c.w.AppendMessage(func(buf []byte) ([]byte, error) { return wire.AppendFrame(buf, 0, b), nil })
}

// errReturned is the error of a Stream used after its handler returned.
var errReturned = status.New(status.FailedPrecondition, "aster: stream used after its handler returned")

// Method implements handler.Stream.
func (c *serverCall) Method() *handler.MethodInfo { return c.info }

// Peer implements handler.Stream. After the handler returned it is the zero
// Peer.
func (c *serverCall) Peer() handler.Peer {
	if c.returned.Load() || c.peer == nil {
		return handler.Peer{}
	}
	return *c.peer
}

// Header implements handler.Stream. After the handler returned it is nil.
func (c *serverCall) Header() handler.Metadata {
	if c.returned.Load() {
		return nil
	}
	return c.hdr.Metadata
}

// SetHeader implements handler.Stream.
func (c *serverCall) SetHeader(key, value string) error {
	switch {
	case c.returned.Load():
		return errReturned
	case c.headerSent || c.sent > 0:
		return status.New(status.FailedPrecondition, "aster: SetHeader after the first response")
	case key == "" || len(key) > wire.MaxMetadataLen || len(value) > wire.MaxMetadataLen:
		return status.Errorf(status.Internal, "aster: response metadata key %.32q or its value is empty or longer than %d bytes", key, wire.MaxMetadataLen)
	}
	if c.header == nil {
		c.header = make(map[string]string, 1)
	}
	if _, ok := c.header[key]; !ok && len(c.header) >= wire.MaxMetadataPairs {
		return status.Errorf(status.Internal, "aster: more than %d response metadata pairs", wire.MaxMetadataPairs)
	}
	c.header[key] = value
	return nil
}

// sendHeader appends the response HEADER frame (PROTOCOL.md 5.4). It runs
// at most once per call.
func (c *serverCall) sendHeader() error {
	c.headerSent = true
	return c.w.Append(func(b []byte) ([]byte, error) { return wire.AppendResponseHeader(b, c.header, c.jsonMeta) })
}

// SetTrailer implements handler.Stream. After the handler returned it does
// nothing.
func (c *serverCall) SetTrailer(key, value string) {
	if c.returned.Load() {
		return
	}
	if c.trailer == nil {
		c.trailer = make(map[string]string, 1)
	}
	c.trailer[key] = value
}

// Recv implements handler.Stream.
func (c *serverCall) Recv(msg any) error {
	if c.returned.Load() {
		return errReturned
	}
	if c.recvEOF {
		return io.EOF
	}
	flags, payload, err := c.r.ReadFrame()
	if err != nil {
		if err == io.EOF {
			c.recvEOF = true
			return io.EOF
		}
		return recvError(err)
	}
	if c.reuse && wire.IsEndOfRequest(flags, payload) {
		c.recvEOF = true
		return io.EOF
	}
	if flags&(wire.FlagHeader|wire.FlagTrailer) != 0 {
		return status.Errorf(status.InvalidArgument, "unexpected %s frame from client", wire.FlagString(flags))
	}
	data, err := wire.DataPayload(flags, payload, c.sc.srv.opts.maxFrame)
	if err != nil {
		return err
	}
	if err := c.codec.Unmarshal(data, msg); err != nil {
		return status.Errorf(status.InvalidArgument, "request does not decode: %v", err)
	}
	c.recvMsgs.Add(1)
	c.recvBytes.Add(int64(len(data)))
	return nil
}

// Send implements handler.Stream.
func (c *serverCall) Send(msg any) error {
	if c.returned.Load() {
		return errReturned
	}
	if c.info != nil && !c.info.Pattern.ServerStreams() && c.sent > 0 {
		return status.Errorf(status.Internal, "%s method sends more than one response", c.info.Pattern)
	}
	c.sent++
	if c.header != nil && !c.headerSent {
		if err := c.sendHeader(); err != nil {
			return sendError(err)
		}
	}
	n, err := c.w.WriteMessage(c.codec, msg, c.sc.srv.opts.maxFrame)
	if err != nil {
		return sendError(err)
	}
	c.sentMsgs.Add(1)
	c.sentBytes.Add(int64(n))
	return nil
}

// sendError maps a failed Send: an encoding failure is INTERNAL (the
// handler's response is at fault), a status error is kept and a write
// error is mapped like a read error.
func sendError(err error) error {
	switch e := err.(type) {
	case *wire.EncodeError:
		return status.Errorf(status.Internal, "response does not encode: %v", e.Err)
	case *status.Error:
		return err
	}
	return recvError(err)
}

// Stats implements middleware.StatsReporter.
func (c *serverCall) Stats() middleware.StreamStats {
	return middleware.StreamStats{
		SentMessages: c.sentMsgs.Load(), SentBytes: c.sentBytes.Load(),
		ReceivedMessages: c.recvMsgs.Load(), ReceivedBytes: c.recvBytes.Load(),
	}
}

// SetReadDeadline makes pending and later Recv calls fail with
// DEADLINE_EXCEEDED once t has passed; the zero t clears it. Deadline
// middleware uses it so that a handler blocked in Recv ends with its budget.
func (c *serverCall) SetReadDeadline(t time.Time) error {
	c.deadline.Store(true)
	return c.st.SetReadDeadline(t)
}

// recvError maps a transport read error on the server side.
func recvError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return status.Wrap(status.DeadlineExceeded, err)
	}
	var se *transport.StreamError
	if errors.As(err, &se) {
		if se.Code == transport.CodeCancel {
			return status.Wrap(status.Canceled, err)
		}
		return status.Wrap(status.Unavailable, err)
	}
	var ce *transport.ConnError
	if errors.As(err, &ce) {
		return status.Wrap(status.Unavailable, err)
	}
	if _, ok := err.(*status.Error); ok {
		return err
	}
	return status.Wrap(status.Unavailable, err)
}

var (
	_ handler.Stream           = (*serverCall)(nil)
	_ middleware.StatsReporter = (*serverCall)(nil)
)

// maxTimeoutMillis is the largest header timeout whose nanosecond count fits
// a time.Duration; larger values mean no deadline.
const maxTimeoutMillis = uint64(math.MaxInt64 / int64(time.Millisecond))

// Sessions.

// session is one client session: an instance of a session-scoped service.
type session struct {
	id       uint64
	svc      *serviceVersion
	ready    chan struct{} // closed when instance (or err) is set
	instance any
	err      error
	refs     int // active calls
	ended    bool
	handlers map[*methodEntry]handler.Handler
}

func (sc *serverConn) closeInstance(ss *session) {
	<-ss.ready
	if c, ok := ss.instance.(io.Closer); ok {
		if err := c.Close(); err != nil {
			sc.srv.opts.logger.Warn("aster: session close failed", "session", ss.id, "service", ss.svc.svc.Name(), "err", err)
		}
	}
}

// acquireSession returns the session for id, creating its instance on first
// sight, with a reference held for one call.
func (sc *serverConn) acquireSession(ctx context.Context, id uint64, sv *serviceVersion) (*session, error) {
	sc.mu.Lock()
	ss := sc.sessions[id]
	switch {
	case sc.closing:
		sc.mu.Unlock()
		return nil, status.New(status.Unavailable, "connection closing")
	case ss != nil && ss.svc != sv:
		sc.mu.Unlock()
		return nil, status.Errorf(status.FailedPrecondition, "session %d belongs to service %s", id, ss.svc.svc.Name())
	case ss != nil:
		ss.refs++
		sc.mu.Unlock()
		<-ss.ready
		if ss.err != nil {
			sc.releaseSession(ss)
			return nil, ss.err
		}
		return ss, nil
	}
	if _, gone := sc.ended[id]; gone {
		sc.mu.Unlock()
		return nil, status.Errorf(status.NotFound, "session %d has ended", id)
	}
	if len(sc.sessions) >= sc.srv.opts.maxSessions {
		sc.mu.Unlock()
		return nil, status.Errorf(status.ResourceExhausted, "too many sessions on this connection (limit %d)", sc.srv.opts.maxSessions)
	}
	ss = &session{id: id, svc: sv, ready: make(chan struct{}), refs: 1, handlers: map[*methodEntry]handler.Handler{}}
	sc.sessions[id] = ss
	sc.mu.Unlock()

	inst, err := safeNewInstance(sc.ctx, sv.svc, sc.peer)
	if err != nil {
		se := status.FromError(err)
		if se.Code() == status.Unknown {
			se = status.Errorf(status.Internal, "creating session: %v", err)
		}
		ss.err = se
		sc.mu.Lock()
		delete(sc.sessions, id)
		sc.mu.Unlock()
		close(ss.ready)
		sc.releaseSession(ss)
		return nil, ss.err
	}
	ss.instance = inst
	close(ss.ready)
	return ss, nil
}

func safeNewInstance(ctx context.Context, svc *handler.Service, p handler.Peer) (inst any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = status.Errorf(status.Internal, "session factory panicked: %v", r)
		}
	}()
	return svc.NewInstance(ctx, p)
}

func (sc *serverConn) releaseSession(ss *session) {
	sc.mu.Lock()
	ss.refs--
	closeNow := ss.refs == 0 && ss.ended && ss.err == nil
	sc.mu.Unlock()
	if closeNow {
		sc.closeInstance(ss)
	}
}

// endSession ends session id: no new calls; the instance closes when its
// last call returns.
func (sc *serverConn) endSession(id uint64) error {
	sc.mu.Lock()
	ss := sc.sessions[id]
	if ss == nil {
		_, gone := sc.ended[id]
		sc.mu.Unlock()
		if gone {
			return status.Errorf(status.NotFound, "session %d has ended", id)
		}
		return status.Errorf(status.NotFound, "unknown session %d", id)
	}
	delete(sc.sessions, id)
	sc.ended[id] = struct{}{}
	sc.endedOrder = append(sc.endedOrder, id)
	if len(sc.endedOrder) > maxEndedSessions {
		delete(sc.ended, sc.endedOrder[0])
		sc.endedOrder = sc.endedOrder[1:]
	}
	ss.ended = true
	closeNow := ss.refs == 0
	sc.mu.Unlock()
	if closeNow {
		sc.closeInstance(ss)
	}
	return nil
}

func (ss *session) handler(sc *serverConn, me *methodEntry) handler.Handler {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	h := ss.handlers[me]
	if h == nil {
		h = me.wrap(me.m.Bind(ss.instance))
		ss.handlers[me] = h
	}
	return h
}
