package aster_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// A CircuitBreaker among a Fleet's middleware keeps one breaker per
// producer: the producer that fails trips its own breaker and leaves the
// rotation, the others keep serving every call.
func TestFleetBreakerPerProducer(t *testing.T) {
	b := middleware.NewBreakers(middleware.BreakerOptions{ConsecutiveFailures: 2, OpenTimeout: time.Hour})
	ps, _, f := startFleet(t, 3,
		aster.WithClientMiddleware(b.Middleware()),
		aster.WithFleetRetry(nil), // every failure reaches the caller
		// Outlier detection out of the way: the breaker alone must route.
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}))
	bad := ps[0]
	bad.failGet.Store(true)
	ctx := ctxT(t)
	failures := 0
	const calls = 300
	for i := range calls {
		r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{N: i})
		if err != nil {
			if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), "failing on purpose") {
				t.Fatalf("call %d: %v; want the bad producer's own answer", i, err)
			}
			failures++
			continue
		}
		if r.Server == bad.id().Short() {
			t.Fatalf("call %d answered by the failing producer", i)
		}
	}
	// The bad producer's breaker opened after its second failure: no call
	// reached it after that, and its healthy peers took all the others.
	if failures != 2 {
		t.Fatalf("%d calls failed; want 2 (the breaker opens after 2)", failures)
	}
	if st, _ := producerState(f, bad.id()); st.Calls != 2 {
		t.Fatalf("the bad producer got %d calls; want 2", st.Calls)
	}
	if got := ps[1].served.Load() + ps[2].served.Load(); got != calls-2 {
		t.Fatalf("healthy producers served %d calls; want %d", got, calls-2)
	}
	if ps[1].served.Load() == 0 || ps[2].served.Load() == 0 {
		t.Fatalf("healthy producers served %d and %d: both should take calls", ps[1].served.Load(), ps[2].served.Load())
	}
	get := &middleware.Call{Service: "Fleet", Method: "get"}
	for i, p := range ps {
		get.Peer = p.id()
		want := middleware.BreakerClosed
		if i == 0 {
			want = middleware.BreakerOpen
		}
		if got := b.State(get); got != want {
			t.Errorf("breaker of producer %d: %v, want %v", i, got, want)
		}
	}
	// The fleet's own view: the producer is still connected and not ejected;
	// only the breaker keeps calls off it.
	if st, _ := producerState(f, bad.id()); st.State != aster.ProducerReady {
		t.Fatalf("bad producer %v; outlier detection was off", st.State)
	}
}

// With the fleet's default Retry as well, a failing producer costs the
// caller nothing: its failures are retried on the others, and once its
// breaker opens it gets no more calls.
func TestFleetBreakerWithRetry(t *testing.T) {
	b := middleware.NewBreakers(middleware.BreakerOptions{ConsecutiveFailures: 2, OpenTimeout: time.Hour})
	ps, _, f := startFleet(t, 3, aster.WithClientMiddleware(b.Middleware()),
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}))
	ps[0].failGet.Store(true)
	ctx := ctxT(t)
	for i := range 200 {
		if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{N: i}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if st, _ := producerState(f, ps[0].id()); st.Calls != 2 {
		t.Fatalf("the failing producer got %d calls; want 2", st.Calls)
	}
}

