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
//
// The byte count is atomic: while nobody waits, a reservation or a charge
// takes no lock, so the calls of a connection do not queue on one mutex
// for every message (a unary call charges the budget four times). The
// mutex orders the waiters.
type Budget struct {
	limit int64
	used  atomic.Int64
	// nwait is len(waiters), written under mu: while it is 0 reservations
	// and releases take no lock.
	nwait   atomic.Int32
	mu      sync.Mutex
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
func (b *Budget) Used() int64 { return b.used.Load() }

// tryReserve adds n to the bytes used if they fit.
func (b *Budget) tryReserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// acquire reserves n bytes (0 < n <= limit), waiting while they do not
// fit. It returns the status of ctx's error (CANCELLED or
// DEADLINE_EXCEEDED) if ctx ends first, having reserved nothing.
func (b *Budget) acquire(ctx context.Context, n int64) error {
	if b.nwait.Load() == 0 && b.tryReserve(n) {
		return nil
	}
	b.mu.Lock()
	if len(b.waiters) == 0 && b.tryReserve(n) {
		b.mu.Unlock()
		return nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.nwait.Store(int32(len(b.waiters)))
	// A release that read nwait before the store above did not grant:
	// its bytes are already out of used, so look again (grantLocked).
	b.grantLocked()
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
		b.used.Add(-n)
		b.grantLocked()
	default:
		for i, o := range b.waiters {
			if o == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
		b.nwait.Store(int32(len(b.waiters)))
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
	b.used.Add(n)
	if n < 0 && b.nwait.Load() > 0 {
		b.mu.Lock()
		b.grantLocked()
		b.mu.Unlock()
	}
}

// noteLast records m as the size of the last message charged. The shared
// word is written only when it changes, so that calls of one size do not
// bounce its cache line between cores.
func (b *Budget) noteLast(m int64) {
	if b.last.Load() != m {
		b.last.Store(m)
	}
}

// grantLocked wakes the waiters at the head of the queue that now fit.
func (b *Budget) grantLocked() {
	for len(b.waiters) > 0 {
		w := b.waiters[0]
		if !b.tryReserve(w.n) {
			return
		}
		close(w.ready)
		b.waiters[0] = nil
		b.waiters = b.waiters[1:]
		b.nwait.Store(int32(len(b.waiters)))
	}
}
