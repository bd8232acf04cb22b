package aster

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/codec"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
)

// clientStream is the transport-level middleware.ClientStream: one call's
// stream, from its header to its trailer.
//
// Send/CloseSend (one goroutine) may run concurrently with Recv (another),
// and Close with either: Close resets the stream, which unblocks them, and
// a frame buffer still in use by a Send or Recv is released by that Send or
// Recv when it returns rather than by Close (see enter and leave).
type clientStream struct {
	st       transport.Stream
	ctx      context.Context
	codec    codec.Codec
	pattern  handler.Pattern
	r        wire.Reader
	w        wire.Writer
	maxFrame uint32
	stop     func() bool

	// reuse is set for a call marked reusable (PROTOCOL.md 23): pool
	// takes its stream back, on conn, once the call ended cleanly.
	reuse bool
	pool  *streamPool
	conn  transport.Conn
	// eorSent is set once the end-of-request frame was written; clean,
	// under mu, once the call ended by its trailer with nothing after it.
	eorSent atomic.Bool
	clean   bool

	sendClosed bool // Send goroutine only
	gotHeader  bool // Recv goroutine only: a response HEADER frame was read
	gotData    bool // Recv goroutine only: a DATA frame was read

	// ops holds opRecv/opSend while Recv or Send/CloseSend uses its
	// buffer, and opClosed once Close ran.
	ops atomic.Int32

	// Message and byte counts (Send and Recv may run concurrently).
	sentMsgs, sentBytes, recvMsgs, recvBytes atomic.Int64

	mu   sync.Mutex // guards done, err, header, trailer, released, clean
	done bool
	// ended is done, for reads without the lock (recvRaw's check before
	// each frame); it is set under mu with done.
	ended    atomic.Bool
	err      error
	header   map[string]string
	trailer  map[string]string
	released bool
}

const (
	opRecv int32 = 1 << iota
	opSend
	opClosed
)

// enter marks op (opRecv or opSend) as using its buffer; it fails once the
// stream is closed.
func (cs *clientStream) enter(op int32) bool {
	for {
		s := cs.ops.Load()
		if s&opClosed != 0 {
			return false
		}
		if cs.ops.CompareAndSwap(s, s|op) {
			return true
		}
	}
}

// leave ends op's use of its buffer, releasing the buffer if Close ran
// meanwhile.
func (cs *clientStream) leave(op int32) {
	for {
		s := cs.ops.Load()
		if cs.ops.CompareAndSwap(s, s&^op) {
			if s&opClosed != 0 {
				cs.releaseBuf(op)
			}
			return
		}
	}
}

// releaseBuf returns op's buffer to its pool.
func (cs *clientStream) releaseBuf(op int32) {
	if op == opRecv {
		cs.r.Release()
		return
	}
	cs.w.Wait() // a flusher started by the last Send may still write
	cs.w.Release()
}

// cancel runs when ctx is done before the call finished.
func (cs *clientStream) cancel() {
	code := transport.CodeCancel
	if errors.Is(cs.ctx.Err(), context.DeadlineExceeded) {
		code = transport.CodeDeadline
	}
	cs.st.Reset(code)
}

func (cs *clientStream) Send(msg any) error {
	if !cs.enter(opSend) {
		return io.EOF // closed: Recv reports the outcome
	}
	err := cs.send(msg)
	cs.leave(opSend)
	return err
}

func (cs *clientStream) send(msg any) error {
	if cs.sendClosed {
		return status.New(status.FailedPrecondition, "send after CloseSend")
	}
	n, err := cs.w.WriteMessage(cs.codec, msg, cs.maxFrame)
	if e, ok := err.(*wire.EncodeError); ok {
		err = status.Errorf(status.InvalidArgument, "request does not encode: %v", e.Err)
	}
	if err != nil {
		return cs.sendError(err)
	}
	cs.sentMsgs.Add(1)
	cs.sentBytes.Add(int64(n))
	return nil
}

func (cs *clientStream) sendError(err error) error {
	if _, ok := err.(*status.Error); ok {
		return err
	}
	if ctxErr := cs.ctx.Err(); ctxErr != nil {
		return status.FromError(ctxErr)
	}
	// The stream broke; as in gRPC, the call's status is reported by Recv.
	return io.EOF
}

func (cs *clientStream) CloseSend() error {
	if !cs.enter(opSend) {
		return io.EOF
	}
	err := cs.closeSend()
	cs.leave(opSend)
	return err
}

