package middleware_test

import (
	"context"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// slow is a limit that never refills during a test.
func slow(burst int) middleware.Limit { return middleware.Limit{Rate: 0.0001, Burst: burst} }

func wantLimited(t *testing.T, err error) {
	t.Helper()
	wantCode(t, err, status.ResourceExhausted)
	ms, perr := strconv.Atoi(status.FromError(err).Metadata()[middleware.RetryAfterKey])
	if perr != nil || ms <= 0 {
		t.Fatalf("retry-after hint %q in %v", status.FromError(err).Metadata()[middleware.RetryAfterKey], err)
	}
}

func TestRateLimitPerPeer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: slow(2)}))}})
	a, b := e.client(t), e.client(t)
	for range 2 {
		if _, err := unary(ctx, a, "get", &Msg{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := unary(ctx, a, "get", &Msg{Key: "limited"})
	wantLimited(t, err)
	if e.svc.count("limited") != 0 {
		t.Fatal("the handler ran for a limited call")
	}
	// Every pattern is limited.
	_, _, err = list(ctx, a, &Msg{N: 1})
	wantLimited(t, err)
	_, err = sum(ctx, a, []*Msg{{N: 1}})
	wantLimited(t, err)
	_, err = chat(ctx, a, []*Msg{{N: 1}})
	wantLimited(t, err)
	// Another peer has its own bucket.
	if _, err := unary(ctx, b, "get", &Msg{}); err != nil {
		t.Fatalf("other peer: %v", err)
	}
}

func TestRateLimitScopes(t *testing.T) {
	ctx := context.Background()
	t.Run("global", func(t *testing.T) {
		e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
			middleware.RateLimit(middleware.RateLimitOptions{Global: slow(3)}))}})
		a, b := e.client(t), e.client(t)
		for _, c := range []*aster.Client{a, b, a} {
			if _, err := unary(ctx, c, "get", &Msg{}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := unary(ctx, b, "get", &Msg{})
		wantLimited(t, err)
	})
	t.Run("per service", func(t *testing.T) {
		e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
			middleware.RateLimit(middleware.RateLimitOptions{PerService: map[string]middleware.Limit{"T": slow(1), "Other": slow(0)}}))}})
		c := e.client(t)
		if _, err := unary(ctx, c, "get", &Msg{}); err != nil {
			t.Fatal(err)
		}
		_, err := unary(ctx, c, "put", &Msg{})
		wantLimited(t, err)
	})
	t.Run("per method, and a refused call takes no token from the others", func(t *testing.T) {
		e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
			middleware.RateLimit(middleware.RateLimitOptions{Global: slow(3), PerMethod: map[string]middleware.Limit{"T.put": slow(1)}}))}})
		c := e.client(t)
		if _, err := unary(ctx, c, "put", &Msg{}); err != nil {
			t.Fatal(err)
		}
		_, err := unary(ctx, c, "put", &Msg{})
		wantLimited(t, err)
		for range 2 {
			if _, err := unary(ctx, c, "get", &Msg{}); err != nil {
				t.Fatal(err)
			}
		}
		_, err = unary(ctx, c, "get", &Msg{})
		wantLimited(t, err)
	})
}

// Retry honours the server's retry-after hint: a limited idempotent call
// succeeds once a token is back.
func TestRateLimitWithRetry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: middleware.Limit{Rate: 100, Burst: 1}}))}})
	c := fetched(t, e.client(t, middleware.Retry(middleware.RetryOptions{MaxAttempts: 10})))
	for range 3 {
		if _, err := unary(ctx, c, "get", &Msg{}); err != nil {
			t.Fatal(err)
		}
	}
	// A refusal is marked not processed, so a non-idempotent call is
	// retried too.
	var retries atomic.Int64
	opts := middleware.RetryOptions{MaxAttempts: 10, OnRetry: func(*middleware.Call, int, error, time.Duration) { retries.Add(1) }}
	c1 := fetched(t, e.client(t, middleware.Retry(opts)))
	for range 3 {
		if _, err := unary(ctx, c1, "put", &Msg{}); err != nil {
			t.Fatal(err)
		}
	}
	if retries.Load() == 0 {
		t.Fatal("no non-idempotent call was retried")
	}
	// A server asking for a wait beyond MaxBackoff (here about 3 hours) is
	// not waited for: the call fails at once, carrying the hint.
	e2 := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: slow(1)}))}})
	retries.Store(0)
	c2 := fetched(t, e2.client(t, middleware.Retry(opts)))
	if _, err := unary(ctx, c2, "get", &Msg{}); err != nil {
		t.Fatal(err)
	}
	_, err := unary(ctx, c2, "get", &Msg{})
	wantLimited(t, err)
	if !status.IsNotProcessed(err) {
		t.Errorf("rate-limited call %v is not marked not processed", err)
	}
	if n := retries.Load(); n != 0 {
		t.Fatalf("%d retries of a call told to wait hours", n)
	}
}

// A negative or NaN rate, or a negative burst, is refused when the
// middleware is built: it used to mean "no limit", so a sign slip switched
// the protection off.
func TestRateLimitBadLimitPanics(t *testing.T) {
	for name, opts := range map[string]middleware.RateLimitOptions{
		"global rate":  {Global: middleware.Limit{Rate: -1}},
		"peer NaN":     {PerPeer: middleware.Limit{Rate: math.NaN()}},
		"peer burst":   {PerPeer: middleware.Limit{Rate: 1, Burst: -5}},
		"service rate": {PerService: map[string]middleware.Limit{"Svc": {Rate: -10}}},
		"method rate":  {PerMethod: map[string]middleware.Limit{"Svc.get": {Rate: -0.5}}},
	} {
		func() {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, "RateLimit") {
					t.Errorf("%s: recovered %v, want a RateLimit panic", name, r)
				}
			}()
			middleware.RateLimit(opts)
		}()
	}
	middleware.RateLimit(middleware.RateLimitOptions{Global: middleware.Limit{}, PerPeer: slow(1)}) // zero and positive: fine
}
