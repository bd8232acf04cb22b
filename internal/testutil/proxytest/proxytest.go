// Package proxytest runs a real HTTP CONNECT proxy for tests: Debian's
// tinyproxy or squid, as a child process on a loopback port, with a
// generated configuration and its own log file, so that a test can assert
// which CONNECT requests the proxy saw.
//
//	p := proxytest.StartTinyproxy(t, proxytest.Options{User: "u", Password: "pw"})
//	cfg.Proxy = relay.ProxyURL(p.URL)
//	...
//	p.Connects() // ["127.0.0.1:4433", ...]
//
// The proxy must be installed (apt-get install tinyproxy squid). Without
// it the test is skipped, except under CI=true, where it fails.
package proxytest

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
)

// Options configure a proxy.
type Options struct {
	// User and Password, if User is set, make the proxy require Basic
	// proxy authentication; URL then carries them.
	User, Password string
}

// Proxy is a running tinyproxy.
type Proxy struct {
	// Addr is the proxy's "127.0.0.1:PORT".
	Addr string
	// URL is "http://[user:password@]127.0.0.1:PORT".
	URL *url.URL

	kind    string // "tinyproxy" or "squid"
	logPath string
	out     *testutil.SyncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Binary returns the path of the program name (tinyproxy or squid),
// skipping the test when it is not installed (failing it under CI=true).
func Binary(t testing.TB, name string) string {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} { // not on every PATH
			if st, serr := os.Stat(filepath.Join(dir, name)); serr == nil && st.Mode().IsRegular() {
				return filepath.Join(dir, name)
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("proxytest: %s is not installed (apt-get install %s): %v", name, name, err)
		}
		t.Skipf("proxytest: %s is not installed (apt-get install %s; CI=true makes this a failure): %v", name, name, err)
	}
	return bin
}

// StartTinyproxy starts tinyproxy on a free loopback port and waits until
// it accepts connections; it is stopped at the end of the test.
func StartTinyproxy(t testing.TB, opts Options) *Proxy {
	t.Helper()
	bin := Binary(t, "tinyproxy")
	dir := t.TempDir()
	port := freePort(t)
	p := &Proxy{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		kind:    "tinyproxy",
		logPath: filepath.Join(dir, "tinyproxy.log"),
		out:     new(testutil.SyncBuffer),
	}
	p.URL = &url.URL{Scheme: "http", Host: p.Addr}
	conf := fmt.Sprintf("Port %d\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nLogFile %q\nLogLevel Info\nAllow 127.0.0.1\n", port, p.logPath)
	if opts.User != "" {
		conf += fmt.Sprintf("BasicAuth %s %s\n", opts.User, opts.Password)
		p.URL.User = url.UserPassword(opts.User, opts.Password)
	}
	confPath := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The log file exists before tinyproxy starts, writable by whichever
	// user it runs as.
	if err := os.WriteFile(p.logPath, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	p.start(t, exec.Command(bin, "-d", "-c", confPath))
	return p
}

// StartSquid starts squid on a free loopback port, without caching and
// without authentication (opts.User is not supported), and waits until it
// accepts connections; it is stopped at the end of the test. Squid writes a
// tunnel to its access log when the tunnel closes.
func StartSquid(t testing.TB, opts Options) *Proxy {
	t.Helper()
	if opts.User != "" {
		t.Fatal("proxytest: StartSquid does not support authentication")
	}
	bin := Binary(t, "squid")
	// Squid started as root runs as its own user, which must reach the
	// directory: not t.TempDir, whose parent only the test's user can enter.
	dir, err := os.MkdirTemp("", "aster-squid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	p := &Proxy{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		kind:    "squid",
		logPath: filepath.Join(dir, "access.log"),
		out:     new(testutil.SyncBuffer),
	}
	p.URL = &url.URL{Scheme: "http", Host: p.Addr}
	conf := fmt.Sprintf(`http_port 127.0.0.1:%d
pid_filename %[2]s/squid.pid
cache_log %[2]s/cache.log
access_log stdio:%[2]s/access.log
cache deny all
cache_mem 8 MB
coredump_dir %[2]s
acl loopback src 127.0.0.1
http_access allow loopback
http_access deny all
shutdown_lifetime 1 seconds
pinger_enable off
`, port, dir)
	confPath := filepath.Join(dir, "squid.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p.start(t, exec.Command(bin, "-N", "-f", confPath))
	return p
}

// start runs cmd and waits until the proxy accepts connections.
func (p *Proxy) start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("proxytest: starting %s: %v", p.kind, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("proxytest: %s exited before it was ready (%v):\n%s\n%s", p.kind, cmd.ProcessState, p.out, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			t.Fatalf("proxytest: %s not listening on %s after 30 s:\n%s\n%s", p.kind, p.Addr, p.out, p.Log())
		}
	}
}

// Stop stops the proxy (SIGTERM, then SIGKILL after 10 s) and waits for
// it to exit; later connections to Addr are refused. It is safe to call
// more than once.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// Log returns the proxy's log file.
func (p *Proxy) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	return string(b)
}

var (
	// tinyproxy: one line per request, and one per tunnel opened.
	tinyConnect     = regexp.MustCompile(`Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.[01]`)
	tinyEstablished = regexp.MustCompile(`Established connection to host "([^"]*)"`)
	// squid: one access log line per request, written when it ends:
	// "time elapsed client TCP_TUNNEL/200 bytes CONNECT host:port - ...".
	squidConnect = regexp.MustCompile(`(?m)^\S+\s+\d+ \S+ [A-Z_]+/(\d{3}) \d+ CONNECT (\S+) `)
)

// Connects returns the target ("host:port") of each CONNECT request in the
// log, in order, whether the proxy granted it or not (squid: of each that
// ended).
func (p *Proxy) Connects() []string {
	var out []string
	if p.kind == "squid" {
		for _, m := range squidConnect.FindAllStringSubmatch(p.Log(), -1) {
			out = append(out, m[2])
		}
		return out
	}
	for _, m := range tinyConnect.FindAllStringSubmatch(p.Log(), -1) {
		out = append(out, m[1])
	}
	return out
}

// Established returns how many tunnels the proxy opened (tinyproxy's
// "Established connection" lines; squid's CONNECTs answered 200, once
// they ended).
func (p *Proxy) Established() int {
	if p.kind == "squid" {
		n := 0
		for _, m := range squidConnect.FindAllStringSubmatch(p.Log(), -1) {
			if m[1] == "200" {
				n++
			}
		}
		return n
	}
	return len(tinyEstablished.FindAllString(p.Log(), -1))
}

// CountConnects returns how many CONNECT requests in the log asked for
// target.
func (p *Proxy) CountConnects(target string) int {
	n := 0
	for _, c := range p.Connects() {
		if strings.EqualFold(c, target) {
			n++
		}
	}
	return n
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
