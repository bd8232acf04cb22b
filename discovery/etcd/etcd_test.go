package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/status"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

const testName = "fleet/MissionControl"

// producer returns test producer n, with a credential when cred is set.
func producer(t testing.TB, n int, cred bool) discovery.Producer {
	p := discovery.Producer{Addr: discovery.EndpointAddr{
		ID:     testutil.ID(t, n),
		Direct: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(4000+n))},
	}}
	if cred {
		p.Credential = fmt.Appendf(nil, "credential of producer %d \x00\xff", n)
	}
	return p
}

// logSink returns a logger that writes text lines to the returned buffer.
func logSink() (*slog.Logger, *testutil.SyncBuffer) {
	b := new(testutil.SyncBuffer)
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// openRegistry returns a Registry on endpoint, closed at the end of the test.
func openRegistry(t testing.TB, endpoint string, cfg Config) *Registry {
	t.Helper()
	cfg.Endpoints = []string{endpoint}
	if cfg.Logger == nil {
		cfg.Logger, _ = logSink()
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// rawClient returns a plain etcd client on endpoint.
func rawClient(t testing.TB, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func startWatch(t testing.TB, r *Registry, name string) discovery.Watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	w, err := r.Watch(ctx, name)
	if err != nil {
		t.Fatalf("Watch(%q): %v", name, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func register(t testing.TB, r *Registry, name string, p discovery.Producer) discovery.Registration {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reg, err := r.Register(ctx, name, p)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return reg
}

// next calls w.Next with a timeout d.
func next(t testing.TB, w discovery.Watch, d time.Duration) ([]discovery.Producer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	return w.Next(ctx)
}

// mustNext calls w.Next and fails the test on an error.
func mustNext(t testing.TB, w discovery.Watch, d time.Duration) []discovery.Producer {
	t.Helper()
	ps, err := next(t, w, d)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ps
}

// waitFor calls Next until the set is want (in any order), failing after d.
func waitFor(t testing.TB, w discovery.Watch, d time.Duration, want ...discovery.Producer) []discovery.Producer {
	t.Helper()
	deadline := time.Now().Add(d)
	var got []discovery.Producer
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("after %v the set is %s, want %s", d, show(got), show(want))
		}
		ps, err := next(t, w, left)
		if err != nil {
			t.Fatalf("Next: %v (the set is %s, want %s)", err, show(got), show(want))
		}
		got = ps
		if sameProducers(got, want) {
			return got
		}
	}
}

func sameProducers(a, b []discovery.Producer) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range b {
		if !slices.ContainsFunc(a, p.Equal) {
			return false
		}
	}
	return true
}

func show(ps []discovery.Producer) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Addr.ID.Short()
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestRegisterWatchDeregister(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	pub := openRegistry(t, ep, Config{})
	sub := openRegistry(t, ep, Config{})
	w := startWatch(t, sub, testName)

	if ps := mustNext(t, w, 5*time.Second); len(ps) != 0 {
		t.Fatalf("first Next: %s, want an empty set", show(ps))
	}

	p1, p2 := producer(t, 1, true), producer(t, 2, false)
	reg1 := register(t, pub, testName, p1)
	got := waitFor(t, w, 5*time.Second, p1)
	if string(got[0].Credential) != string(p1.Credential) {
		t.Fatalf("credential %q, want %q", got[0].Credential, p1.Credential)
	}

	// A second producer: measure how long until the watcher sees it.
	start := time.Now()
	reg2 := register(t, pub, testName, p2)
	waitFor(t, w, 5*time.Second, p1, p2)
	latency := time.Since(start)
	t.Logf("a new producer reached the watcher %v after Register was called", latency)
	if latency >= time.Second {
		t.Errorf("a new producer took %v to reach the watcher, want well under 1 s", latency)
	}

	// The entry is where the layout says, with no credential field for p2.
	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := raw.Get(ctx, DefaultPrefix+testName+"/"+p2.Addr.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%d keys for p2, want 1", len(resp.Kvs))
	}
	if want := `{"addr":"` + p2.Addr.String() + `"}`; string(resp.Kvs[0].Value) != want {
		t.Fatalf("value %s, want %s", resp.Kvs[0].Value, want)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatal("the entry has no lease")
	}

	if err := reg1.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	waitFor(t, w, 5*time.Second, p2)
	if err := reg1.Deregister(ctx); err != nil {
		t.Fatalf("second Deregister: %v", err)
	}
	resp, err = raw.Get(ctx, DefaultPrefix+testName+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || !strings.HasSuffix(string(resp.Kvs[0].Key), p2.Addr.ID.String()) {
		t.Fatalf("after deregistering p1 the keys are %v, want p2's only", resp.Kvs)
	}
	leases, err := raw.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 1 {
		t.Fatalf("%d leases after deregistering p1, want 1 (p2's): the lease was not revoked", len(leases.Leases))
	}

	if err := reg2.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if ps := waitFor(t, w, 5*time.Second); len(ps) != 0 {
		t.Fatalf("after deregistering both: %s", show(ps))
	}
}

// TestSameIdentityReplaced: a new instance registers the same endpoint id
// before the old one deregisters; the old Deregister must not remove the
// new instance's entry.
func TestSameIdentityReplaced(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	old := openRegistry(t, ep, Config{})
	fresh := openRegistry(t, ep, Config{})
	w := startWatch(t, openRegistry(t, ep, Config{}), testName)
	mustNext(t, w, 5*time.Second)

	p := producer(t, 1, false)
	regOld := register(t, old, testName, p)
	waitFor(t, w, 5*time.Second, p)
	moved := p
	moved.Addr.Direct = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5999")}
	register(t, fresh, testName, moved)
	waitFor(t, w, 5*time.Second, moved)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := regOld.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	// The old lease is revoked; the new entry stays. Watch for a change for
	// two seconds: there must be none.
	if ps, err := next(t, w, 2*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the old instance deregistered: %s, %v; want no change", show(ps), err)
	}
}

// TestAbandonedRegistrationExpires simulates a producer's process dying:
// its etcd client goes away without deregistering, and the entry vanishes
// when the lease expires.
func TestAbandonedRegistrationExpires(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	dying := rawClient(t, ep)
	logger, logs := logSink()
	pub, err := NewFromClient(dying, Config{TTL: time.Second, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	w := startWatch(t, openRegistry(t, ep, Config{}), testName)
	mustNext(t, w, 5*time.Second)

	p, q := producer(t, 1, false), producer(t, 2, false)
	register(t, pub, testName, p)
	register(t, openRegistry(t, ep, Config{}), testName, q)
	waitFor(t, w, 5*time.Second, p, q)

	dying.Close()
	start := time.Now()
	waitFor(t, w, 15*time.Second, q)
	t.Logf("an abandoned entry (TTL 1 s, which etcd may raise to its minimum) vanished after %v", time.Since(start))
	pub.Close()
	if strings.Contains(logs.String(), "registered again") {
		t.Errorf("a registration whose client was closed registered again:\n%s", logs)
	}
}

// TestHostileEntries puts entries a registry must never return, both before
// the watch starts (read with Get) and after (received as events).
func TestHostileEntries(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	logger, logs := logSink()
	r := openRegistry(t, ep, Config{Logger: logger})
	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	good, other := producer(t, 1, true), producer(t, 2, false)
	goodVal, err := encodeValue(good)
	if err != nil {
		t.Fatal(err)
	}
	otherVal, _ := encodeValue(other)
	dir := DefaultPrefix + testName + "/"
	id := func(n int) string { return testutil.ID(t, n).String() }
	hostile := map[string]string{
		dir + id(3):                      `not json`,
		dir + id(4):                      string(otherVal), // the address of another id
		dir + id(5):                      `{"addr":"aster1notbase58OIl0"}`,
		dir + id(6):                      `{"addr":"` + id(6) + `"}`, // a bare id, not an aster1 address
		dir + id(7):                      `{"addr":"` + strings.Repeat("x", MaxValueSize) + `"}`,
		dir + strings.ToUpper(id(1)):     string(goodVal),
		dir + "short":                    string(goodVal),
		dir + id(8):                      `{"addr":["aster1"]}`,
		dir + id(9):                      `{"addr":"` + producer(t, 9, false).Addr.String() + `","credential":"!!notbase64"}`,
		dir + id(10):                     ``,
		dir + id(11) + "/x":              string(goodVal), // a nested name's key: not ours, not logged
		dir + "sub/" + id(1):             string(goodVal), // a nested name's key: not ours, not logged
		DefaultPrefix + testName + id(1): string(goodVal), // no "/" after the name
	}
	put := func() {
		for k, v := range hostile {
			if _, err := raw.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	put()
	if _, err := raw.Put(ctx, dir+id(1), string(goodVal)); err != nil {
		t.Fatal(err)
	}

	w := startWatch(t, r, testName)
	got := mustNext(t, w, 5*time.Second)
	if !sameProducers(got, []discovery.Producer{good}) {
		t.Fatalf("from Get: %s, want only the good entry", show(got))
	}

	// Again as events, with a good entry after them to know when they
	// have all been seen.
	put()
	if _, err := raw.Put(ctx, dir+id(2), string(otherVal)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, 5*time.Second, good, other)

	// Each bad key was logged once per revision: twice (Get, then event),
	// and the keys of nested names never.
	text := logs.String()
	for k := range hostile {
		n := strings.Count(text, fmt.Sprintf("key=%s ", k))
		n += strings.Count(text, fmt.Sprintf("key=%q ", k))
		want := 2
		if strings.Contains(strings.TrimPrefix(k, dir), "/") || !strings.HasPrefix(k, dir) {
			want = 0
		}
		if n != want {
			t.Errorf("key %.80s logged %d times, want %d", k, n, want)
		}
	}
	if t.Failed() {
		t.Logf("log:\n%s", text)
	}
}

// TestEtcdGoesAway stops etcd under a watch and a registration: the watch
// keeps the last set (Next reports no change, never an empty set), and once
// etcd is back the registration is renewed or made again and changes flow.
func TestEtcdGoesAway(t *testing.T) {
	srv := etcdtest.StartServer(t)
	ep := srv.Endpoint()
	pubLogger, pubLogs := logSink()
	subLogger, subLogs := logSink()
	pub := openRegistry(t, ep, Config{TTL: time.Second, DialTimeout: time.Second, Logger: pubLogger})
	sub := openRegistry(t, ep, Config{DialTimeout: time.Second, Logger: subLogger})
	w := startWatch(t, sub, testName)
	mustNext(t, w, 5*time.Second)
	p1, p2 := producer(t, 1, false), producer(t, 2, false)
	register(t, pub, testName, p1)
	waitFor(t, w, 5*time.Second, p1)

	srv.Stop()
	// Down for longer than the lease TTL (etcd raises 1 s to about 2 s):
	// the client may give the lease up and register again, or find it
	// renewed by the restarted etcd; either way p1 must stay listed.
	if ps, err := next(t, w, 4*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next while etcd is down: %s, %v; want the last set kept (no change)", show(ps), err)
	}
	srv.Start()
	restarted := time.Now()

	reg2 := register(t, pub, testName, p2)
	waitFor(t, w, 20*time.Second, p1, p2)
	t.Logf("changes flowed again %v after etcd restarted", time.Since(restarted))

	// p1 stays registered over several TTLs.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if ps, err := next(t, w, 5*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the restart: %s, %v; want p1 and p2 to stay", show(ps), err)
	}
	if err := reg2.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, 5*time.Second, p1)
	t.Logf("registry log:\n%s\nwatcher log:\n%s", pubLogs, subLogs)
}

// TestUnreachableAtStart: New and Watch fail within DialTimeout when etcd
// is not there (nothing listening) or does not answer (a listener that
// accepts and says nothing).
func TestUnreachableAtStart(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		return ln.Addr().String()
	}()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	done := make(chan struct{})
	defer func() { silent.Close(); <-done }()
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()

	const timeout = 700 * time.Millisecond
	for _, addr := range []string{closed, silent.Addr().String()} {
		t.Run(addr, func(t *testing.T) {
			start := time.Now()
			_, err := New(Config{Endpoints: []string{addr}, DialTimeout: timeout})
			took := time.Since(start)
			t.Logf("New failed after %v: %v", took, err)
			if err == nil {
				t.Fatal("New succeeded with no etcd")
			}
			if status.CodeOf(err) != status.Unavailable || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v: code %v, want Unavailable wrapping context.DeadlineExceeded", err, status.CodeOf(err))
			}
			if took > timeout+time.Second {
				t.Errorf("New took %v, want about DialTimeout (%v)", took, timeout)
			}

			c, err := clientv3.New(clientv3.Config{Endpoints: []string{addr}, Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r, err := NewFromClient(c, Config{DialTimeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			start = time.Now()
			_, err = r.Watch(t.Context(), testName)
			took = time.Since(start)
			t.Logf("Watch failed after %v: %v", took, err)
			if err == nil || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Watch: %v, want an error wrapping context.DeadlineExceeded", err)
			}
			if took > timeout+time.Second {
				t.Errorf("Watch took %v, want about DialTimeout (%v)", took, timeout)
			}
		})
	}
}

// TestClose: closing a watch or the registry unblocks Next with
// discovery.ErrClosed; Watch and Register fail after Close.
func TestClose(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	r := openRegistry(t, ep, Config{})
	w1, w2 := startWatch(t, r, testName), startWatch(t, r, "other")
	mustNext(t, w1, 5*time.Second)
	mustNext(t, w2, 5*time.Second)

	errs := make(chan error, 2)
	for _, w := range []discovery.Watch{w1, w2} {
		go func() {
			_, err := w.Next(context.Background())
			errs <- err
		}()
	}
	w1.Close()
	if err := <-errs; !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next after the watch's Close: %v, want ErrClosed", err)
	}
	reg := register(t, r, testName, producer(t, 1, false))
	r.Close()
	if err := <-errs; !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next after the registry's Close: %v, want ErrClosed", err)
	}
	if _, err := w2.Next(context.Background()); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next on a closed watch: %v", err)
	}
	if _, err := r.Watch(t.Context(), testName); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
	if _, err := r.Register(t.Context(), testName, producer(t, 2, false)); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Register after Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := reg.Deregister(t.Context()); err != nil {
		t.Fatalf("Deregister after Close (Close deregistered it): %v", err)
	}

	// Close revoked the registration: the entry is gone.
	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := raw.Get(ctx, DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("%d keys left after Close", resp.Count)
	}
}

func TestBadArguments(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	r := openRegistry(t, ep, Config{})
	ctx := t.Context()
	for _, name := range []string{"", "/a", "a/", "a//b", "a/../b", "..", "a/./b", "a b", "a\x00b", "a\\b", strings.Repeat("x", MaxNameLen+1), "\xff"} {
		if _, err := r.Watch(ctx, name); status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("Watch(%q): %v, want InvalidArgument", name, err)
		}
		if _, err := r.Register(ctx, name, producer(t, 1, false)); status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("Register(%q): %v, want InvalidArgument", name, err)
		}
	}
	for _, name := range []string{"a", "fleet/MissionControl", "a.b/c-d/_e", strings.Repeat("x", MaxNameLen), "ünï/cödé"} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q): %v", name, err)
		}
	}
	bad := []discovery.Producer{
		{}, // no id
		{Addr: discovery.EndpointAddr{ID: testutil.ID(t, 1), Relay: strings.Repeat("r", 300)}},
		{Addr: producer(t, 1, false).Addr, Credential: make([]byte, MaxValueSize)},
	}
	for i, p := range bad {
		if _, err := r.Register(ctx, testName, p); status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("Register(bad producer %d): %v, want InvalidArgument", i, err)
		}
	}

	for _, cfg := range []Config{
		{},
		{Endpoints: []string{""}},
		{Endpoints: []string{ep}, TTL: 999 * time.Millisecond},
		{Endpoints: []string{ep}, TTL: -time.Second},
		{Endpoints: []string{ep}, DialTimeout: -time.Second},
		{Endpoints: []string{ep}, Prefix: "\xff"},
	} {
		if r, err := New(cfg); status.CodeOf(err) != status.InvalidArgument {
			if err == nil {
				r.Close()
			}
			t.Errorf("New(%+v): %v, want InvalidArgument", cfg, err)
		}
	}
	if _, err := NewFromClient(nil, Config{}); status.CodeOf(err) != status.InvalidArgument {
		t.Errorf("NewFromClient(nil): %v", err)
	}
}

