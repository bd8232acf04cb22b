package wire

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/status"
)

// Waiters are granted in arrival order as bytes are returned, and a
// waiter whose context ends leaves without holding anything and without
// blocking those behind it.
func TestBudgetWaitAndRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBudget(100)
		ctx := context.Background()
		if err := b.acquire(ctx, 80); err != nil {
			t.Fatal(err)
		}
		order := make(chan int, 3)
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		errs := make(chan error, 1)
		go func() { errs <- b.acquire(short, 50) }() // blocks the others until it leaves
		synctest.Wait()
		go func() { _ = b.acquire(ctx, 20); order <- 1 }()
		synctest.Wait()
		go func() { _ = b.acquire(ctx, 10); order <- 2 }()
		synctest.Wait()
		select {
		case <-order:
			t.Fatal("a waiter passed the one ahead of it")
		default:
		}
		time.Sleep(time.Second)
		if err := <-errs; status.CodeOf(err) != status.DeadlineExceeded {
			t.Fatalf("waiter whose deadline passed: %v, want DEADLINE_EXCEEDED", err)
		}
		// Its leaving lets the next one (20) in; 10 more do not fit.
		if a := <-order; a != 1 {
			t.Fatalf("granted %d first", a)
		}
		synctest.Wait()
		select {
		case <-order:
			t.Fatal("a waiter was granted beyond the limit")
		default:
		}
		b.charge(-80)
		if a := <-order; a != 2 {
			t.Fatalf("granted %d", a)
		}
		if u := b.Used(); u != 30 {
			t.Fatalf("used %d, want 30", u)
		}
		b.charge(-30)
		if u := b.Used(); u != 0 {
			t.Fatalf("used %d after everything was returned", u)
		}
	})
}

// blockingWriter blocks each Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	n       int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.n += len(p)
	return len(p), nil
}

// A streaming Writer holds budget for its pending bytes and the batch in
// Write until Write returns; a second Writer waits for room before it
// encodes, and ends its wait with its context; a message larger than the
// whole budget is sent once nothing else is held; Release returns what a
// Writer still holds.
func TestWriterBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 10 << 10
		b := NewBudget(limit)
		c := cbor.Codec{}
		msg := make([]byte, 4<<10)
		dst := &blockingWriter{release: make(chan struct{})}
		var w1 Writer
		w1.Reset(dst)
		w1.SetBudget(context.Background(), b)
		w1.SetStreaming()
		for range 2 {
			if _, err := w1.WriteMessage(c, msg, DefaultMaxFrameSize); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		held := b.Used()
		if held < 8<<10 || held > limit {
			t.Fatalf("two 4 KiB messages, one in a blocked Write: %d bytes held", held)
		}
		// A second Writer on the same budget: no room for 4 KiB more.
		var w2 Writer
		w2.Reset(io.Discard)
		ctx, cancel := context.WithCancel(context.Background())
		w2.SetBudget(ctx, b)
		w2.SetStreaming()
		done := make(chan error, 1)
		go func() { _, err := w2.WriteMessage(c, msg, DefaultMaxFrameSize); done <- err }()
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("a message encoded beyond the budget: %v", err)
		default:
		}
		cancel()
		if err := <-done; status.CodeOf(err) != status.Canceled {
			t.Fatalf("wait ended by cancel: %v, want CANCELLED", err)
		}
		if b.Used() != held {
			t.Fatalf("a cancelled wait changed the budget: %d, was %d", b.Used(), held)
		}
		close(dst.release)
		if err := w1.Flush(); err != nil {
			t.Fatal(err)
		}
		if u := b.Used(); u != 0 {
			t.Fatalf("%d bytes held after every Write returned", u)
		}
		// Larger than the whole budget: sent when the Writer holds nothing else.
		// (The second reserves the whole budget, its previous size.)
		for range 2 {
			if _, err := w1.WriteMessage(c, make([]byte, 3*limit), DefaultMaxFrameSize); err != nil {
				t.Fatal(err)
			}
			if err := w1.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		// Release returns bytes never written (a reset stream).
		w3 := Writer{}
		w3.Reset(errWriter{})
		w3.SetBudget(context.Background(), b)
		if _, err := w3.WriteMessage(c, msg, DefaultMaxFrameSize); err != nil {
			t.Fatal(err)
		}
		if b.Used() == 0 {
			t.Fatal("a buffered message holds no budget")
		}
		if err := w3.Flush(); err == nil {
			t.Fatal("flush to a failing writer succeeded")
		}
		w3.Release()
		w2.Release()
		w1.Release()
		if u := b.Used(); u != 0 {
			t.Fatalf("%d bytes held after Release", u)
		}
	})
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("reset") }

// Many goroutines reserving and returning bytes at once, as the calls of
// a busy connection do without a lock while nobody waits: none is left
// waiting for bytes that were returned (a release racing with a waiter's
// arrival: the rounds end at a barrier, which a lost wake-up blocks), the
// bytes held never exceed the limit, and all come back.
func TestBudgetConcurrent(t *testing.T) {
	const limit, workers, rounds = 64, 4, 3000
	b := NewBudget(limit)
	ctx := context.Background()
	var over atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range rounds {
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					n := int64(limit - (w+r)%2*8) // at most one holds bytes at a time
					if err := b.acquire(ctx, n); err != nil {
						t.Error(err)
						return
					}
					if u := b.Used(); u > limit {
						over.Store(u)
					}
					runtime.Gosched() // let the others find the bytes held
					b.charge(-n)
				})
			}
			wg.Wait()
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("reservations still waiting with %d bytes used: a release was lost", b.Used())
	}
	if u := over.Load(); u != 0 {
		t.Fatalf("%d bytes held, over the limit of %d", u, limit)
	}
	if u := b.Used(); u != 0 {
		t.Fatalf("used %d after everything was returned", u)
	}
}
