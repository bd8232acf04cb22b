package aster_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Fleet tests: real servers on loopback QUIC in this process, a
// StaticSource as the registry.

const fleetName = "fleet/Fleet"

type FleetReq struct {
	N int `cbor:"n"`
}

func (FleetReq) WireType() string { return "test/FleetReq" }

type FleetReply struct {
	Server string `cbor:"server"`
	N      int    `cbor:"n"`
}

func (FleetReply) WireType() string { return "test/FleetReply" }

// countingListener counts accepted connections and can kill them all.
type countingListener struct {
	transport.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []transport.Conn
}

func (l *countingListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err == nil {
		l.accepted.Add(1)
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// kill closes the listener and every connection it accepted, without the
// server's Shutdown or Close: what its callers see of a killed process
// (here with a CONNECTION_CLOSE; a real SIGKILL is noticed by the idle
// timeout).
func (l *countingListener) kill() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close(transport.ConnProtocolError, "killed")
	}
}

// testProducer is one server of the Fleet service.
type testProducer struct {
	key     trust.SecretKey
	srv     *aster.Server
	ln      *countingListener
	served  atomic.Int64 // get and put calls answered
	inPut   atomic.Int64 // put calls in their handler
	delay   atomic.Int64 // ns each get sleeps
	failGet atomic.Bool  // get answers UNAVAILABLE
	// spoofShutdown: get answers what a draining server's refusal used to
	// look like (UNAVAILABLE "server shutting down", not processed).
	spoofShutdown atomic.Bool
	// relay, when set, makes get call get on that client and return its
	// answer, error included, as is (a gateway).
	relay    atomic.Pointer[aster.Client]
	serveErr chan error
	stopped  atomic.Bool
}

func (p *testProducer) id() trust.EndpointID { return trust.IDOf(p.key) }

func (p *testProducer) entry() discovery.Producer { return discovery.Producer{Addr: p.ln.Addr()} }

