package wire

import (
	"context"
	"io"
	"sync"

	"github.com/aster-go/aster/codec"
)

// Writer coalesces frames into large writes on a stream.
//
// Frames are appended to a buffer. In buffered mode nothing is written until
// Flush. In streaming mode (SetStreaming) the first append after a pause
// starts a short-lived flusher goroutine that writes whatever has accumulated
// and exits when the buffer is empty, so a fast sender gets batched writes
// and a slow one gets each message sent at once. Appends block while more
// than HighWater bytes wait (backpressure). The flusher is owned by the
// Writer: Flush and Wait join it.
type Writer struct {
	mu        sync.Mutex
	cond      sync.Cond
	w         io.Writer
	buf       []byte
	spare     []byte
	pooled    *[]byte // w.buf's pool slot
	flushing  bool
	streaming bool
	err       error
	// budget, if set, is charged for every byte appended until the write
	// that carries it returns; held is what this Writer holds of it now,
	// last the size of its last message (the reservation for the next),
	// and bctx ends waits for budget.
	budget *Budget
	bctx   context.Context
	held   int64
	last   int64
}

// HighWater is the buffered byte count above which appends wait for the
// flusher. It bounds what a stream whose reader stopped makes its sender
// hold: the pending buffer (HighWater and one message), the buffer being
// written (as much) and the spare. 64 KiB batches are as fast as 1 MiB
// ones were (BenchmarkServerStream: 16 KiB messages, ~25% faster than
// with 1 MiB), and a stalled server stream holds hundreds of KiB rather
// than about 2 MiB.
const HighWater = 64 << 10

// bufPool holds frame buffers for Writers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxKeep caps the capacity of buffers kept for reuse by later calls (in
// the pool, after Release).
const maxKeep = 256 << 10

// maxKeepCall caps the capacity of a buffer kept as the spare during a
// call. Backpressure holds a streaming buffer near HighWater plus one
// message, so a fast stream's buffers grow beyond maxKeep when its messages
// are large; dropping them after each write (as maxKeep would) made every
// batch regrow its buffer from nothing, allocating about two bytes for
// every byte sent.
const maxKeepCall = 512 << 10

// Reset prepares the Writer for a new stream.
func (w *Writer) Reset(dst io.Writer) {
	w.w = dst
	w.cond.L = &w.mu
	if w.pooled == nil {
		w.pooled = bufPool.Get().(*[]byte)
		w.buf = *w.pooled
	}
	w.buf = w.buf[:0]
	w.spare = w.spare[:0]
	w.flushing, w.streaming, w.err = false, false, nil
	w.budget, w.bctx, w.held, w.last = nil, nil, 0, 0
}

// SetBudget makes the Writer charge b for the bytes it holds, from the
// next append on: bytes count from when they are appended until the write
// that carries them returns (or Release). Messages (WriteMessage,
// AppendMessage) wait for budget before they are encoded, until ctx ends;
// other frames (headers, trailers) are charged without waiting. Call it
// after Reset, before anything is appended; it may be called again with
// another ctx. A nil b means no budget.
func (w *Writer) SetBudget(ctx context.Context, b *Budget) {
	w.mu.Lock()
	w.budget, w.bctx = b, ctx
	w.mu.Unlock()
}

// SetStreaming switches to streaming mode (see Writer).
func (w *Writer) SetStreaming() { w.mu.Lock(); w.streaming = true; w.mu.Unlock() }

// Append calls fn to append one or more frames to the pending buffer. fn
// must return the extended buffer; if it fails, the buffer is restored and
// its error returned. Append returns an earlier write error, if any.
func (w *Writer) Append(fn func([]byte) ([]byte, error)) error {
	return w.append(fn, 0)
}

