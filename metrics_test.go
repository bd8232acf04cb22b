package aster_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aster-go/aster"
)

// TestReady checks Server.Ready: false before serving, true by the time
// ListenAndServe's ready callback runs (with Address agreeing), false once
// Shutdown has begun, and after.
func TestReady(t *testing.T) {
	srv := aster.NewServer(aster.WithLogger(quietLogger()))
	if srv.Ready() {
		t.Error("Ready before serving")
	}
	type seen struct {
		ready  bool
		direct int
	}
	atReady := make(chan seen, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- srv.ListenAndServe("127.0.0.1:0", func(aster.Address) {
			atReady <- seen{srv.Ready(), len(srv.Address().Direct)}
		})
	}()
	select {
	case s := <-atReady:
		if !s.ready || s.direct != 1 {
			t.Errorf("in the ready callback: Ready = %v, Address has %d direct addresses; want true and 1", s.ready, s.direct)
		}
	case err := <-errc:
		t.Fatal(err)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if srv.Ready() {
		t.Error("Ready after Shutdown")
	}
	if err := <-errc; !errors.Is(err, aster.ErrServerClosed) {
		t.Errorf("ListenAndServe = %v", err)
	}
	if m := srv.Metrics(); m.Connections != 0 || m.ActiveCalls != 0 || len(m.Calls) != 0 {
		t.Errorf("Metrics of a server that served nothing = %+v", m)
	}
}