func fleetService(p *testProducer) *handler.Service {
	name := p.id().Short()
	return handler.NewService("Fleet", 1).
		Handle("get", handler.Unary(func(ctx context.Context, r *FleetReq) (*FleetReply, error) {
			if d := time.Duration(p.delay.Load()); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if p.failGet.Load() {
				return nil, status.New(status.Unavailable, "failing on purpose")
			}
			if p.spoofShutdown.Load() {
				return nil, status.New(status.Unavailable, "server shutting down").WithNotProcessed()
			}
			if c := p.relay.Load(); c != nil {
				return aster.CallUnary[FleetReply](ctx, c, "Fleet.get", r)
			}
			p.served.Add(1)
			return &FleetReply{Server: name, N: r.N}, nil
		}), handler.Idempotent()).
		Handle("put", handler.Unary(func(ctx context.Context, r *FleetReq) (*FleetReply, error) {
			p.inPut.Add(1)
			defer p.inPut.Add(-1)
			select {
			case <-time.After(time.Duration(r.N) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			p.served.Add(1)
			return &FleetReply{Server: name, N: r.N}, nil
		}))
}

// fleetTallyService is session-scoped: each session's instance sums what it
// is sent and names its server.
type fleetTally struct {
	server string
	n      int
}

func fleetTallyService(server string) *handler.Service {
	return handler.NewSessionService("Tally", 1, func(context.Context, handler.Peer) (*fleetTally, error) {
		return &fleetTally{server: server}, nil
	}).Handle("add", handler.On(func(t *fleetTally) handler.Def {
		return handler.Unary(func(_ context.Context, r *FleetReq) (*FleetReply, error) {
			t.n += r.N
			return &FleetReply{Server: t.server, N: t.n}, nil
		})
	}))
}

// startProducer serves the Fleet and Tally services on loopback QUIC with
// key (a fresh key if nil).
func startProducer(t *testing.T, key trust.SecretKey, opts ...aster.ServerOption) *testProducer {
	t.Helper()
	if key == nil {
		key = trust.GenerateKey()
	}
	p := &testProducer{key: key, serveErr: make(chan error, 1)}
	p.srv = aster.NewServer(append([]aster.ServerOption{aster.WithSecretKey(key), aster.WithLogger(quietLogger())}, opts...)...)
	p.srv.MustRegister(fleetService(p), fleetTallyService(p.id().Short()))
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.ln = &countingListener{Listener: ln}
	go func() { p.serveErr <- p.srv.Serve(p.ln) }()
	t.Cleanup(p.stop)
	return p
}

// stop closes the server (once) and waits for Serve.
func (p *testProducer) stop() {
	if p.stopped.Swap(true) {
		return
	}
	p.srv.Close()
	<-p.serveErr
}

// shutdown shuts the server down gracefully (once) and waits for Serve.
func (p *testProducer) shutdown(t *testing.T) {
	if p.stopped.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-p.serveErr
}

func fleetOpts(extra ...aster.ClientOption) []aster.ClientOption {
	return append([]aster.ClientOption{
		aster.WithLogger(quietLogger()),
		aster.WithOutlierDetection(aster.OutlierDetection{DialTimeout: time.Second, BaseEjection: 200 * time.Millisecond}),
	}, extra...)
}

func dialFleet(t *testing.T, src discovery.Source, opts ...aster.ClientOption) *aster.Fleet {
	t.Helper()
	f, err := aster.DialFleet(ctxT(t), src, fleetName, fleetOpts(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// fleetWait polls cond until it holds or 10 s pass.
func fleetWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// readyCount returns the number of ready producers of f.
func readyCount(f *aster.Fleet) int {
	n := 0
	for _, p := range f.Producers() {
		if p.State == aster.ProducerReady {
			n++
		}
	}
	return n
}

func producerState(f *aster.Fleet, id trust.EndpointID) (aster.ProducerStatus, bool) {
	for _, p := range f.Producers() {
		if p.ID == id {
			return p, true
		}
	}
	return aster.ProducerStatus{}, false
}

// load runs callers goroutines calling method until stop is closed and
// returns the errors (with the producer each failed call went to last).
type loadResult struct {
	calls  atomic.Int64
	mu     sync.Mutex
	errs   []error
	peers  []trust.EndpointID
	counts map[string]int // by replying server
	wait   func()         // waits for the callers once stop is closed
}

func runLoad(ctx context.Context, cc aster.Caller, method string, n, callers int, stop <-chan struct{}) *loadResult {
	r := &loadResult{counts: map[string]int{}}
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var peer trust.EndpointID
				rec := middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
					cs, err := cc.NewStream(ctx, call)
					peer = call.Peer
					return cs, err
				})
				resp, err := aster.CallUnary[FleetReply](ctx, rec, method, &FleetReq{N: n})
				r.calls.Add(1)
				r.mu.Lock()
				if err != nil {
					r.errs = append(r.errs, err)
					r.peers = append(r.peers, peer)
				} else {
					r.counts[resp.Server]++
				}
				r.mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		}()
	}
	r.wait = wg.Wait
	return r
}

func TestFleetZeroProducersUnavailableAtOnce(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	// A dial timeout far above the call's deadline: waiting for producers
	// would end in DEADLINE_EXCEEDED, not UNAVAILABLE.
	f, err := aster.DialFleet(ctxT(t), src, fleetName, aster.WithLogger(quietLogger()),
		aster.WithOutlierDetection(aster.OutlierDetection{DialTimeout: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
	if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), fleetName) {
		t.Fatalf("call with no producers: %v, want UNAVAILABLE naming %s", err, fleetName)
	}
	// The same through NewFleet for a name the source never listed.
	g := aster.NewFleet(src, "fleet/Other", aster.WithLogger(quietLogger()),
		aster.WithOutlierDetection(aster.OutlierDetection{DialTimeout: time.Hour}))
	defer g.Close()
	_, err = aster.CallUnary[FleetReply](ctx, g, "Fleet.get", &FleetReq{})
	if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), "fleet/Other") {
		t.Fatalf("call with no producers (NewFleet): %v, want UNAVAILABLE naming fleet/Other", err)
	}
	if _, _, err := f.Contract(ctx); status.CodeOf(err) != status.Unavailable {
		t.Fatalf("Contract with no producers: %v, want UNAVAILABLE", err)
	}
}

// startFleet starts n producers listed in a StaticSource and a Fleet over
// them, connected to all.
func startFleet(t *testing.T, n int, opts ...aster.ClientOption) ([]*testProducer, *discovery.StaticSource, *aster.Fleet) {
	t.Helper()
	ps := make([]*testProducer, n)
	entries := make([]discovery.Producer, n)
	for i := range ps {
		ps[i] = startProducer(t, nil)
		entries[i] = ps[i].entry()
	}
	src := discovery.NewStaticSource(fleetName, entries...)
	f := dialFleet(t, src, opts...)
	fleetWait(t, "every producer ready", func() bool { return readyCount(f) == n })
	return ps, src, f
}

