package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// These tests cover the operator's commands of issue 17 (list, describe,
// call -v/-d/--format, exit codes, client-only configuration, completion)
// with the CLI as a subprocess against a real server.

// runIn runs the CLI in dir with extra environment variables.
func runIn(t *testing.T, dir string, env []string, stdin string, args ...string) result {
	t.Helper()
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return runCmd(t, cmd, stdin)
}

func TestListAndDescribe(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	r := runAster(t, "", "list", addr)
	r.want(t, 0)
	wantIn(t, "list", r.stdout, "AgentSession", "v1", "session", "2 methods", "MissionControl", "v1", "shared", "4 methods")

	r = runAster(t, "", "list", addr, "MissionControl")
	r.want(t, 0)
	wantIn(t, "list MissionControl", r.stdout,
		"getStatus", "unary", "mission/StatusRequest → mission/StatusResponse", "[requires ops.status, idempotent]",
		"tailLogs", "server_stream", "[requires any_of(ops.logs, ops.admin)]")

	r = runAster(t, "", "list", "--json", addr)
	r.want(t, 0)
	var services []struct {
		Name    string
		Version int
		Scope   string
		Methods []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &services); err != nil || len(services) != 2 ||
		services[1].Name != "MissionControl" || services[1].Scope != "shared" || len(services[1].Methods) != 4 || services[1].Methods[0] != "getStatus" {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}

	r = runAster(t, "", "describe", addr, "MissionControl.tailLogs")
	r.want(t, 0)
	wantIn(t, "describe", r.stdout, "MissionControl.tailLogs  (server_stream, service v1, shared-scoped)",
		"requires:  any_of(ops.logs, ops.admin)", "request:   mission/TailRequest", "agent_id", "level",
		"response:  mission/LogEntry  (a stream of them)", "timestamp  float")
	r = runAster(t, "", "describe", addr, "AgentSession")
	r.want(t, 0)
	wantIn(t, "describe AgentSession", r.stdout, "service AgentSession v1 (session-scoped, 2 methods)",
		"AgentSession.register", "AgentSession.runCommand  (bidi_stream")

	r = runAster(t, "", "describe", "--json", addr, "MissionControl.getStatus")
	r.want(t, 0)
	var d struct {
		Service struct{ Name, Scope string }
		Methods []struct {
			Name, Pattern, Request, Response string
			Idempotent                       bool
			Requires                         map[string]any
		}
		Types []struct {
			Name   string
			Fields []struct{ Name string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.Service.Name != "MissionControl" || len(d.Methods) != 1 ||
		!d.Methods[0].Idempotent || d.Methods[0].Requires["cap"] != "ops.status" || len(d.Types) != 2 ||
		d.Types[0].Name != "mission/StatusRequest" || d.Types[0].Fields[0].Name != "agent_id" {
		t.Fatalf("describe --json: %v\n%s", err, r.stdout)
	}

	// Unknown names are NOT_FOUND (15), listing what there is.
	r = runAster(t, "", "describe", addr, "MissionControl.nope")
	r.want(t, ExitCodeFor(status.NotFound))
	wantIn(t, "stderr", r.stderr, "no method nope in MissionControl (methods: getStatus")
	r = runAster(t, "", "list", addr, "Nope")
	r.want(t, ExitCodeFor(status.NotFound))
	runAster(t, "", "describe", addr).want(t, ExitUsage)
}

// echoServer runs an aster server in the test process: Echo.meta answers
// with a response header and a trailer that repeat the request metadata,
// Echo.fail ends with an application code, Echo.size reports the size of
// its request.
func echoServer(t *testing.T) string {
	t.Helper()
	type req struct {
		Data string `cbor:"data" json:"data"`
	}
	type resp struct {
		N int `cbor:"n" json:"n"`
	}
	svc := handler.NewService("Echo", 1).
		Handle("meta", handler.Unary(func(ctx context.Context, r *req) (*resp, error) {
			handler.SetHeader(ctx, "x-served-by", "echo")
			for k, v := range handler.IncomingMetadata(ctx) {
				handler.SetTrailer(ctx, "echo-"+k, v)
			}
			return &resp{N: len(r.Data)}, nil
		})).
		Handle("fail", handler.Unary(func(ctx context.Context, r *req) (*resp, error) {
			return nil, status.New(status.Code(107), "the application said no")
		})).
		Handle("hang", handler.Unary(func(ctx context.Context, r *req) (*resp, error) {
			<-ctx.Done() // answers only when canceled
			return nil, ctx.Err()
		})).
		Handle("watch", handler.ServerStream(func(ctx context.Context, r *req, send func(*resp) error) error {
			handler.SetHeader(ctx, "x-stream", "yes")
			if err := send(&resp{N: 1}); err != nil {
				return err
			}
			<-ctx.Done() // an endless stream
			return ctx.Err()
		}))
	srv := aster.NewServer(aster.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	srv.MustRegister(svc)
	return serveInProcess(t, srv).String()
}

// serveInProcess serves srv on loopback until the test ends.
func serveInProcess(t *testing.T, srv *aster.Server) aster.Address {
	t.Helper()
	ready := make(chan aster.Address, 1)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	var addr aster.Address
	select {
	case addr = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return addr
}

// -v prints the request metadata, the response header and trailer and the
// status on stderr; stdout has only the response.
func TestCallVerbose(t *testing.T) {
	t.Parallel()
	addr := echoServer(t)
	r := runAster(t, "", "call", "-v", "-H", "x-request-id=42", addr, "Echo.meta", `{"data":"abc"}`)
	r.want(t, 0)
	if r.stdout != `{"n":3}`+"\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	wantIn(t, "stderr", r.stderr, "* connected to ", "> Echo.meta\n", "> x-request-id: 42\n",
		"< header x-served-by: echo\n", "< trailer echo-x-request-id: 42\n", "< status OK (", "* path: direct 127.0.0.1:")

	// A stream's header shows with its first response, not at its end.
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, "call", "-v", addr, "Echo.watch")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer killer.Stop()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && sc.Text() != "< header x-stream: yes" {
	}
	cmd.Process.Signal(syscall.SIGINT) // the stream is still running
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "< header") {
			t.Errorf("header printed twice: %q", sc.Text())
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("a stream stopped by SIGINT: %v, want exit 0", err)
	}

	// An application code (>= 100) exits 30; -v shows it as the status.
	r = runAster(t, "", "call", "-v", addr, "Echo.fail")
	r.want(t, ExitApplication)
	wantIn(t, "stderr", r.stderr, "< status APP_107: the application said no")
}

// Request data from -d @file, -d @-, piped stdin and a JSON array.
func TestCallRequestData(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	dir := t.TempDir()
	req := filepath.Join(dir, "req.json")
	os.WriteFile(req, []byte(`{"agent_id":"from-file"}`), 0o600)
	r := runAster(t, "", "call", addr, "MissionControl.getStatus", "-d", "@"+req)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"from-file"`)
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", "@"+req)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"from-file"`)
	r = runAster(t, `{"agent_id":"at-dash"}`, "call", addr, "MissionControl.getStatus", "-d", "@-")
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"at-dash"`)
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", "-d", `{"agent_id":"inline"}`)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"inline"`)
	// A unary call reads a request piped on stdin without "-".
	r = runAster(t, `{"agent_id":"piped"}`, "call", addr, "MissionControl.getStatus")
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"piped"`)
	// Nothing piped (empty stdin, or /dev/null): {}.
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, "call", addr, "MissionControl.getStatus") // stdin is /dev/null
	out, err := cmd.Output()
	if err != nil || string(out) != `{"agent_id":"","status":"running","uptime_secs":3600}`+"\n" {
		t.Fatalf("stdin /dev/null: %v %q", err, out)
	}
	runAster(t, "", "call", addr, "MissionControl.getStatus").want(t, 0)

	// A client stream from an NDJSON file, and from a JSON array argument.
	metrics := filepath.Join(dir, "metrics.ndjson")
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, `{"name":"cpu","value":%d}`+"\n", i)
	}
	os.WriteFile(metrics, []byte(b.String()), 0o600)
	r = runAster(t, "", "call", addr, "MissionControl.ingestMetrics", "-d", "@"+metrics)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `{"accepted":1000,"dropped":0}`)
	r = runAster(t, "", "call", addr, "MissionControl.ingestMetrics", `[{"name":"a","value":1},{"name":"b","value":2}]`)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `{"accepted":2,"dropped":0}`)
	r = runAster(t, `[{"name":"a","value":1}]`+"\n"+`{"name":"b","value":2}`, "call", addr, "MissionControl.ingestMetrics")
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `{"accepted":2,"dropped":0}`)

	// Usage errors: a missing file, both an argument and -d, an empty -d @file.
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", "-d", "@"+filepath.Join(dir, "missing.json"))
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "missing.json", "no such file")
	runAster(t, "", "call", addr, "MissionControl.getStatus", "{}", "-d", "{}").want(t, ExitUsage)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, nil, 0o600)
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", "-d", "@"+empty)
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "no request on")

	// A request larger than the frame limit (16 MiB) fails clearly with
	// RESOURCE_EXHAUSTED before anything reaches the server.
	big := filepath.Join(dir, "big.json")
	os.WriteFile(big, []byte(`{"agent_id":"`+strings.Repeat("x", 17<<20)+`"}`), 0o600)
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", "-d", "@"+big)
	r.want(t, ExitCodeFor(status.ResourceExhausted))
	wantIn(t, "stderr", r.stderr, "RESOURCE_EXHAUSTED: request is too large to send", "exceeds limit of 16777216")
}

func TestCallFormat(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	r := runAster(t, "", "call", "--format", "json", addr, "MissionControl.getStatus", `{"agent_id":"a"}`)
	r.want(t, 0)
	if want := "{\n  \"agent_id\": \"a\",\n  \"status\": \"running\",\n  \"uptime_secs\": 3600\n}\n"; r.stdout != want {
		t.Fatalf("--format json: %q, want %q", r.stdout, want)
	}
	r = runIn(t, "", []string{"NO_COLOR="}, "", "call", "--format", "pretty", addr, "MissionControl.getStatus", `{"agent_id":"a"}`)
	r.want(t, 0)
	wantIn(t, "pretty", r.stdout, ansiKey+`"agent_id"`+ansiReset+": "+ansiString+`"a"`+ansiReset, ansiNumber+"3600"+ansiReset)
	r = runIn(t, "", []string{"NO_COLOR=1"}, "", "call", "--format", "pretty", addr, "MissionControl.getStatus", `{"agent_id":"a"}`)
	r.want(t, 0)
	if strings.Contains(r.stdout, "\x1b[") || !strings.Contains(r.stdout, "\n  \"agent_id\": \"a\",\n") {
		t.Fatalf("pretty with NO_COLOR: %q", r.stdout)
	}
	// Not a terminal: NDJSON.
	r = runAster(t, "", "call", addr, "MissionControl.getStatus", `{"agent_id":"a"}`)
	if r.stdout != `{"agent_id":"a","status":"running","uptime_secs":3600}`+"\n" {
		t.Fatalf("default format on a pipe: %q", r.stdout)
	}
	runAster(t, "", "call", "--format", "yaml", addr, "MissionControl.getStatus").want(t, ExitUsage)
}

// admissionRig is a Mission Control server that admits only consumers
// enrolled by root, and a directory of credentials.
type admissionRig struct {
	addr string
	root trust.SecretKey
	dir  string
}

func newAdmissionRig(t *testing.T) *admissionRig {
	t.Helper()
	root := trust.GenerateKey()
	addr := startServer(t, "ASTER_ROOT_PUBKEY="+trust.IDOf(root).String(), "ASTER_ALLOW_ALL_CONSUMERS=false")
	return &admissionRig{addr: addr, root: root, dir: t.TempDir()}
}

// credFile writes an .aster-identity file with a credential for key
// signed by root (nil: the rig's) that expires at exp, and returns its path.
func (a *admissionRig) credFile(t *testing.T, name string, key trust.SecretKey, boundTo trust.EndpointID, root trust.SecretKey, exp time.Time) string {
	t.Helper()
	if root == nil {
		root = a.root
	}
	c := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: name,
		RootPubKey: trust.IDOf(root), EndpointID: boundTo, Capabilities: []string{"ops.status"},
		IssuedAt: exp.Add(-48 * time.Hour).Truncate(time.Second), ExpiresAt: exp.Truncate(time.Second)}
	if err := enroll.Sign(root, c); err != nil {
		t.Fatal(err)
	}
	id := &identity.Identity{Key: key}
	id.SetPeer(c)
	path := filepath.Join(a.dir, name+".cred")
	if err := identity.Save(path, id); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every row of the exit status table, with the CLI as a subprocess.
func TestExitCodeTable(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	rig := newAdmissionRig(t)
	key := trust.GenerateKey()
	good := rig.credFile(t, "good", key, trust.IDOf(key), nil, time.Now().Add(time.Hour))
	expired := rig.credFile(t, "expired", key, trust.IDOf(key), nil, time.Now().Add(-time.Hour))
	other := trust.GenerateKey()
	otherRoot := rig.credFile(t, "other-root", key, trust.IDOf(key), other, time.Now().Add(time.Hour))
	stolen := rig.credFile(t, "stolen", trust.GenerateKey(), trust.IDOf(key), nil, time.Now().Add(time.Hour))
	// Nothing listens here: an address of a key nobody serves, at a port
	// just closed.
	down := startServerThenStop(t)

	readOnly, err := os.Open(os.DevNull) // writing to it fails: output cannot be written
	if err != nil {
		t.Fatal(err)
	}
	defer readOnly.Close()
	asterBin, _ := binaries(t)
	failedWrite := func() result {
		cmd := exec.Command(asterBin, "call", addr, "MissionControl.getStatus", "{}")
		cmd.Stdout = readOnly
		var errb strings.Builder
		cmd.Stderr = &errb
		err := cmd.Run()
		r := result{stderr: errb.String()}
		if ee, ok := err.(*exec.ExitError); ok {
			r.exit = ee.ExitCode()
		}
		return r
	}

	for _, tc := range []struct {
		name   string
		run    func() result
		exit   int
		stderr string
	}{
		{"ok", func() result { return runAster(t, "", "call", addr, "MissionControl.getStatus", "{}") }, 0, ""},
		{"stream stopped by --max", func() result {
			pushLogs(t, addr, "warn")
			return runAster(t, "", "call", "--max", "1", addr, "MissionControl.tailLogs", `{"level":"warn"}`)
		}, 0, ""},
		{"output cannot be written", failedWrite, ExitFailure, "writing output"},
		{"usage: bad flag", func() result { return runAster(t, "", "call", "--nope", addr) }, ExitUsage, "unknown flag"},
		{"usage: bad address", func() result { return runAster(t, "", "call", "aster1nope", "A.b") }, ExitUsage, "bad address"},
		{"usage: JSON does not fit", func() result {
			return runAster(t, "", "call", addr, "MissionControl.getStatus", `{"agent_id":7}`)
		}, ExitUsage, "does not fit"},
		{"usage: bad configuration", func() result {
			return runIn(t, "", []string{"ASTER_SECRET_KEY=nope"}, "", "call", addr, "MissionControl.getStatus")
		}, ExitUsage, "ASTER_SECRET_KEY"},
		{"cannot connect", func() result {
			return runAster(t, "", "call", "--connect-timeout", "20s", down, "MissionControl.getStatus")
		}, ExitConnect, "UNAVAILABLE: cannot connect"},
		{"NOT_FOUND", func() result { return runAster(t, "", "call", addr, "MissionControl.nope") }, ExitCodeFor(status.NotFound), "NOT_FOUND"},
		{"DEADLINE_EXCEEDED", func() result {
			return runAster(t, "", "call", "--timeout", "300ms", addr, "MissionControl.tailLogs", `{"level":"none"}`)
		}, ExitCodeFor(status.DeadlineExceeded), "DEADLINE_EXCEEDED"},
		{"admission: no credential", func() result { return runAster(t, "", "call", rig.addr, "MissionControl.getStatus") },
			26, "UNAUTHENTICATED: admission refused: this server requires an enrollment credential: no credential was presented (a server"},
		{"admission: expired", func() result { return runAster(t, "", "call", "--rcan", expired, rig.addr, "MissionControl.getStatus") },
			26, "UNAUTHENTICATED: admission refused: credential not accepted: the credential from --rcan " + expired + " expired at"},
		{"admission: wrong root", func() result {
			return runAster(t, "", "call", "--rcan", otherRoot, rig.addr, "MissionControl.getStatus")
		}, 26, "signed by root " + trust.IDOf(other).Short() + ", which is not the root it trusts"},
		{"admission: not bound to this key", func() result {
			return runAster(t, "", "call", "--rcan", stolen, rig.addr, "MissionControl.getStatus")
		}, 26, "is bound to endpoint " + trust.IDOf(key).Short() + ", not to this node's key"},
		{"admission: the identity file here is broken", func() result {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, ".aster-identity"), []byte("[node]\nsecret_key = 'broken'\n"), 0o600)
			return runIn(t, dir, nil, "", "call", rig.addr, "MissionControl.getStatus")
		}, 26, "no credential was presented (a server that admits only enrolled peers needs one: --rcan FILE, ASTER_ENROLLMENT_CREDENTIAL or ASTER_IDENTITY_FILE) (ignoring .aster-identity in the working directory: "},
		{"admitted", func() result { return runAster(t, "", "call", "--rcan", good, rig.addr, "MissionControl.getStatus") }, 0, ""},
		{"PERMISSION_DENIED", func() result {
			return runAster(t, "", "call", "--rcan", good, rig.addr, "MissionControl.tailLogs")
		}, ExitCodeFor(status.PermissionDenied), "PERMISSION_DENIED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.run()
			r.want(t, tc.exit)
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Fatalf("stderr %q lacks %q", r.stderr, tc.stderr)
			}
		})
	}
	// The other commands that connect take --rcan and report a refusal
	// the same way.
	for _, args := range [][]string{
		{"list", rig.addr}, {"describe", rig.addr, "MissionControl"}, {"contract", "show", rig.addr}, {"shell", rig.addr},
	} {
		runAster(t, "", args...).want(t, 26)
		runAster(t, "", append([]string{"--rcan", good}, args...)...).want(t, 0)
	}
}

// startServerThenStop returns the address of a server that is gone.
func startServerThenStop(t *testing.T) string {
	t.Helper()
	_, serverBin := binaries(t)
	cmd := exec.Command(serverBin)
	cmd.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0")
	addr, _, stop := launchServer(t, cmd)
	stop()
	return addr
}

// SIGTERM ends a call cleanly with exit 143; SIGINT ends a stream with 0
// and a unary call with CANCELED (11).
func TestCallSignals(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	echo := echoServer(t)
	asterBin, _ := binaries(t)
	for _, tc := range []struct {
		sig          syscall.Signal
		addr, method string
		exit         int
	}{
		{syscall.SIGTERM, addr, "MissionControl.tailLogs", ExitTerminated},
		{syscall.SIGTERM, echo, "Echo.hang", ExitTerminated},
		{syscall.SIGINT, addr, "MissionControl.tailLogs", 0},
		{syscall.SIGINT, echo, "Echo.hang", ExitCodeFor(status.Canceled)},
	} {
		cmd := exec.Command(asterBin, "call", "-v", tc.addr, tc.method, `{}`)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !strings.HasPrefix(sc.Text(), "> "+tc.method) {
		}
		cmd.Process.Signal(tc.sig) // connected; the call is starting or under way
		var rest strings.Builder
		for sc.Scan() {
			rest.WriteString(sc.Text() + "\n")
		}
		err = cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.exit {
			t.Errorf("%v during %s: exit %d, want %d; stderr:\n%s", tc.sig, tc.method, code, tc.exit, rest.String())
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Errorf("%v killed the process instead of a clean cancel", tc.sig)
		}
	}
}

// Client commands read only client settings.
func TestClientIgnoresServerSettings(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	dir := t.TempDir()
	// A corrupt .aster-identity in the working directory is a warning.
	os.WriteFile(filepath.Join(dir, ".aster-identity"), []byte("[node]\nsecret_key = 'broken'\n"), 0o600)
	r := runIn(t, dir, nil, "", "call", addr, "MissionControl.getStatus", `{"agent_id":"a"}`)
	r.want(t, 0)
	wantIn(t, "stderr", r.stderr, "warning: ignoring .aster-identity in the working directory")
	for _, args := range [][]string{{"list", addr}, {"describe", addr, "MissionControl"}, {"contract", "show", addr}, {"shell", addr}} {
		runIn(t, dir, nil, "", args...).want(t, 0)
	}
	// ... unless it is asked for.
	r = runIn(t, dir, []string{"ASTER_IDENTITY_FILE=.aster-identity"}, "", "call", addr, "MissionControl.getStatus")
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "identity.identity_file")
	// config print shows the configuration, then reports the file (exit 2).
	r = runIn(t, dir, nil, "", "config", "print")
	r.want(t, ExitUsage)
	wantIn(t, "stdout", r.stdout, "[identity]", ".aster-identity")
	wantIn(t, "stderr", r.stderr, "identity.identity_file (.aster-identity, found in the working directory) cannot be used")

	// Server settings a server would refuse do not stop a client.
	r = runIn(t, t.TempDir(), []string{"ASTER_ENABLE_MONITORING=true", "ASTER_ENABLE_HOOKS=1"}, "", "call", addr, "MissionControl.getStatus")
	r.want(t, 0)
	r = runIn(t, t.TempDir(), []string{"ASTER_ENABLE_MONITORING=true"}, "", "config", "print")
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "enable_monitoring")

	// ASTER_ENDPOINT_ADDR is the default target.
	env := []string{"ASTER_ENDPOINT_ADDR=" + addr}
	r = runIn(t, dir, env, "", "call", "MissionControl.getStatus", `{"agent_id":"env"}`)
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"env"`)
	r = runIn(t, dir, env, `{"agent_id":"env-stdin"}`, "call", "MissionControl.getStatus")
	r.want(t, 0)
	wantIn(t, "stdout", r.stdout, `"agent_id":"env-stdin"`)
	r = runIn(t, dir, env, "", "list")
	r.want(t, 0)
	wantIn(t, "list", r.stdout, "AgentSession", "MissionControl")
	r = runIn(t, dir, env, "", "describe", "MissionControl.getStatus")
	r.want(t, 0)
	wantIn(t, "describe", r.stdout, "MissionControl.getStatus  (unary")
	runIn(t, dir, env, "", "list", "MissionControl").want(t, 0)
	runIn(t, dir, env, "", "contract", "show").want(t, 0)
	runIn(t, dir, env, "", "shell").want(t, 0)
	// An explicit address still wins.
	runIn(t, dir, []string{"ASTER_ENDPOINT_ADDR=" + startServerThenStop(t)}, "", "call", addr, "MissionControl.getStatus").want(t, 0)
	// Without either: a usage error naming both.
	r = runIn(t, dir, nil, "", "list")
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "no target", "ASTER_ENDPOINT_ADDR")
}

