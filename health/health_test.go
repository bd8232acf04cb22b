package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/health"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/quic"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// Msg is the test message.
type Msg struct {
	Text string `cbor:"1,keyasint" json:"text"`
}

var quiet = slog.New(slog.DiscardHandler)

// blockService has echo, and wait, which blocks until release is closed.
func blockService(started chan<- struct{}, release <-chan struct{}) *handler.Service {
	return handler.NewService("Test", 1).
		Handle("echo", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil })).
		Handle("wait", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			started <- struct{}{}
			select {
			case <-release:
				return m, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}))
}

// get serves one GET of path on h without a network.
func get(h http.Handler, path string) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// httpGet fetches url over real HTTP and returns the status code and body.
func httpGet(t *testing.T, url string) (int, string, error) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestReadyzDuringShutdown checks, with time and goroutines under
// testing/synctest, that /readyz answers 503 before Serve, 200 while
// serving, and 503 as soon as Shutdown begins while a call still drains
// (/healthz stays 200), and what /metrics shows meanwhile.
func TestReadyzDuringShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started, release := make(chan struct{}, 1), make(chan struct{})
		key := testutil.Key(t, 1)
		srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quiet))
		srv.MustRegister(blockService(started, release))
		h := health.NewHandler(srv, health.Options{Metrics: true})
		if code, body := get(h, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready\n" {
			t.Errorf("/readyz before Serve = %d %q, want 503", code, body)
		}

		nw := mem.NewNetwork()
		ln, err := nw.Listen(key)
		if err != nil {
			t.Fatal(err)
		}
		serveErr := make(chan error, 1)
		go func() { serveErr <- srv.Serve(ln) }()
		synctest.Wait()
		if code, body := get(h, "/readyz"); code != http.StatusOK || body != "ready\n" {
			t.Errorf("/readyz while serving = %d %q, want 200 ready", code, body)
		}
		if code, body := get(h, "/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("/healthz = %d %q", code, body)
		}

		c, err := aster.DialAddress(t.Context(), ln.Addr(), aster.WithDialer(nw.Dialer(testutil.Key(t, 2))))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := aster.CallUnary[Msg](t.Context(), c, "Test.echo", &Msg{Text: "hi"}); err != nil {
			t.Fatal(err)
		}
		callErr := make(chan error, 1)
		go func() {
			_, err := aster.CallUnary[Msg](context.Background(), c, "Test.wait", &Msg{})
			callErr <- err
		}()
		<-started
		shutdownErr := make(chan error, 1)
		go func() { shutdownErr <- srv.Shutdown(context.Background()) }()
		synctest.Wait() // Shutdown has begun and waits for the call
		if code, body := get(h, "/readyz"); code != http.StatusServiceUnavailable || body != "not ready\n" {
			t.Errorf("/readyz while Shutdown drains = %d %q, want 503 not ready", code, body)
		}
		if code, _ := get(h, "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz while draining = %d, want 200", code)
		}
		code, body := get(h, "/metrics")
		var m aster.Metrics
		if err := json.Unmarshal([]byte(body), &m); err != nil || code != http.StatusOK {
			t.Fatalf("/metrics = %d %q: %v", code, body, err)
		}
		if m.ActiveCalls != 1 || m.Connections != 1 || m.Calls["OK"] < 1 {
			t.Errorf("/metrics while draining = %+v, want 1 active call on 1 connection", m)
		}
		close(release)
		if err := <-callErr; err != nil {
			t.Errorf("the call in flight during Shutdown: %v", err)
		}
		if err := <-shutdownErr; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-serveErr; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
		if code, _ := get(h, "/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz after Shutdown = %d, want 503", code)
		}
	})
}

