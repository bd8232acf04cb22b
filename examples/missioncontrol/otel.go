package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/aster-go/aster"
	asterotel "github.com/aster-go/aster/otel"
)

// demoClientOptions are the options of the -demo client (tracing when
// telemetry is on).
var demoClientOptions []aster.ClientOption

// withTelemetry turns on OpenTelemetry when the standard OTEL_* variables
// ask for export (e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317
// OTEL_EXPORTER_OTLP_PROTOCOL=grpc): it installs the OTLP exporters
// (otel.Setup), adds the tracing middleware and connection counting to the
// server options in *opts and the tracing middleware to the demo client. It
// returns the function that flushes and stops the exporters, to defer. With
// no OTEL_* variables set it does nothing. A telemetry setup error is logged
// and the server runs without telemetry: observability must not take the
// service down.
func withTelemetry(opts *[]aster.ServerOption, logger *slog.Logger) (flush func()) {
	if !asterotel.Configured() {
		return func() {}
	}
	shutdown, err := asterotel.Setup(context.Background(), asterotel.Config{ServiceName: "missioncontrol"})
	if err != nil {
		logger.Error("telemetry disabled", "err", err)
		return func() {}
	}
	*opts = append(*opts, aster.WithMiddleware(asterotel.Server()), aster.WithConnHook(asterotel.ConnHook()))
	demoClientOptions = []aster.ClientOption{aster.WithClientMiddleware(asterotel.Client())}
	logger.Info("telemetry on: exporting traces and metrics over OTLP")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			logger.Warn("telemetry flush failed", "err", err)
		}
	}
}
