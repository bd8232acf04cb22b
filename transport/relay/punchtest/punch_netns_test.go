//go:build netns

package punchtest

// The network test of direct paths (PROTOCOL.md §24), run by .ci/run with
// -tags netns as root. Five network namespaces:
//
//	hp-a (192.168.1.2) ── hp-nat1 (192.168.1.1 | 10.200.1.2) ──┐
//	                                                           hp-pub (10.200.1.1, 10.200.2.1): the relay
//	hp-b (192.168.2.2) ── hp-nat2 (192.168.2.1 | 10.200.2.2) ──┘
//
// hp-pub routes between the two NAT routers and runs the relay (TCP+TLS
// and UDP address observation on 10.200.1.1:3340); each NAT router
// masquerades its endpoint's network behind its public address. The
// endpoints are separate processes (this test binary re-executed in the
// namespaces), driven over their stdin and stdout: the server in hp-b
// echoes streams, the client in hp-a dials it through the relay and keeps
// a stream going. The test fails, never skips, when it cannot set this up.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

const (
	roleEnv  = "HP_ROLE"
	relayEnv = "HP_RELAY"
	relayIP  = "10.200.1.1"
	port     = "3340"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	testutil.VerifyNoLeaks(m)
}

func seedKey(b byte) trust.SecretKey {
	k, err := trust.KeyFromSeed(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		panic(err)
	}
	return k
}

var serverKey, clientKey = seedKey(0x11), seedKey(0x22)

func runRole(role string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	in := bufio.NewScanner(os.Stdin)
	switch role {
	case "relay":
		cert, err := relay.SelfSignedCertificate(relayIP)
		if err != nil {
			return err
		}
		srv, err := relay.NewServer(relay.ServerConfig{Certificate: cert, BytesPerSecond: -1, Logger: log})
		if err != nil {
			return err
		}
		// The relay's address, not 0.0.0.0: hp-pub has two, and a UDP
		// answer must leave from the address the probe was sent to.
		ln, err := net.Listen("tcp", relayIP+":"+port)
		if err != nil {
			return err
		}
		udp, err := net.ListenPacket("udp", relayIP+":"+port)
		if err != nil {
			return err
		}
		go srv.Serve(ln)
		go srv.ServeUDP(udp)
		defer srv.Close()
		fmt.Printf("url %s\n", relay.PinnedURL(relayIP+":"+port, cert.Certificate[0]))
		for in.Scan() {
			st := srv.Stats()
			fmt.Printf("stats %d %d %d\n", st.PacketsForwarded, st.BytesForwarded, st.Observed)
		}
		return nil
	case "server":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ln, err := relay.Listen(ctx, os.Getenv(relayEnv), serverKey, &relay.Config{Logger: log})
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				go func() {
					addr := c.RemoteAddr().(*relay.Addr)
					for range time.Tick(time.Second) {
						st, _ := addr.PathStats()
						log.Info("path", "path", addr.Path(), "stats", fmt.Sprintf("%+v", st))
					}
				}()
				go func() {
					for {
						s, err := c.AcceptStream(context.Background())
						if err != nil {
							return
						}
						go func() { defer s.Close(); _, _ = io.Copy(s, s) }()
					}
				}()
			}
		}()
		fmt.Println("ready")
		for in.Scan() {
		}
		return nil
	case "client":
		d := relay.NewDialer(clientKey, &relay.Config{Logger: log})
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := d.Dial(ctx, discovery.EndpointAddr{ID: trust.IDOf(serverKey), Relay: os.Getenv(relayEnv)})
		if err != nil {
			return err
		}
		defer c.Close(transport.ConnNoError, "")
		addr := c.RemoteAddr().(*relay.Addr)
		var st *streamer
		fmt.Println("ready")
		for in.Scan() {
			switch in.Text() {
			case "open":
				s, err := c.OpenStream(context.Background())
				if err != nil {
					return err
				}
				st = startStreamer(s)
				fmt.Println("opened")
			case "path":
				fmt.Printf("path %s\n", addr.Path())
			case "count":
				fmt.Printf("count %d\n", st.count())
			case "stats":
				ps, _ := addr.PathStats()
				fmt.Printf("stats %+v\n", ps)
			case "finish":
				if err := st.finish(); err != nil {
					fmt.Printf("err %v\n", err)
				} else {
					fmt.Printf("ok %d\n", st.count())
				}
			}
		}
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