// TestPrefix: a custom prefix (without its trailing "/") keeps registries
// apart.
func TestPrefix(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	a := openRegistry(t, ep, Config{Prefix: "/team-a"})
	b := openRegistry(t, ep, Config{Prefix: "/team-b/"})
	wa, wb := startWatch(t, a, testName), startWatch(t, b, testName)
	mustNext(t, wa, 5*time.Second)
	mustNext(t, wb, 5*time.Second)
	p := producer(t, 1, false)
	register(t, a, testName, p)
	waitFor(t, wa, 5*time.Second, p)
	if ps, err := next(t, wb, time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("the other prefix's watch saw %s, %v", show(ps), err)
	}
	resp, err := rawClient(t, ep).Get(t.Context(), "/team-a/"+testName+"/"+p.Addr.ID.String())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("entry not at /team-a/…: %v %v", resp, err)
	}
}

// TestCompactedWhileAway cuts one watcher off etcd (through a proxy) while
// entries change and the history is compacted: when it is back, the watch
// cannot resume from its revision, reads everything again and reports the
// new set.
func TestCompactedWhileAway(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	px := startProxy(t, strings.TrimPrefix(ep, "http://"))
	logger, logs := logSink()
	sub := openRegistry(t, "http://"+px.addr, Config{DialTimeout: time.Second, Logger: logger})
	pub := openRegistry(t, ep, Config{})
	w := startWatch(t, sub, testName)
	mustNext(t, w, 5*time.Second)
	p1, p2 := producer(t, 1, false), producer(t, 2, false)
	reg1 := register(t, pub, testName, p1)
	waitFor(t, w, 5*time.Second, p1)

	px.cut()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	register(t, pub, testName, p2)
	if err := reg1.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, ep)
	resp, err := raw.Put(ctx, "/unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if ps, err := next(t, w, 2*time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next while cut off: %s, %v; want the last set kept", show(ps), err)
	}

	px.resume()
	back := time.Now()
	waitFor(t, w, 20*time.Second, p2)
	t.Logf("the watch caught up %v after the connection was restored", time.Since(back))
	text := logs.String()
	for _, want := range []string{"etcd unreachable", "compacted", "reading the entries again"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log does not say %q:\n%s", want, text)
		}
	}
}