// A binary file given as a credential is a clean usage error: no raw
// bytes reach the terminal.
func TestRcanGarbage(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	garbage := filepath.Join(t.TempDir(), "garbage.cred")
	b := make([]byte, 512)
	for i := range b {
		b[i] = byte(i * 37)
	}
	os.WriteFile(garbage, b, 0o600)
	for _, args := range [][]string{
		{"call", "--rcan", garbage, addr, "MissionControl.getStatus"},
		{"shell", "--rcan", garbage, addr},
		{"--json-errors", "list", "--rcan", garbage, addr},
	} {
		r := runAster(t, "", args...)
		r.want(t, ExitUsage)
		for _, c := range r.stderr {
			if c == '\uFFFD' || (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
				t.Fatalf("%v: stderr has a raw byte %q:\n%q", args, c, r.stderr)
			}
		}
		wantIn(t, "stderr", r.stderr, "garbage.cred", "is not a text file")
	}
	r := runIn(t, t.TempDir(), []string{"ASTER_ENROLLMENT_CREDENTIAL=" + garbage}, "", "call", addr, "MissionControl.getStatus")
	r.want(t, ExitUsage)
	wantIn(t, "stderr", r.stderr, "is not a text file", "trust.enrollment_credential_file")
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain text\tand tab\n": "plain text\tand tab\n",
		"bell\a esc\x1b[31m":    `bell\a esc\x1b[31m`,
		"bad \xff\xfe utf8":     `bad \xff\xfe utf8`,
		"ünïcode ok":            "ünïcode ok",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

// A script's exit status is that of its first failing command;
// --fail-fast stops there.
func TestShellScriptExitStatus(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	script := "cd services/MissionControl\n./getStatus agent_id=a\n./nope\n./getStatus agent_id=7x uptime\n./getStatus agent_id=after\n"
	r := runAster(t, script, "shell", "--json", addr)
	r.want(t, ExitCodeFor(status.NotFound))
	wantIn(t, "stdout", r.stdout, `"agent_id":"a"`, `"agent_id":"after"`)
	wantIn(t, "stderr", r.stderr, "NOT_FOUND: no method nope", "2 of the script's commands failed; the first with NOT_FOUND (exit 15)")

	r = runAster(t, script, "shell", "--json", "--fail-fast", addr)
	r.want(t, ExitCodeFor(status.NotFound))
	if strings.Contains(r.stdout, "after") || strings.Contains(r.stderr, "INVALID_ARGUMENT") {
		t.Fatalf("--fail-fast went on after the failure:\n%s\n%s", r.stdout, r.stderr)
	}
	runAster(t, "cd services/MissionControl\n./getStatus agent_id=a\n", "shell", "--json", addr).want(t, 0)
}

// Completion scripts complete service and method names from the contract
// cache, without connecting.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	cache := t.TempDir()
	env := []string{"ASTER_CACHE_DIR=" + cache}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := runIn(t, "", env, "", "completion", sh)
		r.want(t, 0)
		wantIn(t, sh, r.stdout, "__complete")
	}
	// Nothing cached yet: no names.
	r := runIn(t, "", env, "", "__complete", "call", addr, "Mi")
	r.want(t, 0)
	if strings.Contains(r.stdout, "MissionControl") {
		t.Fatalf("completed from nothing: %s", r.stdout)
	}
	runIn(t, "", env, "", "list", addr).want(t, 0) // caches the contract
	a, _ := aster.ParseAddress(addr)
	cached := filepath.Join(cache, "contracts", a.ID.String()+".json")
	long := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(cached, long, long); err != nil {
		t.Fatalf("the contract was not cached: %v", err)
	}
	runIn(t, "", env, "", "describe", addr, "MissionControl").want(t, 0)
	if st, err := os.Stat(cached); err != nil || !st.ModTime().Equal(long) {
		t.Fatalf("an unchanged contract was rewritten: %v", err)
	}
	r = runIn(t, "", env, "", "__complete", "call", addr, "Mi")
	r.want(t, 0)
	wantIn(t, "services", r.stdout, "MissionControl.\n", ":6\n") // no space, no files
	r = runIn(t, "", env, "", "__complete", "call", "-v", addr, "MissionControl.t")
	wantIn(t, "methods", r.stdout, "MissionControl.tailLogs\n", ":4\n")
	if strings.Contains(r.stdout, "getStatus") {
		t.Fatalf("completed a method that does not match: %s", r.stdout)
	}
	r = runIn(t, "", env, "", "__complete", "call", addr, "--session", "")
	if r.stdout != "AgentSession\n:4\n" {
		t.Fatalf("--session completes %q, want the session-scoped AgentSession only", r.stdout)
	}
	r = runIn(t, "", env, "", "__complete", "list", addr, "")
	wantIn(t, "list", r.stdout, "AgentSession\n", "MissionControl\n")
	r = runIn(t, "", append(env, "ASTER_ENDPOINT_ADDR="+addr), "", "__complete", "describe", "AgentSession.r")
	wantIn(t, "describe with ASTER_ENDPOINT_ADDR", r.stdout, "AgentSession.register\n", "AgentSession.runCommand\n")
}

