package middleware_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

func fastRetry() middleware.RetryOptions {
	return middleware.RetryOptions{InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
}

func TestRetryUnary(t *testing.T) {
	ctx := context.Background()
	unavailable := uint32(status.Unavailable)
	cases := []struct {
		name      string
		method    string
		msg       Msg
		opts      []aster.CallOption
		wantCode  status.Code
		wantCalls int
	}{
		{"idempotent method recovers", "get", Msg{Fail: 2, Code: unavailable}, nil, status.OK, 3},
		{"non-idempotent method not retried", "put", Msg{Fail: 2, Code: unavailable}, nil, status.Unavailable, 1},
		{"non-idempotent method retried when not processed", "put", Msg{Fail: 2, Code: unavailable, NotProcessed: true}, nil, status.OK, 3},
		{"not processed but a code that is never retried", "put", Msg{Fail: 1, Code: uint32(status.InvalidArgument), NotProcessed: true}, nil, status.InvalidArgument, 1},
		{"not processed attempts run out", "put", Msg{Fail: 5, Code: unavailable, NotProcessed: true}, nil, status.Unavailable, 3},
		{"per-call opt-in", "put", Msg{Fail: 2, Code: unavailable}, []aster.CallOption{aster.Idempotent()}, status.OK, 3},
		{"attempts run out", "get", Msg{Fail: 5, Code: unavailable}, nil, status.Unavailable, 3},
		{"application code never retried", "get", Msg{Fail: 1, Code: 100}, nil, status.Code(100), 1},
		{"invalid argument not retried", "get", Msg{Fail: 1, Code: uint32(status.InvalidArgument)}, nil, status.InvalidArgument, 1},
		{"resource exhausted without hint not retried", "get", Msg{Fail: 1, Code: uint32(status.ResourceExhausted)}, nil, status.ResourceExhausted, 1},
		{"resource exhausted with retry-after retried", "get", Msg{Fail: 1, Code: uint32(status.ResourceExhausted), After: 2}, nil, status.OK, 2},
	}
	e := newEnv(t, envConfig{})
	var retries atomic.Int64
	opts := fastRetry()
	opts.OnRetry = func(*middleware.Call, int, error, time.Duration) { retries.Add(1) }
	c := fetched(t, e.client(t, middleware.Retry(opts)))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.msg.Key = t.Name()
			resp, err := unary(ctx, c, tc.method, &tc.msg, tc.opts...)
			wantCode(t, err, tc.wantCode)
			if got := e.svc.count(t.Name()); got != tc.wantCalls {
				t.Fatalf("server saw %d calls, want %d", got, tc.wantCalls)
			}
			if err == nil && resp.Key != t.Name() {
				t.Fatalf("response %+v", resp)
			}
			// Attempts are visible to the server in metadata.
			want := []string{""}
			for i := 2; i <= tc.wantCalls; i++ {
				want = append(want, string(rune('0'+i)))
			}
			if got := e.svc.attemptHeaders(t.Name()); !slices.Equal(got, want) {
				t.Fatalf("attempt headers %q, want %q", got, want)
			}
		})
	}
	if retries.Load() == 0 {
		t.Fatal("OnRetry never ran")
	}
}

