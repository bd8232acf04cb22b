package otel_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// The collector integration test runs a real OpenTelemetry Collector
// (internal/tools/otelcol: OTLP receiver, batch processor, OTLP/HTTP and
// debug exporters), the Mission Control example exporting to it over OTLP
// gRPC, and "aster call --trace" exporting over OTLP HTTP. The collector
// forwards what it received to a sink in this test, which checks that the
// CLI's client span and the server's span share one trace and the right
// parent link, and that metrics arrived; then the example's -demo (client
// and server in one process, every call pattern and a session) over OTLP
// HTTP, checking each server span's parent is its client span.
//
// ASTER_OTELCOL names a prebuilt collector binary (.ci/run builds one);
// without it the test builds the collector itself (slow the first time).

// sink receives what the collector exports over OTLP/HTTP.
type sink struct {
	mu      sync.Mutex
	spans   []sinkSpan
	metrics map[string]map[string]bool // service.name → metric names
	// changed receives a value (without blocking; capacity 1) after each
	// export is stored, so that a waiter looks again only when there is
	// something new.
	changed chan struct{}
}

func newSink() *sink {
	return &sink{metrics: map[string]map[string]bool{}, changed: make(chan struct{}, 1)}
}

func (s *sink) notify() {
	select {
	case s.changed <- struct{}{}:
	default: // a notification is already pending
	}
}

// waitChange blocks until the sink stores something new or deadline
// passes; it reports false on the deadline.
func (s *sink) waitChange(deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-s.changed:
		return true
	case <-timer.C:
		return false
	}
}

type sinkSpan struct {
	service string
	span    *tracepb.Span
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var resp proto.Message
	switch r.URL.Path {
	case "/v1/traces":
		var req colltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		for _, rs := range req.ResourceSpans {
			svc := serviceName(rs.GetResource().GetAttributes())
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					s.spans = append(s.spans, sinkSpan{svc, sp})
				}
			}
		}
		s.mu.Unlock()
		s.notify()
		resp = &colltrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		var req collmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		for _, rm := range req.ResourceMetrics {
			svc := serviceName(rm.GetResource().GetAttributes())
			if s.metrics[svc] == nil {
				s.metrics[svc] = map[string]bool{}
			}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					s.metrics[svc][m.Name] = true
				}
			}
		}
		s.mu.Unlock()
		s.notify()
		resp = &collmetrics.ExportMetricsServiceResponse{}
	default:
		w.WriteHeader(http.StatusOK) // logs: not used
		return
	}
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func serviceName(attrs []*commonpb.KeyValue) string {
	for _, kv := range attrs {
		if kv.Key == "service.name" {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

func (s *sink) snapshot() ([]sinkSpan, map[string]map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]map[string]bool{}
	for k, v := range s.metrics {
		m[k] = map[string]bool{}
		for n := range v {
			m[k][n] = true
		}
	}
	return append([]sinkSpan(nil), s.spans...), m
}

// moduleRoot is the repository root (the otel package's parent).
func moduleRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

func goBuild(t *testing.T, dir, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func collectorBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("ASTER_OTELCOL"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("ASTER_OTELCOL: %v", err)
		}
		return p
	}
	out := filepath.Join(t.TempDir(), "aster-otelcol")
	goBuild(t, filepath.Join(moduleRoot(t), "internal", "tools", "otelcol"), out, ".")
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProcess starts cmd and arranges for it to be interrupted and
// reaped at the end of the test.
func startProcess(t *testing.T, name string, cmd *exec.Cmd) *testutil.SyncBuffer {
	t.Helper()
	logs := new(testutil.SyncBuffer)
	if cmd.Stderr == nil {
		cmd.Stderr = logs
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { stopProcess(t, name, cmd) })
	return logs
}

// stopProcess interrupts cmd and waits for it (killing it after 15 s).
// It is safe to call twice.
func stopProcess(t *testing.T, name string, cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not exit on SIGINT; killing it", name)
		cmd.Process.Kill()
		<-done
	}
}

// waitTCP waits until the collector, a separate process, accepts TCP
// connections on addr. Nothing in this process learns when another process
// starts listening, so this polls with a deadline; it does not stand in for
// synchronisation with this process's own goroutines.
func waitTCP(t *testing.T, addr string, logs *testutil.SyncBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not listening on %s: %v\n%s", addr, err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const collectorConfig = `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:%d
      http:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 100ms
exporters:
  debug:
    verbosity: basic
  otlp_http:
    endpoint: %s
    compression: none
    encoding: proto
    retry_on_failure:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp_http, debug]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp_http, debug]