// streamer writes 16 KiB blocks on a stream and checks their echo.
type streamer struct {
	s      transport.Stream
	mu     sync.Mutex
	blocks int
	err    error
	stop   chan struct{}
	done   chan struct{}
}

func startStreamer(s transport.Stream) *streamer {
	st := &streamer{s: s, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		block, got := make([]byte, 16<<10), make([]byte, 16<<10)
		for {
			select {
			case <-st.stop:
				return
			default:
			}
			_, _ = rand.Read(block)
			_, err := s.Write(block)
			if err == nil {
				_, err = io.ReadFull(s, got)
			}
			if err == nil && !bytes.Equal(block, got) {
				err = errors.New("the echo differs")
			}
			st.mu.Lock()
			if err != nil {
				st.err = err
				st.mu.Unlock()
				return
			}
			st.blocks++
			st.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return st
}

func (st *streamer) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.blocks
}

func (st *streamer) finish() error {
	close(st.stop)
	<-st.done
	if err := st.s.Close(); err != nil && st.err == nil {
		st.err = err
	}
	return st.err
}

// proc is one role process in a namespace.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *testutil.SyncBuffer
}

func startProc(t *testing.T, ns, role string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=" + role}, env...)...)
	p := &proc{t: t, name: role + "@" + ns, cmd: cmd, lines: make(chan string, 64), stderr: &testutil.SyncBuffer{}}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop ends the process (EOF on its stdin) and waits for it.
func (p *proc) stop() {
	if p.cmd == nil {
		return
	}
	p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.t.Errorf("%s: %v\n%s", p.name, err, p.tail())
		}
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
		p.t.Errorf("%s did not stop\n%s", p.name, p.tail())
	}
	p.cmd = nil
}

func (p *proc) tail() string {
	s := p.stderr.String()
	if len(s) > 6000 {
		s = "…" + s[len(s)-6000:]
	}
	return s
}

// ask sends a command and returns the answer line, which must start with
// want.
func (p *proc) ask(cmd, want string) string {
	p.t.Helper()
	if cmd != "" {
		if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
			p.t.Fatalf("%s: %v\n%s", p.name, err, p.tail())
		}
	}
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("%s exited\n%s", p.name, p.tail())
		}
		if !strings.HasPrefix(l, want) {
			p.t.Fatalf("%s: %q answered %q, want %q…\n%s", p.name, cmd, l, want, p.tail())
		}
		return strings.TrimPrefix(l, want)
	case <-time.After(20 * time.Second):
		p.t.Fatalf("%s: no answer to %q\n%s", p.name, cmd, p.tail())
	}
	return ""
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func nsRun(t *testing.T, ns string, args ...string) {
	t.Helper()
	run(t, append([]string{"ip", "netns", "exec", ns}, args...)...)
}

