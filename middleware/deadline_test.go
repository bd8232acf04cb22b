package middleware_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

func TestDeadlineServer(t *testing.T) {
	ctx := context.Background()
	short := 20 * time.Millisecond
	cases := []struct {
		name     string
		opts     middleware.DeadlineOptions
		timeout  time.Duration // the caller's, 0: none
		method   string
		wantCode status.Code
	}{
		{name: "default timeout cancels the handler", opts: middleware.DeadlineOptions{Default: short}, method: "wait", wantCode: status.DeadlineExceeded},
		{name: "per-method override", opts: middleware.DeadlineOptions{Default: time.Hour, PerMethod: map[string]time.Duration{"T.wait": short}}, method: "wait", wantCode: status.DeadlineExceeded},
		{name: "per-service override", opts: middleware.DeadlineOptions{PerMethod: map[string]time.Duration{"T": short}}, method: "wait", wantCode: status.DeadlineExceeded},
		{name: "max caps the caller's deadline", opts: middleware.DeadlineOptions{Max: short}, timeout: time.Hour, method: "wait", wantCode: status.DeadlineExceeded},
		{name: "fast call within budget", opts: middleware.DeadlineOptions{Default: time.Hour}, method: "get", wantCode: status.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envConfig{svcMW: []handler.Middleware{middleware.Deadline(tc.opts)}})
			c := e.client(t)
			ctx := ctx
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			_, err := unary(ctx, c, tc.method, &Msg{Key: "k"})
			wantCode(t, err, tc.wantCode)
		})
	}
}

// A default deadline applies to every pattern, and a handler blocked in Recv
// ends with its budget.
func TestDeadlineServerStreams(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{svcMW: []handler.Middleware{middleware.Deadline(middleware.DeadlineOptions{Default: 20 * time.Millisecond})}})
	c := e.client(t)
	// The handler reads until the client closes its side, which it never does.
	s, err := aster.CallBidiStream[Msg, Msg](ctx, c, "T.chat")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(&Msg{Key: "x", N: 1}); err != nil {
		t.Fatal(err)
	}
	for { // the reply may or may not come first
		if _, err = s.Recv(); err != nil {
			break
		}
	}
	wantCode(t, err, status.DeadlineExceeded)

	// A client stream whose caller never finishes sending.
	cs, err := c.NewStream(ctx, &middleware.Call{Service: "T", Method: "sum", Pattern: handler.PatternClientStream})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if err := cs.Send(&Msg{Key: "y", N: 1}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, cs.Recv(new(Msg)), status.DeadlineExceeded)
}