`

var traceIDLine = regexp.MustCompile(`(?m)^trace-id: ([0-9a-f]{32})$`)

func TestCollector(t *testing.T) {
	root := moduleRoot(t)
	bin := t.TempDir()
	col := collectorBinary(t)
	goBuild(t, root, filepath.Join(bin, "missioncontrol"), "./examples/missioncontrol")
	goBuild(t, root, filepath.Join(bin, "aster"), "./cmd/aster")

	sk := newSink()
	hs := httptest.NewServer(sk)
	defer hs.Close()

	grpcPort, httpPort := freePort(t), freePort(t)
	cfgPath := filepath.Join(t.TempDir(), "collector.yaml")
	if err := os.WriteFile(cfgPath, fmt.Appendf(nil, collectorConfig, grpcPort, httpPort, hs.URL), 0o600); err != nil {
		t.Fatal(err)
	}
	colCmd := exec.Command(col, "--config="+cfgPath)
	colLogs := startProcess(t, "collector", colCmd)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", grpcPort), colLogs)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", httpPort), colLogs)

	// The server exports over OTLP gRPC.
	srv := exec.Command(filepath.Join(bin, "missioncontrol"))
	srv.Env = append(cleanEnv(),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+fmt.Sprintf("http://127.0.0.1:%d", grpcPort),
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_METRIC_EXPORT_INTERVAL=500",
		"ASTER_BIND_ADDR=127.0.0.1:0",
	)
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	srvLogs := startProcess(t, "missioncontrol", srv)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the server's address: %v\n%s", err, srvLogs)
	}
	addr := strings.TrimSpace(line)
	// The log (stderr) and the address (stdout) travel on different pipes:
	// the line may be read before the log that preceded it has arrived, so
	// wait for it a bounded time (an external process: no event to wait on).
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(srvLogs.String(), "telemetry on"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("server did not turn telemetry on; log:\n%s", srvLogs)
			break
		}
	}

	// The CLI exports over OTLP HTTP.
	cli := exec.Command(filepath.Join(bin, "aster"), "call", "--trace", addr, "MissionControl.getStatus", `{"agent_id":"edge-node-7"}`)
	cli.Env = append(cleanEnv(),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_SERVICE_NAME=aster-cli-test",
	)
	var cliOut, cliErr bytes.Buffer
	cli.Stdout, cli.Stderr = &cliOut, &cliErr
	if err := cli.Run(); err != nil {
		t.Fatalf("aster call --trace: %v\nstdout: %s\nstderr: %s", err, cliOut.String(), cliErr.String())
	}
	m := traceIDLine.FindStringSubmatch(cliErr.String())
	if m == nil {
		t.Fatalf("aster call --trace printed no trace id; stderr:\n%s", cliErr.String())
	}
	traceID := m[1]

	// Stopping the server flushes its telemetry.
	stopProcess(t, "missioncontrol", srv)

	var clientSpan, serverSpan, rootSpan *tracepb.Span
	var metrics map[string]map[string]bool
	deadline := time.Now().Add(60 * time.Second)
	for {
		var spans []sinkSpan
		spans, metrics = sk.snapshot()
		clientSpan, serverSpan, rootSpan = nil, nil, nil
		for _, s := range spans {
			if hex.EncodeToString(s.span.TraceId) != traceID {
				continue
			}
			switch {
			case s.span.Name == "aster call" && s.service == "aster-cli-test":
				rootSpan = s.span
			case s.span.Name == "MissionControl/getStatus" && s.span.Kind == tracepb.Span_SPAN_KIND_CLIENT && s.service == "aster-cli-test":
				clientSpan = s.span
			case s.span.Name == "MissionControl/getStatus" && s.span.Kind == tracepb.Span_SPAN_KIND_SERVER && s.service == "missioncontrol":
				serverSpan = s.span
			}
		}
		haveMetrics := metrics["missioncontrol"]["aster.rpc.duration"] && metrics["aster-cli-test"]["aster.rpc.completed"]
		if clientSpan != nil && serverSpan != nil && rootSpan != nil && haveMetrics {
			break
		}
		// The sink, in this process, says when the collector delivered more.
		if !sk.waitChange(deadline) {
			t.Fatalf("collector did not deliver everything for trace %s: root %v client %v server %v; metrics %v\n%d spans seen\ncollector log:\n%s\nserver log:\n%s",
				traceID, rootSpan != nil, clientSpan != nil, serverSpan != nil, metrics, len(spans), colLogs, srvLogs)
		}
	}
	if !bytes.Equal(clientSpan.ParentSpanId, rootSpan.SpanId) {
		t.Errorf("client span's parent %x, want the CLI root span %x", clientSpan.ParentSpanId, rootSpan.SpanId)
	}
	if !bytes.Equal(serverSpan.ParentSpanId, clientSpan.SpanId) {
		t.Errorf("server span's parent %x, want the client span %x", serverSpan.ParentSpanId, clientSpan.SpanId)
	}
	for _, sp := range []*tracepb.Span{clientSpan, serverSpan} {
		got := map[string]string{}
		for _, kv := range sp.Attributes {
			got[kv.Key] = kv.Value.String()
		}
		for _, k := range []string{"rpc.system", "rpc.service", "rpc.method", "rpc.response.status_code", "aster.peer.id", "rpc.aster.bytes_sent"} {
			if got[k] == "" {
				t.Errorf("%v span has no %s (attributes %v)", sp.Kind, k, got)
			}
		}
		if !strings.Contains(got["rpc.response.status_code"], "OK") {
			t.Errorf("%v span status_code %s, want OK", sp.Kind, got["rpc.response.status_code"])
		}
	}
	for _, name := range []string{"aster.rpc.started", "aster.rpc.completed", "aster.rpc.duration", "aster.rpc.active_streams", "aster.rpc.active_connections", "aster.rpc.bytes_received"} {
		if !metrics["missioncontrol"][name] {
			t.Errorf("server metric %s did not arrive (got %v)", name, metrics["missioncontrol"])
		}
	}

	// The demo drives every pattern (and a session) with a traced client in
	// the same process as the server, exporting over OTLP HTTP: each server
	// span arrives with its client span as parent.
	demo := exec.Command(filepath.Join(bin, "missioncontrol"), "-demo")
	demo.Env = append(cleanEnv(),
		"OTEL_EXPORTER_OTLP_ENDPOINT="+fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		"OTEL_SERVICE_NAME=mc-demo",
		"ASTER_BIND_ADDR=127.0.0.1:0",
	)
	if out, err := demo.CombinedOutput(); err != nil {
		t.Fatalf("missioncontrol -demo: %v\n%s", err, out)
	}
	want := []string{"MissionControl/getStatus", "MissionControl/tailLogs", "MissionControl/ingestMetrics",
		"AgentSession/register", "AgentSession/runCommand"}
	deadline = time.Now().Add(60 * time.Second)
	for {
		spans, _ := sk.snapshot()
		clients := map[string]*tracepb.Span{} // by span id
		for _, s := range spans {
			if s.service == "mc-demo" && s.span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
				clients[string(s.span.SpanId)] = s.span
			}
		}
		linked := map[string]bool{}
		var bad []string
		for _, s := range spans {
			if s.service != "mc-demo" || s.span.Kind != tracepb.Span_SPAN_KIND_SERVER {
				continue
			}
			c := clients[string(s.span.ParentSpanId)]
			switch {
			case c == nil:
				continue // its client span may not have arrived yet
			case c.Name != s.span.Name || !bytes.Equal(c.TraceId, s.span.TraceId):
				bad = append(bad, fmt.Sprintf("server %s under client %s", s.span.Name, c.Name))
			default:
				linked[s.span.Name] = true
			}
		}
		if len(bad) > 0 {
			t.Fatalf("wrong parent links: %v", bad)
		}
		missing := 0
		for _, n := range want {
			if !linked[n] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if !sk.waitChange(deadline) {
			t.Fatalf("demo spans: linked client/server pairs %v, want all of %v", linked, want)
		}
	}
}

// cleanEnv is the test's environment without OTEL_* and ASTER_* variables,
// so that the processes see only what the test sets.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "OTEL_") || strings.HasPrefix(kv, "ASTER_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
