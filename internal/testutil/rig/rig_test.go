package rig_test

import (
	"context"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/rig"
	"github.com/aster-go/aster/status"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

type msg struct {
	Text string `cbor:"text"`
}

func (msg) WireType() string { return "rigtest/Msg" }

func echo() *handler.Service {
	return handler.NewService("Echo", 1).Handle("say", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) {
		return m, nil
	}))
}

func TestStartAndClient(t *testing.T) {
	for _, tr := range rig.Transports {
		t.Run(string(tr), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			srv := rig.Start(t, tr, []*handler.Service{echo()})
			a, b := srv.Client(t), srv.Client(t)
			for _, c := range []*aster.Client{a, b} {
				got, err := aster.CallUnary[msg](ctx, c, "Echo.say", &msg{Text: "hi"})
				if err != nil || got.Text != "hi" {
					t.Fatalf("got %+v, %v", got, err)
				}
			}
		})
	}
}

func TestRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv := rig.Start(t, rig.Mem, []*handler.Service{echo()})
	c := srv.Client(t)
	if _, err := aster.CallUnary[msg](ctx, c, "Echo.say", &msg{}); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if _, err := aster.CallUnary[msg](ctx, c, "Echo.say", &msg{}); status.CodeOf(err) != status.Unavailable {
		t.Fatalf("closed server: %v, want UNAVAILABLE", err)
	}
	srv.Restart(t)
	if _, err := aster.CallUnary[msg](ctx, c, "Echo.say", &msg{}); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
}
