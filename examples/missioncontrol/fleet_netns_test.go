//go:build netns

package main

// The fleet across network namespaces (run by .ci/run with -tags netns, as
// root): each producer in a namespace of its own, joined to the test's
// namespace by a veth pair; etcd and the client (the test) in the test's
// namespace. A SIGKILLed producer and a producer cut off the network (its
// link down: alive, but neither clients nor etcd reach it) cost no
// idempotent call; the cut-off producer comes back when its link does. The
// test fails, never skips, when it cannot set this up (not root, no ip).

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/status"
)

// fleetNetns creates n namespaces, producer i in 10.79.(i+1).2/24 behind
// the veth whose end in the test's namespace is 10.79.(i+1).1, and returns
// their names and the names of the veth ends in the test's namespace.
func fleetNetns(t *testing.T, n int) (nss, links []string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the fleet network test needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("the fleet network test needs ip: %v", err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	id := os.Getpid() % 100000
	for i := range n {
		ns, host, peer := fmt.Sprintf("astf%d-%d", id, i), fmt.Sprintf("afh%d%d", id, i), fmt.Sprintf("afp%d%d", id, i)
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", ns, "link", "set", "lo", "up")
		run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
		run("ip", "link", "set", peer, "netns", ns)
		run("ip", "addr", "add", fmt.Sprintf("10.79.%d.1/24", i+1), "dev", host)
		run("ip", "-n", ns, "addr", "add", fmt.Sprintf("10.79.%d.2/24", i+1), "dev", peer)
		run("ip", "link", "set", host, "up")
		run("ip", "-n", ns, "link", "set", peer, "up")
		run("ip", "-n", ns, "route", "add", "default", "via", fmt.Sprintf("10.79.%d.1", i+1))
		nss, links = append(nss, ns), append(links, host)
	}
	return nss, links
}

// startEtcdAll runs etcd listening on every address of the test's
// namespace (the producers reach it through their veth) and returns its
// port.
func startEtcdAll(t *testing.T) int {
	t.Helper()
	ports := make([]int, 2)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	cmd := exec.Command(etcdtest.Binary(t), "-data-dir", filepath.Join(t.TempDir(), "etcd"),
		"-client-url", "http://0.0.0.0:"+strconv.Itoa(ports[0]), "-peer-url", "http://127.0.0.1:"+strconv.Itoa(ports[1]))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &testutil.SyncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "etcd ready") {
				close(ready)
			}
		}
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("etcd exited:\n%s", logs)
	case <-time.After(60 * time.Second):
		t.Fatalf("etcd not ready:\n%s", logs)
	}
	return ports[0]
}

func TestFleetNetns(t *testing.T) {
	exampleBinary(t) // build before the clock starts
	nss, links := fleetNetns(t, 3)
	port := startEtcdAll(t)
	var ps []*proc
	for i, ns := range nss {
		p := startProducerIn(t, []string{"ip", "netns", "exec", ns}, testutil.Key(t, 300+i),
			"ASTER_BIND_ADDR="+fmt.Sprintf("10.79.%d.2:0", i+1),
			"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_PREFIX=fleet", "ASTER_DISCOVERY_TTL=2s",
			"ASTER_DISCOVERY_ENDPOINTS="+fmt.Sprintf("10.79.%d.1:%d", i+1, port))
		t.Logf("producer %d in %s: %s (%v)", i, ns, p.id().Short(), p.addr.Direct)
		ps = append(ps, p)
	}
	ep := "127.0.0.1:" + strconv.Itoa(port)
	idem, post := dialTestFleet(t, ep), dialTestFleet(t, ep)
	for _, p := range ps {
		waitFor(t, "producer "+p.id().Short()+" ready", func() bool {
			return readyWith(idem, p.id(), p.addr) && readyWith(post, p.id(), p.addr)
		})
	}
	l := startLoad(idem, post)
	defer l.end()
	waitFor(t, "calls flowing", func() bool { return l.idemOK.Load() > 500 })

	// SIGKILL producer 0.
	ps[0].kill()
	waitFor(t, "the killed producer dropped", func() bool {
		p, ok := producerStatus(idem, ps[0].id())
		return !ok || p.State != aster.ProducerReady
	})
	ok := l.idemOK.Load()
	waitFor(t, "calls after the kill", func() bool { return l.idemOK.Load() > ok+500 })
	t.Logf("SIGKILL: %d getStatus ok, %d failed", l.idemOK.Load(), l.idemErr.Load())

	// Cut producer 1 off: its link down. It lives on, but clients and etcd
	// lose it; its lease expires and the fleet drops it.
	cut := time.Now()
	setLink(t, links[1], "down")
	waitFor(t, "the cut-off producer dropped", func() bool {
		p, ok := producerStatus(idem, ps[1].id())
		return !ok || p.State != aster.ProducerReady
	})
	dropped := time.Since(cut)
	ok = l.idemOK.Load()
	waitFor(t, "calls after the cut", func() bool { return l.idemOK.Load() > ok+500 })

	// Heal: the producer re-registers and takes calls again.
	healed := time.Now()
	setLink(t, links[1], "up")
	calls1 := func() uint64 { p, _ := producerStatus(idem, ps[1].id()); return p.Calls }
	before := calls1()
	back := waitFor(t, "the healed producer taking calls", func() bool {
		p, ok := producerStatus(idem, ps[1].id())
		return ok && p.State == aster.ProducerReady && p.Calls > before
	})
	l.end()
	t.Logf("partition: dropped %v after the cut, calls again %v after the heal; %d getStatus ok, %d failed; %d submitLog ok, %d failed",
		dropped.Round(time.Millisecond), back.Sub(healed).Round(time.Millisecond), l.idemOK.Load(), l.idemErr.Load(), l.postOK.Load(), len(l.postErrs))
	if n := l.idemErr.Load(); n != 0 {
		t.Errorf("%d getStatus calls failed, want 0: %v", n, l.idemErrs)
	}
	// Non-idempotent calls failed only on the two producers that were
	// lost, with UNAVAILABLE.
	for _, f := range l.postErrs {
		t.Logf("submitLog failed: %v", f.err)
		if status.CodeOf(f.err) != status.Unavailable {
			t.Errorf("submitLog failed with %v, want UNAVAILABLE", f.err)
		}
	}
	if p, ok := producerStatus(post, ps[2].id()); !ok || p.Failures != 0 {
		t.Errorf("the producer that was never harmed: %+v, want no failures", p)
	}
}

// setLink sets a link in the test's namespace up or down.
func setLink(t *testing.T, link, state string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "set", link, state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v\n%s", link, state, err, out)
	}
}