func (cs *clientStream) closeSend() error {
	if cs.sendClosed {
		return nil
	}
	cs.sendClosed = true
	if cs.reuse {
		// On a reusable stream the requests end with an end-of-request
		// frame, sent with the last request, instead of FIN.
		err := cs.w.Append(func(b []byte) ([]byte, error) { return append(b, wire.EndOfRequest...), nil })
		if err == nil {
			err = cs.w.Flush()
		}
		if err != nil {
			return cs.sendError(err)
		}
		cs.eorSent.Store(true)
		return nil
	}
	if err := cs.w.Flush(); err != nil {
		return cs.sendError(err)
	}
	if err := cs.st.CloseWrite(); err != nil {
		return cs.sendError(err)
	}
	return nil
}

// Stats implements middleware.StatsReporter.
func (cs *clientStream) Stats() middleware.StreamStats {
	return middleware.StreamStats{
		SentMessages: cs.sentMsgs.Load(), SentBytes: cs.sentBytes.Load(),
		ReceivedMessages: cs.recvMsgs.Load(), ReceivedBytes: cs.recvBytes.Load(),
	}
}

func (cs *clientStream) Recv(msg any) error {
	if !cs.enter(opRecv) {
		return cs.outcome()
	}
	err := cs.recv(msg)
	cs.leave(opRecv)
	return err
}

func (cs *clientStream) recv(msg any) error {
	data, err := cs.recvRaw()
	if err != nil {
		return err
	}
	if msg == nil {
		return nil
	}
	if err := cs.codec.Unmarshal(data, msg); err != nil {
		return cs.end(status.Errorf(status.Internal, "response does not decode: %v", err), nil)
	}
	cs.recvMsgs.Add(1)
	cs.recvBytes.Add(int64(len(data)))
	return nil
}

// recvRaw returns the next data frame's bytes undecoded (valid until the
// next read). The caller holds opRecv, or is the only user of the stream.
func (cs *clientStream) recvRaw() ([]byte, error) {
	for {
		if cs.ended.Load() {
			return nil, cs.outcome()
		}
		flags, payload, err := cs.r.ReadFrame()
		if err != nil {
			if err == io.EOF {
				err = status.New(status.Unavailable, "stream ended without a trailer")
			} else {
				err = cs.mapErr(err)
			}
			return nil, cs.end(err, nil)
		}
		switch {
		case flags&wire.FlagTrailer != 0:
			var t wire.Trailer
			if err := wire.DecodeTrailerInto(payload, &t); err != nil {
				return nil, cs.end(err, nil)
			}
			res := t.Err()
			if cs.reuse {
				// No FIN follows on a reusable stream: the stream is
				// clean if nothing followed the trailer.
				if res == nil {
					res = io.EOF
				}
				return nil, cs.endWith(res, t.Metadata, cs.r.Buffered() == 0)
			}
			if res == nil {
				res = io.EOF
				// Read the FIN that follows the trailer (normally in the
				// same packet). Closing a QUIC stream whose end was not
				// read sends STOP_SENDING, and the server answers with
				// RESET_STREAM: two extra frames per call, which halved
				// unary throughput at 32 concurrent callers.
				cs.r.WaitEOF()
			}
			return nil, cs.end(res, t.Metadata)
		case flags&wire.FlagHeader != 0:
			// Response metadata: at most one HEADER frame, before any data.
			if cs.gotHeader || cs.gotData {
				return nil, cs.end(status.New(status.Internal, "protocol error: response header frame after data or a second time"), nil)
			}
			md, err := wire.DecodeResponseHeader(payload)
			if err != nil {
				return nil, cs.end(err, nil)
			}
			cs.gotHeader = true
			cs.mu.Lock()
			cs.header = md
			cs.mu.Unlock()
			continue
		}
		data, err := wire.DataPayload(flags, payload, cs.maxFrame)
		if err != nil {
			return nil, cs.end(err, nil)
		}
		cs.gotData = true
		return data, nil
	}
}

// outcome returns the call's recorded outcome.
func (cs *clientStream) outcome() error {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.err
}

// end records the call's outcome and releases the stream.
func (cs *clientStream) end(err error, trailer map[string]string) error {
	return cs.endWith(err, trailer, false)
}

