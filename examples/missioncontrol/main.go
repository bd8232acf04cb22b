// Command missioncontrol serves the Mission Control example (chapters 1–4 of
// the "Build a Control Plane" guide) over direct QUIC and prints its aster1…
// address as the first line of stdout.
//
//	go run ./examples/missioncontrol          # serve until Ctrl-C
//	go run ./examples/missioncontrol -demo    # serve, drive every call pattern, exit
//
// Configuration comes from the ASTER_* environment variables through
// config.Load ("aster config print" shows the resolved values): for
// example ASTER_BIND_ADDR picks the UDP address (default: a free port on all
// interfaces), ASTER_SECRET_KEY (base64, 32 bytes) or ASTER_IDENTITY_FILE (an
// .aster-identity file, created on first start if missing; default
// .aster-identity if it exists) gives a stable identity (default: a fresh key
// each run), ASTER_HEALTH_PORT serves /healthz and /readyz (and, with
// ASTER_ENABLE_MONITORING=true, /metrics and /metrics/prometheus),
// ASTER_LOG_FORMAT/ASTER_LOG_LEVEL shape the log on stderr, and
// ASTER_WEBTRANSPORT_ADDR also serves WebTransport on that UDP address, for
// browsers (see web/).
//
// Trust (chapter 5): ASTER_ROOT_PUBKEY_FILE (or ASTER_ROOT_PUBKEY, hex) names
// the root public key credentials must be signed by, and
// ASTER_ALLOW_ALL_CONSUMERS=false closes the consumer gate:
//
//	ASTER_ROOT_PUBKEY_FILE=~/.aster/root.pub ASTER_ALLOW_ALL_CONSUMERS=false \
//	ASTER_IDENTITY_FILE=.aster-identity go run ./examples/missioncontrol
//
// Without a root key the server runs in dev mode (ephemeral root, consumers
// admitted, a warning logged), unless a setting asks for admission
// (ASTER_ALLOW_ALL_CONSUMERS=false, say): then it refuses to start.
// ASTER_ENROLLMENT_CREDENTIAL is the credential file the -demo client
// presents.
//
// Scaling out: run N copies registered in etcd, and call the fleet by name.
// With ASTER_DISCOVERY=etcd and ASTER_DISCOVERY_PREFIX set, each copy
// registers its services as <prefix>/MissionControl and
// <prefix>/AgentSession under a lease (ASTER_DISCOVERY_TTL, default 5s)
// while it serves, and withdraws them on SIGTERM before it drains:
//
//	export ASTER_DISCOVERY=etcd ASTER_DISCOVERY_ENDPOINTS=127.0.0.1:2379 ASTER_DISCOVERY_PREFIX=fleet
//	go run ./examples/missioncontrol &   # three times
//	aster discover etcd:///fleet/MissionControl
//	go run ./examples/missioncontrol/agent etcd:///fleet/MissionControl
//
// Each copy limits every agent to -rate calls a second (default 100, with
// a burst of twice that); -rate 0 turns the limit off, e.g. to load-test a
// fleet from one client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/trust/identity"
)

func main() {
	demo := flag.Bool("demo", false, "start the server, call every method once as a client, print what happens, and exit")
	flag.Parse()
	if err := checkRate(*perPeerRate); err != nil {
		fmt.Fprintln(os.Stderr, "missioncontrol:", err)
		os.Exit(2)
	}
	if err := serve(*demo); err != nil {
		fmt.Fprintln(os.Stderr, "missioncontrol:", err)
		os.Exit(1)
	}
}

func serve(demo bool) error {
	// A stable identity (chapter 5): create the identity file on the first
	// start, so that the address and the credentials issued to it survive
	// restarts.
	if path := os.Getenv("ASTER_IDENTITY_FILE"); path != "" {
		if _, _, err := identity.LoadOrCreate(path); err != nil {
			return err
		}
	}
	cfg, err := config.Load()
	if err != nil {
		return err
	}
	logger := cfg.NewLogger(os.Stderr)
	for _, w := range cfg.Warnings() {
		logger.Warn("config: " + w)
	}
	// Middleware order, outermost first: OpenTelemetry (when OTEL_* is set,
	// otel.go), then the hardening chain (Recover → Logging → Deadline →
	// RateLimit, hardening.go). Tracing outermost means its span covers the
	// whole call, including calls the chain rejects or a panic it recovers,
	// and the trace context is in ctx before Logging runs.
	tel := setupTelemetry(logger)
	defer tel.flush()
	opts := append(append([]aster.ServerOption{}, tel.server...), serverHardening(logger))

	// The secret key (or identity file), bind address, logger and admission
	// gate of the [trust] settings come from cfg; the health server starts
	// with ListenAndServe and stops with Shutdown.
	srv, err := cfg.NewServer(opts...)
	if err != nil {
		return err
	}
	mc := mission.NewMissionControl()
	release := func(agentID string) {
		logger.Info("AgentSession released", "agent_id", agentID)
	}
	if err := srv.Register(mc.Service(), mission.NewAgentSessionService(release)); err != nil {
		srv.Close()
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- srv.ListenAndServe("", func(a aster.Address) { ready <- a })
	}()
	var addr aster.Address
	select {
	case addr = <-ready:
	case err := <-errc:
		return err
	}
	addr, wtErrc, err := serveWebTransport(srv.Server, logger, addr)
	if err != nil {
		shutdown(srv)
		<-errc
		return err
	}
	if wtErrc != nil {
		defer func() { <-wtErrc }()
	}
	fmt.Println(addr.String())

	if demo {
		// Client middleware, outermost first: OpenTelemetry (one span per
		// call, retries included), then ClientLogging → ClientDeadline →
		// Retry → CircuitBreaker.
		copts := append(append([]aster.ClientOption{}, tel.client...), clientHardening(logger))
		if cfg.EnrollmentCredentialFile != "" {
			id, err := identity.Load(cfg.EnrollmentCredentialFile)
			if err != nil {
				return err
			}
			cred, err := id.Credential("")
			if err != nil {
				return fmt.Errorf("%s: %w", cfg.EnrollmentCredentialFile, err)
			}
			copts = append(copts, aster.WithSecretKey(id.Key), aster.WithCredential(cred))
		}
		err := runDemo(ctx, addr.String(), os.Stdout, copts...)
		shutdown(srv)
		<-errc
		return err
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
		shutdown(srv)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, aster.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// shutdown shuts srv (a *config.Server, which also stops its health
// server, or an *aster.Server) down, waiting at most 5 s for calls.
func shutdown(srv interface{ Shutdown(context.Context) error }) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}