func TestFleetSpreadsEvenly(t *testing.T) {
	for _, b := range []aster.Balancer{aster.PowerOfTwoChoices, aster.RoundRobin} {
		t.Run(b.String(), func(t *testing.T) {
			ps, _, f := startFleet(t, 3, aster.WithBalancer(b))
			const total = 3000
			var wg sync.WaitGroup
			var next atomic.Int64
			var failed atomic.Int64
			ctx := ctxT(t)
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= total {
						if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil {
							failed.Add(1)
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if failed.Load() > 0 {
				t.Fatalf("%d calls failed", failed.Load())
			}
			var sum int64
			for i, p := range ps {
				n := p.served.Load()
				sum += n
				share := float64(n) / total
				t.Logf("producer %d: %d calls (%.1f%%)", i, n, 100*share)
				if share < 0.28 || share > 0.38 {
					t.Errorf("producer %d served %.1f%% of calls, want 33%% ± 5%%", i, 100*share)
				}
			}
			if sum != total {
				t.Errorf("servers answered %d calls, want %d", sum, total)
			}
			var counted uint64
			for _, st := range f.Producers() {
				counted += st.Calls
				if st.Outstanding != 0 {
					t.Errorf("producer %s: %d calls outstanding after all ended", st.ID.Short(), st.Outstanding)
				}
			}
			if counted != total {
				t.Errorf("Producers counts %d calls, want %d", counted, total)
			}
		})
	}
}

func TestFleetP2CAvoidsSlowProducer(t *testing.T) {
	ps, _, f := startFleet(t, 3)
	// Delays far above the cost of a call (also under -race on a busy
	// machine, where the caller's own scheduling adds tens of
	// milliseconds), so that the slow one really is 10x slower.
	for i, p := range ps {
		d := 100 * time.Millisecond
		if i == 0 {
			d *= 10
		}
		p.delay.Store(int64(d))
	}
	const total = 1000
	var wg sync.WaitGroup
	var next atomic.Int64
	ctx := ctxT(t)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	share := float64(ps[0].served.Load()) / total
	t.Logf("slow producer: %.1f%% of calls (others %d, %d)", 100*share, ps[1].served.Load(), ps[2].served.Load())
	if share >= 0.10 {
		t.Errorf("the producer 10x slower got %.1f%% of calls under P2C, want < 10%%", 100*share)
	}
}

// failover runs 32 idempotent callers and 8 non-idempotent ones against
// three producers, stops one of them mid-run with stop, and checks: no
// idempotent call failed; non-idempotent calls failed only with UNAVAILABLE
// and only on the stopped producer.
func failover(t *testing.T, stop func(p *testProducer)) {
	ps, _, f := startFleet(t, 3)
	ctx := ctxT(t)
	done := make(chan struct{})
	gets := runLoad(ctx, f, "Fleet.get", 0, 32, done)
	puts := runLoad(ctx, f, "Fleet.put", 5, 8, done)
	fleetWait(t, "calls on every producer", func() bool {
		return ps[0].served.Load() > 50 && ps[1].served.Load() > 50 && ps[2].served.Load() > 50
	})
	victim := ps[1]
	stop(victim)
	after := gets.calls.Load()
	fleetWait(t, "1000 calls after the stop", func() bool { return gets.calls.Load() > after+1000 })
	close(done)
	gets.wait()
	puts.wait()
	t.Logf("%d idempotent calls, %d non-idempotent (%d failed)", gets.calls.Load(), puts.calls.Load(), len(puts.errs))
	for _, err := range gets.errs {
		t.Errorf("idempotent call failed: %v", err)
	}
	for i, err := range puts.errs {
		if status.CodeOf(err) != status.Unavailable || puts.peers[i] != victim.id() {
			t.Errorf("non-idempotent call failed on %s with %v; want only UNAVAILABLE on the stopped producer %s", puts.peers[i].Short(), err, victim.id().Short())
		}
	}
	// The stopped producer no longer takes calls; the others do.
	st, _ := producerState(f, victim.id())
	if st.State == aster.ProducerReady {
		t.Errorf("stopped producer is %v, want not ready", st.State)
	}
}

func TestFleetFailoverServerClosed(t *testing.T) {
	failover(t, func(p *testProducer) { p.stop() })
}

func TestFleetFailoverConnsKilled(t *testing.T) {
	failover(t, func(p *testProducer) { p.ln.kill() })
}

func TestFleetRollingRestart(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	reg := aster.WithRegistry(src, "fleet")
	ps := make([]*testProducer, 3)
	for i := range ps {
		ps[i] = startProducer(t, nil, reg)
	}
	f := dialFleet(t, src)
	fleetWait(t, "three producers ready", func() bool { return readyCount(f) == 3 })
	ctx := ctxT(t)
	done := make(chan struct{})
	gets := runLoad(ctx, f, "Fleet.get", 0, 32, done)
	for i, old := range ps {
		before := gets.calls.Load()
		fleetWait(t, "calls before the restart", func() bool { return gets.calls.Load() > before+200 })
		old.shutdown(t)
		// The same key on a new port, registered by Serve.
		ps[i] = startProducer(t, old.key, reg)
		nu := ps[i]
		fleetWait(t, "the restarted producer to take calls", func() bool { return nu.served.Load() > 20 })
	}
	before := gets.calls.Load()
	fleetWait(t, "calls after the restarts", func() bool { return gets.calls.Load() > before+200 })
	close(done)
	gets.wait()
	t.Logf("%d calls through three restarts", gets.calls.Load())
	for _, err := range gets.errs {
		t.Errorf("idempotent call failed: %v", err)
	}
	if got := len(src.Producers("fleet/Fleet")); got != 3 {
		t.Errorf("registry lists %d producers, want 3", got)
	}
}

func TestFleetNewProducerGetsCalls(t *testing.T) {
	_, src, f := startFleet(t, 3)
	ctx := ctxT(t)
	done := make(chan struct{})
	gets := runLoad(ctx, f, "Fleet.get", 0, 32, done)
	defer func() { close(done); gets.wait() }()
	nu := startProducer(t, nil)
	if _, err := src.Register(ctx, fleetName, nu.entry()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fleetWait(t, "the new producer to take calls", func() bool { return nu.served.Load() > 0 })
	t.Logf("new producer took its first call %v after it was registered", time.Since(start))
}

func TestFleetSessionsStayOnOneProducer(t *testing.T) {
	_, _, f := startFleet(t, 3)
	ctx := ctxT(t)
	servers := map[string]bool{}
	for range 12 {
		s := f.NewSession()
		var first string
		for i := 1; i <= 10; i++ {
			r, err := aster.CallUnary[FleetReply](ctx, s, "Tally.add", &FleetReq{N: 1})
			if err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				first = r.Server
			}
			if r.Server != first || r.N != i {
				t.Fatalf("session call %d answered by %s with sum %d; want %s with %d", i, r.Server, r.N, first, i)
			}
		}
		servers[first] = true
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(servers) < 2 {
		t.Errorf("12 sessions all went to %v; want them spread", servers)
	}
}

// eventRegistry records registrations and what the server said while
// each deregistration ran.
type eventRegistry struct {
	src     *discovery.StaticSource
	mu      sync.Mutex
	events  []string
	onDereg func() string
}

func (r *eventRegistry) add(e string) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *eventRegistry) Register(ctx context.Context, name string, p discovery.Producer) (discovery.Registration, error) {
	rg, err := r.src.Register(ctx, name, p)
	if err != nil {
		return nil, err
	}
	r.add("register " + name)
	return eventRegistration{r, rg, name}, nil
}

type eventRegistration struct {
	r    *eventRegistry
	rg   discovery.Registration
	name string
}

func (e eventRegistration) Deregister(ctx context.Context) error {
	e.r.add("deregister " + e.name + ": " + e.r.onDereg())
	return e.rg.Deregister(ctx)
}

func TestWithRegistryDeregistersBeforeDraining(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	reg := &eventRegistry{src: src}
	p := startProducer(t, nil, aster.WithRegistry(reg, "fleet"))
	f := dialFleet(t, src)
	fleetWait(t, "the producer ready", func() bool { return readyCount(f) == 1 })
	reg.onDereg = func() string {
		// While deregistering, the server still serves calls.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := aster.DialAddress(ctx, p.ln.Addr(), aster.WithLogger(quietLogger()))
		if err != nil {
			return "dial: " + err.Error()
		}
		defer c.Close()
		if _, err := aster.CallUnary[FleetReply](ctx, c, "Fleet.get", &FleetReq{}); err != nil {
			return "call: " + err.Error()
		}
		return fmt.Sprintf("serving, ready=%v", p.srv.Ready())
	}
	p.shutdown(t)
	want := []string{"register fleet/Fleet", "register fleet/Tally", "deregister fleet/Fleet: serving, ready=true", "deregister fleet/Tally: serving, ready=true"}
	reg.mu.Lock()
	got := reg.events
	reg.mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	if n := len(src.Producers("fleet/Fleet")); n != 0 {
		t.Fatalf("%d producers still registered after Shutdown", n)
	}
	fleetWait(t, "the fleet to see no producer", func() bool { return len(f.Producers()) == 0 })
	if _, err := aster.CallUnary[FleetReply](ctxT(t), f, "Fleet.get", &FleetReq{}); status.CodeOf(err) != status.Unavailable {
		t.Fatalf("call after the only producer left: %v, want UNAVAILABLE", err)
	}
}

func TestWithRegistryCloseDeregisters(t *testing.T) {
	src := discovery.NewStaticSource(fleetName)
	p := startProducer(t, nil, aster.WithRegistry(src, "fleet"))
	fleetWait(t, "registration", func() bool { return len(src.Producers("fleet/Fleet")) == 1 })
	if got := src.Producers("fleet/Fleet")[0].Addr; got.ID != p.id() || len(got.Direct) == 0 {
		t.Fatalf("registered address %v, want the server's with its direct address", got)
	}
	p.stop()
	if n := len(src.Producers("fleet/Fleet")); n != 0 {
		t.Fatalf("%d producers still registered after Close", n)
	}
}

// producerCredential signs a producer credential for key.
func producerCredential(t *testing.T, root trust.SecretKey, key trust.SecretKey, role enroll.Role, services string, expires time.Time) *enroll.Credential {
	t.Helper()
	now := time.Now()
	issued := now.Add(-time.Minute)
	if expires.Before(issued) {
		issued = expires.Add(-time.Hour)
	}
	c := &enroll.Credential{
		Type: enroll.TypePolicy, Role: role, Name: "producer", EndpointID: trust.IDOf(key),
		Attributes: map[string]string{"aster.services": services},
		IssuedAt:   issued, ExpiresAt: expires,
	}
	if err := enroll.Sign(root, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFleetProducerRoot(t *testing.T) {
	root, other := trust.GenerateKey(), trust.GenerateKey()
	later := time.Now().Add(time.Hour)
	type tc struct {
		name   string
		cred   func(key trust.SecretKey) *enroll.Credential
		reason string
	}
	cases := []tc{
		{"none", func(trust.SecretKey) *enroll.Credential { return nil }, "no producer credential"},
		{"other root", func(k trust.SecretKey) *enroll.Credential {
			return producerCredential(t, other, k, enroll.RoleProducer, "Fleet", later)
		}, "producer credential"},
		{"wrong service", func(k trust.SecretKey) *enroll.Credential {
			return producerCredential(t, root, k, enroll.RoleProducer, "Billing, Other", later)
		}, "does not name Fleet"},
		{"expired", func(k trust.SecretKey) *enroll.Credential {
			return producerCredential(t, root, k, enroll.RoleProducer, "Fleet", time.Now().Add(-time.Hour))
		}, "expired"},
		{"consumer", func(k trust.SecretKey) *enroll.Credential {
			return producerCredential(t, root, k, enroll.RoleConsumer, "Fleet", later)
		}, "not a producer's"},
		{"another endpoint's", func(trust.SecretKey) *enroll.Credential {
			return producerCredential(t, root, trust.GenerateKey(), enroll.RoleProducer, "*", later)
		}, "producer credential"},
	}
	src := discovery.NewStaticSource(fleetName)
	var bad []*testProducer
	for _, c := range cases {
		key := trust.GenerateKey()
		opts := []aster.ServerOption{aster.WithRegistry(src, "fleet")}
		if cr := c.cred(key); cr != nil {
			opts = append(opts, aster.WithCredential(cr))
		}
		bad = append(bad, startProducer(t, key, opts...))
	}
	goodKey := trust.GenerateKey()
	good := startProducer(t, goodKey, aster.WithRegistry(src, "fleet"),
		aster.WithCredential(producerCredential(t, root, goodKey, enroll.RoleProducer, "Billing,Fleet", later)))
	fleetWait(t, "every producer registered", func() bool { return len(src.Producers("fleet/Fleet")) == len(cases)+1 })

	f := dialFleet(t, src, aster.WithProducerRoot(trust.IDOf(root)))
	ctx := ctxT(t)
	for range 30 {
		r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Server != good.id().Short() {
			t.Fatalf("call answered by %s, want only the enrolled producer %s", r.Server, good.id().Short())
		}
	}
	for i, c := range cases {
		if n := bad[i].ln.accepted.Load(); n != 0 {
			t.Errorf("%s: producer was dialled (%d connections)", c.name, n)
		}
		st, ok := producerState(f, bad[i].id())
		if !ok || st.State != aster.ProducerRejected || !strings.Contains(st.Credential, c.reason) {
			t.Errorf("%s: status %+v, want rejected with %q", c.name, st, c.reason)
		}
	}
	if st, _ := producerState(f, good.id()); st.State != aster.ProducerReady || st.Credential != "valid" {
		t.Errorf("enrolled producer: %v, credential %q; want ready, valid", st.State, st.Credential)
	}
	// The same set without a root: everyone is called.
	g := dialFleet(t, src)
	fleetWait(t, "all producers ready without a root", func() bool { return readyCount(g) == len(cases)+1 })
}

func TestFleetCallsItself(t *testing.T) {
	key := trust.GenerateKey()
	p := startProducer(t, key)
	src := discovery.NewStaticSource(fleetName, p.entry())
	// The caller holds the producer's own key: its fleet dials its own
	// server like any other producer.
	f := dialFleet(t, src, aster.WithSecretKey(key))
	r, err := aster.CallUnary[FleetReply](ctxT(t), f, "Fleet.get", &FleetReq{N: 7})
	if err != nil || r.N != 7 || r.Server != p.id().Short() {
		t.Fatalf("call to itself: %+v, %v", r, err)
	}
}

type failingSource struct{}

func (failingSource) Watch(context.Context, string) (discovery.Watch, error) {
	return nil, errors.New("registry unreachable")
}

func TestDialFleetErrors(t *testing.T) {
	ctx := ctxT(t)
	_, err := aster.DialFleet(ctx, failingSource{}, fleetName, aster.WithLogger(quietLogger()))
	if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("DialFleet with a failing source: %v, want UNAVAILABLE with the cause", err)
	}
	// A registered producer that never answers: ejected after the dial
	// timeout; DialFleet fails when it is the only one.
	dead := discovery.Producer{Addr: discovery.EndpointAddr{ID: trust.IDOf(trust.GenerateKey()), Direct: []netip.AddrPort{deadUDPAddr(t)}}}
	src := discovery.NewStaticSource(fleetName, dead)
	_, err = aster.DialFleet(ctx, src, fleetName, fleetOpts(aster.WithOutlierDetection(aster.OutlierDetection{DialTimeout: 300 * time.Millisecond}))...)
	if status.CodeOf(err) != status.Unavailable {
		t.Fatalf("DialFleet with a dead producer: %v, want UNAVAILABLE", err)
	}
	// Beside a live one, the dead one is ejected and calls go to the other.
	live := startProducer(t, nil)
	src.Set(fleetName, dead, live.entry())
	f := dialFleet(t, src, aster.WithOutlierDetection(aster.OutlierDetection{DialTimeout: 300 * time.Millisecond}))
	for range 10 {
		if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil {
			t.Fatal(err)
		}
	}
	fleetWait(t, "the dead producer ejected", func() bool {
		st, _ := producerState(f, dead.Addr.ID)
		return st.State == aster.ProducerEjected && st.LastError != ""
	})
	if _, err := aster.DialFleet(ctx, src, fleetName, aster.WithConn(nil)); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("DialFleet with a bad option: %v, want INVALID_ARGUMENT", err)
	}
}

// A retry attempt avoids the producer of the previous attempt: with one of
// two producers always answering UNAVAILABLE (and ejection out of the
// way), two attempts are always enough.
func TestFleetRetryAvoidsPreviousProducer(t *testing.T) {
	ps, _, f := startFleet(t, 2,
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}),
		aster.WithFleetRetry(&middleware.RetryOptions{MaxAttempts: 2, InitialBackoff: time.Millisecond, Budget: middleware.NewRetryBudget(1, 1000)}))
	ps[0].failGet.Store(true)
	ctx := ctxT(t)
	for i := range 100 {
		r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{N: i})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if r.Server != ps[1].id().Short() {
			t.Fatalf("call %d answered by %s", i, r.Server)
		}
	}
	st, _ := producerState(f, ps[0].id())
	if st.Failures == 0 || st.LastError == "" || st.State != aster.ProducerReady {
		t.Fatalf("failing producer: %+v; want failures counted, not ejected", st)
	}
}

