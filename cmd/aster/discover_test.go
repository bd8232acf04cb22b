package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/dnstest"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
)

// asterWith runs the aster binary with env added to the environment.
func asterWith(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, args...)
	cmd.Env = append(os.Environ(), env...)
	return runCmd(t, cmd, stdin)
}

// startFleetServer runs the example server registered in etcd at ep under
// prefix "fleet", and returns its address and stop function (SIGTERM).
func startFleetServer(t *testing.T, ep string) (aster.Address, func()) {
	t.Helper()
	_, serverBin := binaries(t)
	cmd := exec.Command(serverBin)
	cmd.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_LOG_LEVEL=warn",
		"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS="+ep, "ASTER_DISCOVERY_PREFIX=fleet")
	raw, _, stop := launchServer(t, cmd)
	a, err := aster.ParseAddress(raw)
	if err != nil {
		t.Fatal(err)
	}
	return a, stop
}

// discoverJSON runs "aster discover --json" and decodes its output.
func discoverJSON(t *testing.T, env []string, target string, exit int) discovered {
	t.Helper()
	r := asterWith(t, env, "", "discover", "--json", target)
	r.want(t, exit)
	var d discovered
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatalf("discover --json output: %v\n%s", err, r.stdout)
	}
	return d
}

// TestDiscoverEtcd runs two example servers registered in a real etcd and
// checks what an operator sees: aster discover (hostile entries in the
// registry ignored, with a warning), and call, contract and shell by
// service name, then a producer's SIGTERM taking it out of the listing at
// once.
func TestDiscoverEtcd(t *testing.T) {
	t.Parallel()
	ep, _ := etcdtest.Start(t)
	a1, stop1 := startFleetServer(t, ep)
	a2, _ := startFleetServer(t, ep)
	env := []string{"ASTER_DISCOVERY_ENDPOINTS=" + ep}
	const target = "etcd:///fleet/MissionControl"

	// Hostile entries beside the real ones: not JSON, an address whose key
	// is another endpoint's, an address that does not parse. Each is
	// ignored (and logged); none is listed or dialled.
	etc, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer etc.Close()
	impostor := testutil.ID(t, 66).String()
	for key, val := range map[string]string{
		"/aster/fleet/MissionControl/" + testutil.ID(t, 65).String(): "not json",
		"/aster/fleet/MissionControl/" + impostor:                    `{"addr":"` + a1.String() + `"}`,
		"/aster/fleet/MissionControl/" + testutil.ID(t, 67).String(): `{"addr":"aster1nope"}`,
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := etc.Put(ctx, key, val)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	d := discoverJSON(t, env, target, 0)
	if d.Name != "fleet/MissionControl" || d.Target != target || d.Ready != 2 || len(d.Producers) != 2 {
		t.Fatalf("discover: %+v", d)
	}
	want := map[string]string{a1.ID.String(): a1.String(), a2.ID.String(): a2.String()}
	for _, p := range d.Producers {
		if want[p.ID] != p.Addr || p.State != "ready" || p.Credential != "none" || p.LastError != "" {
			t.Errorf("producer %+v; want one of %v, ready, credential none", p, want)
		}
	}
	r := asterWith(t, env, "", "discover", target)
	r.want(t, 0)
	wantIn(t, "stderr", r.stderr, "ignoring an invalid entry")
	wantIn(t, "stdout", r.stdout, "fleet/MissionControl: 2 producers, 2 ready", "STATE", "OUTSTANDING", "CREDENTIAL", "LAST ERROR")
	for _, a := range []aster.Address{a1, a2} {
		if !strings.Contains(r.stdout, a.ID.String()[:10]+"  ready") {
			t.Errorf("discover does not list %s ready:\n%s", a.ID.Short(), r.stdout)
		}
	}

	// The service name works wherever an address does.
	r = asterWith(t, env, "", "call", target, "MissionControl.getStatus", `{"agent_id":"by-name"}`)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"by-name"`)
	r = asterWith(t, env, "", "contract", "show", target)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, "MissionControl", "getStatus")
	r = asterWith(t, env, "cd services/MissionControl\n./getStatus agent_id=shell\n", "shell", target)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id": "shell"`)
	r = asterWith(t, env, "", "call", "--session", "AgentSession", "etcd:///fleet/AgentSession")
	r.want(t, 0) // an empty session: the target resolves, a producer answers

	// SIGTERM: the server deregisters before it drains, so the listing
	// drops it without waiting for its lease.
	stop1()
	d = discoverJSON(t, env, target, 0)
	if len(d.Producers) != 1 || d.Producers[0].ID != a2.ID.String() {
		t.Errorf("after SIGTERM of %s: %+v", a1.ID.Short(), d.Producers)
	}

	// A name nobody serves: UNAVAILABLE (24), with the empty listing.
	d = discoverJSON(t, env, "etcd:///fleet/Nobody", ExitRPCBase+14)
	if len(d.Producers) != 0 {
		t.Errorf("fleet/Nobody: %+v", d)
	}
	r = asterWith(t, env, "", "call", "etcd:///fleet/Nobody", "Nobody.x")
	if r.exit != ExitConnect || !strings.Contains(r.stderr, "UNAVAILABLE") {
		t.Errorf("call of an empty fleet: exit %d, stderr %s; want %d and UNAVAILABLE", r.exit, r.stderr, ExitConnect)
	}
}