// The cache keeps at most maxCachedContracts files.
func TestContractCacheBounded(t *testing.T) {
	t.Setenv("ASTER_CACHE_DIR", t.TempDir())
	dir := cacheDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for i := range maxCachedContracts + 8 {
		p := filepath.Join(dir, fmt.Sprintf("%064x.json", i))
		os.WriteFile(p, []byte("{}"), 0o600)
		os.Chtimes(p, old.Add(time.Duration(i)*time.Second), old.Add(time.Duration(i)*time.Second))
	}
	pruneCache(dir)
	entries, _ := os.ReadDir(dir)
	if len(entries) != maxCachedContracts {
		t.Fatalf("%d files after pruning, want %d", len(entries), maxCachedContracts)
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%064x.json", 0))); err == nil {
		t.Fatal("the oldest file was kept")
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%064x.json", maxCachedContracts+7))); err != nil {
		t.Fatal("the newest file was dropped")
	}
}

// A server's own admission rule (aster.WithAdmission) that refuses: the
// core reports it as UNAUTHENTICATED, so it exits 26 too, not 3.
func TestAdmissionCustomRule(t *testing.T) {
	t.Parallel()
	srv := aster.NewServer(
		aster.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
			return handler.Peer{}, status.New(status.PermissionDenied, "not on the guest list")
		}),
	)
	srv.MustRegister(handler.NewService("Echo", 1).Handle("meta", handler.Unary(func(ctx context.Context, r *struct{}) (*struct{}, error) { return r, nil })))
	addr := serveInProcess(t, srv).String()
	r := runAster(t, "", "call", addr, "Echo.meta")
	r.want(t, 26)
	wantIn(t, "stderr", r.stderr, "UNAUTHENTICATED: admission refused: no credential was presented (a server that admits only enrolled peers needs one")
}

