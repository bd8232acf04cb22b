package discovery

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

func testProducer(t *testing.T) Producer {
	t.Helper()
	k := trust.GenerateKey()
	return Producer{Addr: EndpointAddr{ID: trust.IDOf(k)}}
}

func TestStaticSourceWatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, b := testProducer(t), testProducer(t)
	s := NewStaticSource("svc", a)
	w, err := s.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	got, err := w.Next(ctx)
	if err != nil || len(got) != 1 || got[0].Addr.ID != a.Addr.ID {
		t.Fatalf("first Next = %v, %v; want [a]", got, err)
	}
	reg, _ := s.Register(ctx, "svc", b)
	if got, err = w.Next(ctx); err != nil || len(got) != 2 {
		t.Fatalf("after Register: %v, %v; want 2 producers", got, err)
	}
	reg.Deregister(ctx)
	if got, err = w.Next(ctx); err != nil || len(got) != 1 {
		t.Fatalf("after Deregister: %v, %v; want 1 producer", got, err)
	}
	short, c2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer c2()
	if _, err := w.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next without a change = %v; want the ctx's error", err)
	}
	done := make(chan error, 1)
	go func() { _, err := w.Next(ctx); done <- err }()
	w.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v; want ErrClosed", err)
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		bad  bool
	}{
		{in: "etcd:///fleet/MissionControl", want: Target{"etcd", "", "fleet/MissionControl"}},
		{in: "dns:///_mc._udp.example.internal", want: Target{"dns", "", "_mc._udp.example.internal"}},
		{in: "dns://127.0.0.1:5353/_mc._udp.example.internal", want: Target{"dns", "127.0.0.1:5353", "_mc._udp.example.internal"}},
		{in: "DNS:///x", want: Target{"dns", "", "x"}},
		{in: "ftp:///x", bad: true},
		{in: "etcd:///", bad: true},
		{in: "etcd://host", bad: true},
		{in: "aster1abc", bad: true},
	} {
		got, err := ParseTarget(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseTarget(%q) = %v; want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if IsTarget("aster1xyz") || !IsTarget("etcd:///a") || IsTarget("https://relay.example/") {
		t.Error("IsTarget misclassifies")
	}
}

func TestStaticSourceUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, b := testProducer(t), testProducer(t)
	s := NewStaticSource("svc", a)
	w, err := s.Watch(ctx, "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Next(ctx)
	reg, _ := s.Register(ctx, "svc", b)
	if got, _ := w.Next(ctx); len(got) != 2 {
		t.Fatalf("after Register: %v", got)
	}
	u, ok := reg.(RegistrationUpdater)
	if !ok {
		t.Fatalf("%T is not a RegistrationUpdater", reg)
	}
	b2 := b
	b2.Addr.Direct = []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:4443")}
	if err := u.Update(ctx, b2); err != nil {
		t.Fatal(err)
	}
	got, err := w.Next(ctx)
	if err != nil || len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b2) {
		t.Fatalf("after Update: %v, %v; want [a b2]", got, err)
	}
	if err := u.Update(ctx, a); status.CodeOf(err) != status.InvalidArgument {
		t.Errorf("Update with another id: %v, want INVALID_ARGUMENT", err)
	}
	// An entry someone else removed is not put back.
	s.Set("svc", a)
	w.Next(ctx)
	if err := u.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got := s.Producers("svc"); len(got) != 1 {
		t.Errorf("Update put a removed entry back: %v", got)
	}
	reg.Deregister(ctx)
	if err := u.Update(ctx, b); status.CodeOf(err) != status.FailedPrecondition {
		t.Errorf("Update after Deregister: %v, want FAILED_PRECONDITION", err)
	}
}