// endWith is end for a reusable stream whose trailer was read: clean
// reports that nothing followed it. The outcome and the stream's release
// are decided under one hold of mu: a call Close ended first keeps its
// outcome, and its stream is not clean.
func (cs *clientStream) endWith(err error, trailer map[string]string, clean bool) error {
	cs.mu.Lock()
	if !cs.done {
		cs.done, cs.err, cs.trailer, cs.clean = true, err, trailer, clean
		cs.ended.Store(true)
	}
	err = cs.err
	first, clean := cs.claimReleaseLocked()
	cs.mu.Unlock()
	if first {
		cs.releaseStream(err != io.EOF, clean)
	}
	return err
}

// release ends the transport stream (once): FIN after a successful call,
// reset otherwise.
func (cs *clientStream) release(reset bool) {
	cs.mu.Lock()
	first, clean := cs.claimReleaseLocked()
	cs.mu.Unlock()
	if first {
		cs.releaseStream(reset, clean)
	}
}

// claimReleaseLocked marks the stream released; first reports that this
// caller set it (and so releases the stream), clean whether the call
// ended cleanly. cs.mu is held.
func (cs *clientStream) claimReleaseLocked() (first, clean bool) {
	first = !cs.released
	cs.released = true
	return first, cs.clean
}

// releaseStream is release's work, once, by whoever set released.
func (cs *clientStream) releaseStream(reset, clean bool) {
	if cs.reuse {
		// The stream goes back to the pool only if the call ended
		// cleanly: its requests ended with the end-of-request frame, its
		// trailer was read, and the context did not cancel it meanwhile.
		cs.pool.inFlight.Add(-1)
		stopped := cs.stop == nil || cs.stop()
		if clean && stopped && cs.eorSent.Load() {
			// The last write (the end-of-request frame) has returned.
			cs.w.Wait()
			cs.pool.put(cs.conn, cs.st)
			return
		}
		// The reset unblocks a write still in progress.
		cs.st.Reset(transport.CodeCancel)
		cs.w.Wait()
		return
	}
	if cs.stop != nil {
		cs.stop()
	}
	if reset {
		cs.st.Reset(transport.CodeCancel)
	} else {
		cs.st.Close()
	}
	cs.w.Wait()
}

func (cs *clientStream) Header() handler.Metadata {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.header
}

func (cs *clientStream) Trailer() handler.Metadata {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.trailer
}

// Close cancels the call if it has not ended and releases its buffers. It
// may run concurrently with Send and Recv: the stream reset unblocks them,
// and a buffer one of them still uses is released when it returns.
func (cs *clientStream) Close() {
	cs.mu.Lock()
	finished := cs.done && cs.err == io.EOF
	if !cs.done {
		cs.done, cs.err = true, status.New(status.Canceled, "call closed by caller")
		cs.ended.Store(true)
	}
	first, clean := cs.claimReleaseLocked()
	cs.mu.Unlock()
	if first {
		cs.releaseStream(!finished, clean)
	}
	for {
		s := cs.ops.Load()
		if s&opClosed != 0 {
			return
		}
		if cs.ops.CompareAndSwap(s, s|opClosed) {
			if s&opRecv == 0 {
				cs.releaseBuf(opRecv)
			}
			if s&opSend == 0 {
				cs.releaseBuf(opSend)
			}
			return
		}
	}
}

// mapErr turns a transport error into the call's status.
func (cs *clientStream) mapErr(err error) error {
	if ctxErr := cs.ctx.Err(); ctxErr != nil {
		return status.FromError(ctxErr)
	}
	if _, ok := err.(*status.Error); ok {
		return err
	}
	var se *transport.StreamError
	if errors.As(err, &se) {
		if se.Remote {
			return status.Errorf(status.Unavailable, "stream reset by server: %w", err)
		}
		return status.Errorf(status.Canceled, "stream reset: %w", err)
	}
	var ce *transport.ConnError
	if errors.As(err, &ce) {
		switch {
		case ce.Remote && ce.Code == transport.ConnRefused:
			// The server ended the admission it granted (the credential
			// expired): a retry with the same credential is refused too
			// (PROTOCOL.md 3.3).
			return status.Errorf(status.Unauthenticated, "connection closed by the server: %w", err)
		case ce.Remote && ce.Code == transport.ConnDenied:
			return status.Errorf(status.PermissionDenied, "connection closed by the server: %w", err)
		}
		return status.Errorf(status.Unavailable, "connection lost: %w", err)
	}
	return status.Wrap(status.Unavailable, err)
}

var (
	_ middleware.ClientStream  = (*clientStream)(nil)
	_ middleware.StatsReporter = (*clientStream)(nil)
)

// Stream reuse (PROTOCOL.md 23), the client's side.