// The methods the server's contract marks idempotent are retried once the
// client has fetched the contract, without a call option.
func TestRetryIdempotentFromContract(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	c := e.client(t, middleware.Retry(fastRetry()))
	if _, _, err := c.Contract(ctx); err != nil {
		t.Fatal(err)
	}
	var sawIdem, sawPut bool
	probe := func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			if call.Method == "list" {
				sawIdem = call.Idempotent
			}
			if call.Method == "put" {
				sawPut = call.Idempotent
			}
			return next.NewStream(ctx, call)
		})
	}
	c2 := e.client(t, probe)
	if _, _, err := c2.Contract(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := list(ctx, c2, &Msg{Key: "x", N: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := unary(ctx, c2, "put", &Msg{Key: "y"}); err != nil {
		t.Fatal(err)
	}
	if !sawIdem || sawPut {
		t.Fatalf("middleware saw idempotent list=%v put=%v, want true false", sawIdem, sawPut)
	}
	got, tr, err := list(ctx, c, &Msg{Key: t.Name(), N: 2, Fail: 1, Code: uint32(status.Unavailable)})
	if err != nil || !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("list = %v, %v", got, err)
	}
	if tr[middleware.AttemptsKey] != "2" {
		t.Fatalf("trailer %v: want %s=2", tr, middleware.AttemptsKey)
	}
}

func TestRetryStreams(t *testing.T) {
	ctx := context.Background()
	unavailable := uint32(status.Unavailable)
	e := newEnv(t, envConfig{})
	c := fetched(t, e.client(t, middleware.Retry(fastRetry())))

	t.Run("server stream failing before its first message is retried", func(t *testing.T) {
		got, tr, err := list(ctx, c, &Msg{Key: t.Name(), N: 3, Fail: 2, Code: unavailable})
		if err != nil || !slices.Equal(got, []int{0, 1, 2}) || e.svc.count(t.Name()) != 3 {
			t.Fatalf("got %v, %v after %d calls", got, err, e.svc.count(t.Name()))
		}
		if tr[middleware.AttemptsKey] != "3" {
			t.Fatalf("trailer %v", tr)
		}
	})
	t.Run("server stream that delivered a message is never retried", func(t *testing.T) {
		got, _, err := list(ctx, c, &Msg{Key: t.Name(), N: 3, Fail: 1, Code: unavailable, Sent: 1})
		wantCode(t, err, status.Unavailable)
		if !slices.Equal(got, []int{0}) || e.svc.count(t.Name()) != 1 {
			t.Fatalf("got %v after %d calls", got, e.svc.count(t.Name()))
		}
	})
	t.Run("client stream is replayed", func(t *testing.T) {
		msgs := []*Msg{{Key: t.Name(), N: 1, Fail: 1, Code: unavailable}, {N: 2}, {N: 3}}
		resp, err := sum(ctx, c, msgs)
		if err != nil || resp.N != 6 || resp.Key != "3" || e.svc.count(t.Name()) != 2 {
			t.Fatalf("sum = %+v, %v after %d calls", resp, err, e.svc.count(t.Name()))
		}
	})
	t.Run("client stream beyond the replay limit is not retried", func(t *testing.T) {
		opts := fastRetry()
		opts.MaxReplayMessages = 2
		c := fetched(t, e.client(t, middleware.Retry(opts)))
		msgs := []*Msg{{Key: t.Name(), N: 1, Fail: 1, Code: unavailable}, {N: 2}, {N: 3}}
		_, err := sum(ctx, c, msgs)
		wantCode(t, err, status.Unavailable)
		if e.svc.count(t.Name()) != 1 {
			t.Fatalf("%d calls", e.svc.count(t.Name()))
		}
	})
	t.Run("bidi failing before any response is replayed", func(t *testing.T) {
		msgs := []*Msg{{Key: t.Name(), N: 1, Fail: 1, Code: unavailable}, {N: 2}}
		got, err := chat(ctx, c, msgs)
		if err != nil || !slices.Equal(got, []int{2, 4}) || e.svc.count(t.Name()) != 2 {
			t.Fatalf("chat = %v, %v after %d calls", got, err, e.svc.count(t.Name()))
		}
	})
	t.Run("session calls are retried", func(t *testing.T) {
		// Session calls go through the same middleware; the test service
		// is shared, so the server refuses them with FAILED_PRECONDITION,
		// which is not retryable.
		sess := c.NewSession()
		defer sess.Close(ctx)
		_, err := unary(ctx, sess, "get", &Msg{Key: t.Name()})
		wantCode(t, err, status.FailedPrecondition)
	})
}

func TestRetryBudgetAndDeadline(t *testing.T) {
	ctx := context.Background()
	unavailable := uint32(status.Unavailable)
	e := newEnv(t, envConfig{})

	t.Run("empty budget", func(t *testing.T) {
		opts := fastRetry()
		opts.Budget = middleware.NewRetryBudget(0, 0)
		c := fetched(t, e.client(t, middleware.Retry(opts)))
		_, err := unary(ctx, c, "get", &Msg{Key: t.Name(), Fail: 1, Code: unavailable})
		wantCode(t, err, status.Unavailable)
		if n := e.svc.count(t.Name()); n != 1 {
			t.Fatalf("%d calls", n)
		}
	})
	t.Run("budget caps retries in an outage", func(t *testing.T) {
		opts := fastRetry()
		opts.Budget = middleware.NewRetryBudget(0.2, 2)
		c := fetched(t, e.client(t, middleware.Retry(opts)))
		const calls = 20
		for i := range calls {
			_, err := unary(ctx, c, "get", &Msg{Key: t.Name(), Fail: 1000, Code: unavailable, N: i})
			wantCode(t, err, status.Unavailable)
		}
		// 2 initial tokens + 0.2 per call; never more than MaxAttempts-1 per call.
		n := e.svc.count(t.Name())
		if extra := n - calls; extra < 1 || float64(extra) > 2+0.2*calls {
			t.Fatalf("%d retries for %d calls", extra, calls)
		}
	})
	t.Run("deadline shorter than the backoff", func(t *testing.T) {
		opts := middleware.RetryOptions{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
		c := fetched(t, e.client(t, middleware.Retry(opts)))
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, err := unary(ctx, c, "get", &Msg{Key: t.Name(), Fail: 1, Code: unavailable})
		wantCode(t, err, status.Unavailable)
		if n := e.svc.count(t.Name()); n != 1 {
			t.Fatalf("%d calls", n)
		}
	})
	t.Run("caller cancels during the backoff", func(t *testing.T) {
		opts := middleware.RetryOptions{InitialBackoff: time.Hour, MaxBackoff: time.Hour}
		ctx, cancel := context.WithCancel(ctx)
		opts.OnRetry = func(*middleware.Call, int, error, time.Duration) { cancel() }
		c := fetched(t, e.client(t, middleware.Retry(opts)))
		_, err := unary(ctx, c, "get", &Msg{Key: t.Name(), Fail: 1, Code: unavailable})
		wantCode(t, err, status.Canceled)
	})
}

// Inner middleware sees the attempt number through the context.
func TestRetryAttemptInContext(t *testing.T) {
	e := newEnv(t, envConfig{})
	var seen []int
	record := func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			seen = append(seen, middleware.Attempt(ctx))
			return next.NewStream(ctx, call)
		})
	}
	c := fetched(t, e.client(t, middleware.Retry(fastRetry()), record))
	seen = nil
	if _, err := unary(context.Background(), c, "get", &Msg{Key: t.Name(), Fail: 2, Code: uint32(status.Unavailable)}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []int{1, 2, 3}) {
		t.Fatalf("attempts %v", seen)
	}
}

