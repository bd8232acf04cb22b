// Package otelexport installs OpenTelemetry exporters as the standard OTEL_*
// environment variables say, for programs that use the aster/otel
// middleware. It is kept apart from aster/otel so that the middleware links
// only the OpenTelemetry API: the SDK, the OTLP exporters and their gRPC and
// HTTP clients are linked only by a program that imports this package.
//
// The exporters are built by the OpenTelemetry contrib autoexport package
// (go.opentelemetry.io/contrib/exporters/autoexport); this package decides
// whether to export at all (Configured), reports unsupported values with
// the variable that holds them, and installs the global providers and
// propagator.
package otelexport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	gotel "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	asterotel "github.com/aster-go/aster/otel"
)

// Config holds what Setup cannot read from the environment. The zero value
// is usable.
type Config struct {
	// ServiceName names the service when neither OTEL_SERVICE_NAME nor
	// OTEL_RESOURCE_ATTRIBUTES does. Default: the SDK's
	// "unknown_service:<program>".
	ServiceName string
	// Sampler overrides OTEL_TRACES_SAMPLER; a tool that traces on request
	// (aster call --trace) sets sdktrace.AlwaysSample(). Default: the
	// environment's sampler, else parentbased_always_on.
	Sampler sdktrace.Sampler
}

// The exporters each signal accepts in OTEL_TRACES_EXPORTER and
// OTEL_METRICS_EXPORTER (the names autoexport registers).
var exporters = map[string][]string{
	"TRACES":  {"otlp", "console", "none"},
	"METRICS": {"otlp", "console", "prometheus", "none"},
}

func exporterOf(signal string) string {
	return strings.TrimSpace(os.Getenv("OTEL_" + signal + "_EXPORTER"))
}

// Configured reports whether the standard OpenTelemetry environment asks
// for export: an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or its
// _TRACES_ / _METRICS_ form), or OTEL_TRACES_EXPORTER or
// OTEL_METRICS_EXPORTER names an exporter other than "none" — and
// OTEL_SDK_DISABLED is not "true".
func Configured() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	return signalOn("TRACES") || signalOn("METRICS")
}

func signalOn(signal string) bool {
	switch exporterOf(signal) {
	case "none":
		return false
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
	}
	return true // a named exporter (an unsupported one is reported by check)
}

// check reports an exporter or OTLP protocol that autoexport would refuse,
// naming the variable and its value (autoexport's own errors name neither).
func check() error {
	for _, sig := range []string{"TRACES", "METRICS"} {
		e := exporterOf(sig)
		if e != "" && !slices.Contains(exporters[sig], e) {
			return fmt.Errorf("otelexport: OTEL_%s_EXPORTER=%q is not supported (use one of %s)", sig, e, strings.Join(exporters[sig], ", "))
		}
		if !signalOn(sig) || (e != "" && e != "otlp") {
			continue
		}
		for _, k := range []string{"OTEL_EXPORTER_OTLP_" + sig + "_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
			if p := os.Getenv(k); p != "" {
				if p != "grpc" && p != "http/protobuf" {
					return fmt.Errorf("otelexport: %s=%q is not supported (use grpc or http/protobuf)", k, p)
				}
				break // the signal's own variable wins over the general one
			}
		}
	}
	return nil
}

// Setup installs global tracer and meter providers that export as the
// standard environment variables say, and the W3C trace-context and baggage
// propagator (otel.DefaultPropagator):
//
//   - OTEL_TRACES_EXPORTER: "otlp" (default), "console" (stdout) or "none";
//   - OTEL_METRICS_EXPORTER: "otlp" (default), "console", "prometheus" (an
//     HTTP endpoint on OTEL_EXPORTER_PROMETHEUS_HOST:_PORT, default
//     localhost:9464) or "none";
//   - OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT / _METRICS_ENDPOINT),
//     _HEADERS, _TIMEOUT, _COMPRESSION, _INSECURE, _CERTIFICATE: read by the
//     official OTLP exporters;
//   - OTEL_EXPORTER_OTLP_PROTOCOL (or _TRACES_PROTOCOL / _METRICS_PROTOCOL):
//     "grpc" or "http/protobuf" (default);
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: the resource;
//   - OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: the sampler (default
//     parentbased_always_on);
//   - OTEL_METRIC_EXPORT_INTERVAL: how often metrics are pushed (default 60 s);
//   - OTEL_SDK_DISABLED=true: nothing at all.
//
// The returned shutdown flushes pending spans and metrics and stops the
// exporters; call it before the program exits. When the environment asks
// for no export (Configured is false), Setup installs nothing, costs
// nothing, and returns a shutdown that does nothing. OTLP exporters connect
// lazily: an unreachable collector does not fail Setup, it drops data. An
// unsupported exporter or protocol, or a malformed OTEL_RESOURCE_ATTRIBUTES,
// fails Setup and installs nothing.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if err := check(); err != nil {
		return noop, err
	}
	if !Configured() {
		return noop, nil
	}
	res, err := cfg.resource(ctx)
	if err != nil {
		return noop, err
	}
	var shutdowns []func(context.Context) error
	shutdown = func(ctx context.Context) error {
		var errs []error
		for _, fn := range shutdowns {
			errs = append(errs, fn(ctx))
		}
		return errors.Join(errs...)
	}
	fail := func(err error) (func(context.Context) error, error) {
		shutdown(ctx)
		return noop, err
	}

	// Build everything first; install only if all of it worked.
	var tp *sdktrace.TracerProvider
	var mp *sdkmetric.MeterProvider
	if signalOn("TRACES") {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return fail(fmt.Errorf("otelexport: trace exporter: %w", err))
		}
		topts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
		if cfg.Sampler != nil {
			topts = append(topts, sdktrace.WithSampler(cfg.Sampler))
		}
		tp = sdktrace.NewTracerProvider(topts...)
		shutdowns = append(shutdowns, tp.Shutdown)
	}
	if signalOn("METRICS") {
		r, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return fail(fmt.Errorf("otelexport: metric reader: %w", err))
		}
		mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r), sdkmetric.WithResource(res))
		shutdowns = append(shutdowns, mp.Shutdown)
	}
	if tp != nil {
		gotel.SetTracerProvider(tp)
	}
	if mp != nil {
		gotel.SetMeterProvider(mp)
	}
	gotel.SetTextMapPropagator(asterotel.DefaultPropagator())
	return shutdown, nil
}

func (c Config) resource(ctx context.Context) (*resource.Resource, error) {
	// resource.Default also reads the environment but only logs a malformed
	// OTEL_RESOURCE_ATTRIBUTES; read it once more to report it.
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("otelexport: resource from OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME: %w", err)
	}
	res := resource.Default() // SDK, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
	if c.ServiceName == "" || env.Set().HasValue("service.name") {
		return res, nil // the environment names the service, or nobody does
	}
	res, err = resource.Merge(res, resource.NewSchemaless(attribute.String("service.name", c.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("otelexport: resource: %w", err)
	}
	return res, nil
}
