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
	"github.com/aster-go/aster/examples/missioncontrol/mission"
)

// TestDemoOverWebTransport turns WebTransport on the way main does
// (ASTER_WEBTRANSPORT_ADDR) and runs the whole demo — unary, the three
// streaming patterns and a session — over it, with an address that has no
// direct QUIC address so the client must use WebTransport.
func TestDemoOverWebTransport(t *testing.T) {
	t.Setenv("ASTER_WEBTRANSPORT_ADDR", "127.0.0.1:0")
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := aster.NewServer(aster.WithLogger(logger))
	srv.MustRegister(mission.NewMissionControl().Service(), mission.NewAgentSessionService(nil))
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	addr, wtErrc, err := serveWebTransport(srv, logger, <-ready)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		shutdown(srv)
		<-errc
		<-wtErrc
	}()
	if len(addr.Direct) == 0 || addr.WebTransport == "" || len(addr.CertHashes) != 2 {
		t.Fatalf("printed address %+v: want direct QUIC addresses and the WebTransport URL and hashes", addr)
	}
	wtOnly := aster.Address{ID: addr.ID, WebTransport: addr.WebTransport, CertHashes: addr.CertHashes}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runDemo(ctx, wtOnly.String(), &out); err != nil {
		t.Fatalf("demo over WebTransport: %v\n%s", err, out.String())
	}
	for _, want := range []string{`"status":"running"`, `server stream tailLogs #1 ->`, `"accepted":10000`, `"task_id":"train-42"`, `"exit_code":3`, `demo complete`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
