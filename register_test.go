package aster_test

import (
	"context"
	"sync"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// Registering services (a new version of one being called, and a new one)
// while calls are served: the lookup sees each registration whole, and
// -race finds no unsynchronised access.
func TestRegisterWhileServing(t *testing.T) {
	e := newEnv(t, transports[0])
	echo := func(v int) *handler.Service {
		return handler.NewService("Test", uint32(v)).Handle("echo", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			return m, nil
		}))
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{N: 1}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for v := 2; v <= 20; v++ {
		if err := e.srv.Register(echo(v)); err != nil {
			t.Fatal(err)
		}
		if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{N: v}, aster.Version(uint32(v))); err != nil {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	if err := e.srv.Register(echo(5)); err == nil {
		t.Fatal("registering version 5 twice succeeded")
	}
	close(stop)
	wg.Wait()
}

// Service.Require after Handle: the requirement reaches the method, both in
// the server's check and in the contract (it used to be dropped, so any
// admitted peer could call the method).
func TestRequireAfterHandle(t *testing.T) {
	svc := handler.NewService("Admin", 1).
		Handle("reset", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) { return m, nil }))
	svc.Require(trust.Cap("ops.admin"))
	for _, caps := range [][]string{nil, {"ops.admin"}} {
		e := newEnv(t, transports[0], aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
			return handler.Peer{ID: c.RemoteID(), Capabilities: caps}, nil
		}))
		if err := e.srv.Register(svc); err != nil {
			t.Fatal(err)
		}
		_, err := aster.CallUnary[Msg](ctxT(t), e.client, "Admin.reset", &Msg{})
		if caps == nil {
			wantCode(t, err, status.PermissionDenied)
		} else if err != nil {
			t.Fatalf("with ops.admin: %v", err)
		}
		c, _, err := e.srv.Contract()
		if err != nil {
			t.Fatal(err)
		}
		if m := c.Service("Admin", 1).Method("reset"); m.Requires == nil {
			t.Fatal("the contract shows no requirement for Admin.reset")
		}
	}
}