// TestCloseRacesRegisterAndWatch closes a registry while Register and
// Watch calls are under way: each either fails with ErrClosed or is
// stopped by Close; nothing hangs or leaks (TestMain checks goroutines).
func TestCloseRacesRegisterAndWatch(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	r := openRegistry(t, ep, Config{})
	var wg sync.WaitGroup
	results := make(chan error, 40)
	for i := range 20 {
		wg.Go(func() {
			_, err := r.Register(t.Context(), testName, producer(t, i+1, false))
			results <- err
		})
		wg.Go(func() {
			w, err := r.Watch(t.Context(), testName)
			if err == nil {
				_, err = w.Next(t.Context()) // the first set
				if err == nil {
					_, err = w.Next(t.Context()) // blocks until Close, or a change
					for err == nil {
						_, err = w.Next(t.Context())
					}
				}
			}
			results <- err
		})
	}
	// Close once some calls have got through (an entry is in etcd) while
	// others are still under way. The test holds for any interleaving;
	// this makes the interesting ones likely.
	raw := rawClient(t, ep)
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := raw.Get(t.Context(), DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no Register call got through in 10 s")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Close took %v", time.Since(start))
	wg.Wait()
	t.Logf("every call returned %v after Close began", time.Since(start))
	close(results)
	for err := range results {
		if err != nil && !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("a call racing Close: %v, want success or ErrClosed", err)
		}
	}
	resp, err := raw.Get(t.Context(), DefaultPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d entries left after Close", resp.Count)
	}
}

