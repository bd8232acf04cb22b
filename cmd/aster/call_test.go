package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// These tests run the built aster binary against the Mission Control
// example running as a separate process, as an operator would.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds cmd/aster and examples/missioncontrol once per test run.
func binaries(t *testing.T) (asterBin, serverBin string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "aster-call-test-")
		if buildErr != nil {
			return
		}
		for pkg, out := range map[string]string{".": "aster", "../../examples/missioncontrol": "missioncontrol"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, out), pkg)
			if b, err := cmd.CombinedOutput(); err != nil {
				buildErr = errors.New("go build " + pkg + ": " + err.Error() + "\n" + string(b))
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "aster"), filepath.Join(buildDir, "missioncontrol")
}

// startServer runs the example server on loopback and returns its address.
func startServer(t *testing.T, env ...string) string {
	t.Helper()
	_, serverBin := binaries(t)
	cmd := exec.Command(serverBin)
	cmd.Env = append(append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0"), env...)
	addr, _, _ := launchServer(t, cmd)
	return addr
}

// launchServer starts cmd, a Mission Control server process (possibly
// wrapped, e.g. in "ip netns exec"), and waits for the aster1 address it
// prints first. It returns the address, the process's stderr so far and
// from then on, and a stop function (SIGTERM, then SIGKILL after 15s; safe
// to call again) that also runs at the test's cleanup.
func launchServer(t *testing.T, cmd *exec.Cmd) (string, *testutil.SyncBuffer, func()) {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		io.Copy(io.Discard, stdout)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addr, ok := <-line:
		if !ok || !strings.HasPrefix(addr, "aster1") {
			stop()
			t.Fatalf("server printed %q first; stderr:\n%s", addr, stderr.String())
		}
		return addr, stderr, stop
	case <-time.After(30 * time.Second):
		stop()
		t.Fatalf("server did not print its address; stderr:\n%s", stderr.String())
	}
	return "", nil, nil
}

// result is one finished aster invocation.
type result struct {
	stdout, stderr string
	exit           int
}

// runAster runs the binary with args and stdin and waits for it.
func runAster(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	asterBin, _ := binaries(t)
	return runCmd(t, exec.Command(asterBin, args...), stdin)
}

// runCmd runs cmd with stdin (for at most a minute) and returns its output
// and exit status.
func runCmd(t *testing.T, cmd *exec.Cmd, stdin string) result {
	t.Helper()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

func (r result) want(t *testing.T, exit int) {
	t.Helper()
	if r.exit != exit {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.exit, exit, r.stdout, r.stderr)
	}
}

// lines decodes NDJSON output.
func lines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(l))
		d.UseNumber()
		if err := d.Decode(&m); err != nil {
			t.Fatalf("output line %q is not a JSON object: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

func TestVersion(t *testing.T) {
	r := runAster(t, "", "--version")
	r.want(t, 0)
	if !strings.HasPrefix(r.stdout, "aster version ") {
		t.Fatalf("--version printed %q", r.stdout)
	}
}

func TestCallUnary(t *testing.T) {
	addr := startServer(t)
	r := runAster(t, "", "call", addr, "MissionControl.getStatus", `{"agent_id":"edge-node-7"}`)
	r.want(t, 0)
	if got, want := r.stdout, `{"agent_id":"edge-node-7","status":"running","uptime_secs":3600}`+"\n"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	// The request from stdin ("-"), a chosen version and a header.
	r = runAster(t, `{"agent_id":"from-stdin"}`, "call", "--service-version", "1", "-H", "tenant=acme", addr, "MissionControl.getStatus", "-")
	r.want(t, 0)
	if l := lines(t, r.stdout); len(l) != 1 || l[0]["agent_id"] != "from-stdin" {
		t.Fatalf("stdout %q", r.stdout)
	}
}

// pushLogs submits log entries through the Go client until the test ends.
func pushLogs(t *testing.T, addr string, level string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := aster.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done; c.Close() })
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			aster.CallUnary[mission.SubmitLogResult](ctx, c, "MissionControl.submitLog",
				&mission.LogEntry{AgentID: "edge-7", Level: level, Message: "line"})
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
}