// TestListen serves over QUIC on loopback with the stand-alone health
// server and checks every endpoint over real HTTP, then that Shutdown
// stops it.
func TestListen(t *testing.T) {
	key := testutil.Key(t, 1)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quiet))
	srv.MustRegister(blockService(make(chan struct{}, 1), nil))
	hs, err := health.Listen("127.0.0.1:0", srv, health.Options{Metrics: true, Prometheus: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + hs.Addr().String()
	if code, _, err := httpGet(t, base+"/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Serve = %d %v, want 503", code, err)
	}

	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	d := quic.NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	c, err := aster.DialAddress(t.Context(), ln.Addr(), aster.WithDialer(d))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := aster.CallUnary[Msg](t.Context(), c, "Test.echo", &Msg{Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := aster.CallUnary[Msg](t.Context(), c, "Test.nope", &Msg{}); err == nil {
		t.Fatal("unknown method succeeded")
	}
	if code, body, err := httpGet(t, base+"/healthz"); err != nil || code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q %v", code, body, err)
	}
	if code, body, err := httpGet(t, base+"/readyz"); err != nil || code != 200 || body != "ready\n" {
		t.Errorf("/readyz while serving = %d %q %v", code, body, err)
	}
	code, body, err := httpGet(t, base+"/metrics")
	var m aster.Metrics
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &m) != nil {
		t.Fatalf("/metrics = %d %q %v", code, body, err)
	}
	// The client fetched the contract (one more OK call) before calling.
	if m.Connections != 1 || m.Calls["NOT_FOUND"] != 1 || m.Calls["OK"] < 3 {
		t.Errorf("/metrics = %+v, want 1 connection, 1 NOT_FOUND, at least 3 OK", m)
	}
	code, body, err = httpGet(t, base+"/metrics/prometheus")
	if err != nil || code != 200 {
		t.Fatalf("/metrics/prometheus = %d %v", code, err)
	}
	for _, line := range []string{
		"# TYPE aster_server_calls_total counter",
		`aster_server_calls_total{code="NOT_FOUND"} 1`,
		"aster_server_connections 1",
		"# TYPE aster_server_active_calls gauge",
		// The stream counters (PROTOCOL.md 23), as /metrics gave them.
		fmt.Sprintf(`aster_server_streams_total{kind="opened"} %d`, m.StreamsOpened),
		fmt.Sprintf(`aster_server_streams_total{kind="reused"} %d`, m.StreamsReused),
		fmt.Sprintf("aster_server_idle_streams %d", m.IdleStreams),
		"# TYPE aster_server_conns_gate_refused_total counter",
		"aster_server_conns_gate_refused_total 0",
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics/prometheus lacks %q:\n%s", line, body)
		}
	}
	c.Close()
	srv.Close()
	if err := <-serveErr; !errors.Is(err, aster.ErrServerClosed) {
		t.Errorf("Serve = %v", err)
	}
	if err := hs.Shutdown(context.Background()); err != nil {
		t.Errorf("health Shutdown: %v", err)
	}
	if _, _, err := httpGet(t, base+"/healthz"); err == nil {
		t.Error("health server still answers after Shutdown")
	}
	if err := hs.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("Close after Shutdown: %v", err)
	}
}

// TestListenError checks that a health port in use is an error naming the
// health server.
func TestListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	hs, err := health.Listen(busy.Addr().String(), aster.NewServer(aster.WithLogger(quiet)), health.Options{Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "health server") {
		t.Errorf("Listen on a port in use = %v, want a health server listen error", err)
	}
	if hs != nil {
		hs.Close()
	}
}

// TestOptions checks that /metrics and /metrics/prometheus are served only
// when asked for, each on its own, and that only GET is accepted.
func TestOptions(t *testing.T) {
	srv := aster.NewServer(aster.WithLogger(quiet))
	for _, tc := range []struct {
		opts             health.Options
		metrics, promths int
	}{
		{health.Options{}, 404, 404},
		{health.Options{Metrics: true}, 200, 404},
		{health.Options{Prometheus: true}, 404, 200},
	} {
		h := health.NewHandler(srv, tc.opts)
		if code, _ := get(h, "/metrics"); code != tc.metrics {
			t.Errorf("%+v: /metrics = %d, want %d", tc.opts, code, tc.metrics)
		}
		if code, _ := get(h, "/metrics/prometheus"); code != tc.promths {
			t.Errorf("%+v: /metrics/prometheus = %d, want %d", tc.opts, code, tc.promths)
		}
		if code, _ := get(h, "/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("%+v: /readyz of a server that does not serve = %d, want 503", tc.opts, code)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/healthz", nil))
		if rec.Code != http.StatusMethodNotAllowed {
			t.Errorf("POST /healthz = %d, want 405", rec.Code)
		}
	}
}

// fixed is a Source with set answers.
type fixed struct {
	ready bool
	m     aster.Metrics
}

func (f fixed) Ready() bool            { return f.ready }
func (f fixed) Metrics() aster.Metrics { return f.m }

// TestSource checks that the endpoints report what the Source says, so
// anything with Ready and Metrics can be served.
func TestSource(t *testing.T) {
	src := fixed{ready: true, m: aster.Metrics{Connections: 7, ActiveCalls: 2, Calls: map[string]uint64{"OK": 5, "APPLICATION": 1}}}
	h := health.NewHandler(src, health.Options{Metrics: true, Prometheus: true})
	if code, _ := get(h, "/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	_, body := get(h, "/metrics")
	if strings.TrimSpace(body) != `{"connections":7,"active_calls":2,"calls":{"APPLICATION":1,"OK":5}}` {
		t.Errorf("/metrics = %s", body)
	}
	_, body = get(h, "/metrics/prometheus")
	for _, line := range []string{"aster_server_connections 7", "aster_server_active_calls 2",
		`aster_server_calls_total{code="OK"} 5`, `aster_server_calls_total{code="APPLICATION"} 1`} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics/prometheus lacks %q:\n%s", line, body)
		}
	}
}

var _ health.Source = (*aster.Server)(nil)
