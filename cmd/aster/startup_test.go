package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aster-go/aster/transport/relay"
)

// takenPort holds a TCP port on loopback for the test and returns it.
func takenPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// wantFailedStart checks that a process that could not start printed
// nothing on stdout (so a supervisor waiting for the address sees none),
// exited non-zero, and gave the reason on stderr.
func wantFailedStart(t *testing.T, r result, reason string) {
	t.Helper()
	if r.exit == 0 {
		t.Errorf("exit status 0, want non-zero; stderr:\n%s", r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("a failed start printed on stdout:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, reason) {
		t.Errorf("stderr lacks %q:\n%s", reason, r.stderr)
	}
}

// The example server binds its health port before it prints its address:
// with the port taken it prints nothing on stdout and exits non-zero.
func TestServerStartHealthPortTaken(t *testing.T) {
	_, serverBin := binaries(t)
	cmd := exec.Command(serverBin)
	cmd.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_HEALTH_HOST=127.0.0.1", "ASTER_HEALTH_PORT="+takenPort(t))
	wantFailedStart(t, runCmd(t, cmd, ""), "address already in use")
}

// A server whose home relay is down still starts when direct QUIC works:
// it prints its address (with the relay in it), serves direct calls, and
// warns on stderr that it keeps trying the relay.
func TestServerStartHomeRelayDown(t *testing.T) {
	cert, err := relay.SelfSignedCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := relay.PinnedURL(l.Addr().String(), cert.Certificate[0])
	l.Close() // no relay there

	_, serverBin := binaries(t)
	cmd := exec.Command(serverBin)
	cmd.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_RELAY_MODE="+dead)
	addr, stderr, stop := launchServer(t, cmd)
	defer stop()
	res := runAster(t, "", "call", "--connect-timeout", "10s", addr, "MissionControl.getStatus", `{"agent_id":"direct"}`)
	res.want(t, 0)
	if !strings.Contains(res.stdout, `"agent_id":"direct"`) {
		t.Fatalf("stdout %q", res.stdout)
	}
	if !strings.Contains(stderr.String(), "connecting in the background") {
		t.Errorf("no warning about the unreachable relay on stderr:\n%s", stderr.String())
	}

	// Without direct QUIC the relay is all there is: the start fails,
	// with nothing on stdout.
	cmd = exec.Command(serverBin)
	cmd.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0", "ASTER_RELAY_MODE="+dead, "ASTER_CLEAR_IP_TRANSPORTS=true")
	wantFailedStart(t, runCmd(t, cmd, ""), "home relay")
}

// aster relay binds its HTTP port before it prints its URL: with the port
// taken it prints nothing on stdout and exits non-zero.
func TestRelayStartHTTPPortTaken(t *testing.T) {
	r := runAster(t, "", "relay", "--listen", "127.0.0.1:0", "--hostname", "127.0.0.1", "--http", "127.0.0.1:"+takenPort(t))
	wantFailedStart(t, r, "address already in use")
}

// A relay restarted with its self-signed certificate files prints only
// the URL that pins the certificate (an unpinned one fails with "certificate
// signed by unknown authority").
func TestRelayRestartPrintsPinnedURL(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	args := []string{"--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--hostname", "127.0.0.1", "--tls-cert", cert, "--tls-key", key}
	for run := range 2 {
		r := startRelayProc(t, nil, args...)
		if !strings.HasSuffix(r.url, "#sha256="+r.fingerprint) {
			t.Fatalf("run %d: relay printed the URL %q first, want the pinned one", run+1, r.url)
		}
		// The printed URL works for a server reachable only through it.
		addr := startServer(t, "ASTER_RELAY_MODE="+r.url, "ASTER_CLEAR_IP_TRANSPORTS=true")
		res := runAster(t, "", "call", addr, "MissionControl.getStatus", `{"agent_id":"run`+strconv.Itoa(run)+`"}`)
		res.want(t, 0)
		r.stop()
	}
}