func TestCallServerStream(t *testing.T) {
	addr := startServer(t)
	pushLogs(t, addr, "warn")
	r := runAster(t, "", "call", "--max", "3", addr, "MissionControl.tailLogs", `{"level":"info"}`)
	r.want(t, 0)
	got := lines(t, r.stdout)
	if len(got) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(got), r.stdout)
	}
	for _, l := range got {
		if l["level"] != "warn" || l["agent_id"] != "edge-7" {
			t.Fatalf("unexpected entry %v", l)
		}
		if _, err := l["timestamp"].(json.Number).Int64(); err != nil {
			t.Fatalf("timestamp is not an integer: %v", l["timestamp"])
		}
	}

	// --timeout ends the stream with DEADLINE_EXCEEDED (14).
	r = runAster(t, "", "call", "--timeout", "300ms", addr, "MissionControl.tailLogs", `{"level":"error"}`)
	r.want(t, ExitRPCBase+int(status.DeadlineExceeded))
	if !strings.HasPrefix(r.stderr, "DEADLINE_EXCEEDED: ") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestCallServerStreamSIGINT(t *testing.T) {
	addr := startServer(t)
	pushLogs(t, addr, "info")
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, "call", addr, "MissionControl.tailLogs", "{}")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("no streamed line; stderr: %s", stderr.String())
	}
	cmd.Process.Signal(os.Interrupt)
	for sc.Scan() {
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("after SIGINT: %v (want exit 0); stderr: %s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("aster call did not stop after SIGINT")
	}
}

func TestCallClientStream(t *testing.T) {
	addr := startServer(t)
	var in strings.Builder
	for i := range 1000 {
		in.WriteString(`{"name":"cpu","value":` + []string{"0.5", "1", "2.25"}[i%3] + `,"timestamp":` + "17000" + `}` + "\n")
	}
	in.WriteString("\n") // blank lines are white space
	r := runAster(t, in.String(), "call", addr, "MissionControl.ingestMetrics")
	r.want(t, 0)
	if got := lines(t, r.stdout); len(got) != 1 || got[0]["accepted"] != json.Number("1000") {
		t.Fatalf("stdout %q", r.stdout)
	}
	// The requests may also be given as the argument.
	r = runAster(t, "", "call", addr, "MissionControl.ingestMetrics", `{"name":"a","value":1} {"name":"b","value":2}`)
	r.want(t, 0)
	if got := lines(t, r.stdout); got[0]["accepted"] != json.Number("2") {
		t.Fatalf("stdout %q", r.stdout)
	}
	// A bad line is a usage error naming the request.
	r = runAster(t, `{"name":"a","value":1}`+"\n"+`{"name":"b","value":"high"}`+"\n", "call", addr, "MissionControl.ingestMetrics")
	r.want(t, ExitUsage)
	if !strings.Contains(r.stderr, "request 2") || !strings.Contains(r.stderr, `"value"`) {
		t.Fatalf("stderr %q", r.stderr)
	}
	r = runAster(t, "{not json\n", "call", addr, "MissionControl.ingestMetrics")
	r.want(t, ExitUsage)
}

func TestCallBidi(t *testing.T) {
	addr := startServer(t)
	// runCommand is session-scoped: a plain call runs in a session of its own.
	r := runAster(t, `{"command":"echo one"}`+"\n"+`{"command":"echo two >&2; exit 3"}`+"\n", "call", addr, "AgentSession.runCommand")
	r.want(t, 0)
	got := lines(t, r.stdout)
	if len(got) != 2 || got[0]["stdout"] != "one\n" || got[1]["stderr"] != "two\n" || got[1]["exit_code"] != json.Number("3") {
		t.Fatalf("stdout %q", r.stdout)
	}
}

func TestCallSession(t *testing.T) {
	addr := startServer(t)
	script := `{"method":"register","args":{"agent_id":"edge-7","capabilities":["gpu"]}}
{"method":"AgentSession.register","args":{"agent_id":"edge-7"}}
{"method":"runCommand","args":[{"command":"echo hi"},{"command":"echo there"}]}
`
	r := runAster(t, script, "call", "--session", "AgentSession", addr)
	r.want(t, 0)
	got := lines(t, r.stdout)
	if len(got) != 4 {
		t.Fatalf("want 4 lines (two assignments, two results):\n%s", r.stdout)
	}
	if got[2]["stdout"] != "hi\n" || got[3]["stdout"] != "there\n" {
		t.Fatalf("stdout %q", r.stdout)
	}

	// Scope and usage errors.
	r = runAster(t, "", "call", "--session", "MissionControl", addr)
	r.want(t, ExitUsage)
	r = runAster(t, `{"method":"getStatus"}`, "call", "--session", "NoSuch", addr)
	r.want(t, ExitRPCBase+int(status.NotFound))
	r = runAster(t, `{"method":"MissionControl.getStatus"}`, "call", "--session", "AgentSession", addr)
	r.want(t, ExitUsage)
	r = runAster(t, `{"method":"register","argz":{}}`, "call", "--session", "AgentSession", addr)
	r.want(t, ExitUsage)
}

