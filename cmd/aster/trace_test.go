package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// TestCallTrace runs "aster call --trace" (no OTEL_* variables: nothing is
// exported) against an in-process server recording its spans: the trace id
// the CLI prints is the trace of the server's span, whose parent is the
// CLI's client span. Without --trace nothing is sent or printed.
func TestCallTrace(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		t.Setenv(k, "")
	}
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithMiddleware(asterotel.Server(asterotel.WithTracerProvider(tp))))
	srv.MustRegister(mission.NewMissionControl().Service())
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-done; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	addr := ln.Addr().String()

	r := runAster(t, "", "call", "--trace", addr, "MissionControl.getStatus", `{"agent_id":"edge-node-7"}`)
	r.want(t, 0)
	m := regexp.MustCompile(`(?m)^trace-id: ([0-9a-f]{32})$`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no trace-id line on stderr:\n%s", r.stderr)
	}
	spans := sr.Ended()
	if len(spans) != 1 {
		t.Fatalf("server recorded %d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Name() != "MissionControl/getStatus" || s.SpanKind() != trace.SpanKindServer {
		t.Errorf("server span %v %q", s.SpanKind(), s.Name())
	}
	if got := s.SpanContext().TraceID().String(); got != m[1] {
		t.Errorf("server span in trace %s, CLI printed %s", got, m[1])
	}
	if !s.Parent().IsRemote() || !s.Parent().IsSampled() {
		t.Errorf("server span's parent %+v: want the CLI's sampled client span", s.Parent())
	}

	// Without --trace: no trace context sent, nothing printed.
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", `{"agent_id":"edge-node-7"}`)
	r.want(t, 0)
	if strings.Contains(r.stderr, "trace-id") {
		t.Errorf("trace-id printed without --trace:\n%s", r.stderr)
	}
	spans = sr.Ended()
	if len(spans) != 2 || spans[1].Parent().IsValid() {
		t.Errorf("without --trace the server span should be a root span; spans %d, parent %+v", len(spans), spans[len(spans)-1].Parent())
	}
	tp.Shutdown(context.Background())
}
