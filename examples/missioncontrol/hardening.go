package main

import (
	"log/slog"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// Hardening for production: the middleware chain on each side, in the order
// package middleware documents.

// serverHardening contains handler panics, logs every call (successes at
// DEBUG, failures at WARN/ERROR), bounds each call's time (tails may run for
// an hour) and caps each agent at 100 calls a second.
func serverHardening(logger *slog.Logger) aster.ServerOption {
	return aster.WithMiddleware(
		middleware.Recover(middleware.RecoverOptions{Logger: logger}),
		middleware.Logging(middleware.LogOptions{Logger: logger, Level: quietSuccess}),
		middleware.Deadline(middleware.DeadlineOptions{
			Default:   30 * time.Second,
			Max:       5 * time.Minute,
			PerMethod: map[string]time.Duration{"MissionControl.tailLogs": time.Hour, "AgentSession.runCommand": time.Hour},
		}),
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: middleware.Limit{Rate: 100, Burst: 200}}),
	)
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
