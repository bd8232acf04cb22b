package aster_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport/mem"
)

// httpGet fetches url and returns the status code and body.
func httpGet(t *testing.T, url string) (int, string, error) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	c.CloseIdleConnections()
	return resp.StatusCode, string(b), err
}

// pollUntil polls cond until it holds, failing the test after a generous
// bound (a hang guard, not a timing assertion).
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestHealthEndpoints serves over QUIC on loopback with the health server
// on, and checks /healthz, /readyz and /metrics over real HTTP, including
// readiness flipping to 503 while Shutdown drains a call.
func TestHealthEndpoints(t *testing.T) {
	e := newEnv(t, transports[1], aster.WithHealth("127.0.0.1:0", true))
	started, release := make(chan struct{}), make(chan struct{})
	e.srv.MustRegister(handler.NewService("Block", 1).Handle("wait", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
		close(started)
		select {
		case <-release:
			return m, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})))
	pollUntil(t, "the health server", func() bool { return e.srv.HealthAddr() != nil })
	base := "http://" + e.srv.HealthAddr().String()

	if code, body, err := httpGet(t, base+"/healthz"); err != nil || code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q %v", code, body, err)
	}
	if code, body, err := httpGet(t, base+"/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz while serving = %d %q %v", code, body, err)
	}

	ctx := context.Background()
	for range 3 {
		if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.echo", &Msg{Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := aster.CallUnary[Msg](ctx, e.client, "Test.nope", &Msg{}); err == nil {
		t.Fatal("unknown method succeeded")
	}
	code, body, err := httpGet(t, base+"/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics = %d %v", code, err)
	}
	var m aster.Metrics
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("/metrics is not JSON: %v: %s", err, body)
	}
	// The client fetched the contract (one more OK call) before calling.
	if m.Connections != 1 || m.Calls["NOT_FOUND"] != 1 || m.Calls["OK"] < 3 {
		t.Errorf("/metrics = %+v, want 1 connection, 1 NOT_FOUND, at least 3 OK", m)
	}

	// The same counters in the Prometheus text format.
	code, body, err = httpGet(t, base+"/metrics/prometheus")
	if err != nil || code != 200 {
		t.Fatalf("/metrics/prometheus = %d %v", code, err)
	}
	for _, line := range []string{
		"# TYPE aster_server_calls_total counter",
		`aster_server_calls_total{code="NOT_FOUND"} 1`,
		"aster_server_connections 1",
		"# TYPE aster_server_active_calls gauge",
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics/prometheus lacks %q:\n%s", line, body)
		}
	}

	// Hold a call in flight, start Shutdown: not ready while it drains.
	callDone := make(chan error, 1)
	go func() {
		_, err := aster.CallUnary[Msg](ctx, e.client, "Block.wait", &Msg{Text: "slow"})
		callDone <- err
	}()
	<-started
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- e.srv.Shutdown(ctx) }()
	pollUntil(t, "/readyz to answer 503", func() bool {
		code, _, err := httpGet(t, base+"/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})
	if code, _, err := httpGet(t, base+"/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz while draining = %d %v, want 200", code, err)
	}
	// Earlier calls leave the count just after their trailer went out, so
	// the client may see their answers before the count drops: wait for it.
	pollUntil(t, "/metrics to show exactly the 1 in-flight call", func() bool {
		code, body, _ = httpGet(t, base+"/metrics")
		m = aster.Metrics{}
		return json.Unmarshal([]byte(body), &m) == nil && code == 200 && m.ActiveCalls == 1
	})
	close(release)
	if err := <-callDone; err != nil {
		t.Errorf("in-flight call during Shutdown: %v", err)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	// The health server stops with the server.
	if _, _, err := httpGet(t, base+"/healthz"); err == nil {
		t.Error("health server still answers after Shutdown")
	}
	if e.srv.HealthAddr() == nil {
		t.Error("HealthAddr is nil after Shutdown; want the address it had")
	}
}

// TestHealthListenError checks that a health port in use makes Serve fail
// rather than run without health checks.
func TestHealthListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	nw := mem.NewNetwork()
	key := testutil.Key(t, 1)
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()), aster.WithHealth(busy.Addr().String(), false))
	err = srv.Serve(ln)
	if err == nil || errors.Is(err, aster.ErrServerClosed) || !strings.Contains(err.Error(), "health") {
		t.Errorf("Serve with the health port taken = %v, want a health listen error", err)
	}
	srv.Close()
}

// TestHealthWithoutMetrics checks /metrics is absent unless asked for.
func TestHealthWithoutMetrics(t *testing.T) {
	e := newEnv(t, transports[0], aster.WithHealth("127.0.0.1:0", false))
	pollUntil(t, "the health server", func() bool { return e.srv.HealthAddr() != nil })
	base := "http://" + e.srv.HealthAddr().String()
	for _, path := range []string{"/metrics", "/metrics/prometheus"} {
		if code, _, err := httpGet(t, base+path); err != nil || code != http.StatusNotFound {
			t.Errorf("%s without monitoring = %d %v, want 404", path, code, err)
		}
	}
	if code, _, err := httpGet(t, base+"/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz = %d %v", code, err)
	}
}