// A producer that answers UNAVAILABLE ConsecutiveFailures times in a row is
// ejected, then probed back once the ejection ends.
func TestFleetEjectsAndProbesBack(t *testing.T) {
	ps, _, f := startFleet(t, 2, aster.WithFleetRetry(nil),
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 3, BaseEjection: 300 * time.Millisecond, DialTimeout: time.Second}))
	ps[0].failGet.Store(true)
	ctx := ctxT(t)
	fleetWait(t, "the failing producer ejected", func() bool {
		aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		st, _ := producerState(f, ps[0].id())
		return st.State == aster.ProducerEjected
	})
	// Ejected: every call goes to the other producer.
	for range 20 {
		if r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil || r.Server != ps[1].id().Short() {
			st, _ := producerState(f, ps[0].id())
			if st.State == aster.ProducerEjected {
				t.Fatalf("call while the other producer is ejected: %+v, %v", r, err)
			}
			break // the ejection ended meanwhile
		}
	}
	ps[0].failGet.Store(false)
	fleetWait(t, "the healed producer back in use", func() bool {
		aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		return ps[0].served.Load() > 0
	})
	st, _ := producerState(f, ps[0].id())
	if st.State != aster.ProducerReady {
		t.Fatalf("healed producer is %v, want ready", st.State)
	}
}