// Names from a hostile server's contract never reach a shell's completion
// when they could do harm there.
func TestCompletable(t *testing.T) {
	for name, want := range map[string]bool{
		"MissionControl": true, "MissionControl@2": true, "getStatus": true, "x_y-z.1": true,
		"": false, "a b": false, "a\x1b[31m": false, "a\nb": false, "$(rm -rf ~)": false, "a;b": false, "a`b`": false, `a"b`: false,
	} {
		if got := completable(name); got != want {
			t.Errorf("completable(%q) = %v, want %v", name, got, want)
		}
	}
}

// On a terminal the default format is pretty: indented and coloured.
func TestCallPrettyOnTerminal(t *testing.T) {
	t.Parallel()
	addr := startServer(t)
	asterBin, _ := binaries(t)
	cmd := exec.Command(asterBin, "call", addr, "MissionControl.getStatus", `{"agent_id":"tty"}`)
	cmd.Env = append(os.Environ(), "NO_COLOR=", "TERM=xterm")
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	killer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	defer killer.Stop()
	var out bytes.Buffer
	io.Copy(&out, f) // until EIO: the program has exited
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, out.String())
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	wantIn(t, "terminal output", got, "{\n  "+ansiKey+`"agent_id"`+ansiReset+": "+ansiString+`"tty"`+ansiReset+",\n")
}

