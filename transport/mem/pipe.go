package mem

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/aster-go/aster/transport"
)

// errWriteClosed is returned by Write after CloseWrite.
var errWriteClosed = errors.New("mem: write on closed stream")

// notifier is a broadcast signal built from channels: waiters take the
// current channel under their owner's lock and block on it; broadcast closes
// it. Its owner's mutex guards it.
type notifier struct{ ch chan struct{} }

func (n *notifier) wait() <-chan struct{} {
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// deadline is a settable deadline whose channel is closed when it passes,
// modelled on the one net.Pipe uses. It needs no goroutine: a timer closes
// the channel.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline has passed; never nil after init
}

func (d *deadline) init() { d.cancel = make(chan struct{}) }

// set arms the deadline for t; the zero t clears it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close the channel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		c := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(c) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// pipe is one direction of a stream: bytes written by one endpoint's stream
// and read by the other's, with at most window bytes buffered.
type pipe struct {
	conn   *connState
	reader int // side (0 dialer, 1 acceptor) that reads this pipe
	window int

	mu       sync.Mutex
	buf      []byte // buffered data is buf[off:]
	off      int
	finished bool                   // writer closed its side (FIN)
	eofSeen  bool                   // reader observed io.EOF
	wErr     *transport.StreamError // writer reset; Remote is false (the writer's view)
	rErr     *transport.StreamError // reader stopped reading; Remote is false (the reader's view)
	readable notifier               // data, FIN, or reset arrived
	writable notifier               // space freed, or reader stopped

	// wctx is the writer's stream context, created on first use; wcancel
	// cancels it once the write direction is finished.
	wctx    context.Context
	wcancel context.CancelCauseFunc
}

// writeDoneErr returns why the write direction is finished, or nil. The
// caller holds p.mu.
func (p *pipe) writeDoneErr() error {
	switch {
	case p.wErr != nil:
		e := *p.wErr
		return &e
	case p.rErr != nil:
		return &transport.StreamError{Code: p.rErr.Code, Remote: true}
	case p.finished:
		return errWriteClosed
	}
	return nil
}

// writeFinished cancels the writer's context if it exists. The caller holds
// p.mu and has just finished the write direction.
func (p *pipe) writeFinished() {
	if p.wcancel != nil {
		p.wcancel(p.writeDoneErr())
	}
}

// context returns the writer's stream context.
func (p *pipe) context() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wctx == nil {
		p.wctx, p.wcancel = context.WithCancelCause(p.conn.ctx)
		if err := p.writeDoneErr(); err != nil {
			p.wcancel(err)
		}
	}
	return p.wctx
}

func (p *pipe) buffered() int { return len(p.buf) - p.off }

// read implements Stream.Read for the pipe's reader.
func (p *pipe) read(b []byte, dl *deadline) (int, error) {
	p.mu.Lock()
	for {
		if err := p.conn.err(p.reader); err != nil {
			p.mu.Unlock()
			return 0, err
		}
		if p.rErr != nil {
			e := *p.rErr
			p.mu.Unlock()
			return 0, &e
		}
		if p.wErr != nil {
			p.mu.Unlock()
			return 0, &transport.StreamError{Code: p.wErr.Code, Remote: true}
		}
		dlc := dl.wait()
		if isClosed(dlc) {
			p.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		if p.buffered() > 0 {
			n := copy(b, p.buf[p.off:])
			p.off += n
			if p.off == len(p.buf) {
				p.buf, p.off = p.buf[:0], 0
			} else if p.off > cap(p.buf)/2 {
				m := copy(p.buf, p.buf[p.off:])
				p.buf, p.off = p.buf[:m], 0
			}
			if n > 0 {
				p.writable.broadcast()
			}
			p.mu.Unlock()
			return n, nil
		}
		if p.finished {
			p.eofSeen = true
			p.mu.Unlock()
			return 0, io.EOF
		}
		if len(b) == 0 {
			p.mu.Unlock()
			return 0, nil
		}
		ch := p.readable.wait()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-dlc:
		case <-p.conn.done:
		}
		p.mu.Lock()
	}
}