// topology builds the namespaces of the package comment.
func topology(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the NAT traversal test needs root (network namespaces, iptables)")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("the NAT traversal test needs %s: %v", tool, err)
		}
	}
	names := []string{"hp-pub", "hp-nat1", "hp-nat2", "hp-a", "hp-b"}
	for _, ns := range names {
		_ = exec.Command("ip", "netns", "del", ns).Run() // a previous run's leftovers
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
		nsRun(t, ns, "ip", "link", "set", "lo", "up")
	}
	link := func(nsA, devA, addrA, nsB, devB, addrB string) {
		run(t, "ip", "link", "add", devA, "netns", nsA, "type", "veth", "peer", "name", devB, "netns", nsB)
		run(t, "ip", "-n", nsA, "addr", "add", addrA+"/24", "dev", devA)
		run(t, "ip", "-n", nsB, "addr", "add", addrB+"/24", "dev", devB)
		run(t, "ip", "-n", nsA, "link", "set", devA, "up")
		run(t, "ip", "-n", nsB, "link", "set", devB, "up")
	}
	link("hp-pub", "hp-pub1", "10.200.1.1", "hp-nat1", "hp-wan1", "10.200.1.2")
	link("hp-pub", "hp-pub2", "10.200.2.1", "hp-nat2", "hp-wan2", "10.200.2.2")
	link("hp-nat1", "hp-lan1", "192.168.1.1", "hp-a", "hp-a0", "192.168.1.2")
	link("hp-nat2", "hp-lan2", "192.168.2.1", "hp-b", "hp-b0", "192.168.2.2")
	run(t, "ip", "-n", "hp-nat1", "route", "add", "default", "via", "10.200.1.1")
	run(t, "ip", "-n", "hp-nat2", "route", "add", "default", "via", "10.200.2.1")
	run(t, "ip", "-n", "hp-a", "route", "add", "default", "via", "192.168.1.1")
	run(t, "ip", "-n", "hp-b", "route", "add", "default", "via", "192.168.2.1")
	for _, ns := range []string{"hp-pub", "hp-nat1", "hp-nat2"} {
		nsRun(t, ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	}
	// The public network does not route the private ones: only what the
	// NAT routers masquerade gets through.
}

