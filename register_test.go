package aster_test

import (
	"context"
	"sync"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
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
