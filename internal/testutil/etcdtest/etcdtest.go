// Package etcdtest runs a real single-node etcd server for tests, as a child
// process on loopback ports.
//
//	endpoint, stop := etcdtest.Start(t) // "http://127.0.0.1:PORT"
//	defer stop()                        // optional: t.Cleanup stops it too
//
// For a test in which etcd goes away and comes back, StartServer returns a
// Server that can be stopped and started again with the same data directory
// on the same ports.
//
// The server is the binary named by the ASTER_ETCD environment variable
// (CI prebuilds it), or else internal/tools/etcd built with "go build" (a
// separate module, so the main module never depends on etcd's server). The
// built binary is kept in the system temp directory under a name derived
// from the tool's sources and the Go version, so it is built once and
// reused by every test binary and run until the sources change.
package etcdtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
)

// EnvBinary names the environment variable that points at a prebuilt etcd
// tool binary (see internal/tools/etcd).
const EnvBinary = "ASTER_ETCD"

// readyTimeout bounds how long a start may take before the test fails.
const readyTimeout = 60 * time.Second

// Start starts an etcd server and returns its client endpoint
// ("http://127.0.0.1:PORT") and a function that stops it. The server is
// stopped at the end of the test in any case; stop may be called earlier
// and more than once.
func Start(t testing.TB) (endpoint string, stop func()) {
	t.Helper()
	s := StartServer(t)
	return s.Endpoint(), s.Stop
}

// Server is a running (or stopped) etcd server with a fixed data directory
// and fixed ports. Its methods must be called from the test's goroutine.
type Server struct {
	t          testing.TB
	bin        string
	dir        string
	clientPort int
	peerPort   int
	tls        TLS

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	logs   *testutil.SyncBuffer
}

// StartServer starts an etcd server on free loopback ports with a new data
// directory; it is stopped at the end of the test.
func StartServer(t testing.TB) *Server {
	t.Helper()
	return StartServerTLS(t, TLS{})
}

// TLS names the PEM files of an etcd server that serves clients over TLS.
type TLS struct {
	// CertFile and KeyFile are the server's certificate (for 127.0.0.1)
	// and key. Both unset: plain HTTP.
	CertFile, KeyFile string
	// ClientCAFile, if set, makes the server require client certificates
	// signed by this CA (mutual TLS).
	ClientCAFile string
}

// StartServerTLS is StartServer serving clients over TLS with tls's files
// (plain HTTP when they are unset); Endpoint is then "https://…".
func StartServerTLS(t testing.TB, tls TLS) *Server {
	t.Helper()
	s := &Server{
		t:          t,
		bin:        Binary(t),
		dir:        t.TempDir(),
		clientPort: freePort(t),
		peerPort:   freePort(t),
		tls:        tls,
	}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// Endpoint returns the client URL, "http://127.0.0.1:PORT" ("https://…"
// with TLS). It stays the same across Stop and Start.
func (s *Server) Endpoint() string {
	scheme := "http"
	if s.tls.CertFile != "" {
		scheme = "https"
	}
	return scheme + "://127.0.0.1:" + strconv.Itoa(s.clientPort)
}

// Start starts the server again after Stop, with the same data directory
// (so the same keys and leases) and the same ports, and waits until it
// serves clients. It fails the test if the server is running or does not
// become ready.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.t.Fatal("etcdtest: Start: the server is running")
	}
	logs := new(testutil.SyncBuffer)
	out := &readyWriter{ready: make(chan struct{})}
	args := []string{
		"-data-dir", s.dir,
		"-client-url", s.Endpoint(),
		"-peer-url", "http://127.0.0.1:" + strconv.Itoa(s.peerPort),
	}
	if s.tls.CertFile != "" {
		args = append(args, "-cert-file", s.tls.CertFile, "-key-file", s.tls.KeyFile)
	}
	if s.tls.ClientCAFile != "" {
		args = append(args, "-client-ca-file", s.tls.ClientCAFile)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout = out
	cmd.Stderr = logs
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("etcdtest: starting %s: %v", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.logs = cmd, exited, logs

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case <-out.ready:
		return
	case <-exited:
		s.cmd = nil
		s.t.Fatalf("etcdtest: etcd exited before it was ready (%v):\n%s", cmd.ProcessState, logs)
	case <-timer.C:
		s.stopLocked()
		s.t.Fatalf("etcdtest: etcd not ready after %v:\n%s", readyTimeout, logs)
	}
}

// Stop stops the server (SIGTERM, then SIGKILL after 15 s) and waits for
// it to exit. It does nothing if the server is not running.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	terminate(cmd.Process)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		s.t.Errorf("etcdtest: etcd did not exit on SIGTERM; killing it\n%s", s.logs)
		cmd.Process.Kill()
		<-exited
	}
}

// Logs returns what the server (its latest run) wrote to stderr.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logs == nil {
		return ""
	}
	return s.logs.String()
}

// readyWriter receives the tool's stdout and closes ready at its ready line.
type readyWriter struct {
	mu    sync.Mutex
	buf   []byte
	once  sync.Once
	ready chan struct{}
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) < 4096 {
		w.buf = append(w.buf, p...)
	}
	if bytes.Contains(w.buf, []byte("etcd ready ")) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("etcdtest: finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// Binary returns the path of the etcd tool binary: $ASTER_ETCD if set,
// else the one built from internal/tools/etcd (once per test binary, reused
// from the temp directory when the sources have not changed).
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("etcdtest: %s: %v", EnvBinary, err)
		}
		return p
	}
	buildOnce.Do(func() { buildPath, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("etcdtest: %v", buildErr)
	}
	return buildPath
}

// build builds internal/tools/etcd into the temp directory, under a name
// derived from its sources and the Go version, unless it is there already.
func build() (string, error) {
	src, err := toolDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintln(h, f, len(b))
		h.Write(b)
	}
	dir := filepath.Join(os.TempDir(), "aster-etcdtest-"+hex.EncodeToString(h.Sum(nil))[:16])
	bin := filepath.Join(dir, "etcd")
	if runtime.GOOS == "windows" {
		bin += ".exe"
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Build under a private name and rename, so test binaries building at
	// the same time never see a partial file.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, filepath.Base(bin))
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = src
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s (set %s to a prebuilt binary to skip this): %v\n%s", src, EnvBinary, err, b)
	}
	if err := os.Rename(out, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// toolDir finds internal/tools/etcd in the module the test runs in, looking
// up from the working directory (a test runs in its package's directory).
func toolDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "internal", "tools", "etcd")
		if _, err := os.Stat(filepath.Join(p, "main.go")); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("internal/tools/etcd not found above " + wd + "; set " + EnvBinary)
		}
	}
}
