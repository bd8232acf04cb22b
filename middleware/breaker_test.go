package middleware_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// countCalls is client middleware counting the calls that get past it.
func countCalls(n *atomic.Int64) middleware.Client {
	return func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			n.Add(1)
			return next.NewStream(ctx, call)
		})
	}
}

// A dead server trips the breaker; it recovers once the server is back.
// The test runs in a synctest bubble: OpenTimeout passes on the fake clock.
func TestBreakerDeadServerRecovers(t *testing.T) {
	synctest.Test(t, testBreakerDeadServerRecovers)
}

func testBreakerDeadServerRecovers(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	const open = 2 * time.Second // not the default, so the option is what is tested
	transitions := make(chan middleware.BreakerState, 10)
	b := middleware.NewBreakers(middleware.BreakerOptions{
		OpenTimeout:   open,
		OnStateChange: func(_ string, _, to middleware.BreakerState) { transitions <- to },
	})
	var reached atomic.Int64
	c := e.client(t, b.Middleware(), countCalls(&reached))
	call := &middleware.Call{Peer: e.Addr.ID, Service: "T", Method: "get"}
	if _, err := unary(ctx, c, "get", &Msg{Key: "a"}); err != nil {
		t.Fatal(err)
	}

	e.Server.Close()
	for i := range 3 {
		_, err := unary(ctx, c, "get", &Msg{Key: "a"})
		wantCode(t, err, status.Unavailable)
		if i < 2 && b.State(call) != middleware.BreakerClosed {
			t.Fatalf("breaker %v after %d failures", b.State(call), i+1)
		}
	}
	if got := <-transitions; got != middleware.BreakerOpen {
		t.Fatalf("transition to %v", got)
	}
	before := reached.Load()
	_, err := unary(ctx, c, "get", &Msg{Key: "a"})
	wantCode(t, err, status.Unavailable)
	se := status.FromError(err)
	if !strings.Contains(err.Error(), "breaker "+e.Addr.ID.Short()) || se.Metadata()[middleware.BreakerOpenKey] == "" {
		t.Fatalf("open breaker error %q %v does not name the breaker", err, se.Metadata())
	}
	if reached.Load() != before {
		t.Fatal("a call went past the open breaker")
	}

	// The server comes back; after OpenTimeout one probe closes the breaker.
	e.Restart(t)
	time.Sleep(open - time.Millisecond)
	_, err = unary(ctx, c, "get", &Msg{Key: "a"})
	wantCode(t, err, status.Unavailable)
	if b.State(call) != middleware.BreakerOpen || reached.Load() != before {
		t.Fatalf("breaker %v before OpenTimeout passed", b.State(call))
	}
	time.Sleep(2 * time.Millisecond) // OpenTimeout has passed: a probe goes through
	if _, err := unary(ctx, c, "get", &Msg{Key: "a"}); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if got := <-transitions; got != middleware.BreakerHalfOpen {
		t.Fatalf("transition to %v", got)
	}
	if got := <-transitions; got != middleware.BreakerClosed {
		t.Fatalf("transition to %v", got)
	}
	if _, err := unary(ctx, c, "get", &Msg{Key: "a"}); err != nil {
		t.Fatal(err)
	}
}

func TestBreakerCodes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	cases := []struct {
		code   status.Code
		listed bool // in FailureCodes; otherwise the defaults apply
		trip   bool
	}{
		{status.Code(100), true, false},
		{status.Code(4242), true, false},
		{status.InvalidArgument, true, false},
		{status.NotFound, true, false},
		{status.PermissionDenied, true, false},
		{status.FailedPrecondition, false, false},
		{status.FailedPrecondition, true, true},
		{status.Unavailable, false, true},
		{status.Internal, false, true},
		{status.DeadlineExceeded, false, true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v/listed=%v", tc.code, tc.listed), func(t *testing.T) {
			// Even listed, the never-trip codes do not trip the breaker.
			var opts middleware.BreakerOptions
			if tc.listed {
				opts.FailureCodes = []status.Code{tc.code}
			}
			b := middleware.NewBreakers(opts)
			c := e.client(t, b.Middleware())
			for range 5 {
				_, err := unary(ctx, c, "put", &Msg{Key: t.Name(), Fail: 1000, Code: uint32(tc.code)})
				if status.CodeOf(err) != tc.code && status.FromError(err).Metadata()[middleware.BreakerOpenKey] == "" {
					t.Fatalf("got %v", err)
				}
			}
			call := &middleware.Call{Peer: e.Addr.ID, Service: "T", Method: "put"}
			if got := b.State(call) == middleware.BreakerOpen; got != tc.trip {
				t.Fatalf("open = %v, want %v", got, tc.trip)
			}
			if tc.trip && e.svc.count(t.Name()) != 3 {
				t.Fatalf("server saw %d calls, want 3 before the breaker opened", e.svc.count(t.Name()))
			}
		})
	}
}

