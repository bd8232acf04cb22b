package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// TestShellPermissionDenied: a method the caller lacks the capability for
// fails with PERMISSION_DENIED, and the shell names the capability the
// contract says it requires. The server grants every connection
// "ops.status" only (an admission gate standing in for credentials).
func TestShellPermissionDenied(t *testing.T) {
	mc := mission.NewMissionControl()
	svc := handler.NewService("Ops", 1).
		Handle("getStatus", handler.Unary(mc.GetStatus), handler.Requires(trust.Cap("ops.status"))).
		Handle("tailLogs", handler.ServerStream(mc.TailLogs), handler.Requires(trust.AnyOf(trust.Cap("ops.logs"), trust.Cap("ops.admin"))))
	srv := aster.NewServer(
		aster.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
			return handler.Peer{ID: c.RemoteID(), Capabilities: []string{"ops.status"}}, nil
		}),
	)
	srv.MustRegister(svc)
	ready := make(chan aster.Address, 1)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	var addr aster.Address
	select {
	case addr = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})

	r := runAster(t, `cd /services/Ops
describe tailLogs
ls
./getStatus agent_id=allowed
./tailLogs level=warn
`, "shell", addr.String())
	r.want(t, ExitCodeFor(status.PermissionDenied)) // the script's first failure

	wantIn(t, "stdout", r.stdout,
		"requires:  any_of(ops.logs, ops.admin)",
		"getStatus", "[requires ops.status]", "tailLogs", "[requires any_of(ops.logs, ops.admin)]",
		`"agent_id": "allowed"`)
	wantIn(t, "stderr", r.stderr, "PERMISSION_DENIED: permission denied (tailLogs requires any_of(ops.logs, ops.admin))")
}
