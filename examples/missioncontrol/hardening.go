package main

import (
	"flag"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// Hardening for production: the middleware chain on each side, in the order
// package middleware documents.

// perPeerRate is each agent's call rate limit (calls a second; burst
// twice that), the -rate flag. 0 turns the limit off, e.g. for a load test
// from one client.
var perPeerRate = flag.Float64("rate", 100, "calls a second each agent (peer) may make, with a burst of twice that; 0: no limit")

// maxRate bounds -rate: beyond it the burst (twice the rate) would not be
// a sensible int, and no agent needs more.
const maxRate = 1e6

// checkRate refuses a -rate that is negative, not a number or above
// maxRate (a negative rate used to mean "no limit" without a word).
func checkRate(r float64) error {
	if math.IsNaN(r) || r < 0 || r > maxRate {
		return fmt.Errorf("-rate %v: must be between 0 (no limit) and %g calls a second", r, float64(maxRate))
	}
	return nil
}

// serverHardening contains handler panics, logs every call (successes at
// DEBUG, failures at WARN/ERROR), bounds each call's time (tails may run for
// an hour) and caps each agent at -rate (100) calls a second.
func serverHardening(logger *slog.Logger) aster.ServerOption {
	mw := []handler.Middleware{
		middleware.Recover(middleware.RecoverOptions{Logger: logger}),
		middleware.Logging(middleware.LogOptions{Logger: logger, Level: quietSuccess}),
		middleware.Deadline(middleware.DeadlineOptions{
			Default:   30 * time.Second,
			Max:       5 * time.Minute,
			PerMethod: map[string]time.Duration{"MissionControl.tailLogs": time.Hour, "AgentSession.runCommand": time.Hour},
		}),
	}
	if r := *perPeerRate; r > 0 {
		mw = append(mw, middleware.RateLimit(middleware.RateLimitOptions{PerPeer: middleware.Limit{Rate: r, Burst: int(2 * r)}}))
	}
	return aster.WithMiddleware(mw...)
}

// clientHardening gives calls a default deadline, retries idempotent calls
// (getStatus) on UNAVAILABLE with backoff, and fails fast while the server
// is down.
func clientHardening(logger *slog.Logger) aster.ClientOption {
	return aster.WithClientMiddleware(
		middleware.ClientLogging(middleware.LogOptions{Logger: logger, Level: quietSuccess}),
		middleware.ClientDeadline(middleware.DeadlineOptions{Default: 10 * time.Second}),
		middleware.Retry(middleware.RetryOptions{}),
		middleware.CircuitBreaker(middleware.BreakerOptions{}),
	)
}

func quietSuccess(c status.Code) slog.Level {
	switch c {
	case status.OK, status.Canceled:
		return slog.LevelDebug
	case status.Internal, status.Unknown, status.DataLoss:
		return slog.LevelError
	}
	return slog.LevelWarn
}
