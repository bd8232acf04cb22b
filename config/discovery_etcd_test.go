package config_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// producerIdentity writes an .aster-identity file with key and, if
// services is not empty, a producer credential signed by root naming them.
func producerIdentity(t *testing.T, root, key trust.SecretKey, services string) string {
	t.Helper()
	id := &identity.Identity{Key: key}
	if services != "" {
		cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleProducer, Name: "ops-producer",
			EndpointID: trust.IDOf(key), Attributes: map[string]string{aster.ProducerServicesAttr: services},
			IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour)}
		if err := enroll.Sign(root, cred); err != nil {
			t.Fatal(err)
		}
		id.Peers = []*enroll.Credential{cred}
	}
	path := filepath.Join(t.TempDir(), "producer.identity")
	if err := identity.Save(path, id); err != nil {
		t.Fatal(err)
	}
	return path
}

// serveRegistered builds a server from c (which registers in etcd), serves
// the Ops service on loopback, and returns it.
func serveRegistered(t *testing.T, c config.Config, opts ...aster.ServerOption) *config.Server {
	t.Helper()
	srv, err := c.NewServer(append([]aster.ServerOption{aster.WithLogger(quiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv.MustRegister(opsService(nil, nil))
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		<-errc
	})
	return srv
}

// TestRegisteringServer checks the server and client sides of the
// [discovery] settings over a real etcd: NewServer registers a server's
// services under discovery.prefix with the producer credential of its
// identity file; a client with allow_all_producers=false calls only the
// producer whose credential its root signed; Shutdown withdraws the entry.
func TestRegisteringServer(t *testing.T) {
	ep, _ := etcdtest.Start(t) // before isolate, which clears ASTER_ETCD and moves away
	isolate(t)
	root := testutil.Key(t, 50)
	good, bare, other := testutil.Key(t, 51), testutil.Key(t, 52), testutil.Key(t, 53)

	serverCfg := func(identityFile string) config.Config {
		c := config.Default()
		c.IdentityFile, c.LogLevel = identityFile, "error"
		c.Discovery, c.DiscoveryEndpoints, c.DiscoveryPrefix = "etcd", ep, "/prod/"
		return c
	}
	goodSrv := serveRegistered(t, serverCfg(producerIdentity(t, root, good, "Ops")))
	// The producers without a credential for Ops count the connections
	// they admit: a client checking credentials must never dial them.
	var uncredentialedConns atomic.Int64
	countConns := aster.WithConnHook(func(handler.Peer) func() { uncredentialedConns.Add(1); return nil })
	serveRegistered(t, serverCfg(producerIdentity(t, root, bare, "")), countConns)
	serveRegistered(t, serverCfg(producerIdentity(t, root, other, "Billing")), countConns)

	ctx := ctxT(t)
	client := config.Default()
	client.Discovery, client.DiscoveryEndpoints, client.LogLevel = "etcd", ep, "error"
	client.RootPubkey = root.Public().(ed25519.PublicKey)
	client.AllowAllProducers = false
	f, err := client.DialFleet(ctx, "etcd:///prod/Ops", aster.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range 20 {
		if _, err := aster.CallUnary[Msg](ctx, f, "Ops.open", &Msg{Text: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	states := map[trust.EndpointID]aster.ProducerStatus{}
	for _, p := range f.Producers() {
		states[p.ID] = p
	}
	if len(states) != 3 {
		t.Fatalf("producers %+v, want the 3 registered", f.Producers())
	}
	if p := states[trust.IDOf(good)]; p.State != aster.ProducerReady || p.Credential != "valid" || p.Calls != 20 {
		t.Errorf("credentialed producer: %+v, want ready, valid, 20 calls", p)
	}
	for _, k := range []trust.SecretKey{bare, other} {
		if p := states[trust.IDOf(k)]; p.State != aster.ProducerRejected || p.Calls != 0 {
			t.Errorf("producer without a credential for Ops: %+v, want rejected, no calls", p)
		}
	}

	if n := uncredentialedConns.Load(); n != 0 {
		t.Errorf("the producers without a credential for Ops admitted %d connections, want 0", n)
	}

	// A client that allows all producers calls every one.
	open := config.Default()
	open.Discovery, open.DiscoveryEndpoints, open.LogLevel = "etcd", ep, "error"
	fa, err := open.DialFleet(ctx, "etcd:///prod/Ops", aster.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	deadline := time.Now().Add(10 * time.Second)
	for ready := 0; ready < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("allow-all fleet: %+v", fa.Producers())
		}
		ready = 0
		for _, p := range fa.Producers() {
			if p.State == aster.ProducerReady {
				ready++
			}
		}
	}

	if n := uncredentialedConns.Load(); n < 2 {
		t.Errorf("the allow-all fleet connected %d times to the producers without a credential, want both", n)
	}

	// Shutdown withdraws the registration before draining: the
	// credentialed producer leaves the listing, and with it the only
	// producer this client accepts.
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := goodSrv.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := listed(f, trust.IDOf(good)); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shut-down producer is still listed: %+v", f.Producers())
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err = aster.CallUnary[Msg](ctx, f, "Ops.open", &Msg{Text: "hi"})
	wantCode(t, err, status.Unavailable)
}

func listed(f *config.Fleet, id trust.EndpointID) (aster.ProducerStatus, bool) {
	for _, p := range f.Producers() {
		if p.ID == id {
			return p, true
		}
	}
	return aster.ProducerStatus{}, false
}

// TestFleetOptionsFailClosed checks that allow_all_producers=false without
// a root key is refused rather than allowing every producer.
func TestFleetOptionsFailClosed(t *testing.T) {
	isolate(t)
	t.Setenv("ASTER_ALLOW_ALL_PRODUCERS", "false")
	c, err := config.Load()
	if err != nil {
		// The server-side check (TrustPolicy) is at NewServer, not Load.
		t.Fatal(err)
	}
	_, err = c.FleetOptions()
	checkConfigErr(t, err, nil, "trust.allow_all_producers", "ASTER_ALLOW_ALL_PRODUCERS", "no root key is set")
	_, err = c.DialFleet(ctxT(t), "static:///"+staticAddr(t, 9, "127.0.0.1:1"))
	checkConfigErr(t, err, nil, "trust.allow_all_producers", "ASTER_ALLOW_ALL_PRODUCERS", "no root key is set")

	t.Setenv("ASTER_ROOT_PUBKEY", trust.IDOf(testutil.Key(t, 50)).String())
	c = must(config.Load())
	opts, err := c.FleetOptions()
	if err != nil || len(opts) != 1 {
		t.Fatalf("FleetOptions with a root: %v, %v", opts, err)
	}

	// A misspelt allow_all_producers = false, in the environment or the
	// file, does not leave the client calling every producer.
	for _, tc := range []struct{ env, toml, source string }{
		{env: "ASTER_ALLOW_ALL_PRODUCER"},
		{env: "ASTER_TRUST_ALLOW_ALL_PRODUCERS"},
		{toml: "[trust]\nallow_all_producer = false\n"},
		{toml: "allow_all_producers = false\n"},
	} {
		dir := isolate(t)
		var c config.Config
		source := tc.env
		if tc.env != "" {
			t.Setenv(tc.env, "false")
			c = must(config.Load())
		} else {
			source = writeFile(t, dir, "client.toml", tc.toml)
			c = must(config.LoadFile(source))
		}
		_, err := c.FleetOptions()
		checkConfigErr(t, err, nil, "trust.allow_all_producers", source, "looks like trust.allow_all_producers")
	}
	// Unrelated unknown variables change nothing.
	isolate(t)
	t.Setenv("ASTER_BIND_ADR", "x")
	c = must(config.Load())
	if opts, err := c.FleetOptions(); err != nil || opts != nil {
		t.Errorf("FleetOptions = %v, %v", opts, err)
	}
}

// TestRegisteringServerEtcdDown checks that a server asked to register
// fails at NewServer, with UNAVAILABLE naming the endpoint, when etcd does
// not answer, rather than serving unannounced.
func TestRegisteringServerEtcdDown(t *testing.T) {
	isolate(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	t.Setenv("ASTER_DISCOVERY", "etcd")
	t.Setenv("ASTER_DISCOVERY_ENDPOINTS", dead)
	t.Setenv("ASTER_DISCOVERY_PREFIX", "fleet")
	t.Setenv("ASTER_LOG_LEVEL", "error")
	c := must(config.Load())
	if !c.Registers() {
		t.Fatal("Registers() = false with backend etcd and a prefix")
	}
	srv, err := c.NewServer()
	if err == nil {
		srv.Close()
		t.Fatal("NewServer with etcd down succeeded")
	}
	var ce *config.Error
	if status.CodeOf(err) != status.Unavailable || errors.As(err, &ce) {
		t.Errorf("NewServer with etcd down: %v, want UNAVAILABLE (not a config error)", err)
	}
}