// TestLeaseLostReregisters revokes a registration's lease behind its back
// (as an etcd that lost it would): the registration grants a new lease and
// puts the entry again.
func TestLeaseLostReregisters(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	logger, logs := logSink()
	pub := openRegistry(t, ep, Config{Logger: logger})
	w := startWatch(t, openRegistry(t, ep, Config{}), testName)
	mustNext(t, w, 5*time.Second)
	p := producer(t, 1, true)
	register(t, pub, testName, p)
	waitFor(t, w, 5*time.Second, p)

	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	key := DefaultPrefix + testName + "/" + p.Addr.ID.String()
	resp, err := raw.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("entry: %v, %v", resp, err)
	}
	old := clientv3.LeaseID(resp.Kvs[0].Lease)
	if _, err := raw.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		resp, err := raw.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 && clientv3.LeaseID(resp.Kvs[0].Lease) != old {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the entry was not put again with a new lease:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Logf("registered again %v after the lease was revoked", time.Since(start))
	// The log line follows the put (and the write of an entry updated
	// meanwhile), so it may come a moment after the entry is back.
	for !strings.Contains(logs.String(), "registered again") {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("no log of the new registration:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	// The watcher ends with p listed (it may or may not have seen the gap).
	last := []discovery.Producer{p}
	for {
		ps, err := next(t, w, 2*time.Second)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = ps
	}
	if !sameProducers(last, []discovery.Producer{p}) {
		t.Fatalf("the watcher ends with %s, want p", show(last))
	}
}

// TestMaxEntries: a name with more than MaxEntries entries yields a set of
// MaxEntries, from the first read and as events arrive, and says so in the
// log.
func TestMaxEntries(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := DefaultPrefix + testName + "/"
	entry := func(n int) clientv3.Op {
		p := discovery.Producer{Addr: discovery.EndpointAddr{ID: testutil.ID(t, n)}}
		v, err := encodeValue(p)
		if err != nil {
			t.Fatal(err)
		}
		return clientv3.OpPut(dir+p.Addr.ID.String(), string(v))
	}
	for start := 0; start < MaxEntries+1; start += 100 {
		var ops []clientv3.Op
		for n := start; n < min(start+100, MaxEntries+1); n++ {
			ops = append(ops, entry(n))
		}
		if _, err := raw.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	logger, logs := logSink()
	w := startWatch(t, openRegistry(t, ep, Config{Logger: logger}), testName)
	if ps := mustNext(t, w, 30*time.Second); len(ps) != MaxEntries {
		t.Fatalf("%d producers, want %d", len(ps), MaxEntries)
	}
	if !strings.Contains(logs.String(), "too many entries") {
		t.Errorf("no log of the entries left out:\n%s", logs)
	}

	// The set is full: a new entry is ignored (and logged) ...
	if _, err := raw.Txn(ctx).Then(entry(MaxEntries + 1)).Commit(); err != nil {
		t.Fatal(err)
	}
	// ... and a deletion is seen: the set shrinks, without the ignored one.
	if _, err := raw.Delete(ctx, dir+testutil.ID(t, 0).String()); err != nil {
		t.Fatal(err)
	}
	if ps := mustNext(t, w, 30*time.Second); len(ps) != MaxEntries-1 {
		t.Fatalf("after a deletion: %d producers, want %d", len(ps), MaxEntries-1)
	}
	if !strings.Contains(logs.String(), "already holds") {
		t.Errorf("no log of the entry ignored for the bound:\n%s", logs)
	}
}