// TestDiscoverErrors checks the operator's mistakes: a target the settings
// cannot serve, a bad target, an unreachable registry, and a static target
// with a producer that does not answer.
func TestDiscoverErrors(t *testing.T) {
	t.Parallel()
	// No etcd endpoints configured: a config error (exit 2) naming the
	// variable.
	r := asterWith(t, []string{"ASTER_DISCOVERY_ENDPOINTS="}, "", "discover", "etcd:///fleet/MissionControl")
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "ASTER_DISCOVERY_ENDPOINTS", "discovery.endpoints")
	r = asterWith(t, []string{"ASTER_DISCOVERY_ENDPOINTS="}, "", "call", "etcd:///fleet/MissionControl", "MissionControl.getStatus")
	r.want(t, ExitUsage)

	// Not a target, or a bad one: usage errors.
	for _, args := range [][]string{
		{"discover", "aster1abc"},
		{"discover", "consul:///x"},
		{"discover", "etcd:///a/../b"},
		{"call", "etcd:///", "S.m"},
		{"call", "etcd://host:1/fleet/MissionControl", "S.m"},
	} {
		r := asterWith(t, []string{"ASTER_DISCOVERY_ENDPOINTS=127.0.0.1:1"}, "", args...)
		if r.exit != ExitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %s", args, r.exit, ExitUsage, r.stderr)
		}
	}

	// etcd that does not answer: a connection failure (exit 3).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	r = asterWith(t, []string{"ASTER_DISCOVERY_ENDPOINTS=" + dead}, "", "discover", "--connect-timeout", "1s", "etcd:///fleet/MissionControl")
	r.want(t, ExitConnect)
	wantIn(t, "stderr", r.stderr, "UNAVAILABLE", dead)

	// A static target whose producer does not answer: listed, not ready,
	// with the reason; UNAVAILABLE (24).
	addr := startServer(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	silent := aster.Address{ID: testutil.ID(t, 77), Direct: []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}}
	r = asterWith(t, nil, "", "discover", "--json", "--connect-timeout", "1s", "static:///"+addr+","+silent.String())
	r.want(t, 0) // one producer is ready
	var d discovered
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil {
		t.Fatal(err)
	}
	if d.Ready != 1 || len(d.Producers) != 2 {
		t.Fatalf("static listing: %+v", d)
	}
	for _, p := range d.Producers {
		if p.ID == silent.ID.String() && p.State == "ready" {
			t.Errorf("the silent producer is ready: %+v", p)
		}
	}
	// Only the silent one: not ready, UNAVAILABLE (24).
	r = asterWith(t, nil, "", "discover", "--connect-timeout", "500ms", "static:///"+silent.String())
	r.want(t, ExitRPCBase+14)
	wantIn(t, "stdout", r.stdout, "static list: 1 producers, 0 ready")
}

// TestConfigPrintDiscovery checks that "aster config print" shows the
// [discovery] settings with their sources and hides the password.
func TestConfigPrintDiscovery(t *testing.T) {
	t.Parallel()
	r := asterWith(t, []string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=127.0.0.1:2379", "ASTER_DISCOVERY_PREFIX=fleet",
		"ASTER_DISCOVERY_USERNAME=mc", "ASTER_DISCOVERY_PASSWORD=correct-horse-battery"}, "", "config", "print")
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, "[discovery]", "backend", "etcd (ASTER_DISCOVERY)", "127.0.0.1:2379 (ASTER_DISCOVERY_ENDPOINTS)",
		"fleet (ASTER_DISCOVERY_PREFIX)", "5s (default)", "**** (ASTER_DISCOVERY_PASSWORD)")
	if strings.Contains(r.stdout, "correct-horse") {
		t.Errorf("config print shows the password:\n%s", r.stdout)
	}
}

