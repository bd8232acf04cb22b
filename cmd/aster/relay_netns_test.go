//go:build netns

package main

// The network test of the relay (run by .ci/run with -tags netns, as root):
// three network namespaces, the relay in a router namespace between a
// server namespace and a client namespace, and iptables in the router
// dropping all forwarded UDP. Direct QUIC between client and server then
// fails, and calls still work through the relay, which both reach over
// TCP. The relay, the server (Mission Control) and the clients ("aster
// call") are separate processes of the built binaries. The test fails,
// never skips, when it cannot set this up (not root, no ip or iptables).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/aster-go/aster/internal/testutil"
)

// netnsSetup creates the namespaces and returns their names: router (the
// relay, 10.77.1.1 and 10.77.2.1), server (10.77.1.2) and client (10.77.2.2).
func netnsSetup(t *testing.T) (router, server, client string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the relay network test needs root (network namespaces, iptables)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the relay network test needs %s: %v", tool, err)
		}
	}
	id := os.Getpid() % 100000
	router, server, client = fmt.Sprintf("astr-r%d", id), fmt.Sprintf("astr-s%d", id), fmt.Sprintf("astr-c%d", id)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{router, server, client} {
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	link := func(ns, dev, peer, addr, gw string) {
		run("ip", "link", "add", dev, "type", "veth", "peer", "name", peer)
		run("ip", "link", "set", dev, "netns", ns)
		run("ip", "link", "set", peer, "netns", router)
		run("ip", "-n", ns, "addr", "add", addr+"/24", "dev", dev)
		run("ip", "-n", router, "addr", "add", gw+"/24", "dev", peer)
		run("ip", "-n", ns, "link", "set", dev, "up")
		run("ip", "-n", router, "link", "set", peer, "up")
		run("ip", "-n", ns, "route", "add", "default", "via", gw)
	}
	link(server, fmt.Sprintf("as%d", id), fmt.Sprintf("asr%d", id), "10.77.1.2", "10.77.1.1")
	link(client, fmt.Sprintf("ac%d", id), fmt.Sprintf("acr%d", id), "10.77.2.2", "10.77.2.1")
	run("ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	return router, server, client
}

func inNS(ns string) []string { return []string{"ip", "netns", "exec", ns} }

// startServerIn runs Mission Control in ns with env and returns its address
// and its stderr.
func startServerIn(t *testing.T, ns string, env ...string) (string, *testutil.SyncBuffer) {
	t.Helper()
	_, serverBin := binaries(t)
	cmd := exec.Command("ip", "netns", "exec", ns, serverBin)
	cmd.Env = append(os.Environ(), env...)
	addr, stderr, _ := launchServer(t, cmd)
	return addr, stderr
}

// runAsterIn runs "aster args..." in ns with env and stdin.
func runAsterIn(t *testing.T, ns string, env []string, stdin string, args ...string) result {
	t.Helper()
	asterBin, _ := binaries(t)
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, asterBin}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return runCmd(t, cmd, stdin)
}