// write implements Stream.Write for the pipe's writer.
func (p *pipe) write(b []byte, dl *deadline) (int, error) {
	n := 0
	p.mu.Lock()
	for {
		if err := p.conn.err(1 - p.reader); err != nil {
			p.mu.Unlock()
			return n, err
		}
		if p.wErr != nil {
			e := *p.wErr
			p.mu.Unlock()
			return n, &e
		}
		if p.rErr != nil {
			p.mu.Unlock()
			return n, &transport.StreamError{Code: p.rErr.Code, Remote: true}
		}
		if p.finished {
			p.mu.Unlock()
			return n, errWriteClosed
		}
		dlc := dl.wait()
		if isClosed(dlc) {
			p.mu.Unlock()
			return n, os.ErrDeadlineExceeded
		}
		if len(b) == 0 {
			p.mu.Unlock()
			return n, nil
		}
		if space := p.window - p.buffered(); space > 0 {
			k := min(space, len(b))
			p.buf = append(p.buf, b[:k]...)
			b = b[k:]
			n += k
			p.readable.broadcast()
			continue
		}
		ch := p.writable.wait()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-dlc:
		case <-p.conn.done:
		}
		p.mu.Lock()
	}
}

// closeWrite sends FIN. It reports the reset that prevents it, if any.
func (p *pipe) closeWrite() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.finished || p.conn.err(1-p.reader) != nil {
		return nil
	}
	if p.wErr != nil {
		e := *p.wErr
		return &e
	}
	p.finished = true
	p.readable.broadcast()
	p.writeFinished()
	if p.rErr != nil {
		return &transport.StreamError{Code: p.rErr.Code, Remote: true}
	}
	return nil
}

// resetWrite aborts the write side with code (RESET_STREAM). It is a no-op
// once the writer finished and the reader has consumed everything, and after
// either side already aborted this direction.
func (p *pipe) resetWrite(code transport.StreamErrorCode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wErr != nil || p.rErr != nil || (p.finished && p.buffered() == 0) {
		return
	}
	p.wErr = &transport.StreamError{Code: code}
	p.buf, p.off = nil, 0
	p.readable.broadcast()
	p.writable.broadcast()
	p.writeFinished()
}

// stopRead aborts the read side with code (STOP_SENDING), discarding
// buffered data. It is a no-op after the reader saw EOF or a peer reset.
func (p *pipe) stopRead(code transport.StreamErrorCode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rErr != nil || p.wErr != nil || p.eofSeen {
		return
	}
	p.rErr = &transport.StreamError{Code: code}
	p.buf, p.off = nil, 0
	p.readable.broadcast()
	p.writable.broadcast()
	p.writeFinished()
}

// stream is one endpoint's end of an in-memory stream.
type stream struct {
	rd, wr *pipe
	rdl    deadline
	wdl    deadline
}

var _ transport.Stream = (*stream)(nil)

func newStream(rd, wr *pipe) *stream {
	s := &stream{rd: rd, wr: wr}
	s.rdl.init()
	s.wdl.init()
	return s
}

// Read reads data the peer wrote; see transport.Stream.
func (s *stream) Read(b []byte) (int, error) { return s.rd.read(b, &s.rdl) }

// Write writes b, blocking while the peer has window bytes unread; see
// transport.Stream.
func (s *stream) Write(b []byte) (int, error) { return s.wr.write(b, &s.wdl) }

// CloseWrite closes the write direction; see transport.Stream.
func (s *stream) CloseWrite() error { return s.wr.closeWrite() }

// Reset aborts both directions with code; see transport.Stream.
func (s *stream) Reset(code transport.StreamErrorCode) {
	s.wr.resetWrite(code)
	s.rd.stopRead(code)
}

// Close closes the write direction and stops reading; see transport.Stream.
func (s *stream) Close() error {
	s.wr.mu.Lock()
	locallyReset := s.wr.wErr != nil
	s.wr.mu.Unlock()
	var err error
	if !locallyReset {
		err = s.wr.closeWrite()
	}
	s.rd.stopRead(transport.CodeNoError)
	return err
}

// Context is done when the write direction is finished: after CloseWrite,
// Close or Reset, when the peer stops reading, or when the connection
// closes. Its cause (context.Cause) is a *transport.StreamError for a reset,
// a *transport.ConnError for a connection close, and an error describing a
// graceful CloseWrite otherwise.
func (s *stream) Context() context.Context { return s.wr.context() }

// SetReadDeadline sets the read deadline; see transport.Stream.
func (s *stream) SetReadDeadline(t time.Time) error {
	s.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline; see transport.Stream.
func (s *stream) SetWriteDeadline(t time.Time) error {
	s.wdl.set(t)
	return nil
}