// AppendMessage is Append for frames that carry a message: with a budget
// (SetBudget) it first waits until the connection's budget has room for
// a message as large as this Writer's previous one (or, for its first,
// the connection's previous one; at least one byte,
// and at most what the budget holds beyond this Writer's own bytes, so a
// message larger than the whole budget is still sent once this Writer
// holds nothing else and the budget is empty). The bytes actually
// appended are then charged, so the budget is exceeded by at most the
// growth of messages encoded while it filled. If ctx ends first, the
// status of its error is returned and nothing is appended.
func (w *Writer) AppendMessage(fn func([]byte) ([]byte, error)) error {
	w.mu.Lock()
	b, ctx := w.budget, w.bctx
	if b == nil {
		err := w.appendLocked(fn, 0)
		w.mu.Unlock()
		return err
	}
	est := w.last
	if est == 0 {
		est = b.last.Load()
	}
	r := min(max(est, 1), b.limit-w.held)
	w.mu.Unlock()
	if r <= 0 {
		return w.append(fn, 0)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := b.acquire(ctx, r); err != nil {
		return err
	}
	return w.append(fn, r)
}

// append runs fn under the lock; reserved is budget already acquired for
// it, which the bytes fn appends replace.
func (w *Writer) append(fn func([]byte) ([]byte, error), reserved int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.appendLocked(fn, reserved)
}

// appendLocked is append with mu held.
func (w *Writer) appendLocked(fn func([]byte) ([]byte, error), reserved int64) error {
	for w.streaming && w.flushing && len(w.buf) > HighWater && w.err == nil {
		w.cond.Wait()
	}
	if w.err != nil {
		if reserved > 0 {
			w.budget.charge(-reserved)
		}
		return w.err
	}
	n := len(w.buf)
	b, err := fn(w.buf)
	if err != nil {
		w.buf = b[:n]
		if reserved > 0 {
			w.budget.charge(-reserved)
		}
		return err
	}
	w.buf = b
	if w.budget != nil {
		m := int64(len(b) - n)
		w.budget.charge(m - reserved)
		w.held += m
		if reserved > 0 {
			w.last = m
			w.budget.noteLast(m)
		}
	}
	if w.streaming && !w.flushing {
		w.flushing = true
		go w.flushLoop()
	}
	return nil
}

func (w *Writer) flushLoop() {
	w.mu.Lock()
	w.flushLocked()
	w.mu.Unlock()
}

// flushLocked writes until nothing is pending (or a write fails), then
// clears flushing. It runs with mu held and flushing set, and releases mu
// only around each Write.
func (w *Writer) flushLocked() {
	for len(w.buf) > 0 && w.err == nil {
		b := w.buf
		w.buf = w.spare[:0]
		w.mu.Unlock()
		_, err := w.w.Write(b)
		w.mu.Lock()
		if w.budget != nil {
			// The batch is no longer held once Write returned.
			w.budget.charge(-int64(len(b)))
			w.held -= int64(len(b))
		}
		if cap(b) <= maxKeepCall {
			w.spare = b[:0]
		} else {
			// w.buf was filled from the old spare; keeping that as the
			// spare too would make the next swap hand it out twice.
			w.spare = nil
		}
		if err != nil {
			w.err = err
		}
		w.cond.Broadcast()
	}
	w.flushing = false
	w.cond.Broadcast()
}

// Flush waits for the flusher, then writes everything pending, including
// frames appended while it writes.
func (w *Writer) Flush() error {
	w.mu.Lock()
	for w.flushing {
		w.cond.Wait()
	}
	w.flushing = true
	w.flushLocked()
	err := w.err
	w.mu.Unlock()
	return err
}

// Wait joins the flusher goroutine without writing anything more. Use it
// after the stream was reset so no goroutine outlives the call.
func (w *Writer) Wait() {
	w.mu.Lock()
	for w.flushing {
		w.cond.Wait()
	}
	w.mu.Unlock()
}

// Release returns the larger of the Writer's two buffers to the pool and
// drops large buffers so a pooled Writer does not pin memory. (After a
// flush the buffer that was written sits in spare and buf may be empty;
// returning buf alone would hand the pool an empty slice every time.)
func (w *Writer) Release() {
	w.mu.Lock()
	if w.budget != nil && w.held != 0 {
		w.budget.charge(-w.held)
	}
	w.budget, w.bctx, w.held = nil, nil, 0
	w.mu.Unlock()
	if w.pooled != nil {
		keep, other := w.buf, w.spare
		if cap(other) > cap(keep) {
			keep, other = other, keep
		}
		if cap(keep) > 0 && cap(other) > 0 && &keep[:1][0] == &other[:1][0] {
			other = nil // never hand the pool an array this Writer keeps
		}
		if cap(keep) > 0 && cap(keep) <= maxKeep {
			*w.pooled = keep[:0]
		} else {
			*w.pooled = make([]byte, 0, 1024)
		}
		bufPool.Put(w.pooled)
		w.pooled = nil
		w.spare = other[:0]
	}
	w.buf = nil
	if cap(w.spare) > maxKeep {
		w.spare = nil
	}
	w.w = nil
}

// EncodeError is WriteMessage's error for a message its codec could not
// encode.
type EncodeError struct{ Err error }

// Error returns the codec's message.
func (e *EncodeError) Error() string { return "wire: message does not encode: " + e.Err.Error() }

// Unwrap returns the codec's error.
func (e *EncodeError) Unwrap() error { return e.Err }

// WriteMessage appends one DATA frame carrying msg, encoded by c straight
// into the pending buffer, and returns the encoded message's size. This is
// how both sides send a message. A frame whose length would exceed max is
// RESOURCE_EXHAUSTED (FrameTooLarge) and a message c cannot encode is an
// *EncodeError; in both cases nothing is appended. Any other error is an
// earlier write error (see Append).
func (w *Writer) WriteMessage(c codec.Codec, msg any, max uint32) (int, error) {
	var size int
	err := w.AppendMessage(func(b []byte) ([]byte, error) {
		b, off := BeginFrame(b, 0)
		b, err := c.AppendMarshal(b, msg)
		if err != nil {
			return b, &EncodeError{Err: err}
		}
		n := len(b) - off - 4 // the frame's length field: flags and payload
		if n > int(max) {
			return b, FrameTooLarge(uint64(n), uint64(max))
		}
		EndFrame(b, off)
		size = n - 1
		return b, nil
	})
	return size, err
}
