package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	gotel "go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/aster-go/aster"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/otel/otelexport"
)

// traceFlagUsage is the help text of --trace.
const traceFlagUsage = "trace the call with OpenTelemetry: always sampled, the trace id is printed on stderr, " +
	"the context is sent to the server, and spans and metrics are exported over OTLP when " +
	"OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER=otlp) is set"

// addTraceFlag adds --trace to cmd, stored in *on.
func addTraceFlag(cmd *cobra.Command, on *bool) {
	cmd.Flags().BoolVar(on, "trace", false, traceFlagUsage)
}

// startTrace begins tracing one command when on is true. It returns the
// context to make the calls with (holding the command's root span, so that
// every call of the command is in one trace), the client options that
// install the tracing middleware, and end, which ends the root span, prints
// "trace-id: <hex>" on stderr and flushes the exporters (bounded by a few
// seconds). When on is false it returns ctx unchanged, no options and a
// no-op end: no cost.
//
// With the OTEL_* environment configured it exports through otelexport.Setup
// (service name "aster-cli" unless OTEL_SERVICE_NAME says otherwise);
// without, the spans are recorded but not exported, which still sends a
// sampled trace context to the server, whose own spans then carry the
// printed trace id.
func startTrace(ctx context.Context, on bool, name string, stderr io.Writer) (context.Context, []aster.ClientOption, func(), error) {
	if !on {
		return ctx, nil, func() {}, nil
	}
	var shutdown func(context.Context) error
	if otelexport.Configured() {
		var err error
		shutdown, err = otelexport.Setup(ctx, otelexport.Config{ServiceName: "aster-cli", Sampler: sdktrace.AlwaysSample()})
		if err != nil {
			return ctx, nil, nil, err
		}
	} else {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		gotel.SetTracerProvider(tp)
		shutdown = tp.Shutdown
	}
	ctx, span := gotel.Tracer(asterotel.ScopeName).Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	end := func() {
		span.End()
		fmt.Fprintf(stderr, "trace-id: %s\n", span.SpanContext().TraceID())
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(fctx); err != nil {
			fmt.Fprintf(stderr, "trace: flushing telemetry: %v\n", err)
		}
	}
	return ctx, []aster.ClientOption{aster.WithClientMiddleware(asterotel.Client())}, end, nil
}
