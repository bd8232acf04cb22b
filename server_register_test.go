package aster_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/discovery/etcd"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// movingListener is a QUIC listener whose advertised direct addresses can
// be replaced while it serves, as a port mapping granted after start
// changes what a server advertises.
type movingListener struct {
	transport.Listener
	direct atomic.Pointer[[]netip.AddrPort]
}

func (l *movingListener) Addr() discovery.EndpointAddr {
	a := l.Listener.Addr()
	if d := l.direct.Load(); d != nil {
		a.Direct = *d
	}
	return a
}

func (l *movingListener) advertise(d ...netip.AddrPort) { l.direct.Store(&d) }

// blackHoleAddr returns the address of a UDP socket that reads packets and
// never answers: a private address seen from outside its NAT.
func blackHoleAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { _ = pc.Close(); wg.Wait() })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// entryDirect returns the direct addresses name's only entry lists in
// src, or nil.
func entryDirect(src discovery.Source, name string) func() []netip.AddrPort {
	return func() []netip.AddrPort {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w, err := src.Watch(ctx, name)
		if err != nil {
			return nil
		}
		defer w.Close()
		ps, err := w.Next(ctx)
		if err != nil || len(ps) != 1 {
			return nil
		}
		return ps[0].Addr.Direct
	}
}

// testRegistryFollowsAddress serves a producer whose only address at
// first leads nowhere, then advertises a reachable one too: the registry
// entry follows (in place: a watcher never sees the producer missing),
// a Fleet on the registry reaches the producer, and after Shutdown the
// entry stays gone whatever the address does.
func testRegistryFollowsAddress(t *testing.T, reg discovery.Registry, src discovery.Source) {
	key := trust.GenerateKey()
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	ml := &movingListener{Listener: ln}
	reachable := ln.Addr().Direct[0]
	hole := blackHoleAddr(t)
	ml.advertise(hole)

	p := &testProducer{key: key, serveErr: make(chan error, 1)}
	p.srv = aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()),
		aster.WithRegistry(reg, "fleet"), aster.WithRegistryRefresh(50*time.Millisecond))
	p.srv.MustRegister(fleetService(p), fleetTallyService(p.id().Short()))
	go func() { p.serveErr <- p.srv.Serve(ml) }()
	t.Cleanup(p.stop)

	direct := entryDirect(src, fleetName)
	fleetWait(t, "the first registration", func() bool { return slices.Equal(direct(), []netip.AddrPort{hole}) })

	ctx := ctxT(t)
	w, err := src.Watch(ctx, fleetName)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if ps, err := w.Next(ctx); err != nil || len(ps) != 1 {
		t.Fatalf("watch: %v, %v", ps, err)
	}

	f := aster.NewFleet(src, fleetName, fleetOpts()...)
	defer f.Close()
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = aster.CallUnary[FleetReply](cctx, f, "Fleet.get", &FleetReq{N: 1})
	cancel()
	if err == nil {
		t.Fatal("a call reached the producer at an address that leads nowhere")
	}

	// The mapping is granted: the public address is appended.
	ml.advertise(hole, reachable)
	start := time.Now()
	fleetWait(t, "the entry to list the new address", func() bool {
		return slices.Equal(direct(), []netip.AddrPort{hole, reachable})
	})
	t.Logf("entry updated %v after the address changed", time.Since(start))
	fleetWait(t, "a call through the fleet", func() bool {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := aster.CallUnary[FleetReply](cctx, f, "Fleet.get", &FleetReq{N: 2})
		return err == nil
	})
	t.Logf("fleet call answered %v after the address changed", time.Since(start))
	// The watcher saw the producer at all times.
	for {
		nctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		ps, err := w.Next(nctx)
		cancel()
		if err != nil {
			break
		}
		if len(ps) != 1 {
			t.Errorf("watcher saw %d producers during the update, want 1", len(ps))
		}
	}

	p.shutdown(t)
	fleetWait(t, "the entry to go", func() bool { return direct() == nil })
	ml.advertise(reachable)
	time.Sleep(300 * time.Millisecond) // six refresh intervals
	if d := direct(); d != nil {
		t.Errorf("after Shutdown the entry came back: %v", d)
	}
}

func TestRegistryFollowsAddressStatic(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	testRegistryFollowsAddress(t, src, src)
}