func TestCallErrors(t *testing.T) {
	addr := startServer(t)

	r := runAster(t, "", "call", addr, "MissionControl.getStats", "{}")
	r.want(t, ExitRPCBase+int(status.NotFound))
	if r.stderr != "NOT_FOUND: unknown method MissionControl.getStats\n" {
		t.Fatalf("stderr %q", r.stderr)
	}
	r = runAster(t, "", "call", "--service-version", "9", addr, "MissionControl.getStatus", "{}")
	r.want(t, ExitRPCBase+int(status.NotFound))

	// --json-errors: one JSON object with the exit status in it.
	r = runAster(t, "", "call", "--json-errors", addr, "MissionControl.getStatus", `{"agent_idx":"x"}`)
	r.want(t, ExitUsage)
	var je map[string]any
	if err := json.Unmarshal([]byte(r.stderr), &je); err != nil {
		t.Fatalf("stderr %q is not JSON: %v", r.stderr, err)
	}
	if je["code"] != "INVALID_ARGUMENT" || je["exit"] != float64(ExitUsage) || !strings.Contains(je["message"].(string), "agent_idx") {
		t.Fatalf("json error %v", je)
	}

	for _, args := range [][]string{
		{"call"},
		{"call", addr},
		{"call", "aster1notanaddress", "MissionControl.getStatus"},
		{"call", addr, "getStatus"},
		{"call", addr, "MissionControl.getStatus", `{"agent_id":`},
		{"call", addr, "MissionControl.getStatus", `{"agent_id":7}`},
		{"call", "--max", "-1", addr, "MissionControl.tailLogs"},
		{"call", "--header", "novalue", addr, "MissionControl.getStatus"},
		{"call", "--no-such-flag", addr, "MissionControl.getStatus"},
		{"no-such-command"},
	} {
		r := runAster(t, "", args...)
		if r.exit != ExitUsage || !strings.HasPrefix(r.stderr, "INVALID_ARGUMENT: ") {
			t.Errorf("aster %q: exit %d, stderr %q; want usage error (2)", args, r.exit, r.stderr)
		}
	}
}

func TestCallConnectFailure(t *testing.T) {
	// A well-formed address nobody serves: a fresh key on a closed port.
	a := aster.Address{ID: trust.IDOf(trust.GenerateKey())}
	srvAddr := startServer(t)
	parsed, err := aster.ParseAddress(srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	a.Direct = parsed.Direct // the right port, the wrong key: the handshake fails
	r := runAster(t, "", "call", "--connect-timeout", "5s", a.String(), "MissionControl.getStatus", "{}")
	r.want(t, ExitConnect)
	if !strings.HasPrefix(r.stderr, "UNAUTHENTICATED: cannot connect") {
		t.Fatalf("stderr %q", r.stderr)
	}

	// Nothing listening (port 9, discard, is not served here): the connect
	// timeout ends the attempt.
	a.Direct = []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}
	r = runAster(t, "", "call", "--connect-timeout", "1s", a.String(), "MissionControl.getStatus", "{}")
	r.want(t, ExitConnect)
	if !strings.Contains(r.stderr, "cannot connect") {
		t.Fatalf("stderr %q", r.stderr)
	}
}

func TestExitCodeFor(t *testing.T) {
	for code, want := range map[status.Code]int{
		status.OK: 0, status.Canceled: 11, status.NotFound: 15, status.Unauthenticated: 26,
		17: 12, 99: 12, 100: ExitApplication, 4711: ExitApplication,
	} {
		if got := ExitCodeFor(code); got != want {
			t.Errorf("ExitCodeFor(%d) = %d, want %d", code, got, want)
		}
	}
}
