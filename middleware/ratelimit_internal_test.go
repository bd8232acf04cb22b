package middleware

import (
	"container/list"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

func TestPeerBucketsBounded(t *testing.T) {
	RateLimit(RateLimitOptions{}) // zero options build
	rl := &rateLimiter{peer: Limit{Rate: 1, Burst: 1}, peers: map[trust.EndpointID]*list.Element{}, lru: list.New(), max: 3, idle: time.Minute}
	now := time.Unix(1000, 0)
	id := func(n byte) trust.EndpointID { return trust.EndpointID{n} }
	lims := map[byte]any{}
	for n := range byte(10) {
		lims[n] = rl.peerLimiter(id(n), now)
	}
	if got := rl.peerCount(); got != 3 {
		t.Fatalf("%d buckets kept, want 3", got)
	}
	// The most recent peers are kept, with their state.
	if rl.peerLimiter(id(9), now) != lims[9] {
		t.Fatal("recent peer lost its bucket")
	}
	if rl.peerLimiter(id(0), now) == lims[0] {
		t.Fatal("evicted peer kept its bucket")
	}
	// Idle peers are dropped.
	later := now.Add(2 * time.Minute)
	rl.peerLimiter(id(42), later)
	if got := rl.peerCount(); got != 1 {
		t.Fatalf("%d buckets after idle eviction, want 1", got)
	}
}