func TestBreakerPerMethodAndStreams(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	b := middleware.NewBreakers(middleware.BreakerOptions{PerMethod: true, ConsecutiveFailures: 2})
	c := e.client(t, b.Middleware())
	unavailable := uint32(status.Unavailable)

	// A server stream that delivered a message proves the target alive.
	for range 3 {
		_, _, err := list(ctx, c, &Msg{Key: "l", Fail: 1000, Code: unavailable, Sent: 1})
		wantCode(t, err, status.Unavailable)
	}
	// Client streams and bidi streams that fail count.
	for range 2 {
		_, err := sum(ctx, c, []*Msg{{Key: "s", Fail: 1000, Code: unavailable}})
		wantCode(t, err, status.Unavailable)
		_, err = chat(ctx, c, []*Msg{{Key: "c", Fail: 1000, Code: unavailable}})
		wantCode(t, err, status.Unavailable)
	}
	state := func(m string) middleware.BreakerState {
		return b.State(&middleware.Call{Peer: e.Addr.ID, Service: "T", Method: m})
	}
	if state("list") != middleware.BreakerClosed || state("sum") != middleware.BreakerOpen || state("chat") != middleware.BreakerOpen {
		t.Fatalf("list %v sum %v chat %v", state("list"), state("sum"), state("chat"))
	}
	// Other methods are unaffected.
	if _, err := unary(ctx, c, "get", &Msg{Key: "g"}); err != nil {
		t.Fatal(err)
	}
	_, err := sum(ctx, c, []*Msg{{Key: "s"}})
	if !strings.Contains(err.Error(), "breaker "+e.Addr.ID.Short()+"/T.sum") {
		t.Fatalf("got %v", err)
	}
	// A call the caller abandons counts neither way: failure, abandoned
	// call, failure opens the breaker (two consecutive failures).
	_, _, err = list(ctx, c, &Msg{Key: "l2", Fail: 1000, Code: unavailable})
	wantCode(t, err, status.Unavailable)
	ss, err := aster.CallServerStream[Msg](ctx, c, "T.list", &Msg{Key: "l3", N: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ss.Close()
	if state("list") != middleware.BreakerClosed {
		t.Fatal("abandoned call counted as a failure")
	}
	_, _, err = list(ctx, c, &Msg{Key: "l2", Fail: 1000, Code: unavailable})
	wantCode(t, err, status.Unavailable)
	if state("list") != middleware.BreakerOpen {
		t.Fatal("abandoned call counted as a success")
	}
}

// ReadyToTrip replaces the consecutive-failure rule, Interval clears the
// counts of a CLOSED breaker, and OnStateChange reports aster's states
// under the breaker's name.
func TestBreakerReadyToTripAndInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		e := newEnv(t, envConfig{})
		type change struct {
			name     string
			from, to middleware.BreakerState
		}
		var changes []change
		var seen []middleware.BreakerCounts
		b := middleware.NewBreakers(middleware.BreakerOptions{
			// Two failures in one interval trip, consecutive or not.
			ReadyToTrip: func(c middleware.BreakerCounts) bool {
				seen = append(seen, c)
				return c.TotalFailures >= 2
			},
			Interval:      10 * time.Second,
			OnStateChange: func(name string, from, to middleware.BreakerState) { changes = append(changes, change{name, from, to}) },
		})
		c := e.client(t, b.Middleware())
		call := &middleware.Call{Peer: e.Addr.ID, Service: "T", Method: "put"}
		fail := func(key string) {
			t.Helper()
			_, err := unary(ctx, c, "put", &Msg{Key: key, Fail: 1, Code: uint32(status.Unavailable)})
			wantCode(t, err, status.Unavailable)
		}
		ok := func() {
			t.Helper()
			if _, err := unary(ctx, c, "put", &Msg{Key: "ok"}); err != nil {
				t.Fatal(err)
			}
		}

		fail("a")
		ok()
		time.Sleep(11 * time.Second) // the interval ends: counts cleared
		fail("b")
		if got := b.State(call); got != middleware.BreakerClosed {
			t.Fatalf("breaker %v after one failure in the new interval", got)
		}
		ok()
		fail("c") // not consecutive, but the second in this interval
		if got := b.State(call); got != middleware.BreakerOpen {
			t.Fatalf("breaker %v, want open", got)
		}
		want := []change{{b.Name(call), middleware.BreakerClosed, middleware.BreakerOpen}}
		if !slices.Equal(changes, want) {
			t.Fatalf("state changes %v, want %v", changes, want)
		}
		last := seen[len(seen)-1]
		if last.Requests != 3 || last.TotalFailures != 2 || last.TotalSuccesses != 1 || last.ConsecutiveFailures != 1 {
			t.Fatalf("counts at the trip: %+v", last)
		}
	})
}

func TestBreakerStateString(t *testing.T) {
	for s, want := range map[middleware.BreakerState]string{
		middleware.BreakerClosed: "closed", middleware.BreakerHalfOpen: "half-open", middleware.BreakerOpen: "open", 7: "BreakerState(7)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}