func TestDeadlineServerUnit(t *testing.T) {
	mw := middleware.Deadline(middleware.DeadlineOptions{})
	called := false
	h := mw(handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error { called = true; return nil }))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err := h.ServeRPC(ctx, newFakeStream("S", "m"))
	wantCode(t, err, status.DeadlineExceeded)
	if called {
		t.Fatal("handler ran for an expired call")
	}

	// A handler that ignores its budget and reports success still fails.
	// The budget is long enough that it cannot run out before the handler
	// starts on a loaded machine (1 ms did, under -race), short enough to
	// keep the test quick.
	mw = middleware.Deadline(middleware.DeadlineOptions{Default: 100 * time.Millisecond})
	h = mw(handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error { <-ctx.Done(); return nil }))
	wantCode(t, h.ServeRPC(context.Background(), newFakeStream("S", "m")), status.DeadlineExceeded)
	// A handler returning the context's error gets DEADLINE_EXCEEDED.
	h = mw(handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error { <-ctx.Done(); return ctx.Err() }))
	wantCode(t, h.ServeRPC(context.Background(), newFakeStream("S", "m")), status.DeadlineExceeded)
	// Its own code is kept.
	h = mw(handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
		<-ctx.Done()
		return status.New(status.Aborted, "gave up")
	}))
	wantCode(t, h.ServeRPC(context.Background(), newFakeStream("S", "m")), status.Aborted)

	// A per-method entry replaces Default and Max for its method.
	mw = middleware.Deadline(middleware.DeadlineOptions{Default: time.Second, Max: time.Minute,
		PerMethod: map[string]time.Duration{"S.tail": time.Hour, "S.free": 0}})
	budget := func(method string, callerTimeout time.Duration) (left time.Duration, has bool) {
		h := mw(handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			var dl time.Time
			dl, has = ctx.Deadline()
			left = time.Until(dl)
			return nil
		}))
		ctx := context.Background()
		if callerTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, callerTimeout)
			defer cancel()
		}
		if err := h.ServeRPC(ctx, newFakeStream("S", method)); err != nil {
			t.Fatal(err)
		}
		return left, has
	}
	if left, has := budget("tail", 0); !has || left <= time.Minute {
		t.Fatalf("S.tail budget %v %v, want an hour", left, has)
	}
	if left, has := budget("tail", 2*time.Hour); !has || left > time.Hour {
		t.Fatalf("S.tail with a 2h caller budget: %v %v, want capped at an hour", left, has)
	}
	if left, has := budget("other", 2*time.Hour); !has || left > time.Minute {
		t.Fatalf("S.other: %v %v, want capped at Max", left, has)
	}
	if left, has := budget("other", 0); !has || left > time.Second {
		t.Fatalf("S.other: %v %v, want Default", left, has)
	}
	if _, has := budget("free", 0); has {
		t.Fatal("S.free got a deadline")
	}
}

func TestClientDeadline(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{})
	c := e.client(t, middleware.ClientDeadline(middleware.DeadlineOptions{
		Default:   20 * time.Millisecond,
		PerMethod: map[string]time.Duration{"T.deadline": time.Hour},
	}))
	_, err := unary(ctx, c, "wait", &Msg{})
	wantCode(t, err, status.DeadlineExceeded)
	// The deadline travels to the server.
	r, err := unary(ctx, c, "deadline", &Msg{})
	if err != nil || r.Key != "true" {
		t.Fatalf("server saw deadline %v, %v", r, err)
	}
	// Without the middleware, no deadline.
	r, err = unary(ctx, e.client(t), "deadline", &Msg{})
	if err != nil || r.Key != "false" {
		t.Fatalf("server saw deadline %v, %v", r, err)
	}
	// Streams: a bidi call that ends in time is fine; one that never ends
	// is cut by the deadline.
	long, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err = chat(long, c, nil); err != nil {
		t.Fatal(err)
	}
	s, err := aster.CallBidiStream[Msg, Msg](ctx, c, "T.chat")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Recv()
	wantCode(t, err, status.DeadlineExceeded)

	// An expired context fails at once.
	dctx, dcancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer dcancel()
	_, err = unary(dctx, c, "get", &Msg{})
	wantCode(t, err, status.DeadlineExceeded)
}

// A negative duration is refused when the middleware is built: it used to
// mean "no timeout", so a sign slip switched the bound off.
func TestDeadlineNegativePanics(t *testing.T) {
	for name, o := range map[string]middleware.DeadlineOptions{
		"default":    {Default: -time.Second},
		"max":        {Max: -time.Minute},
		"per method": {PerMethod: map[string]time.Duration{"Svc.get": -1}},
	} {
		for _, build := range []func(middleware.DeadlineOptions){
			func(o middleware.DeadlineOptions) { middleware.Deadline(o) },
			func(o middleware.DeadlineOptions) { middleware.ClientDeadline(o) },
		} {
			func() {
				defer func() {
					if msg, _ := recover().(string); !strings.Contains(msg, "negative duration") {
						t.Errorf("%s: recovered %q, want a negative-duration panic", name, msg)
					}
				}()
				build(o)
			}()
		}
	}
	middleware.Deadline(middleware.DeadlineOptions{Default: time.Second, PerMethod: map[string]time.Duration{"Svc": 0}})
}
