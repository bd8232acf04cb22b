package otel_test

import (
	"context"
	"strings"
	"testing"

	gotel "go.opentelemetry.io/otel"

	asterotel "github.com/aster-go/aster/otel"
)

var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
}

// clearOTelEnv unsets the OTEL_* variables for the test and restores the
// global providers afterwards.
func clearOTelEnv(t *testing.T) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	tp, mp, prop := gotel.GetTracerProvider(), gotel.GetMeterProvider(), gotel.GetTextMapPropagator()
	t.Cleanup(func() {
		gotel.SetTracerProvider(tp)
		gotel.SetMeterProvider(mp)
		gotel.SetTextMapPropagator(prop)
	})
}

func TestConfigured(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318/v1/metrics"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"}, true},
	} {
		t.Run("", func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got := asterotel.Configured(); got != tc.want {
				t.Errorf("Configured() with %v = %v, want %v", tc.env, got, tc.want)
			}
		})
	}
}

// TestSetupUnconfigured: no OTEL_* variables → nothing installed.
func TestSetupUnconfigured(t *testing.T) {
	clearOTelEnv(t)
	tp, mp := gotel.GetTracerProvider(), gotel.GetMeterProvider()
	shutdown, err := asterotel.Setup(context.Background(), asterotel.Config{ServiceName: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if gotel.GetTracerProvider() != tp || gotel.GetMeterProvider() != mp {
		t.Error("Setup installed providers although no OTEL_* variable asks for export")
	}
	if err := shutdown(context.Background()); err != nil {
		t.Errorf("no-op shutdown: %v", err)
	}
}

func TestSetupErrors(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/json"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "thrift"}, "thrift"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_RESOURCE_ATTRIBUTES": "no-equals-sign"}, "resource"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tp := gotel.GetTracerProvider()
			shutdown, err := asterotel.Setup(context.Background(), asterotel.Config{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Setup with %v: error %v, want one mentioning %q", tc.env, err, tc.want)
			}
			if shutdown == nil {
				t.Fatal("Setup returned a nil shutdown")
			}
			shutdown(context.Background())
			if gotel.GetTracerProvider() != tp {
				t.Error("a failed Setup left a tracer provider installed")
			}
		})
	}
}