// ClientStreamIdleTimeout is how long a client keeps a reusable stream
// idle before it retires it: shorter than the server's idle timeout
// (DefaultStreamIdleTimeout), so that a client does not start a call on a
// stream the server is about to reset.
const ClientStreamIdleTimeout = 10 * time.Second

// streamPool holds the idle reusable streams of one connection: the
// client's current one, whose admission verdict offered stream reuse.
type streamPool struct {
	mu   sync.Mutex
	conn transport.Conn // the connection the offer and idle are of
	max  int            // idle streams the server offered; 0: no reuse
	idle []idleStream   // oldest first

	opened, reused atomic.Uint64
	// inFlight counts the reusable calls started and not yet released:
	// the pool keeps up to that many idle streams when it is more than
	// the offer, so that as many callers as there are calls find one.
	inFlight atomic.Int64
}

type idleStream struct {
	st    transport.Stream
	since time.Duration // monoNow when it went idle
}

// offer records the stream reuse offer of conn's admission verdict: the
// most idle streams to keep (0: none). The streams of an earlier
// connection are retired.
func (p *streamPool) offer(conn transport.Conn, max int) {
	conn = poolKey(conn)
	p.mu.Lock()
	old := p.idle
	p.conn, p.max, p.idle = conn, max, nil
	p.mu.Unlock()
	for _, s := range old {
		s.st.Close()
	}
}

// take reports whether calls on conn may be marked reusable and, if so,
// returns its most recently idle stream (nil if none); streams idle for
// longer than ClientStreamIdleTimeout are retired.
func (p *streamPool) take(conn transport.Conn) (transport.Stream, bool) {
	conn = poolKey(conn)
	now := monoNow()
	p.mu.Lock()
	if p.conn != conn || p.max == 0 {
		p.mu.Unlock()
		return nil, false
	}
	n := len(p.idle)
	if n == 0 {
		p.mu.Unlock()
		return nil, true
	}
	s := p.idle[n-1]
	p.idle[n-1] = idleStream{}
	p.idle = p.idle[:n-1]
	if now-s.since >= ClientStreamIdleTimeout {
		// The newest is too old, so all are.
		old := p.idle
		p.idle = nil
		p.mu.Unlock()
		s.st.Close()
		for _, o := range old {
			o.st.Close()
		}
		return nil, true
	}
	p.mu.Unlock()
	return s.st, true
}

// put keeps st, whose call ended cleanly, for another call on conn, or
// retires it (FIN: the server ends it) if the pool is full or of another
// connection. Streams idle for too long are retired on the way.
func (p *streamPool) put(conn transport.Conn, st transport.Stream) {
	conn = poolKey(conn)
	now := monoNow()
	gone := isDone(conn.Done())
	p.mu.Lock()
	if p.conn != conn || len(p.idle) >= max(p.max, int(p.inFlight.Load())) || gone {
		p.mu.Unlock()
		st.Close()
		return
	}
	var stale []idleStream
	i := 0
	for i < len(p.idle) && now-p.idle[i].since >= ClientStreamIdleTimeout {
		i++
	}
	if i > 0 {
		stale = append(stale, p.idle[:i]...)
		n := copy(p.idle, p.idle[i:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	p.idle = append(p.idle, idleStream{st: st, since: now})
	p.mu.Unlock()
	for _, s := range stale {
		s.st.Close()
	}
}

func (p *streamPool) metrics() ClientMetrics {
	p.mu.Lock()
	n := len(p.idle)
	p.mu.Unlock()
	return ClientMetrics{StreamsOpened: p.opened.Load(), StreamsReused: p.reused.Load(), IdleStreams: n}
}

// offerReuse records the stream reuse offer of conn's admission verdict,
// unless the client turned reuse off (WithStreamReuse(false)).
func (c *Client) offerReuse(conn transport.Conn, max int) {
	if !c.opts.streamReuse {
		max = 0
	}
	if isDone(conn.Done()) {
		// A late verdict of a connection already gone: the pool belongs
		// to its successor.
		return
	}
	c.pool.offer(conn, min(max, DefaultMaxIdleStreams))
}

// poolKey is the connection a stream pool is kept for: calls may name the
// connection through the wrapper it wears while its admission is under way
// (admittingConn), the offer comes for the connection itself.
func poolKey(conn transport.Conn) transport.Conn {
	if ac, ok := conn.(*admittingConn); ok {
		return ac.Conn
	}
	return conn
}
