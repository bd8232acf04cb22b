package aster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/status"
)

// WithHealth makes the server serve HTTP health endpoints on addr
// ("host:port"; port 0 picks a free one, see HealthAddr) while it runs:
//
//	GET /healthz  200 "ok" while the process serves HTTP at all (liveness)
//	GET /readyz   200 "ready" while at least one listener is being served
//	              and the server is not shutting down; 503 otherwise, in
//	              particular as soon as Shutdown starts draining
//	GET /metrics  (only if metrics is true) JSON counters:
//	              {"connections":N,"active_calls":N,"calls":{"OK":N,...}}
//	GET /metrics/prometheus  (only if metrics is true) the same counters in
//	              the Prometheus text format: aster_server_connections,
//	              aster_server_active_calls, aster_server_calls_total{code}
//
// The health server starts with the first Serve (a listen error is Serve's
// error) and stops when Shutdown or Close returns. Default: no health
// server. Config.ServerOptions sets it from health_host, health_port and
// enable_monitoring.
func WithHealth(addr string, metrics bool) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.healthAddr, o.healthMetrics = addr, metrics })
}

// healthServer is the running health HTTP server of a Server.
type healthServer struct {
	http *http.Server
	ln   net.Listener
	done chan struct{} // closed when the serving goroutine returns
}

// callStats counts finished calls by status code.
type callStats struct {
	byCode [status.Unauthenticated + 1]atomic.Uint64
	app    atomic.Uint64 // application codes (100+) and unassigned ones
}

func (cs *callStats) record(code uint32) {
	if code < uint32(len(cs.byCode)) {
		cs.byCode[code].Add(1)
		return
	}
	cs.app.Add(1)
}

// startHealthLocked starts the health server if configured and not yet
// running. s.mu is held.
func (s *Server) startHealthLocked() error {
	if s.opts.healthAddr == "" || s.health != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.healthAddr)
	if err != nil {
		return fmt.Errorf("aster: health server: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if s.opts.healthMetrics {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(s.metrics())
		})
		mux.Handle("GET /metrics/prometheus", s.prometheusHandler())
	}
	hs := &healthServer{
		http: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(hs.done)
		if err := hs.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.opts.logger.Error("aster: health server stopped", "err", err)
		}
	}()
	s.health = hs
	s.opts.logger.Info("aster: health server listening", "addr", ln.Addr().String())
	return nil
}

// stopHealth stops the health server, waiting for its goroutine.
func (s *Server) stopHealth() {
	s.mu.Lock()
	hs := s.health
	s.mu.Unlock()
	if hs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := hs.http.Shutdown(ctx); err != nil {
		hs.http.Close()
	}
	<-hs.done
}

// HealthAddr returns the address the health server listens on, or nil if it
// is not running.
func (s *Server) HealthAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.health == nil {
		return nil
	}
	return s.health.ln.Addr()
}

// ready reports whether the server serves at least one listener and is not
// shutting down.
func (s *Server) ready() bool {
	if s.draining.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && len(s.listeners) > 0
}

// Metrics is a snapshot of a server's counters, as /metrics serves it.
type Metrics struct {
	// Connections is the number of open connections.
	Connections int `json:"connections"`
	// ActiveCalls is the number of calls being served.
	ActiveCalls int `json:"active_calls"`
	// Calls counts finished calls by status code name ("OK", "NOT_FOUND",
	// ...; "APPLICATION" for codes 100 and above). Codes never seen are
	// left out.
	Calls map[string]uint64 `json:"calls"`
}

// metrics returns a snapshot of the server's counters.
func (s *Server) metrics() Metrics {
	s.mu.Lock()
	m := Metrics{Connections: len(s.conns), Calls: map[string]uint64{}}
	s.mu.Unlock()
	m.ActiveCalls = int(s.calls.n.Load())
	for code := range s.stats.byCode {
		if n := s.stats.byCode[code].Load(); n > 0 {
			m.Calls[status.Code(code).String()] = n
		}
	}
	if n := s.stats.app.Load(); n > 0 {
		m.Calls["APPLICATION"] = n
	}
	return m
}

// Metrics returns a snapshot of the server's counters.
func (s *Server) Metrics() Metrics { return s.metrics() }
