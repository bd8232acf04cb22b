package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// TestDemo runs the README's demo against a real QUIC server on loopback,
// built from the default configuration as serve builds it.
func TestDemo(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := config.Default()
	cfg.LogLevel = "error"
	srv, err := cfg.NewServer(aster.WithLogger(logger), serverHardening(logger))
	if err != nil {
		t.Fatal(err)
	}
	srv.MustRegister(mission.NewMissionControl().Service(), mission.NewAgentSessionService(nil))
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	addr := <-ready
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runDemo(ctx, addr.String(), &out, clientHardening(logger)); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	shutdown(srv)
	<-errc
	for _, want := range []string{
		`unary getStatus ->`, `{"agent_id":"edge-node-7","status":"running","uptime_secs":3600}`,
		`server stream tailLogs #1 ->`, `client stream 10000 points`, `"accepted":10000`,
		`session register ->`, `"task_id":"train-42"`, `"stdout":"hello from the agent\n"`, `"exit_code":3`,
		`demo complete`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
