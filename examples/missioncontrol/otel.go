package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/aster-go/aster"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/otel/otelexport"
)

// telemetry is what OpenTelemetry adds to the example: server options
// (tracing middleware and connection counting), client options for the -demo
// client (tracing middleware) and the function that flushes the exporters.
// Install the options before the other middleware options so that the otel
// middleware is outermost on each side (its span then covers the whole call,
// including what the inner middleware rejects; message byte counts come from
// the framework's streams through middleware.StatsOf whatever wraps them).
type telemetry struct {
	server []aster.ServerOption
	client []aster.ClientOption
	flush  func()
}

// setupTelemetry turns on OpenTelemetry when the standard OTEL_* variables
// ask for export (e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc): it installs the OTLP exporters
// (otelexport.Setup) and returns the options that add the middleware. With no
// OTEL_* variables set it returns no options and a no-op flush. A telemetry
// setup error is logged and the example runs without telemetry:
// observability must not take the service down.
func setupTelemetry(logger *slog.Logger) telemetry {
	off := telemetry{flush: func() {}}
	if !otelexport.Configured() {
		return off
	}
	shutdown, err := otelexport.Setup(context.Background(), otelexport.Config{ServiceName: "missioncontrol"})
	if err != nil {
		logger.Error("telemetry disabled", "err", err)
		return off
	}
	logger.Info("telemetry on: exporting traces and metrics as the OTEL_* variables say")
	return telemetry{
		server: []aster.ServerOption{aster.WithMiddleware(asterotel.Server()), aster.WithConnHook(asterotel.ConnHook())},
		client: []aster.ClientOption{aster.WithClientMiddleware(asterotel.Client())},
		flush: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil {
				logger.Warn("telemetry flush failed", "err", err)
			}
		},
	}
}
