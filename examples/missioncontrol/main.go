// Command missioncontrol serves the Mission Control example (chapters 1–4 of
// the "Build a Control Plane" guide) over direct QUIC and prints its aster1…
// address as the first line of stdout.
//
//	go run ./examples/missioncontrol          # serve until Ctrl-C
//	go run ./examples/missioncontrol -demo    # serve, drive every call pattern, exit
//
// Environment: ASTER_BIND_ADDR picks the UDP address (default: a free port on
// all interfaces); ASTER_SECRET_KEY (base64, 32 bytes) gives a stable
// identity (default: a fresh key each run); ASTER_WEBTRANSPORT_ADDR also
// serves WebTransport on that UDP address, for browsers (see web/).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/trust"
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
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := []aster.ServerOption{aster.WithLogger(logger)}
	if s := os.Getenv("ASTER_SECRET_KEY"); s != "" {
		key, err := trust.ParseSecretKeyBase64(s)
		if err != nil {
			return fmt.Errorf("ASTER_SECRET_KEY: %w", err)
		}
		opts = append(opts, aster.WithSecretKey(key))
	}
	bind := os.Getenv("ASTER_BIND_ADDR")
	if bind == "" {
		bind = ":0"
	}

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
		errc <- srv.ListenAndServe(bind, func(a aster.Address) { ready <- a })
	}()
	var addr aster.Address
	select {
	case addr = <-ready:
	case err := <-errc:
		return err
	}
	addr, wtErrc, err := serveWebTransport(srv, logger, addr)
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