// A producer shutting down is drained at once: its refusals mark it
// draining and calls go elsewhere (none fails); it comes back when a
// server with its key answers at its address again.
func TestFleetDrainsShuttingDownProducer(t *testing.T) {
	ps, _, f := startFleet(t, 2)
	victim := ps[0]
	ctx := ctxT(t)
	// Hold a call on the victim so that its Shutdown lasts.
	held := make(chan error, 1)
	direct := aster.NewClient(victim.ln.Addr(), aster.WithLogger(quietLogger()))
	defer direct.Close()
	go func() {
		_, err := aster.CallUnary[FleetReply](ctx, direct, "Fleet.put", &FleetReq{N: 1500})
		held <- err
	}()
	fleetWait(t, "the held call", func() bool { return victim.inPut.Load() == 1 })
	shut := make(chan struct{})
	go func() { victim.shutdown(t); close(shut) }()
	for i := 0; ; i++ {
		if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil {
			t.Fatalf("call %d during the shutdown: %v", i, err)
		}
		st, _ := producerState(f, victim.id())
		if st.State == aster.ProducerDraining {
			break
		}
		if i > 1000 {
			t.Fatalf("producer still %v after %d calls during its shutdown", st.State, i)
		}
	}
	for range 50 {
		r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		if err != nil || r.Server != ps[1].id().Short() {
			t.Fatalf("call while one producer drains: %+v, %v", r, err)
		}
	}
	if err := <-held; err != nil {
		t.Fatalf("the call in flight during Shutdown: %v", err)
	}
	<-shut
	// The same key at the same address again: the fleet redials it.
	direct.Close()
	var ln *quic.Listener
	fleetWait(t, "the old address free", func() bool {
		var err error
		ln, err = quic.Listen(victim.ln.Addr().Direct[0].String(), victim.key, nil)
		return err == nil
	})
	back := &testProducer{key: victim.key, serveErr: make(chan error, 1)}
	back.srv = aster.NewServer(aster.WithSecretKey(victim.key), aster.WithLogger(quietLogger()))
	back.srv.MustRegister(fleetService(back))
	back.ln = &countingListener{Listener: ln}
	go func() { back.serveErr <- back.srv.Serve(back.ln) }()
	t.Cleanup(back.stop)
	fleetWait(t, "the restarted producer ready", func() bool {
		st, _ := producerState(f, victim.id())
		return st.State == aster.ProducerReady
	})
	fleetWait(t, "calls on the restarted producer", func() bool {
		aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		return back.served.Load() > 0
	})
}

