package aster_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

func TestWithContractManifest(t *testing.T) {
	svcs := func() []*handler.Service {
		return []*handler.Service{mission.NewMissionControl().Service(), mission.NewAgentSessionService(nil)}
	}
	c, err := contract.Build(svcs())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	if _, err := contract.WriteManifest(good, c); err != nil {
		t.Fatal(err)
	}
	// The committed manifest predates a change: a method was added since.
	old := filepath.Join(dir, "old.json")
	c.Services[1].Methods = c.Services[1].Methods[1:]
	if _, err := contract.WriteManifest(old, c); err != nil {
		t.Fatal(err)
	}

	serve := func(manifest string) (*aster.Server, chan error) {
		nw := mem.NewNetwork()
		key := trust.GenerateKey()
		ln, err := nw.Listen(key)
		if err != nil {
			t.Fatal(err)
		}
		srv := aster.NewServer(aster.WithSecretKey(key), aster.WithContractManifest(manifest))
		srv.MustRegister(svcs()...)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		return srv, done
	}

	_, done := serve(old)
	select {
	case err := <-done:
		if status.CodeOf(err) != status.FailedPrecondition || !strings.Contains(err.Error(), "+ method MissionControl.getStatus") || !strings.Contains(err.Error(), "aster contract gen") {
			t.Fatalf("Serve with a stale manifest: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve started despite a stale manifest")
	}

	_, done = serve(filepath.Join(dir, "missing.json"))
	if err := <-done; status.CodeOf(err) != status.FailedPrecondition {
		t.Fatalf("Serve with a missing manifest: %v", err)
	}

	srv, done := serve(good)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, aster.ErrServerClosed) {
		t.Fatalf("Serve with the right manifest ended with %v", err)
	}
}
