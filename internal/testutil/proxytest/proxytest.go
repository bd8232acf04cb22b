// Package proxytest runs a real HTTP CONNECT proxy for tests: Debian's
// tinyproxy, as a child process on a loopback port, with a generated
// configuration and its own log file, so that a test can assert which
// CONNECT requests the proxy saw.
//
//	p := proxytest.StartTinyproxy(t, proxytest.Options{User: "u", Password: "pw"})
//	cfg.Proxy = relay.ProxyURL(p.URL)
//	...
//	p.Connects() // ["127.0.0.1:4433", ...]
//
// tinyproxy must be installed (apt-get install tinyproxy). Without it the
// test is skipped, except under CI=true, where it fails.
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

	logPath string
	out     *testutil.SyncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Binary returns the path of tinyproxy, skipping the test when it is not
// installed (failing it under CI=true).
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("proxytest: tinyproxy is not installed (apt-get install tinyproxy): %v", err)
		}
		t.Skipf("proxytest: tinyproxy is not installed (apt-get install tinyproxy; CI=true makes this a failure): %v", err)
	}
	return bin
}

// StartTinyproxy starts tinyproxy on a free loopback port and waits until
// it accepts connections; it is stopped at the end of the test.
func StartTinyproxy(t testing.TB, opts Options) *Proxy {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil { // tinyproxy may drop to another user
		t.Fatal(err)
	}
	port := freePort(t)
	p := &Proxy{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
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
	cmd := exec.Command(bin, "-d", "-c", confPath)
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("proxytest: starting tinyproxy: %v", err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-p.exited:
			t.Fatalf("proxytest: tinyproxy exited before it was ready (%v):\n%s\n%s", cmd.ProcessState, p.out, p.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			t.Fatalf("proxytest: tinyproxy not listening on %s after 15 s:\n%s\n%s", p.Addr, p.out, p.Log())
		}
	}
}

// Stop stops the proxy (SIGTERM, then SIGKILL after 5 s) and waits for it
// to exit; later connections to Addr are refused. It is safe to call more
// than once.
func (p *Proxy) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
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
	connectLine     = regexp.MustCompile(`Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.[01]`)
	establishedLine = regexp.MustCompile(`Established connection to host "([^"]*)"`)
)

// Connects returns the target ("host:port") of each CONNECT request in the
// log, in order, whether the proxy granted it or not.
func (p *Proxy) Connects() []string {
	var out []string
	for _, m := range connectLine.FindAllStringSubmatch(p.Log(), -1) {
		out = append(out, m[1])
	}
	return out
}

// Established returns how many tunnels the proxy opened (its log's
// "Established connection" lines).
func (p *Proxy) Established() int {
	return len(establishedLine.FindAllString(p.Log(), -1))
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
