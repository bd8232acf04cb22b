//go:build netns

package portmap_test

// The port mapping test against a real gateway (run by .ci/run with
// -tags netns, as root): three network namespaces, a public side, a NAT
// router masquerading the private side behind its public address and
// running Debian's miniupnpd (UPnP IGD, NAT-PMP and PCP) with its nftables
// chains, and a private endpoint. The endpoint maps a port with each
// protocol, a packet from the public side reaches it through the mapping,
// and after Close the mapping is gone from miniupnpd's chains and a packet
// no longer gets through; then an aster server built from config (port
// mapping on by default) advertises the mapped address and a client on
// the public side calls it directly, without a relay. The endpoint and the
// public side are separate processes (this test binary run again inside
// the namespace). A gateway that goes away is noticed at the next renewal
// and the port mapped again when it returns. The test fails, never skips,
// when it cannot set this up.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/portmap"
)

const (
	pubIP   = "11.77.0.1" // the public side
	extIP   = "11.77.0.2" // the router's public address
	lanGW   = "10.77.0.1" // the router on the private side
	privIP  = "10.77.0.2" // the endpoint
	helperV = "PORTMAP_NETNS_HELPER"
)

type topo struct {
	pub, rtr, priv string
	rext, rlan     string // the router's interfaces
	// startGW starts miniupnpd in the router and returns its stop
	// function; stopGW stops the one setup started.
	startGW func() func()
	stopGW  func()
}

