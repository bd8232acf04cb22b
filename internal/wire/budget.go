package wire

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/aster-go/aster/status"
)

// Budget bounds the bytes that the Writers sharing it (the streams of one
// connection) hold for sending: bytes appended and not yet written, and
// the batch handed to the transport's Write until Write returns. It is
// safe for concurrent use. Waiters are served in arrival order, so a large
// message is not starved by a stream of small ones.
type Budget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	waiters []*budgetWaiter
	// last is the size of the last message charged by any Writer: the
	// reservation of a Writer that has sent none yet.
	last atomic.Int64
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

// NewBudget returns a Budget of limit bytes; limit must be positive.
func NewBudget(limit int64) *Budget { return &Budget{limit: limit} }

// Limit returns the budget's size.
func (b *Budget) Limit() int64 { return b.limit }

// Used returns the bytes held now. It can exceed Limit by the messages
// whose encoding turned out larger than the reservation made for them.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// acquire reserves n bytes (0 < n <= limit), waiting while they do not
// fit. It returns the status of ctx's error (CANCELLED or
// DEADLINE_EXCEEDED) if ctx ends first, having reserved nothing.
func (b *Budget) acquire(ctx context.Context, n int64) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.limit {
		b.used += n
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
	}
	b.mu.Lock()
	select {
	case <-w.ready:
		// Granted while ctx ended: give it back.
		b.used -= n
		b.grantLocked()
	default:
		for i, o := range b.waiters {
			if o == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
		// The head may have been what blocked the waiters behind it.
		b.grantLocked()
	}
	b.mu.Unlock()
	return status.FromError(ctx.Err())
}

// charge adds n bytes (n may be negative, to return part of a
// reservation) without waiting.
func (b *Budget) charge(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used += n
	if n < 0 {
		b.grantLocked()
	}
	b.mu.Unlock()
}

// grantLocked wakes the waiters at the head of the queue that now fit.
func (b *Budget) grantLocked() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if b.used+w.n > b.limit {
			return
		}
		b.used += w.n
		close(w.ready)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
	}
}