// When every producer's breaker is open a call fails at once with
// UNAVAILABLE naming the breakers, without reaching a producer; once the
// open timeout passes and the producers heal, calls go through again.
func TestFleetBreakerAllOpenFailsFast(t *testing.T) {
	const open = 2 * time.Second
	var mu sync.Mutex
	var lastOpen time.Time
	b := middleware.NewBreakers(middleware.BreakerOptions{
		ConsecutiveFailures: 1, OpenTimeout: open,
		OnStateChange: func(_ string, _, to middleware.BreakerState) {
			if to == middleware.BreakerOpen {
				mu.Lock()
				lastOpen = time.Now()
				mu.Unlock()
			}
		},
	})
	ps, _, f := startFleet(t, 3,
		aster.WithClientMiddleware(b.Middleware()),
		aster.WithFleetRetry(nil),
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}))
	for _, p := range ps {
		p.failGet.Store(true)
	}
	ctx := ctxT(t)
	calls := func() (n uint64) {
		for _, st := range f.Producers() {
			n += st.Calls
		}
		return n
	}
	// Trip every breaker; each failing call opens one.
	var err error
	for i := 0; ; i++ {
		_, err = aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		if md := status.FromError(err).Metadata(); md[middleware.BreakerOpenKey] != "" {
			break
		}
		if i > 10 {
			t.Fatalf("breakers not all open after %d calls: %v", i, err)
		}
	}
	mu.Lock()
	opened := lastOpen
	mu.Unlock()
	if time.Since(opened) >= open {
		t.Fatalf("the machine stalled past the open timeout (%v)", time.Since(opened))
	}
	before := calls()
	_, err = aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
	if status.CodeOf(err) != status.Unavailable {
		t.Fatalf("call with every breaker open: %v, want UNAVAILABLE", err)
	}
	names := status.FromError(err).Metadata()[middleware.BreakerOpenKey]
	for _, p := range ps {
		if !strings.Contains(names, "breaker "+p.id().Short()) || !strings.Contains(err.Error(), p.id().Short()) {
			t.Fatalf("error %q (breakers %q) does not name producer %s", err, names, p.id().Short())
		}
	}
	if !strings.Contains(err.Error(), fleetName) {
		t.Fatalf("error %q does not name the fleet", err)
	}
	if got := calls(); got != before && time.Since(opened) < open {
		t.Fatalf("a call reached a producer (%d → %d) though every breaker is open", before, got)
	}
	// Retry does not retry a breaker's refusal: with the default Retry the
	// call still fails fast with the same error.
	g := dialFleet(t, fleetSourceOf(ps), aster.WithClientMiddleware(b.Middleware()),
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}))
	fleetWait(t, "the second fleet ready", func() bool { return readyCount(g) == 3 })
	if _, err := aster.CallUnary[FleetReply](ctx, g, "Fleet.get", &FleetReq{}); status.FromError(err).Metadata()[middleware.BreakerOpenKey] == "" && time.Since(opened) < open {
		t.Fatalf("call through Retry with every breaker open: %v", err)
	}

	// Healed: after the open timeout a probe per producer closes its breaker.
	for _, p := range ps {
		p.failGet.Store(false)
	}
	fleetWait(t, "calls succeeding again", func() bool {
		_, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		return err == nil
	})
}

// fleetSourceOf lists ps in a new StaticSource.
func fleetSourceOf(ps []*testProducer) *discovery.StaticSource {
	entries := make([]discovery.Producer, len(ps))
	for i, p := range ps {
		entries[i] = p.entry()
	}
	return discovery.NewStaticSource(fleetName, entries...)
}

// BenchmarkFleetBreakerUnary measures unary calls at 32 callers through a
// Fleet of one producer without and with a CircuitBreaker among its
// middleware (whose per-producer breakers the balancer consults):
//
//	go test -run=NONE -bench=FleetBreakerUnary -benchmem -count=6 .
func BenchmarkFleetBreakerUnary(b *testing.B) {
	addr := missionServer(b)
	ctx := context.Background()
	req := &mission.StatusRequest{AgentID: "edge-node-7"}
	fleet := func(b *testing.B, opts ...aster.ClientOption) {
		src := discovery.NewStaticSource("bench/MissionControl", discovery.Producer{Addr: addr})
		f, err := aster.DialFleet(ctx, src, "bench/MissionControl", append([]aster.ClientOption{aster.WithSecretKey(testutil.Key(b, 3)), aster.WithFleetRetry(nil)}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		b.ReportAllocs()
		defer reportCPU(b)()
		b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 callers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := aster.CallUnary[mission.StatusResponse](ctx, f, "MissionControl.getStatus", req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("fleet", func(b *testing.B) { fleet(b) })
	b.Run("fleet-breaker", func(b *testing.B) {
		fleet(b, aster.WithClientMiddleware(middleware.CircuitBreaker(middleware.BreakerOptions{})))
	})
}
