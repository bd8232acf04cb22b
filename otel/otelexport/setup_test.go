package otelexport_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	gotel "go.opentelemetry.io/otel"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/otel/otelexport"
)

var otelVars = []string{
	"OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRICS_PRODUCERS",
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
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "none"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}, false},
	} {
		t.Run("", func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			if got := otelexport.Configured(); got != tc.want {
				t.Errorf("Configured() with %v = %v, want %v", tc.env, got, tc.want)
			}
		})
	}
}

// TestSetupUnconfigured: no OTEL_* variables → nothing installed.
func TestSetupUnconfigured(t *testing.T) {
	clearOTelEnv(t)
	tp, mp := gotel.GetTracerProvider(), gotel.GetMeterProvider()
	shutdown, err := otelexport.Setup(context.Background(), otelexport.Config{ServiceName: "x"})
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
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\""},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "thrift"}, "thrift"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=\"zipkin\""},
		{map[string]string{"OTEL_METRICS_EXPORTER": "OTLP"}, "OTEL_METRICS_EXPORTER=\"OTLP\""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc ", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_RESOURCE_ATTRIBUTES": "no-equals-sign"}, "resource"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			tp := gotel.GetTracerProvider()
			shutdown, err := otelexport.Setup(context.Background(), otelexport.Config{})
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

// An unconfigured environment with an unsupported protocol is not an error:
// nothing would use the protocol.
func TestSetupProtocolUnused(t *testing.T) {
	clearOTelEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := otelexport.Setup(context.Background(), otelexport.Config{}); err != nil {
		t.Errorf("Setup: %v", err)
	}
}

// TestSetupExportsOTLPHTTP: with an OTLP/HTTP endpoint set, Setup installs
// providers whose spans and metrics reach the endpoint when shutdown
// flushes them.
func TestSetupExportsOTLPHTTP(t *testing.T) {
	clearOTelEnv(t)
	var mu sync.Mutex
	got := map[string]string{} // path → service.name seen in the body
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = string(b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer hs.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", hs.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
	ctx := context.Background()
	shutdown, err := otelexport.Setup(ctx, otelexport.Config{ServiceName: "setup-test"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := gotel.Tracer("test").Start(ctx, "op")
	span.End()
	counter, _ := gotel.Meter("test").Int64Counter("test.count")
	counter.Add(ctx, 1)
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"/v1/traces", "/v1/metrics"} {
		if !strings.Contains(got[p], "setup-test") {
			t.Errorf("%s: no export naming the service (got %q)", p, got[p])
		}
	}
	if !strings.Contains(got["/v1/traces"], "op") || !strings.Contains(got["/v1/metrics"], "test.count") {
		t.Errorf("exports lack the span or the metric: %q", got)
	}
}

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