func TestRegistryFollowsAddressEtcd(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	r, err := etcd.New(etcd.Config{Endpoints: []string{ep}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	testRegistryFollowsAddress(t, r, r)
}

// plainRegistry hands out registrations without Update, counting calls.
type plainRegistry struct {
	src                    *discovery.StaticSource
	registers, deregisters atomic.Int64
}

func (r *plainRegistry) Register(ctx context.Context, name string, p discovery.Producer) (discovery.Registration, error) {
	rg, err := r.src.Register(ctx, name, p)
	if err != nil {
		return nil, err
	}
	r.registers.Add(1)
	return plainRegistration{r, rg}, nil
}

type plainRegistration struct {
	r  *plainRegistry
	rg discovery.Registration
}

func (g plainRegistration) Deregister(ctx context.Context) error {
	g.r.deregisters.Add(1)
	return g.rg.Deregister(ctx)
}

// A registration without Update is replaced: deregistered, then
// registered with the new address.
func TestRegistryReregistersWithoutUpdate(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	reg := &plainRegistry{src: src}
	_, ml, direct := serveMoving(t, reg, aster.WithRegistryRefresh(50*time.Millisecond))
	first := direct()
	moved := netip.MustParseAddrPort("203.0.113.7:4443")
	ml.advertise(append(first, moved)...)
	fleetWait(t, "the entry to list the new address", func() bool { return slices.Contains(direct(), moved) })
	if r, d := reg.registers.Load(), reg.deregisters.Load(); r != 2 || d != 1 {
		t.Errorf("%d registrations and %d deregistrations, want 2 and 1", r, d)
	}
}

// With the periodic check off, a listener served later still joins the
// entry at once.
func TestRegistryFollowsNewListener(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	p, _, direct := serveMoving(t, src, aster.WithRegistryRefresh(-1))
	if first := direct(); len(first) != 1 {
		t.Fatalf("first entry lists %v", first)
	}
	ln2, err := quic.Listen("127.0.0.1:0", p.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	second := ln2.Addr().Direct[0]
	errc := make(chan error, 1)
	go func() { errc <- p.srv.Serve(ln2) }()
	t.Cleanup(func() { p.stop(); <-errc })
	fleetWait(t, "the entry to list the second listener", func() bool { return slices.Contains(direct(), second) })
}

// serveMoving serves the Fleet service on a movingListener with
// WithRegistry(reg, "fleet") and opts, waits for the registration and
// returns the listener and a function reading the entry's addresses.
func serveMoving(t *testing.T, reg discovery.Registry, opts ...aster.ServerOption) (*testProducer, *movingListener, func() []netip.AddrPort) {
	t.Helper()
	key := trust.GenerateKey()
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	ml := &movingListener{Listener: ln}
	p := &testProducer{key: key, serveErr: make(chan error, 1)}
	p.srv = aster.NewServer(append([]aster.ServerOption{aster.WithSecretKey(key), aster.WithLogger(quietLogger()), aster.WithRegistry(reg, "fleet")}, opts...)...)
	p.srv.MustRegister(fleetService(p))
	go func() { p.serveErr <- p.srv.Serve(ml) }()
	t.Cleanup(p.stop)
	var src discovery.Source
	switch r := reg.(type) {
	case *discovery.StaticSource:
		src = r
	case *plainRegistry:
		src = r.src
	case *stuckRegistry:
		src = r.src
	}
	direct := entryDirect(src, fleetName)
	fleetWait(t, "the first registration", func() bool { return direct() != nil })
	return p, ml, direct
}

// stuckRegistry's registrations hang in Update until their ctx ends.
type stuckRegistry struct {
	src     *discovery.StaticSource
	entered chan struct{}
}

func (r *stuckRegistry) Register(ctx context.Context, name string, p discovery.Producer) (discovery.Registration, error) {
	rg, err := r.src.Register(ctx, name, p)
	return stuckRegistration{rg, r.entered}, err
}

type stuckRegistration struct {
	discovery.Registration
	entered chan struct{}
}

func (g stuckRegistration) Update(ctx context.Context, _ discovery.Producer) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

// Shutdown cuts short an update the registry is slow to answer instead of
// waiting out its bound (10 s), and still deregisters.
func TestRegistryShutdownStopsSlowUpdate(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	reg := &stuckRegistry{src: src, entered: make(chan struct{}, 1)}
	p, ml, direct := serveMoving(t, reg, aster.WithRegistryRefresh(20*time.Millisecond))
	ml.advertise(netip.MustParseAddrPort("203.0.113.7:4443"))
	select {
	case <-reg.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no update started")
	}
	start := time.Now()
	p.shutdown(t)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Shutdown took %v: it waited for the stuck update", took)
	}
	if d := direct(); d != nil {
		t.Errorf("after Shutdown the registry lists %v", d)
	}
}