// splitTarget takes the address off the front, or uses
// connect.endpoint_addr when the first argument is not one.
func TestSplitTarget(t *testing.T) {
	addr := aster.Address{ID: trust.IDOf(trust.GenerateKey())}.String()
	hexID := trust.IDOf(trust.GenerateKey()).String()
	env := &config.Config{EndpointAddr: addr}
	none := &config.Config{}
	for _, tc := range []struct {
		cfg        *config.Config
		args       []string
		need       int
		target     string
		rest       []string
		usageError bool
	}{
		{none, []string{addr, "A.b"}, 1, addr, []string{"A.b"}, false},
		{none, []string{hexID, "A.b"}, 1, hexID, []string{"A.b"}, false},
		{none, []string{"A.b"}, 1, "A.b", nil, false}, // then "bad address"
		{none, nil, 0, "", nil, true},
		{env, []string{"A.b", "{}"}, 1, addr, []string{"A.b", "{}"}, false},
		{env, []string{"A.b"}, 1, addr, []string{"A.b"}, false},
		{env, []string{hexID, "A.b"}, 1, hexID, []string{"A.b"}, false},
		{env, nil, 0, addr, nil, false},
		{env, []string{"MissionControl"}, 0, addr, []string{"MissionControl"}, false},
		{env, []string{"dns:///mission.example", "A.b"}, 1, "dns:///mission.example", []string{"A.b"}, false},
	} {
		target, rest, err := splitTarget(tc.cfg, tc.args, tc.need)
		if (err != nil) != tc.usageError || target != tc.target || strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
			t.Errorf("splitTarget(%v, %d) with endpoint_addr %q = %q, %q, %v", tc.args, tc.need, tc.cfg.EndpointAddr, target, rest, err)
		}
	}
}