// A producer that leaves the set takes no new calls at once; the call in
// flight on it finishes, and then its connection is closed.
func TestFleetRemovedProducerFinishesItsCalls(t *testing.T) {
	ps, src, f := startFleet(t, 2)
	ctx := ctxT(t)
	held := make(chan error, 1)
	var peer trust.EndpointID
	rec := middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
		cs, err := f.NewStream(ctx, call)
		peer = call.Peer
		return cs, err
	})
	go func() {
		_, err := aster.CallUnary[FleetReply](ctx, rec, "Fleet.put", &FleetReq{N: 700})
		held <- err
	}()
	fleetWait(t, "the held call", func() bool { return ps[0].inPut.Load()+ps[1].inPut.Load() == 1 })
	gone, stays := ps[0], ps[1]
	if ps[1].inPut.Load() == 1 {
		gone, stays = ps[1], ps[0]
	}
	src.Set(fleetName, stays.entry())
	fleetWait(t, "the set applied", func() bool { return len(f.Producers()) == 1 })
	for range 20 {
		r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		if err != nil || r.Server != stays.id().Short() {
			t.Fatalf("call after the producer left: %+v, %v", r, err)
		}
	}
	if err := <-held; err != nil || peer != gone.id() {
		t.Fatalf("the call in flight on the producer that left: %v (peer %s)", err, peer.Short())
	}
	gone.ln.mu.Lock()
	conns := append([]transport.Conn(nil), gone.ln.conns...)
	gone.ln.mu.Unlock()
	fleetWait(t, "the connection to the producer that left closed", func() bool {
		for _, c := range conns {
			select {
			case <-c.Done():
			default:
				return false
			}
		}
		return true
	})
}

