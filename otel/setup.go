package otel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	gotel "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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

func (Config) getenv(k string) string { return os.Getenv(k) }

// Configured reports whether the standard OpenTelemetry environment asks
// for export: an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or its
// _TRACES_ / _METRICS_ form) or OTEL_TRACES_EXPORTER or
// OTEL_METRICS_EXPORTER is "otlp" — and OTEL_SDK_DISABLED is not "true".
func Configured() bool { return Config{}.configured() }

func (c Config) configured() bool {
	if strings.EqualFold(c.getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	return c.tracesOn() || c.metricsOn()
}

func (c Config) signalOn(signal string) bool {
	exp := strings.ToLower(strings.TrimSpace(c.getenv("OTEL_" + signal + "_EXPORTER")))
	switch exp {
	case "none":
		return false
	case "otlp":
		return true
	case "":
	default:
		return false // an exporter this package does not provide; reported by Setup
	}
	return c.getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || c.getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

func (c Config) tracesOn() bool  { return c.signalOn("TRACES") }
func (c Config) metricsOn() bool { return c.signalOn("METRICS") }

// protocol returns the OTLP protocol for a signal: "grpc" or "http/protobuf"
// (the specification's default).
func (c Config) protocol(signal string) (string, error) {
	p := c.getenv("OTEL_EXPORTER_OTLP_" + signal + "_PROTOCOL")
	if p == "" {
		p = c.getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch p = strings.ToLower(strings.TrimSpace(p)); p {
	case "":
		return "http/protobuf", nil
	case "grpc", "http/protobuf":
		return p, nil
	}
	return "", fmt.Errorf("otel: OTLP protocol %q is not supported (use grpc or http/protobuf)", p)
}

func (c Config) checkExporters() error {
	for _, sig := range []string{"TRACES", "METRICS"} {
		switch e := strings.ToLower(strings.TrimSpace(c.getenv("OTEL_" + sig + "_EXPORTER"))); e {
		case "", "otlp", "none":
		default:
			return fmt.Errorf("otel: OTEL_%s_EXPORTER=%q is not supported (use otlp or none)", sig, e)
		}
	}
	return nil
}

// Setup installs global tracer and meter providers that export over OTLP,
// and the W3C trace-context and baggage propagator, as the standard
// environment variables say:
//
//   - OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT / _METRICS_ENDPOINT),
//     _HEADERS, _TIMEOUT, _COMPRESSION, _INSECURE, _CERTIFICATE: read by the
//     official OTLP exporters;
//   - OTEL_EXPORTER_OTLP_PROTOCOL (or _TRACES_PROTOCOL / _METRICS_PROTOCOL):
//     "grpc" or "http/protobuf" (default);
//   - OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER: "otlp" or "none";
//   - OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: the resource;
//   - OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG: the sampler (default
//     parentbased_always_on);
//   - OTEL_METRIC_EXPORT_INTERVAL: how often metrics are pushed (default 60 s);
//   - OTEL_SDK_DISABLED=true: nothing at all.
//
// The returned shutdown flushes pending spans and metrics and stops the
// exporters; call it before the program exits. When the environment asks
// for no export (Configured is false), Setup installs nothing, costs
// nothing, and returns a shutdown that does nothing. Exporters connect
// lazily: an unreachable collector does not fail Setup, it drops data.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	noop := func(context.Context) error { return nil }
	if !cfg.configured() {
		return noop, cfg.checkExporters()
	}
	if err := cfg.checkExporters(); err != nil {
		return noop, err
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
	if cfg.tracesOn() {
		exp, err := cfg.traceExporter(ctx)
		if err != nil {
			return fail(err)
		}
		topts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
		if cfg.Sampler != nil {
			topts = append(topts, sdktrace.WithSampler(cfg.Sampler))
		}
		tp = sdktrace.NewTracerProvider(topts...)
		shutdowns = append(shutdowns, tp.Shutdown)
	}
	if cfg.metricsOn() {
		exp, err := cfg.metricExporter(ctx)
		if err != nil {
			return fail(err)
		}
		mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)), sdkmetric.WithResource(res))
		shutdowns = append(shutdowns, mp.Shutdown)
	}
	if tp != nil {
		gotel.SetTracerProvider(tp)
	}
	if mp != nil {
		gotel.SetMeterProvider(mp)
	}
	gotel.SetTextMapPropagator(DefaultPropagator())
	return shutdown, nil
}

func (c Config) resource(ctx context.Context) (*resource.Resource, error) {
	// resource.Default also reads the environment but only logs a malformed
	// OTEL_RESOURCE_ATTRIBUTES; read it once more to report it.
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("otel: resource from OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME: %w", err)
	}
	res := resource.Default() // SDK, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
	if c.ServiceName == "" || env.Set().HasValue("service.name") {
		return res, nil // the environment names the service, or nobody does
	}
	res, err = resource.Merge(res, resource.NewSchemaless(attribute.String("service.name", c.ServiceName)))
	if err != nil {
		return nil, fmt.Errorf("otel: resource: %w", err)
	}
	return res, nil
}

func (c Config) traceExporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	p, err := c.protocol("TRACES")
	if err != nil {
		return nil, err
	}
	var exp sdktrace.SpanExporter
	if p == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("otel: OTLP trace exporter (%s): %w", p, err)
	}
	return exp, nil
}

func (c Config) metricExporter(ctx context.Context) (sdkmetric.Exporter, error) {
	p, err := c.protocol("METRICS")
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if p == "grpc" {
		exp, err = otlpmetricgrpc.New(ctx)
	} else {
		exp, err = otlpmetrichttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("otel: OTLP metric exporter (%s): %w", p, err)
	}
	return exp, nil
}
