package middleware_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// recoverUnderLoad checks that panicking calls become INTERNAL, are logged
// with their stack, and do not disturb 100 concurrent healthy calls.
func recoverUnderLoad(t *testing.T, quic bool) {
	ctx := context.Background()
	var logs logBuffer
	e := newEnv(t, envConfig{quic: quic, srvOpts: []aster.ServerOption{aster.WithMiddleware(
		middleware.Recover(middleware.RecoverOptions{Logger: logs.logger()}))}})
	c := e.client(t)
	const healthy, panicking = 100, 10
	var wg sync.WaitGroup
	errs := make(chan error, healthy+panicking)
	for i := range healthy {
		wg.Go(func() {
			r, err := unary(ctx, c, "get", &Msg{Key: "ok", N: i})
			if err == nil && r.N != i {
				err = status.Errorf(status.Internal, "got %d want %d", r.N, i)
			}
			errs <- err
		})
	}
	for range panicking {
		wg.Go(func() {
			_, err := unary(ctx, c, "panic", &Msg{Key: "p"})
			if status.CodeOf(err) != status.Internal {
				errs <- status.Errorf(status.Unknown, "panic call: %v", err)
				return
			}
			errs <- nil
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	recs := logs.records(t, "aster: handler panic")
	if len(recs) != panicking {
		t.Fatalf("%d panic records, want %d", len(recs), panicking)
	}
	r := recs[0]
	if r["method"] != "T.panic" || r["panic"] != "boom p" || !strings.Contains(r["stack"].(string), "goroutine") {
		t.Fatalf("record %v", r)
	}
	// The connection still works.
	if _, err := unary(ctx, c, "get", &Msg{}); err != nil {
		t.Fatal(err)
	}
}

func TestRecover(t *testing.T) { recoverUnderLoad(t, false) }

func TestRecoverCustom(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, envConfig{svcMW: []handler.Middleware{middleware.Recover(middleware.RecoverOptions{
		Logger: quietLogger(),
		Handle: func(_ context.Context, s handler.Stream, p any) error {
			return status.Errorf(status.Aborted, "%s panicked", s.Method().FullName())
		},
	})}})
	_, err := unary(ctx, e.client(t), "panic", &Msg{})
	wantCode(t, err, status.Aborted)
	if !strings.Contains(err.Error(), "T.panic panicked") {
		t.Fatal(err)
	}
}
