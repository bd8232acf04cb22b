package middleware

import (
	"errors"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

// A Breakers that sees ever new peers keeps at most maxBreakers breakers,
// and forgets closed ones before an open one.
func TestBreakersBounded(t *testing.T) {
	b := NewBreakers(BreakerOptions{ConsecutiveFailures: 1, OpenTimeout: time.Hour})
	call := &Call{Service: "S", Method: "m"}
	peer := func(i int) trust.EndpointID {
		var id trust.EndpointID
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		return id
	}
	// Open the breaker of peer 0.
	done, err := b.getPeer(call, peer(0)).Allow()
	if err != nil {
		t.Fatal(err)
	}
	done(errors.New("failed"))
	call.Peer = peer(0)
	if st := b.State(call); st != BreakerOpen {
		t.Fatalf("peer 0's breaker is %v, want open", st)
	}
	for i := 1; i < 3*maxBreakers; i++ {
		b.getPeer(call, peer(i))
		if n := len(b.m); n > maxBreakers {
			t.Fatalf("%d breakers after %d peers, want at most %d", n, i+1, maxBreakers)
		}
	}
	if st := b.State(call); st != BreakerOpen {
		t.Errorf("peer 0's open breaker was forgotten while closed ones could go (state %v)", st)
	}
	// All open: the bound still holds.
	for i := range 2 * maxBreakers {
		cb := b.getPeer(call, peer(1<<20+i))
		done, err := cb.Allow()
		if err != nil {
			t.Fatal(err) // a new breaker is closed
		}
		done(errors.New("failed"))
		if n := len(b.m); n > maxBreakers {
			t.Fatalf("%d open breakers, want at most %d", n, maxBreakers)
		}
	}
}