// A hostile or careless registry listing the same producer many times, or
// entries that cannot be reached, does not stop the fleet from calling the
// good one.
func TestFleetHostileEntries(t *testing.T) {
	good := startProducer(t, nil)
	entries := []discovery.Producer{good.entry(), good.entry(), good.entry()}
	// An entry naming another key at the good producer's address (an
	// impostor's record): the transport refuses it.
	impostor := good.entry()
	impostor.Addr.ID = trust.IDOf(trust.GenerateKey())
	entries = append(entries, impostor, discovery.Producer{Addr: discovery.EndpointAddr{ID: trust.IDOf(trust.GenerateKey())}})
	src := discovery.NewStaticSource(fleetName, entries...)
	f := dialFleet(t, src)
	if n := len(f.Producers()); n != 3 {
		t.Fatalf("%d producers, want 3 (duplicates merged)", n)
	}
	ctx := ctxT(t)
	for range 20 {
		if r, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil || r.Server != good.id().Short() {
			t.Fatalf("call: %+v, %v", r, err)
		}
	}
	fleetWait(t, "the impostor and the unreachable entry ejected", func() bool {
		st, _ := producerState(f, impostor.Addr.ID)
		return st.State == aster.ProducerEjected && strings.Contains(st.LastError, "UNAUTHENTICATED")
	})
}

type refusingRegistry struct{}

func (refusingRegistry) Register(context.Context, string, discovery.Producer) (discovery.Registration, error) {
	return nil, errors.New("registry refuses")
}

func TestFleetOptionsAndRegistryErrors(t *testing.T) {
	ctx := ctxT(t)
	src := discovery.NewStaticSource(fleetName)
	for name, opt := range map[string]aster.ClientOption{
		"WithBalancer":         aster.WithBalancer(aster.Balancer(7)),
		"WithOutlierDetection": aster.WithOutlierDetection(aster.OutlierDetection{BaseEjection: -time.Second}),
		"WithProducerRoot":     aster.WithProducerRoot(trust.PublicKey{}),
	} {
		_, err := aster.DialFleet(ctx, src, fleetName, opt)
		if status.CodeOf(err) != status.InvalidArgument || !strings.Contains(err.Error(), name) {
			t.Errorf("%s with a bad value: %v, want INVALID_ARGUMENT naming it", name, err)
		}
		f := aster.NewFleet(src, fleetName, opt)
		if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("%s: call on NewFleet: %v, want INVALID_ARGUMENT", name, err)
		}
		f.Close()
	}
	if _, err := aster.DialFleet(ctx, nil, fleetName); status.CodeOf(err) != status.InvalidArgument {
		t.Errorf("nil source: %v", err)
	}
	if _, err := aster.DialFleet(ctx, src, " "); status.CodeOf(err) != status.InvalidArgument {
		t.Errorf("empty name: %v", err)
	}

	// A server whose registry refuses does not serve.
	srv := aster.NewServer(aster.WithLogger(quietLogger()), aster.WithRegistry(refusingRegistry{}, "fleet"))
	srv.MustRegister(fleetService(&testProducer{key: trust.GenerateKey()}))
	ln, err := quic.Listen("127.0.0.1:0", trust.GenerateKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(ln); status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), "registry refuses") {
		t.Fatalf("Serve with a refusing registry: %v, want UNAVAILABLE with the cause", err)
	}
	srv.Close()
	bad := aster.NewServer(aster.WithLogger(quietLogger()), aster.WithRegistry(nil, "fleet"))
	ln2, err := quic.Listen("127.0.0.1:0", trust.GenerateKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Serve(ln2); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("Serve with WithRegistry(nil): %v, want INVALID_ARGUMENT", err)
	}
	bad.Close()
}