// nat sets router's masquerading: endpoint-independent (plain MASQUERADE,
// which keeps the source port) or symmetric (a random port per
// destination).
func nat(t *testing.T, router, wan string, symmetric bool) {
	t.Helper()
	nsRun(t, router, "iptables", "-t", "nat", "-F", "POSTROUTING")
	args := []string{"iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE"}
	if symmetric {
		args = append(args, "--random-fully")
	}
	nsRun(t, router, args...)
	// Nothing enters a private network unasked: only replies to what the
	// endpoint sent (conntrack) are forwarded inward.
	nsRun(t, router, "iptables", "-F", "FORWARD")
	nsRun(t, router, "iptables", "-A", "FORWARD", "-i", wan, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
	nsRun(t, router, "iptables", "-A", "FORWARD", "-i", wan, "-j", "DROP")
	// Nor does the router itself take unsolicited packets, as home routers
	// do not: dropped before conntrack confirms them, they leave no entry
	// behind. (An entry for a peer's PING that arrived before this side's
	// first PING to the peer went out would make the router map that
	// later PING to another port, as a symmetric NAT does.)
	nsRun(t, router, "iptables", "-F", "INPUT")
	nsRun(t, router, "iptables", "-A", "INPUT", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
}

// relayStats returns the relay's forwarded datagrams.
func relayStats(t *testing.T, r *proc) uint64 {
	t.Helper()
	f := strings.Fields(r.ask("stats", "stats "))
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// directSent returns the client's count of datagrams sent direct.
func directSent(t *testing.T, c *proc) uint64 {
	t.Helper()
	st := c.ask("stats", "stats ")
	_, rest, ok := strings.Cut(st, "DirectSent:")
	if !ok {
		t.Fatalf("stats %q", st)
	}
	n, err := strconv.ParseUint(strings.Fields(rest)[0], 10, 64)
	if err != nil {
		t.Fatalf("stats %q: %v", st, err)
	}
	return n
}

// waitPath polls the client's path until it starts with want.
func waitPath(t *testing.T, c *proc, want string, within time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		p := c.ask("path", "path ")
		if strings.HasPrefix(p, want) {
			return p, time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("path still %q after %s, want %s…\n%s", p, within, want, c.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// progress waits until the client's stream echoed n more blocks.
func progress(t *testing.T, c *proc, n int) {
	t.Helper()
	count := func() int {
		v, err := strconv.Atoi(c.ask("count", "count "))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	from := count()
	deadline := time.Now().Add(20 * time.Second)
	for count() < from+n {
		if time.Now().After(deadline) {
			t.Fatalf("the stream made no progress (%d blocks)\n%s", from, c.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPunchNetns(t *testing.T) {
	topology(t)
	nat(t, "hp-nat1", "hp-wan1", false)
	nat(t, "hp-nat2", "hp-wan2", false)
	r := startProc(t, "hp-pub", "relay")
	url := r.ask("", "url ")
	t.Logf("relay %s", url)

	endpoints := func(t *testing.T) (server, client *proc) {
		server = startProc(t, "hp-b", "server", relayEnv+"="+url)
		server.ask("", "ready")
		t.Cleanup(func() {
			if t.Failed() || os.Getenv("HP_VERBOSE") != "" {
				t.Logf("server log:\n%s", server.tail())
			}
		})
		client = startProc(t, "hp-a", "client", relayEnv+"="+url)
		client.ask("", "ready")
		t.Cleanup(func() {
			if t.Failed() || os.Getenv("HP_VERBOSE") != "" {
				t.Logf("client log:\n%s", client.tail())
			}
		})
		client.ask("open", "opened")
		return server, client
	}

	t.Run("endpoint-independent", func(t *testing.T) {
		_, c := endpoints(t)
		if relayStats(t, r) == 0 {
			t.Fatal("the relay forwarded nothing: the connection did not start on the relay")
		}
		progress(t, c, 3)
		path, took := waitPath(t, c, "direct ", 10*time.Second)
		t.Logf("direct after %s: %s", took.Round(time.Millisecond), path)
		if !strings.Contains(path, "10.200.2.2:") {
			t.Errorf("the direct path %q is not the peer's public address", path)
		}
		progress(t, c, 5)
		before, directBefore := relayStats(t, r), directSent(t, c)
		progress(t, c, 100) // 1.6 MB each way
		// (A heartbeat late under load makes the path suspect for a
		// moment, and datagrams then go both ways: the relay may carry a
		// small share.)
		grew, direct := relayStats(t, r)-before, directSent(t, c)-directBefore
		if grew > max(10, direct/20) {
			t.Errorf("the relay forwarded %d datagrams while the stream ran on the direct path (%d sent direct)", grew, direct)
		}
		t.Logf("relay forwarded %d datagrams while the client sent %d direct", grew, direct)
		t.Logf("client path stats: %s", c.ask("stats", "stats "))

		// Block the direct path mid-stream: back to the relay, the stream
		// goes on.
		nsRun(t, "hp-pub", "iptables", "-I", "FORWARD", "-p", "udp", "-j", "DROP")
		path, took = waitPath(t, c, "relay ", 10*time.Second)
		t.Logf("back on the relay after %s: %s", took.Round(time.Millisecond), path)
		before = relayStats(t, r)
		progress(t, c, 20)
		if relayStats(t, r) == before {
			t.Error("the relay forwarded nothing after the fallback")
		}
		nsRun(t, "hp-pub", "iptables", "-D", "FORWARD", "-p", "udp", "-j", "DROP")
		path, took = waitPath(t, c, "direct ", 15*time.Second)
		t.Logf("direct again after %s: %s", took.Round(time.Millisecond), path)
		progress(t, c, 10)
		if got := c.ask("finish", ""); !strings.HasPrefix(got, "ok ") {
			t.Fatalf("the stream failed: %s\n%s", got, c.tail())
		}
		t.Logf("client path stats: %s", c.ask("stats", "stats "))
	})

	t.Run("symmetric", func(t *testing.T) {
		nat(t, "hp-nat1", "hp-wan1", true)
		_, c := endpoints(t)
		start := time.Now()
		for time.Since(start) < 8*time.Second {
			if p := c.ask("path", "path "); !strings.HasPrefix(p, "relay ") {
				t.Fatalf("path %q behind a symmetric NAT", p)
			}
			progress(t, c, 2)
		}
		st := c.ask("stats", "stats ")
		t.Logf("client path stats: %s", st)
		if strings.Contains(st, "PingsSent:0 ") {
			t.Error("no PING was sent: the test did not try the direct path")
		}
		if got := c.ask("finish", ""); !strings.HasPrefix(got, "ok ") {
			t.Fatalf("the stream failed: %s\n%s", got, c.tail())
		}
	})
}
