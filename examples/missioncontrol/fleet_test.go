package main

// Failover with real processes: Mission Control producers run as separate
// processes of the example binary, registered in a real etcd server
// (internal/testutil/etcdtest); the test is the client, calling the fleet
// by name through config.DialFleet (aster.DialFleet with its default Retry).

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/dnstest"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// fleetName is where the producers register MissionControl.
const fleetName = "fleet/MissionControl"

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// exampleBinary builds this example and its agent once per test run, and
// returns the example's path (the agent is beside it).
func exampleBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "missioncontrol-fleet-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "missioncontrol")
		if out, err := exec.Command("go", "build", "-o", dir+"/", ".", "./agent").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// proc is one producer process.
type proc struct {
	t      *testing.T
	key    trust.SecretKey
	wrap   []string // a command prefix, e.g. "ip netns exec NS"
	env    []string
	addr   aster.Address
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	exited chan struct{}
}

// startProducer starts the example binary with key and env (the
// [discovery] settings, among others) and waits for the address it prints.
func startProducer(t *testing.T, key trust.SecretKey, env ...string) *proc {
	t.Helper()
	return startProducerIn(t, nil, key, env...)
}

// startProducerIn is startProducer with the command prefixed by wrap.
func startProducerIn(t *testing.T, wrap []string, key trust.SecretKey, env ...string) *proc {
	t.Helper()
	p := &proc{t: t, key: key, wrap: wrap, env: env}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (p *proc) start() {
	p.t.Helper()
	args := append(append(append([]string{}, p.wrap...), exampleBinary(p.t)), "-rate", "0")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(),
		"ASTER_SECRET_KEY="+base64.StdEncoding.EncodeToString(p.key.Seed()),
		"ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_LOG_LEVEL=error", "ASTER_IDENTITY_FILE=", "ASTER_HEALTH_PORT=")
	cmd.Env = append(cmd.Env, p.env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	p.stderr = &testutil.SyncBuffer{}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	exited := p.exited
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(exited)
	}()
	select {
	case l, ok := <-line:
		a, err := aster.ParseAddress(l)
		if !ok || err != nil {
			p.kill()
			p.t.Fatalf("producer printed %q first (%v); stderr:\n%s", l, err, p.stderr.String())
		}
		p.addr = a
	case <-time.After(30 * time.Second):
		p.kill()
		p.t.Fatalf("producer did not print its address; stderr:\n%s", p.stderr.String())
	}
}

// signal sends sig and waits for the process to exit.
func (p *proc) signal(sig syscall.Signal) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("producer did not exit after %v; stderr:\n%s", sig, p.stderr.String())
	}
	p.cmd = nil
}

func (p *proc) kill() { p.signal(syscall.SIGKILL) }

// id is the producer's endpoint id.
func (p *proc) id() trust.EndpointID { return trust.IDOf(p.key) }

// load runs callers in the background until stop: 32 callers of
// idempotent getStatus on one fleet, and 4 callers of non-idempotent
// submitLog on another (so that each fleet's counters are its own).
type load struct {
	stopped atomic.Bool
	wg      sync.WaitGroup
	idemOK  atomic.Int64
	idemErr atomic.Int64
	postOK  atomic.Int64

	mu       sync.Mutex
	idemErrs []error
	postErrs []postFailure
}

// postFailure is a failed submitLog call.
type postFailure struct {
	start, end time.Time
	err        error
}