func TestRelayNetns(t *testing.T) {
	binaries(t) // build before the clock starts
	router, server, client := netnsSetup(t)

	relay := startRelayProc(t, inNS(router), "--listen", "10.77.1.1:3340", "--http", "127.0.0.1:3341", "--hostname", "10.77.1.1")
	t.Logf("relay %s", relay.url)
	addr, serverLog := startServerIn(t, server, "ASTER_BIND_ADDR=0.0.0.0:0", "ASTER_RELAY_MODE="+relay.url)
	t.Logf("server %s", addr)
	noRelay := []string{"ASTER_RELAY_MODE=disabled"}

	// Before UDP is blocked, the client reaches the server directly.
	r := runAsterIn(t, client, noRelay, "", "call", "--connect-timeout", "10s", addr, "MissionControl.getStatus", `{"agent_id":"direct"}`)
	r.want(t, 0)

	// Block UDP between the namespaces; TCP (to the relay) still passes.
	if out, err := exec.Command("ip", "netns", "exec", router, "iptables", "-I", "FORWARD", "-p", "udp", "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v\n%s", err, out)
	}
	r = runAsterIn(t, client, noRelay, "", "call", "--connect-timeout", "4s", addr, "MissionControl.getStatus", `{"agent_id":"direct"}`)
	if r.exit == 0 {
		t.Fatalf("a direct call succeeded with UDP blocked:\n%s", r.stdout)
	}
	t.Logf("direct only, UDP blocked: exit %d: %s", r.exit, strings.TrimSpace(r.stderr))

	// Through the relay (the address carries it; the client falls back on
	// its own), all four patterns.
	r = runAsterIn(t, client, nil, "", "call", "-v", addr, "MissionControl.getStatus", `{"agent_id":"via-relay"}`)
	r.want(t, 0)
	if !strings.Contains(r.stdout, `"agent_id":"via-relay"`) {
		t.Fatalf("unary: %q", r.stdout)
	}
	// UDP between the two is blocked, so no direct path opens: -v says so.
	if !strings.Contains(r.stderr, "* path: relay https://") {
		t.Errorf("call -v does not report the relay path:\n%s", r.stderr)
	}

	// Server stream: a log pusher in the client namespace feeds tailLogs.
	ctx, cancel := context.WithCancel(context.Background())
	asterBin, _ := binaries(t)
	pusher := exec.CommandContext(ctx, "ip", "netns", "exec", client, "sh", "-c",
		`while :; do "$0" call "$1" MissionControl.submitLog '{"agent_id":"edge-7","level":"warn","message":"through the relay"}' >/dev/null 2>&1; sleep 0.2; done`,
		asterBin, addr)
	pusher.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pusher.Cancel = func() error { return syscall.Kill(-pusher.Process.Pid, syscall.SIGKILL) }
	if err := pusher.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); pusher.Wait() }()
	r = runAsterIn(t, client, nil, "", "call", "--max", "3", addr, "MissionControl.tailLogs", `{"level":"info"}`)
	r.want(t, 0)
	if got := lines(t, r.stdout); len(got) != 3 || got[0]["message"] != "through the relay" {
		t.Fatalf("server stream: %q", r.stdout)
	}
	cancel()
	pusher.Wait()

	var in strings.Builder
	for range 500 {
		in.WriteString(`{"name":"cpu","value":1.5,"timestamp":17000}` + "\n")
	}
	r = runAsterIn(t, client, nil, in.String(), "call", addr, "MissionControl.ingestMetrics")
	r.want(t, 0)
	if got := lines(t, r.stdout); len(got) != 1 || got[0]["accepted"] != json.Number("500") {
		t.Fatalf("client stream: %q", r.stdout)
	}

	r = runAsterIn(t, client, nil, `{"command":"echo one"}`+"\n"+`{"command":"echo two"}`+"\n", "call", addr, "AgentSession.runCommand")
	r.want(t, 0)
	if got := lines(t, r.stdout); len(got) != 2 || got[0]["stdout"] != "one\n" || got[1]["stdout"] != "two\n" {
		t.Fatalf("bidi: %q", r.stdout)
	}

	// The UDP rule really dropped packets, and the relay carried the calls.
	out, err := exec.Command("ip", "netns", "exec", router, "iptables", "-L", "FORWARD", "-v", "-n", "-x").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L: %v\n%s", err, out)
	}
	t.Logf("router FORWARD chain:\n%s", out)
	if !dropCounted(string(out)) {
		t.Errorf("the UDP drop rule counted no packets:\n%s", out)
	}
	logs := relay.stop()
	if !strings.Contains(logs, "endpoint connected") || !strings.Contains(logs, "endpoint disconnected") {
		t.Errorf("relay log:\n%s", logs)
	}
	_ = serverLog
}

// dropCounted reports whether the iptables listing shows a DROP rule for
// udp with a non-zero packet count.
func dropCounted(listing string) bool {
	for _, l := range strings.Split(listing, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[2] == "DROP" && (f[3] == "udp" || f[3] == "17") && f[0] != "0" {
			return true
		}
	}
	return false
}
