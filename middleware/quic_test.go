package middleware_test

import (
	"context"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// End to end over QUIC on loopback: the scenarios.

func TestQUICRetry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{quic: true})
	c := fetched(t, e.client(t, middleware.Retry(fastRetry())))
	unavailable := uint32(status.Unavailable)
	// A flaky idempotent method succeeds through retries.
	if _, err := unary(ctx, c, "get", &Msg{Key: "idem", Fail: 2, Code: unavailable}); err != nil {
		t.Fatal(err)
	}
	if n := e.svc.count("idem"); n != 3 {
		t.Fatalf("%d attempts", n)
	}
	// A non-idempotent one is not retried.
	_, err := unary(ctx, c, "put", &Msg{Key: "once", Fail: 2, Code: unavailable})
	wantCode(t, err, status.Unavailable)
	if n := e.svc.count("once"); n != 1 {
		t.Fatalf("%d attempts", n)
	}
	// Streams: replayed before a response, never after one.
	if got, err := chat(ctx, c, []*Msg{{Key: "bidi", N: 1, Fail: 1, Code: unavailable}, {N: 5}}); err != nil || len(got) != 2 {
		t.Fatalf("chat %v %v", got, err)
	}
	_, _, err = list(ctx, c, &Msg{Key: "delivered", N: 3, Fail: 1, Code: unavailable, Sent: 2})
	wantCode(t, err, status.Unavailable)
	if n := e.svc.count("delivered"); n != 1 {
		t.Fatalf("%d attempts", n)
	}
}

func TestQUICRecover(t *testing.T) { recoverUnderLoad(t, true) }

func TestQUICRateLimitPerPeer(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{quic: true, srvOpts: []aster.ServerOption{aster.WithMiddleware(
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: slow(1)}))}})
	a, b := e.client(t), e.client(t)
	if _, err := unary(ctx, a, "get", &Msg{}); err != nil {
		t.Fatal(err)
	}
	_, err := unary(ctx, a, "get", &Msg{})
	wantLimited(t, err)
	if _, err := unary(ctx, b, "get", &Msg{}); err != nil {
		t.Fatalf("other peer: %v", err)
	}
}

// A server that goes away trips the breaker; calls then fail fast.
func TestQUICBreaker(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{quic: true})
	b := middleware.NewBreakers(middleware.BreakerOptions{})
	c := e.client(t, b.Middleware(), middleware.ClientDeadline(middleware.DeadlineOptions{Default: 300 * time.Millisecond}))
	// The first call dials; give it a generous budget of its own.
	first, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := unary(first, c, "get", &Msg{}); err != nil {
		t.Fatal(err)
	}
	e.Server.Close()
	for range 3 {
		_, err := unary(ctx, c, "get", &Msg{})
		if code := status.CodeOf(err); code != status.Unavailable && code != status.DeadlineExceeded {
			t.Fatalf("call to a dead server: %v", err)
		}
	}
	_, err := unary(ctx, c, "get", &Msg{})
	wantCode(t, err, status.Unavailable)
	if status.FromError(err).Metadata()[middleware.BreakerOpenKey] == "" {
		t.Fatalf("breaker did not open: %v", err)
	}
}
