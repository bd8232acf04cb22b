package middleware_test

import (
	"context"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

type tally struct{ n int }

func (t *tally) add(_ context.Context, m *Msg) (*Msg, error) {
	t.n += m.N
	if m.Fail > 0 && t.n == m.N { // first call of the session fails once
		return nil, status.New(status.Unavailable, "warming up")
	}
	return &Msg{N: t.n}, nil
}

// Middleware on both sides runs for session calls, and Retry retries them
// within the session.
func TestSessionCalls(t *testing.T) {
	ctx := context.Background()
	var srvLogs, cliLogs logBuffer
	tallies := handler.NewSessionService("Tally", 1, func(context.Context, handler.Peer) (*tally, error) { return &tally{}, nil }).
		Use(middleware.Logging(middleware.LogOptions{Logger: srvLogs.logger()})).
		Handle("add", handler.On(func(t *tally) handler.Def { return handler.Unary(t.add) }), handler.Idempotent())
	e := newEnv(t, envConfig{})
	if err := e.Server.Register(tallies); err != nil {
		t.Fatal(err)
	}
	c := fetched(t, e.client(t,
		middleware.ClientLogging(middleware.LogOptions{Logger: cliLogs.logger()}),
		middleware.Retry(fastRetry())))
	sess := c.NewSession()
	defer sess.Close(ctx)
	// The first attempt adds 5 and fails; the retry reaches the same
	// instance, which then holds 10.
	r, err := aster.CallUnary[Msg](ctx, sess, "Tally.add", &Msg{N: 5, Fail: 1})
	if err != nil || r.N != 10 {
		t.Fatalf("add = %v, %v", r, err)
	}
	if got := len(srvLogs.records(t, "aster: call")); got != 2 {
		t.Fatalf("%d server records, want 2 (one per attempt)", got)
	}
	recs := cliLogs.records(t, "aster: call")
	if len(recs) != 1 || recs[0]["session"] != float64(sess.ID()) || recs[0]["attempts"] != "2" || recs[0]["code"] != "OK" {
		t.Fatalf("client records %v", recs)
	}
}