// startLoad starts the callers. Each call has 20 s; a call in flight when
// the load ends runs to its end and counts.
func startLoad(idem, post aster.Caller) *load {
	l := &load{}
	for i := range 32 {
		l.wg.Go(func() {
			req := &mission.StatusRequest{AgentID: fmt.Sprintf("agent-%d", i)}
			for !l.stopped.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := aster.CallUnary[mission.StatusResponse](ctx, idem, "MissionControl.getStatus", req)
				cancel()
				switch {
				case err == nil:
					l.idemOK.Add(1)
				default:
					l.idemErr.Add(1)
					l.mu.Lock()
					l.idemErrs = append(l.idemErrs, err)
					l.mu.Unlock()
				}
			}
		})
	}
	for i := range 4 {
		l.wg.Go(func() {
			e := &mission.LogEntry{Level: "info", Message: "fleet test", AgentID: fmt.Sprintf("poster-%d", i)}
			for !l.stopped.Load() {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := aster.CallUnary[mission.SubmitLogResult](ctx, post, "MissionControl.submitLog", e)
				cancel()
				switch {
				case err == nil:
					l.postOK.Add(1)
				default:
					l.mu.Lock()
					l.postErrs = append(l.postErrs, postFailure{start, time.Now(), err})
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

// end stops the callers and waits for their last calls.
func (l *load) end() {
	l.stopped.Store(true)
	l.wg.Wait()
}

// fleetEnv is the environment of a producer registered in etcd at ep.
func fleetEnv(ep string) []string {
	return []string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=" + ep, "ASTER_DISCOVERY_PREFIX=fleet", "ASTER_DISCOVERY_TTL=2s"}
}

// dialTestFleet dials the fleet through the configuration, as the agent
// does.
func dialTestFleet(t *testing.T, ep string) *config.Fleet {
	t.Helper()
	cfg := config.Default()
	cfg.Discovery, cfg.DiscoveryEndpoints, cfg.LogLevel = "etcd", ep, "error"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := cfg.DialFleet(ctx, "etcd:///"+fleetName, aster.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// waitFor polls cond every 5 ms until it holds, failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}

// producerStatus returns id's status in f, if listed.
func producerStatus(f *config.Fleet, id trust.EndpointID) (aster.ProducerStatus, bool) {
	for _, p := range f.Producers() {
		if p.ID == id {
			return p, true
		}
	}
	return aster.ProducerStatus{}, false
}

// readyWith reports whether f lists id, ready, at addr.
func readyWith(f *config.Fleet, id trust.EndpointID, addr aster.Address) bool {
	p, ok := producerStatus(f, id)
	return ok && p.State == aster.ProducerReady && p.Addr.String() == addr.String()
}

// calls returns each producer's call count in f.
func calls(f *config.Fleet) map[trust.EndpointID]uint64 {
	m := map[trust.EndpointID]uint64{}
	for _, p := range f.Producers() {
		m[p.ID] = p.Calls
	}
	return m
}

// TestFleetFailover runs three producers registered in etcd under 32
// callers of idempotent getStatus and 4 of non-idempotent submitLog, and
// checks, in turn: the spread across equal producers, a SIGKILL, a rolling
// restart with SIGTERM, and a fourth producer joining.
func TestFleetFailover(t *testing.T) {
	exampleBinary(t)
	ep, _ := etcdtest.Start(t)
	env := fleetEnv(ep)
	var ps []*proc
	for i := range 3 {
		ps = append(ps, startProducer(t, testutil.Key(t, 100+i), env...))
	}
	idem, post := dialTestFleet(t, ep), dialTestFleet(t, ep)
	for _, p := range ps {
		waitFor(t, "producer "+p.id().Short()+" ready", func() bool {
			return readyWith(idem, p.id(), p.addr) && readyWith(post, p.id(), p.addr)
		})
	}

	// Spread: equal producers get a third of 3,000 calls each.
	t.Run("spread", func(t *testing.T) {
		before := calls(idem)
		l := startLoad(idem, post)
		waitFor(t, "3,000 calls", func() bool { return l.idemOK.Load() >= 3000 })
		l.end()
		after := calls(idem)
		var total uint64
		for _, p := range ps {
			total += after[p.id()] - before[p.id()]
		}
		if total < 3000 {
			t.Fatalf("the producers count %d calls, the callers made %d", total, l.idemOK.Load())
		}
		for _, p := range ps {
			share := float64(after[p.id()]-before[p.id()]) / float64(total)
			t.Logf("producer %s: %.1f%% of %d calls", p.id().Short(), 100*share, total)
			if math.Abs(share-1.0/3) > 0.05 {
				t.Errorf("producer %s served %.1f%% of the calls, want 33.3%% ± 5%%", p.id().Short(), 100*share)
			}
		}
		if n := l.idemErr.Load(); n != 0 {
			t.Errorf("%d getStatus calls failed: %v", n, l.idemErrs)
		}
	})

	t.Run("sigkill", func(t *testing.T) {
		l := startLoad(idem, post)
		waitFor(t, "calls flowing", func() bool { return l.idemOK.Load() > 500 })
		victim := ps[0]
		postBefore := map[trust.EndpointID]uint64{}
		for _, p := range post.Producers() {
			postBefore[p.ID] = p.Failures
		}
		killedAt := time.Now()
		victim.kill()
		// The callers go on until the fleet has dropped the victim (its
		// connection noticed dead, or its lease expired), and a while
		// after.
		gone := waitFor(t, "the killed producer dropped", func() bool {
			p, ok := producerStatus(idem, victim.id())
			return !ok || p.State != aster.ProducerReady
		})
		okAtDrop := l.idemOK.Load()
		waitFor(t, "calls after the drop", func() bool { return l.idemOK.Load() > okAtDrop+500 })
		l.end()
		t.Logf("SIGKILL: dropped after %v; %d getStatus calls ok, %d failed; %d submitLog ok, %d failed",
			gone.Sub(killedAt).Round(time.Millisecond), l.idemOK.Load(), l.idemErr.Load(), l.postOK.Load(), len(l.postErrs))
		if n := l.idemErr.Load(); n != 0 {
			t.Errorf("%d getStatus calls failed, want 0: %v", n, l.idemErrs)
		}
		// Non-idempotent calls fail only with UNAVAILABLE, and only those
		// sent to the killed producer: the survivors' failure counts in
		// the submitLog fleet did not move, the victim's moved by at least
		// the number of failed calls.
		for _, f := range l.postErrs {
			t.Logf("submitLog failed after the SIGKILL (started %v after it): %v", f.start.Sub(killedAt).Round(time.Millisecond), f.err)
			if status.CodeOf(f.err) != status.Unavailable {
				t.Errorf("submitLog failed with %v, want UNAVAILABLE", f.err)
			}
			if f.end.Before(killedAt) {
				t.Errorf("submitLog failed before the kill: %v", f.err)
			}
		}
		var victimFailures uint64
		for _, p := range post.Producers() {
			d := p.Failures - postBefore[p.ID]
			if p.ID == victim.id() {
				victimFailures = d
				continue
			}
			if d != 0 {
				t.Errorf("surviving producer %s had %d failed submitLog calls", p.ID.Short(), d)
			}
		}
		if p, ok := producerStatus(post, victim.id()); ok && victimFailures < uint64(len(l.postErrs)) {
			t.Errorf("the victim counts %d failures (%+v), %d submitLog calls failed", victimFailures, p, len(l.postErrs))
		}
		// Bring it back for the next phases.
		victim.start()
		waitFor(t, "the restarted producer ready", func() bool {
			return readyWith(idem, victim.id(), victim.addr) && readyWith(post, victim.id(), victim.addr)
		})
	})

	t.Run("rolling restart", func(t *testing.T) {
		l := startLoad(idem, post)
		waitFor(t, "calls flowing", func() bool { return l.idemOK.Load() > 500 })
		for _, p := range ps {
			p.signal(syscall.SIGTERM)
			p.start() // same key, a new port
			waitFor(t, "producer "+p.id().Short()+" back", func() bool {
				return readyWith(idem, p.id(), p.addr) && readyWith(post, p.id(), p.addr)
			})
		}
		ok := l.idemOK.Load()
		waitFor(t, "calls after the restart", func() bool { return l.idemOK.Load() > ok+500 })
		l.end()
		t.Logf("rolling restart: %d getStatus calls ok, %d failed; %d submitLog ok, %d failed",
			l.idemOK.Load(), l.idemErr.Load(), l.postOK.Load(), len(l.postErrs))
		if n := l.idemErr.Load(); n != 0 {
			t.Errorf("%d getStatus calls failed, want 0: %v", n, l.idemErrs)
		}
		// A producer that shuts down refuses new calls marked not
		// processed (PROTOCOL.md §7.5), so even non-idempotent calls move
		// to another producer, and it finishes the calls it took.
		for _, f := range l.postErrs {
			t.Errorf("submitLog failed during the rolling restart: %v", f.err)
		}
	})

	t.Run("fourth producer", func(t *testing.T) {
		l := startLoad(idem, post)
		defer l.end()
		waitFor(t, "calls flowing", func() bool { return l.idemOK.Load() > 500 })
		// Note when the registry lists it, with a watch of our own.
		cfg := config.Default()
		cfg.Discovery, cfg.DiscoveryEndpoints = "etcd", ep
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d, err := cfg.DiscoverySource(ctx, "etcd:///"+fleetName, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		w, err := d.Source.Watch(ctx, d.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		if _, err := w.Next(ctx); err != nil {
			t.Fatal(err)
		}
		key := testutil.Key(t, 103)
		listed := make(chan time.Time, 1)
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			for {
				set, err := w.Next(ctx)
				if err != nil {
					return
				}
				for _, p := range set {
					if p.Addr.ID == trust.IDOf(key) {
						listed <- time.Now()
						return
					}
				}
			}
		})
		started := time.Now()
		p4 := startProducer(t, key, env...)
		printed := time.Now()
		first := waitFor(t, "calls on the fourth producer", func() bool {
			p, ok := producerStatus(idem, p4.id())
			return ok && p.Calls > 0
		})
		var reg time.Time
		select {
		case reg = <-listed:
		case <-ctx.Done():
			t.Fatal("the fourth producer never showed in the registry")
		}
		w.Close()
		t.Logf("fourth producer: first call %v after it was listed in etcd (%v after it printed its address, %v after its start)",
			first.Sub(reg).Round(time.Millisecond), first.Sub(printed).Round(time.Millisecond), first.Sub(started).Round(time.Millisecond))
		if n := l.idemErr.Load(); n != 0 {
			t.Errorf("%d getStatus calls failed: %v", n, l.idemErrs)
		}
	})

	// The agent calls the fleet by name.
	t.Run("agent", func(t *testing.T) {
		bin := filepath.Join(filepath.Dir(exampleBinary(t)), "agent")
		cmd := exec.Command(bin, "--count", "20", "--interval", "1ms", "etcd:///"+fleetName)
		cmd.Env = append(os.Environ(), "ASTER_DISCOVERY_ENDPOINTS="+ep, "ASTER_IDENTITY_FILE=", "ASTER_LOG_LEVEL=error")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "submitted log #20") {
			t.Fatalf("agent by name: %v\n%s", err, out)
		}
	})
}

// TestFleetDNS runs producers published in DNS (SRV records naming each,
// TXT records with its aster1 address, as ExternalDNS would publish them)
// on a real DNS server on loopback, and checks that a fourth producer
// added to the records receives calls within the record TTL plus one
// re-resolution interval, and that a SIGKILLed producer still listed costs
// no idempotent call.
func TestFleetDNS(t *testing.T) {
	exampleBinary(t)
	srv := dnstest.Start(t)
	const name = "_mc._udp.example.internal"
	const ttl = 1 // seconds, the records' TTL: the client re-resolves every max(TTL, 1s floor)
	publish := func(i int, p *proc) {
		host := fmt.Sprintf("mc-%d.example.internal.", i)
		srv.Add(
			dnstest.RR(fmt.Sprintf("%s. %d IN SRV 0 0 %d %s", name, ttl, p.addr.Direct[0].Port(), host)),
			dnstest.RR(fmt.Sprintf(`%s %d IN TXT "addr=%s"`, host, ttl, p.addr)),
		)
	}
	var ps []*proc
	for i := range 3 {
		p := startProducer(t, testutil.Key(t, 200+i))
		publish(i, p)
		ps = append(ps, p)
	}
	cfg := config.Default()
	cfg.LogLevel = "error"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	target := "dns://" + srv.Addr() + "/" + name
	f, err := cfg.DialFleet(ctx, target, aster.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range ps {
		waitFor(t, "producer "+p.id().Short()+" ready", func() bool { return readyWith(f, p.id(), p.addr) })
	}
	post, err := cfg.DialFleet(ctx, target, aster.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer post.Close()

	l := startLoad(f, post)
	defer l.end()
	waitFor(t, "calls flowing", func() bool { return l.idemOK.Load() > 500 })

	p4 := startProducer(t, testutil.Key(t, 203))
	published := time.Now()
	publish(3, p4)
	first := waitFor(t, "calls on the fourth producer", func() bool {
		p, ok := producerStatus(f, p4.id())
		return ok && p.Calls > 0
	})
	bound := ttl*time.Second + cfg.DiscoveryDNSMinInterval
	t.Logf("DNS: the fourth producer's first call came %v after its records were published (bound: TTL %ds + one re-resolution interval %v = %v)",
		first.Sub(published).Round(time.Millisecond), ttl, cfg.DiscoveryDNSMinInterval, bound)

	// SIGKILL one; its records stay (DNS does not know): the fleet ejects
	// it and the idempotent calls go on without a failure.
	ps[1].kill()
	okAtKill := l.idemOK.Load()
	waitFor(t, "the killed producer ejected", func() bool {
		p, ok := producerStatus(f, ps[1].id())
		return !ok || p.State != aster.ProducerReady
	})
	waitFor(t, "calls after the ejection", func() bool { return l.idemOK.Load() > okAtKill+1000 })
	l.end()
	t.Logf("DNS SIGKILL: %d getStatus calls ok, %d failed; %d submitLog ok, %d failed",
		l.idemOK.Load(), l.idemErr.Load(), l.postOK.Load(), len(l.postErrs))
	if n := l.idemErr.Load(); n != 0 {
		t.Errorf("%d getStatus calls failed, want 0: %v", n, l.idemErrs)
	}
	for _, e := range l.postErrs {
		if status.CodeOf(e.err) != status.Unavailable {
			t.Errorf("submitLog failed with %v, want UNAVAILABLE", e.err)
		}
	}
}