// setup creates the namespaces, the nftables rules and miniupnpd.
func setup(t *testing.T) topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the port mapping network test needs root (network namespaces, nftables, miniupnpd)")
	}
	for _, tool := range []string{"ip", "nft", "miniupnpd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the port mapping network test needs %s (apt-get install iproute2 nftables miniupnpd): %v", tool, err)
		}
	}
	id := os.Getpid() % 10000
	tp := topo{
		pub: fmt.Sprintf("pm-pub-%d", id), rtr: fmt.Sprintf("pm-rtr-%d", id), priv: fmt.Sprintf("pm-priv-%d", id),
		rext: fmt.Sprintf("pmre%d", id), rlan: fmt.Sprintf("pmrl%d", id),
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{tp.pub, tp.rtr, tp.priv} {
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	link := func(ns, dev, peer, addr, peerAddr string) {
		run("ip", "link", "add", dev, "type", "veth", "peer", "name", peer)
		run("ip", "link", "set", dev, "netns", ns)
		run("ip", "link", "set", peer, "netns", tp.rtr)
		run("ip", "-n", ns, "addr", "add", addr+"/24", "dev", dev)
		run("ip", "-n", tp.rtr, "addr", "add", peerAddr+"/24", "dev", peer)
		run("ip", "-n", ns, "link", "set", dev, "up")
		run("ip", "-n", tp.rtr, "link", "set", peer, "up")
	}
	link(tp.pub, fmt.Sprintf("pmp%d", id), tp.rext, pubIP, extIP)
	link(tp.priv, fmt.Sprintf("pmv%d", id), tp.rlan, privIP, lanGW)
	run("ip", "-n", tp.priv, "route", "add", "default", "via", lanGW)
	run("ip", "-n", tp.rtr, "route", "add", "default", "via", pubIP)
	run("ip", "netns", "exec", tp.rtr, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

	// The router: masquerade from the private side, forward nothing
	// inbound but replies and what miniupnpd opens (its chains, named as
	// its nftables backend expects by default: table inet filter, chains
	// miniupnpd, prerouting_miniupnpd, postrouting_miniupnpd).
	dir := t.TempDir()
	rules := fmt.Sprintf(`table inet filter {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		iifname "%[1]s" accept
		jump miniupnpd
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump postrouting_miniupnpd
		oifname "%[2]s" masquerade
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`, tp.rlan, tp.rext)
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run("ip", "netns", "exec", tp.rtr, "nft", "-f", write("rules.nft", rules))
	conf := write("miniupnpd.conf", fmt.Sprintf(`ext_ifname=%s
listening_ip=%s
http_port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
uuid=3b7c2a4e-5f60-4d1e-9c8b-77aa%08d
lease_file=%s
min_lifetime=4
max_lifetime=86400
allow 1024-65535 10.77.0.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, tp.rext, tp.rlan, id, filepath.Join(dir, "leases")))
	tp.startGW = func() func() {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", tp.rtr, "miniupnpd", "-d", "-f", conf, "-P", filepath.Join(dir, "miniupnpd.pid"))
		logf, err := os.OpenFile(filepath.Join(dir, "miniupnpd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("miniupnpd: %v", err)
		}
		var once sync.Once
		stop := func() {
			once.Do(func() {
				cmd.Process.Kill()
				cmd.Wait()
				logf.Close()
			})
		}
		t.Cleanup(stop)
		// Wait until it listens for NAT-PMP/PCP (it opens SSDP and HTTP first).
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := exec.Command("ip", "netns", "exec", tp.rtr, "ss", "-lun").CombinedOutput()
			if strings.Contains(string(out), lanGW+":5351") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("miniupnpd does not listen on %s:5351:\n%s", lanGW, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return stop
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "miniupnpd.log"))
			t.Logf("miniupnpd log:\n%s", b)
		}
	})
	tp.stopGW = tp.startGW()
	return tp
}

// nftRules returns miniupnpd's rules in the router (its forward and
// prerouting chains).
func (tp topo) nftRules(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, chain := range []string{"miniupnpd", "prerouting_miniupnpd"} {
		out, err := exec.Command("ip", "netns", "exec", tp.rtr, "nft", "list", "chain", "inet", "filter", chain).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list chain %s: %v\n%s", chain, err, out)
		}
		b.Write(out)
	}
	return b.String()
}

// proc is this test binary running a helper inside a namespace.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startHelper(t *testing.T, ns, mode string, env ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^TestNetnsHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), append(env, helperV+"="+mode)...)
	cmd.Stderr = &logWriter{t: t, prefix: mode}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdin: stdin, lines: make(chan string, 64)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "PM:"); ok {
				p.lines <- l
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			// A helper that fails after its work (goleak in its
			// TestMain) fails the test too.
			if err != nil {
				t.Errorf("helper %s: %v", mode, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("helper %s did not exit", mode)
		}
	})
	return p
}

// expect waits for the next line starting with prefix and returns the rest.
func (p *proc) expect(t *testing.T, prefix string, within time.Duration) string {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("helper exited before %q", prefix)
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return strings.TrimSpace(rest)
			}
			if strings.HasPrefix(l, "FAIL ") {
				t.Fatalf("helper: %s", l)
			}
		case <-timer.C:
			t.Fatalf("no %q from the helper within %v", prefix, within)
		}
	}
}

type logWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		w.t.Logf("%s: %s", w.prefix, l)
	}
	return len(b), nil
}

// send sends one datagram from a fresh socket on the public side to addr
// and reports the echo, or "" when none comes within a second.
func send(t *testing.T, tp topo, addr string) string {
	t.Helper()
	p := startHelper(t, tp.pub, "send", "PM_TO="+addr)
	r := p.expect(t, "REPLY", 10*time.Second)
	return r
}

func TestPortmapNetns(t *testing.T) {
	tp := setup(t)
	for _, proto := range []portmap.Protocol{portmap.UPnP, portmap.NATPMP, portmap.PCP} {
		t.Run(string(proto), func(t *testing.T) {
			start := time.Now()
			ep := startHelper(t, tp.priv, "map", "PM_PROTO="+string(proto))
			internal := ep.expect(t, "INTERNAL", 10*time.Second)
			ext := ep.expect(t, "EXTERNAL", 20*time.Second)
			t.Logf("%s: internal port %s mapped to %s in %v (%s)", proto, internal, ext, time.Since(start).Round(time.Millisecond), ep.expect(t, "STATUS", time.Second))
			ap, err := netip.ParseAddrPort(ext)
			if err != nil || ap.Addr().String() != extIP {
				t.Fatalf("external address %q, want %s:port", ext, extIP)
			}
			rules := tp.nftRules(t)
			if !strings.Contains(rules, fmt.Sprintf("%s:%s", privIP, internal)) {
				t.Fatalf("miniupnpd's chains do not forward to %s:%s:\n%s", privIP, internal, rules)
			}
			if got := send(t, tp, ext); got != "echo ping" {
				t.Fatalf("a datagram to %s from the public side: reply %q, want \"echo ping\"", ext, got)
			}
			closeStart := time.Now()
			fmt.Fprintln(ep.stdin, "close")
			if r := ep.expect(t, "CLOSED", 10*time.Second); r != "<nil>" {
				t.Fatalf("Close: %s", r)
			}
			t.Logf("%s: Close took %v", proto, time.Since(closeStart).Round(time.Millisecond))
			if rules := tp.nftRules(t); strings.Contains(rules, fmt.Sprintf("%s:%s", privIP, internal)) {
				t.Fatalf("after Close, miniupnpd's chains still forward to %s:%s:\n%s", privIP, internal, rules)
			}
			// The endpoint still listens and echoes: only the mapping is gone.
			if got := send(t, tp, ext); got != "" {
				t.Fatalf("after Close a datagram to %s still got through: %q", ext, got)
			}
		})
	}

	// The gateway goes away after granting a mapping: the next renewal
	// (half the 8 s lifetime) fails and the mapping is reported lost; the
	// gateway comes back: the retries map the port again.
	t.Run("gateway restart", func(t *testing.T) {
		ep := startHelper(t, tp.priv, "map", "PM_PROTO=pcp", "PM_LIFETIME=8s")
		ep.expect(t, "EXTERNAL", 20*time.Second)
		tp.stopGW()
		stopped := time.Now()
		if r := ep.expect(t, "CHANGE lost", 15*time.Second); r != "" {
			t.Fatalf("change %q", r)
		}
		t.Logf("mapping reported lost %v after miniupnpd stopped (renewal every 4 s)", time.Since(stopped).Round(time.Millisecond))
		tp.stopGW = tp.startGW()
		restarted := time.Now()
		ext := ep.expect(t, "CHANGE "+extIP, 15*time.Second)
		t.Logf("mapped again (%s%s) %v after miniupnpd restarted (retries every 1-2 s)", extIP, ext, time.Since(restarted).Round(time.Millisecond))
		if got := send(t, tp, extIP+ext); got != "echo ping" {
			t.Fatalf("a datagram through the new mapping: reply %q", got)
		}
		fmt.Fprintln(ep.stdin, "close")
		if r := ep.expect(t, "CLOSED", 10*time.Second); r != "<nil>" {
			t.Fatalf("Close: %s", r)
		}
	})

	t.Run("aster", func(t *testing.T) {
		srv := startHelper(t, tp.priv, "server")
		addr := srv.expect(t, "ADDR", 30*time.Second)
		a, err := aster.ParseAddress(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("server address %s: direct %v", addr, a.Direct)
		mapped := a.Direct[len(a.Direct)-1]
		if mapped.Addr().String() != extIP {
			t.Fatalf("the address's last direct address is %v, want the mapped %s:port", mapped, extIP)
		}
		forward := fmt.Sprintf("%s:%d", privIP, mapped.Port())
		if rules := tp.nftRules(t); !strings.Contains(rules, forward) {
			t.Fatalf("miniupnpd's chains do not forward to %s:\n%s", forward, rules)
		}
		start := time.Now()
		cl := startHelper(t, tp.pub, "client", "PM_ADDR="+addr)
		if r := cl.expect(t, "CALL", 30*time.Second); r != "hello from behind the NAT" {
			t.Fatalf("call: %q", r)
		}
		t.Logf("client process started, dialed %v directly and called in %v", mapped, time.Since(start).Round(time.Millisecond))
		srv.stdin.Close()
		srv.expect(t, "STOPPED", 15*time.Second)
		if rules := tp.nftRules(t); strings.Contains(rules, forward) {
			t.Fatalf("after Shutdown, miniupnpd's chains still forward to %s:\n%s", forward, rules)
		}
	})
}

// TestNetnsHelper is the process TestPortmapNetns starts inside a
// namespace; it does nothing in a normal run.
func TestNetnsHelper(t *testing.T) {
	mode := os.Getenv(helperV)
	if mode == "" {
		return
	}
	fail := func(format string, args ...any) {
		fmt.Printf("PM:FAIL "+format+"\n", args...)
		os.Exit(1)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	stdin := bufio.NewScanner(os.Stdin)
	switch mode {
	case "map":
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			fail("%v", err)
		}
		go echo(conn)
		port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
		fmt.Printf("PM:INTERNAL %d\n", port)
		lifetime, _ := time.ParseDuration(os.Getenv("PM_LIFETIME"))
		m := portmap.New(port, &portmap.Options{
			Protocols: []portmap.Protocol{portmap.Protocol(os.Getenv("PM_PROTO"))},
			Logger:    logger, Lifetime: lifetime,
			RetryInterval: time.Second, MaxRetryInterval: 2 * time.Second,
			OnChange: func(ext netip.AddrPort, ok bool) {
				if ok {
					fmt.Printf("PM:CHANGE %s\n", ext)
				} else {
					fmt.Println("PM:CHANGE lost")
				}
			},
		})
		deadline := time.Now().Add(15 * time.Second)
		for {
			if ext, ok := m.External(); ok {
				fmt.Printf("PM:EXTERNAL %s\n", ext)
				break
			}
			if time.Now().After(deadline) {
				fail("no mapping: %+v", m.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
		st := m.Status()
		fmt.Printf("PM:STATUS protocol %s, gateway %s, lifetime %v, available %v\n", st.Protocol, st.Gateway, st.Lifetime, st.Available)
		stdin.Scan() // "close"
		fmt.Printf("PM:CLOSED %v\n", m.Close())
		stdin.Scan() // EOF: the test is done
		conn.Close() // ends echo
	case "send":
		to, err := net.ResolveUDPAddr("udp4", os.Getenv("PM_TO"))
		if err != nil {
			fail("%v", err)
		}
		c, err := net.DialUDP("udp4", nil, to)
		if err != nil {
			fail("%v", err)
		}
		c.Write([]byte("ping"))
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			n = 0
		}
		fmt.Printf("PM:REPLY %s\n", buf[:n])
	case "server":
		cfg := config.Default()
		cfg.BindAddr = "0.0.0.0:0"
		cfg.RelayMode = "disabled"
		cfg.LogLevel = "debug"
		// A dev-mode server (no root key) maps only when asked by name.
		cfg.PortmapperConfig = "enabled"
		s, err := cfg.NewServer()
		if err != nil {
			fail("%v", err)
		}
		s.MustRegister(handler.NewService("Greeter", 1).Handle("greet", handler.Unary(func(_ context.Context, r *greeting) (*greeting, error) {
			return &greeting{Text: "hello from behind the NAT"}, nil
		})))
		served := make(chan error, 1)
		go func() { served <- s.ListenAndServe("", nil) }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if c := s.PortMapCandidates(); len(c) > 0 {
				a := s.Address()
				if a.Direct[len(a.Direct)-1] != c[0] {
					fail("address %v does not end with the mapped %v", a.Direct, c[0])
				}
				fmt.Printf("PM:ADDR %s\n", a)
				break
			}
			if time.Now().After(deadline) {
				st, _ := s.PortMapStatus()
				fail("no mapping: %+v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for stdin.Scan() {
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			fail("shutdown: %v", err)
		}
		<-served
		fmt.Println("PM:STOPPED")
	case "client":
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := aster.Dial(ctx, os.Getenv("PM_ADDR"), aster.WithRelayFallback(false))
		if err != nil {
			fail("dial: %v", err)
		}
		defer c.Close()
		out, err := aster.CallUnary[greeting](ctx, c, "Greeter.greet", &greeting{Text: "hi"})
		if err != nil {
			fail("call: %v", err)
		}
		fmt.Printf("PM:CALL %s\n", out.Text)
	default:
		fail("unknown mode %q", mode)
	}
}

type greeting struct {
	Text string `cbor:"text"`
}

func echo(c *net.UDPConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		c.WriteToUDPAddrPort(append([]byte("echo "), buf[:n]...), from)
	}
}
