package aster_test

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

type indexMsg struct {
	N int `cbor:"n"`
}

type indexOther struct {
	S string `cbor:"s"`
}

// A call is checked against the contract of the client's connection only
// while that connection lives: the first call after it was lost (which
// redials) is not refused for the lost server's contract, whatever the
// server it reaches now serves.
func TestContractOfLostConnectionNotChecked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := trust.GenerateKey()
		nw := mem.NewNetwork()
		serve := func(svc *handler.Service) (*aster.Server, chan error) {
			srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(slog.New(slog.DiscardHandler)))
			srv.MustRegister(svc)
			ln, err := nw.Listen(key)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			return srv, done
		}
		srv1, done1 := serve(handler.NewService("T", 1).
			Handle("echo", handler.Unary(func(ctx context.Context, m *indexMsg) (*indexMsg, error) { return m, nil })))
		ctx := context.Background()
		c, err := aster.DialAddress(ctx, aster.Address{ID: trust.IDOf(key)}, aster.WithDialer(nw.Dialer(trust.GenerateKey())))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, _, err := c.Contract(ctx); err != nil {
			t.Fatal(err)
		}
		// The contract is checked while its connection lives.
		_, err = aster.CallUnary[indexOther](ctx, c, "T.echo", &indexOther{S: "x"})
		if status.CodeOf(err) != status.InvalidArgument {
			t.Fatalf("call of the wrong types on the contract's connection: %v, want INVALID_ARGUMENT", err)
		}
		srv1.Close()
		<-done1
		synctest.Wait()
		srv2, done2 := serve(handler.NewService("T", 1).
			Handle("echo", handler.Unary(func(ctx context.Context, m *indexOther) (*indexOther, error) { return m, nil })))
		defer func() { srv2.Close(); <-done2 }()
		resp, err := aster.CallUnary[indexOther](ctx, c, "T.echo", &indexOther{S: "x"})
		if err != nil {
			t.Fatalf("first call after the connection was lost: %v", err)
		}
		if resp.S != "x" {
			t.Fatalf("response %+v", resp)
		}
	})
}
