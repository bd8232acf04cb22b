package aster

import (
	"sync"
	"testing"
	"time"
)

// The tracker's channel closes when the count reaches zero after wait was
// called, and not before, under concurrent adds and dones.
func TestCallTracker(t *testing.T) {
	var ct callTracker
	select {
	case <-ct.wait():
	default:
		t.Fatal("wait with no calls in flight did not return a closed channel")
	}
	for round := range 200 {
		const n = 8
		for range n {
			ct.add()
		}
		zero := ct.wait()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if i%2 == 0 {
					ct.add() // a call that starts and ends meanwhile
					ct.done()
				}
				ct.done()
			})
		}
		wg.Wait()
		select {
		case <-zero:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: wait channel not closed at zero", round)
		}
		ct.add()
		zero = ct.wait()
		select {
		case <-zero:
			t.Fatalf("round %d: wait channel closed with a call in flight", round)
		default:
		}
		ct.done()
		<-zero
	}
}
