// Package health serves an aster server's health and metrics over HTTP:
//
//	GET /healthz             200 "ok" while the process answers HTTP at all (liveness)
//	GET /readyz              200 "ready" while the server serves at least one
//	                         listener and is not shutting down; 503 "not ready"
//	                         otherwise, in particular as soon as Shutdown starts
//	                         draining (readiness)
//	GET /metrics             (Options.Metrics) JSON counters:
//	                         {"connections":N,"active_calls":N,"calls":{"OK":N,...}}
//	GET /metrics/prometheus  (Options.Prometheus) the same counters in the
//	                         Prometheus text format: aster_server_connections,
//	                         aster_server_active_calls, aster_server_calls_total{code}
//
// NewHandler returns these endpoints as an http.Handler to mount on a mux of
// your own; Listen runs them as a stand-alone HTTP server (what the config
// package starts from health.health_host, health.health_port and
// network.enable_monitoring). Both read the server only through its public
// API (Ready and Metrics, the Source interface), so the aster core carries
// no health HTTP server and links no Prometheus code.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/aster-go/aster"
)

// Source is what the endpoints read: *aster.Server implements it.
type Source interface {
	// Ready reports whether the server accepts calls (see
	// aster.Server.Ready).
	Ready() bool
	// Metrics returns a snapshot of the server's counters.
	Metrics() aster.Metrics
}

// Options selects the endpoints beyond /healthz and /readyz. The zero value
// serves only those two.
type Options struct {
	// Metrics serves GET /metrics (JSON). Default false.
	Metrics bool
	// Prometheus serves GET /metrics/prometheus (Prometheus text format).
	// Default false.
	Prometheus bool
	// Logger receives the stand-alone server's start and error messages
	// (Listen only). Default: slog.Default().
	Logger *slog.Logger
}

// NewHandler returns an http.Handler serving src's /healthz and /readyz,
// and /metrics and /metrics/prometheus as opts says. Other paths and
// methods other than GET (and HEAD) answer 404 or 405. Mount it at the root
// of a mux, or under a prefix with http.StripPrefix.
func NewHandler(src Source, opts Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !src.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready")
			return
		}
		fmt.Fprintln(w, "ready")
	})
	if opts.Metrics {
		mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(src.Metrics())
		})
	}
	if opts.Prometheus {
		mux.Handle("GET /metrics/prometheus", prometheusHandler(src))
	}
	return mux
}

// ShutdownTimeout bounds how long Server.Shutdown waits for requests in
// progress when its context has no earlier deadline.
const ShutdownTimeout = time.Second

// Server is a running stand-alone health HTTP server (see Listen). Its
// methods are safe for concurrent use.
type Server struct {
	http *http.Server
	ln   net.Listener
	done chan struct{} // closed when the serving goroutine returns
}

// Listen listens on the TCP address addr ("host:port"; port 0 picks a free
// one) and serves NewHandler(src, opts) there until Shutdown or Close. A
// listen error is returned at once.
func Listen(addr string, src Source, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health server: %w", err)
	}
	s := &Server{
		http: &http.Server{Handler: NewHandler(src, opts), ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("aster: health server stopped", "err", err)
		}
	}()
	logger.Info("aster: health server listening", "addr", ln.Addr().String())
	return s, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Shutdown stops the server gracefully: it stops listening and waits for
// requests in progress (at most ShutdownTimeout, or until ctx is done),
// then closes what is left and waits for the serving goroutine. It returns
// ctx's error if ctx ended the wait.
func (s *Server) Shutdown(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		s.http.Close() // requests still running: cut them off
	}
	<-s.done
	return ctx.Err()
}

// Close stops the server at once, closing open connections, and waits for
// the serving goroutine.
func (s *Server) Close() error {
	err := s.http.Close()
	<-s.done
	return err
}
