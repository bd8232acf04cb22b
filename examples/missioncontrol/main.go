// Command missioncontrol serves the Mission Control example (chapters 1–4 of
// the "Build a Control Plane" guide) over direct QUIC and prints its aster1…
// address as the first line of stdout.
//
//	go run ./examples/missioncontrol          # serve until Ctrl-C
//	go run ./examples/missioncontrol -demo    # serve, drive every call pattern, exit
//
// Configuration comes from the ASTER_* environment variables through
// aster.LoadConfig ("aster config print" shows the resolved values): for
// example ASTER_BIND_ADDR picks the UDP address (default: a free port on all
// interfaces), ASTER_SECRET_KEY (base64, 32 bytes) gives a stable identity
// (default: a fresh key each run), ASTER_HEALTH_PORT serves /healthz and
// /readyz, and ASTER_LOG_FORMAT/ASTER_LOG_LEVEL shape the log on stderr.
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
	"github.com/aster-go/aster/examples/missioncontrol/mission"
)

func main() {
	demo := flag.Bool("demo", false, "start the server, call every method once as a client, print what happens, and exit")
	flag.Parse()
	if err := serve(*demo); err != nil {
		fmt.Fprintln(os.Stderr, "missioncontrol:", err)
		os.Exit(1)
	}
}

func serve(demo bool) error {
	cfg, err := aster.LoadConfig()
	if err != nil {
		return err
	}
	logger := cfg.NewLogger(os.Stderr)
	for _, w := range cfg.Warnings() {
		logger.Warn("config: " + w)
	}
	opts, err := cfg.ServerOptions() // secret key, bind address, health server, logger
	if err != nil {
		return err
	}
	defer withTelemetry(&opts, logger)() // OpenTelemetry when OTEL_* is set (otel.go)

	srv := aster.NewServer(opts...)
	mc := mission.NewMissionControl()
	release := func(agentID string) {
		logger.Info("AgentSession released", "agent_id", agentID)
	}
	if err := srv.Register(mc.Service(), mission.NewAgentSessionService(release)); err != nil {
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
	fmt.Println(addr.String())

	if demo {
		err := runDemo(ctx, addr.String(), os.Stdout)
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

func shutdown(srv *aster.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}
