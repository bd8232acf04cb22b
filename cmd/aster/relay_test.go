package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
)

// relayProc is an "aster relay" process.
type relayProc struct {
	url, health, fingerprint string
	stop                     func() (stderr string)
}

// startRelayProc runs "aster relay args..." (prefixed by wrap, e.g.
// "ip netns exec NS") and waits for it to print its URL.
func startRelayProc(t *testing.T, wrap []string, args ...string) *relayProc {
	t.Helper()
	asterBin, _ := binaries(t)
	argv := append(append(append([]string(nil), wrap...), asterBin, "relay"), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	stop := func() string {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
				// A drain on SIGTERM is a clean shutdown: exit 0, not 143
				// (which supervisors count as a failure).
				if code := cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("aster relay exited %d after SIGTERM, want 0", code)
				}
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Errorf("aster relay did not stop on SIGTERM")
			}
		})
		return stderr.String()
	}
	t.Cleanup(func() { stop() })
	p := &relayProc{stop: stop}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		closed := false
		for sc.Scan() {
			l := sc.Text()
			if v, ok := strings.CutPrefix(l, "relay URL: "); ok {
				p.url = strings.Fields(v)[0]
			}
			if v, ok := strings.CutPrefix(l, "certificate sha256: "); ok {
				p.fingerprint = v
			}
			if v, ok := strings.CutPrefix(l, "health and metrics on "); ok {
				p.health = strings.Fields(v)[0]
			}
			if p.url != "" && p.health != "" && !closed {
				closed = true
				close(ready)
			}
		}
		if !closed {
			close(ready)
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
	}
	if p.url == "" || p.health == "" {
		t.Fatalf("aster relay did not print its URL and health address; stderr:\n%s", stderr.String())
	}
	return p
}

// TestRelayCommand runs "aster relay" with a certificate it creates, a
// Mission Control server reachable only through it (ASTER_RELAY_MODE,
// ASTER_CLEAR_IP_TRANSPORTS), and "aster call" through it; then restarts
// the relay, which keeps its certificate and so its pinned URL.
func TestRelayCommand(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	tlsArgs := []string{"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--hostname", "127.0.0.1", "--tls-cert", cert, "--tls-key", key}
	r := startRelayProc(t, nil, tlsArgs...)
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", st, err)
	}
	if !strings.HasPrefix(r.url, "https://127.0.0.1:") || !strings.HasSuffix(r.url, "#sha256="+r.fingerprint) {
		t.Fatalf("relay URL %q (fingerprint %s)", r.url, r.fingerprint)
	}
	resp, err := http.Get(r.health)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %s", resp.Status)
	}

	addr := startServer(t, "ASTER_RELAY_MODE="+r.url, "ASTER_CLEAR_IP_TRANSPORTS=true")
	res := runAster(t, "", "call", addr, "MissionControl.getStatus", `{"agent_id":"via-relay"}`)
	res.want(t, 0)
	if !strings.Contains(res.stdout, `"agent_id":"via-relay"`) {
		t.Fatalf("stdout %q", res.stdout)
	}
	// The client with relays disabled cannot reach a relay-only server.
	disabled := runAsterEnv(t, []string{"ASTER_RELAY_MODE=disabled"}, "call", "--connect-timeout", "2s", addr, "MissionControl.getStatus", `{}`)
	if disabled.exit == 0 {
		t.Fatalf("a client with ASTER_RELAY_MODE=disabled reached a relay-only server")
	}

	metrics, err := http.Get(strings.TrimSuffix(r.health, "/healthz") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	if !strings.Contains(string(body), "aster_relay_endpoints 1") && !strings.Contains(string(body), "aster_relay_endpoints 2") {
		t.Errorf("metrics do not show the registered endpoints:\n%s", body)
	}

	logs := r.stop()
	for _, want := range []string{"endpoint connected", "endpoint disconnected", "shutting down", "stopped"} {
		if !strings.Contains(logs, want) {
			t.Errorf("relay log lacks %q:\n%s", want, logs)
		}
	}
	// Restarted with the same files: same certificate, same pin.
	r2 := startRelayProc(t, nil, tlsArgs...)
	if r2.fingerprint != r.fingerprint {
		t.Errorf("fingerprint changed across restarts: %s then %s", r.fingerprint, r2.fingerprint)
	}
}

// runAsterEnv is runAster with extra environment variables.
func runAsterEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return runAster(t, "", args...)
}