func TestFleetContractAndDescribe(t *testing.T) {
	_, _, f := startFleet(t, 2)
	ctx := ctxT(t)
	ct, id, err := f.Contract(ctx)
	if err != nil || id == "" {
		t.Fatalf("Contract: %v", err)
	}
	found := false
	for _, s := range ct.Services {
		found = found || s.Name == "Fleet"
	}
	if !found {
		t.Fatalf("contract lacks the Fleet service: %+v", ct.Services)
	}
	spec, err := f.DescribeMethod(ctx, &middleware.Call{Service: "Fleet", Method: "get"})
	if err != nil || !spec.Idempotent {
		t.Fatalf("DescribeMethod(Fleet.get): %+v, %v; want idempotent", spec, err)
	}
	if _, err := f.DescribeMethod(ctx, &middleware.Call{Service: "Fleet", Method: "nope"}); status.CodeOf(err) != status.NotFound {
		t.Fatalf("DescribeMethod of a missing method: %v, want NOT_FOUND", err)
	}
}

// A fleet's producers get a Client's defaults, stream reuse among them:
// sequential calls through a fleet of one reuse streams exactly when a
// Client's calls to the same producer do (by default: yes; the suite also
// runs with ASTER_STREAM_REUSE=off).
func TestFleetReusesStreamsLikeAClient(t *testing.T) {
	ps, _, f := startFleet(t, 1)
	ctx := ctxT(t)
	reused := func(cc aster.Caller) uint64 {
		before := ps[0].srv.Metrics().StreamsReused
		for i := range 20 {
			if _, err := aster.CallUnary[FleetReply](ctx, cc, "Fleet.get", &FleetReq{}); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		return ps[0].srv.Metrics().StreamsReused - before
	}
	c, err := aster.DialAddress(ctx, ps[0].ln.Addr(), fleetOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	viaClient, viaFleet := reused(c), reused(f)
	if (viaClient > 0) != (viaFleet > 0) || viaFleet+2 < viaClient {
		t.Fatalf("20 sequential calls reused %d streams through a Client and %d through a Fleet", viaClient, viaFleet)
	}
	t.Logf("streams reused for 20 calls: client %d, fleet %d", viaClient, viaFleet)
}

// A producer credential vouches for the services it names: through a
// fleet with a producer root, a call of another service the producer
// happens to serve (Tally, with a credential naming only Fleet) is refused
// before it is sent, also within a session; named, it goes through.
func TestFleetProducerRootOtherService(t *testing.T) {
	root := trust.GenerateKey()
	later := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		services string
		tally    bool
	}{{"Fleet", false}, {"Fleet, Tally", true}, {"*", true}} {
		src := discovery.NewStaticSource(fleetName)
		key := trust.GenerateKey()
		startProducer(t, key, aster.WithRegistry(src, "fleet"),
			aster.WithCredential(producerCredential(t, root, key, enroll.RoleProducer, tc.services, later)))
		fleetWait(t, "the producer registered", func() bool { return len(src.Producers("fleet/Fleet")) == 1 })
		f := dialFleet(t, src, aster.WithProducerRoot(trust.IDOf(root)))
		ctx := ctxT(t)
		if _, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{}); err != nil {
			t.Fatalf("%q: Fleet.get: %v", tc.services, err)
		}
		sess := f.NewSession()
		_, err := aster.CallUnary[FleetReply](ctx, sess, "Tally.add", &FleetReq{N: 1})
		sess.Close(ctx)
		switch {
		case tc.tally && err != nil:
			t.Errorf("%q: Tally.add: %v", tc.services, err)
		case !tc.tally && (status.CodeOf(err) != status.PermissionDenied || !strings.Contains(err.Error(), "not enrolled for service Tally")):
			t.Errorf("%q: Tally.add: %v, want PERMISSION_DENIED (not enrolled for Tally)", tc.services, err)
		}
		if !tc.tally {
			// Outside a session (the balancer's path) too.
			if _, err := aster.CallUnary[FleetReply](ctx, f, "Tally.add", &FleetReq{N: 1}); status.CodeOf(err) != status.PermissionDenied {
				t.Errorf("%q: Tally.add outside a session: %v, want PERMISSION_DENIED", tc.services, err)
			}
		}
	}
}