// TestDiscoverDNS lists producers published in SRV/TXT records on a real
// DNS server on loopback, asked through the target's authority, and calls
// one by the service name.
func TestDiscoverDNS(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t)
	addr := startServer(t)
	a, err := aster.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	const name = "_mc._udp.example.internal"
	srv.SetZone(t, fmt.Sprintf(`
%s. 5 IN SRV 0 0 %d mc-0.example.internal.
mc-0.example.internal. 5 IN TXT "addr=%s"
`, name, a.Direct[0].Port(), addr))
	target := "dns://" + srv.Addr() + "/" + name
	d := discoverJSON(t, nil, target, 0)
	if d.Ready != 1 || len(d.Producers) != 1 || d.Producers[0].ID != a.ID.String() {
		t.Fatalf("discover %s: %+v", target, d)
	}
	r := asterWith(t, nil, "", "call", target, "MissionControl.getStatus", `{"agent_id":"dns"}`)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"dns"`)
	// The DNS server from the settings, when the target names none.
	r = asterWith(t, []string{"ASTER_DISCOVERY=dns", "ASTER_DISCOVERY_ENDPOINTS=" + srv.Addr()}, "", "discover", "dns:///"+name)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, name+": 1 producers, 1 ready")
	// A name that does not exist: the resolver's NOT_FOUND, as a failure to
	// connect (exit 3).
	r = asterWith(t, nil, "", "discover", "dns://"+srv.Addr()+"/_nope._udp.example.internal")
	r.want(t, ExitConnect)
	wantIn(t, "stderr", r.stderr, "NOT_FOUND")
}

// TestDiscoverProducerCredentials is the README's flow for authorised
// registration: a root key, a producer credential naming the services
// ("aster enroll node --role producer --attr aster.services=..."), one
// producer registered with it and one without; a client that does not
// allow all producers lists the second as rejected and calls only the
// first.
func TestDiscoverProducerCredentials(t *testing.T) {
	t.Parallel()
	ep, _ := etcdtest.Start(t)
	dir := t.TempDir()
	rootKey, ident := filepath.Join(dir, "root.key"), filepath.Join(dir, "mc-0.identity")
	asterWith(t, nil, "", "trust", "keygen", "--out-key", rootKey).want(t, 0)
	asterWith(t, nil, "", "enroll", "node", "--role", "producer", "--name", "mc-0",
		"--attr", "aster.services=MissionControl,AgentSession", "--root-key", rootKey, "--out", ident).want(t, 0)

	_, serverBin := binaries(t)
	start := func(env ...string) aster.Address {
		cmd := exec.Command(serverBin)
		cmd.Env = append(append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_LOG_LEVEL=warn",
			"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS="+ep, "ASTER_DISCOVERY_PREFIX=fleet"), env...)
		raw, _, _ := launchServer(t, cmd)
		a, err := aster.ParseAddress(raw)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	enrolled := start("ASTER_IDENTITY_FILE=" + ident)
	stranger := start()

	env := []string{"ASTER_DISCOVERY_ENDPOINTS=" + ep, "ASTER_ROOT_PUBKEY_FILE=" + filepath.Join(dir, "root.pub"), "ASTER_ALLOW_ALL_PRODUCERS=false"}
	d := discoverJSON(t, env, "etcd:///fleet/MissionControl", 0)
	if d.Ready != 1 || len(d.Producers) != 2 {
		t.Fatalf("discover: %+v", d)
	}
	for _, p := range d.Producers {
		switch p.ID {
		case enrolled.ID.String():
			if p.State != "ready" || p.Credential != "valid" {
				t.Errorf("enrolled producer %+v, want ready with a valid credential", p)
			}
		case stranger.ID.String():
			if p.State != "rejected" || p.Credential != "no producer credential" {
				t.Errorf("producer without a credential %+v, want rejected", p)
			}
		default:
			t.Errorf("unknown producer %+v", p)
		}
	}
	r := asterWith(t, env, "", "call", "etcd:///fleet/MissionControl", "MissionControl.getStatus", `{"agent_id":"enrolled"}`)
	r.want(t, 0)

	// Without a root key, allow_all_producers=false is refused (exit 2),
	// never "allow all".
	r = asterWith(t, []string{"ASTER_DISCOVERY_ENDPOINTS=" + ep, "ASTER_ALLOW_ALL_PRODUCERS=false"}, "", "discover", "etcd:///fleet/MissionControl")
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "ASTER_ALLOW_ALL_PRODUCERS", "no root key")
}