// A server that is down (the dial fails) is retried until it returns.
func TestRetryDialFailure(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.Server.Close()
	opts := fastRetry()
	opts.MaxAttempts = 5
	restarted := make(chan struct{})
	opts.OnRetry = func(_ *middleware.Call, attempt int, err error, _ time.Duration) {
		if attempt == 3 {
			e.Restart(t)
			close(restarted)
		}
	}
	c := e.client(t, middleware.Retry(opts))
	if _, err := unary(context.Background(), c, "get", &Msg{Key: t.Name()}, aster.Idempotent()); err != nil {
		t.Fatal(err)
	}
	<-restarted
}

// Retry learns that a method is idempotent from the server's contract by
// itself, through the client's MethodDescriber: no Client.Contract call is
// needed.
func TestRetryFetchesContractItself(t *testing.T) {
	ctx := context.Background()
	for _, quic := range []bool{false, true} {
		e := newEnv(t, envConfig{quic: quic})
		var fetches atomic.Int64
		count := func(next middleware.Caller) middleware.Caller {
			d, ok := middleware.FindDescriber(next)
			if !ok {
				t.Fatal("the client's caller is not a MethodDescriber")
			}
			return countingDescriber{Caller: next, d: d, n: &fetches}
		}
		c := e.client(t, middleware.Retry(fastRetry()), count)
		name := t.Name() + map[bool]string{false: "mem", true: "quic"}[quic]
		resp, err := unary(ctx, c, "get", &Msg{Key: name, Fail: 2, Code: uint32(status.Unavailable)})
		if err != nil || resp.Key != name {
			t.Fatalf("idempotent get without an explicit contract fetch: %+v, %v", resp, err)
		}
		if n := e.svc.count(name); n != 3 {
			t.Fatalf("server saw %d calls, want 3", n)
		}
		// Not idempotent: not retried.
		_, err = unary(ctx, c, "put", &Msg{Key: name + "put", Fail: 1, Code: uint32(status.Unavailable)})
		wantCode(t, err, status.Unavailable)
		if n := fetches.Load(); n != 2 {
			t.Fatalf("DescribeMethod ran %d times, want once per call (2)", n)
		}
	}
}

// countingDescriber counts DescribeMethod calls through a Caller.
type countingDescriber struct {
	middleware.Caller
	d middleware.MethodDescriber
	n *atomic.Int64
}

func (c countingDescriber) DescribeMethod(ctx context.Context, call *middleware.Call) (middleware.MethodSpec, error) {
	c.n.Add(1)
	return c.d.DescribeMethod(ctx, call)
}

// WithIdempotent declares a method idempotent on the client.
func TestRetryWithIdempotentOption(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	c := e.Client(t, aster.WithIdempotent("T.put"), aster.WithClientMiddleware(middleware.Retry(fastRetry())))
	if _, err := unary(ctx, c, "put", &Msg{Key: t.Name(), Fail: 1, Code: uint32(status.Unavailable)}); err != nil {
		t.Fatal(err)
	}
	if n := e.svc.count(t.Name()); n != 2 {
		t.Fatalf("server saw %d calls, want 2", n)
	}
}
