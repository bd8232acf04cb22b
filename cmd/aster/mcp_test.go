package main

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster/internal/testutil"
)

// These tests run "aster mcp" as its own process against the Mission
// Control example (also its own process), with real MCP clients: the
// TypeScript SDK's (testdata/mcpjs, a Node script) and the Go SDK's.

// mcpJSDir holds the Node client and its locked dependencies; CI installs
// them with "npm ci" (.ci/run).
const mcpJSDir = "testdata/mcpjs"

// needNodeClient returns the node binary, failing under CI=true (and
// skipping elsewhere) when node or the installed SDK is missing.
func needNodeClient(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "node is not installed"
	default:
		if _, err := os.Stat(filepath.Join(mcpJSDir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
			missing = "the TypeScript MCP SDK is not installed (run: npm ci --prefix cmd/aster/testdata/mcpjs)"
		}
	}
	if missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(missing)
		}
		t.Skip(missing)
	}
	return node
}

// runNodeClient runs one scenario of client.mjs and fails the test with
// its output unless it passes.
func runNodeClient(t *testing.T, node string, args ...string) {
	t.Helper()
	cmd := exec.Command(node, append([]string{"client.mjs"}, args...)...)
	cmd.Dir = mcpJSDir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(90*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	if err != nil || !strings.Contains(out.String(), "ok "+args[0]) {
		t.Fatalf("node client.mjs %s: %v\n%s", args[0], err, out.String())
	}
	t.Logf("%s", strings.TrimSpace(out.String()))
}

// TestMCPTypeScriptClient: the TypeScript SDK's client starts "aster mcp"
// over stdio (initialize, tools/list with schema checks, getStatus, tailLogs
// with progress cut at --max-items, ingestMetrics, AgentSession register and
// runCommand in one MCP session, a denied method, a --confirm tool refusing
// a client without elicitation, a server error as a tool error) and talks
// to "aster mcp --http" over Streamable HTTP.
func TestMCPTypeScriptClient(t *testing.T) {
	node := needNodeClient(t)
	asterBin, serverBin := binaries(t)
	addr := startServer(t)
	pushLogs(t, addr, "warn")

	t.Run("stdio", func(t *testing.T) {
		runNodeClient(t, node, "stdio-main", asterBin, "mcp", "--max-items", "3", "--deny", "MissionControl.submitLog", addr)
	})
	t.Run("policy", func(t *testing.T) {
		runNodeClient(t, node, "stdio-policy", asterBin, "mcp", "--read-only", "--confirm", "MissionControl.getStatus", addr)
	})
	t.Run("server error", func(t *testing.T) {
		cmd := exec.Command(serverBin, "-rate", "1")
		cmd.Env = append(os.Environ(), "ASTER_BIND_ADDR=127.0.0.1:0")
		limited, _, _ := launchServer(t, cmd)
		runNodeClient(t, node, "stdio-error", asterBin, "mcp", limited)
	})
	t.Run("streamable http", func(t *testing.T) {
		url := startMCPHTTP(t, asterBin, addr)
		runNodeClient(t, node, "http", url)
	})
}

// startMCPHTTP runs "aster mcp --http 127.0.0.1:0 addr" and returns the
// URL it prints; the process is stopped (SIGTERM) at the test's end and
// must exit 0.
func startMCPHTTP(t *testing.T, asterBin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(asterBin, append([]string{"mcp", "--http", "127.0.0.1:0"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if code := cmd.ProcessState.ExitCode(); code != 0 && code != ExitTerminated {
				t.Errorf("aster mcp --http exited %v: %s", err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("aster mcp --http did not stop on SIGTERM: %s", stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
	}()
	select {
	case url := <-line:
		if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/mcp") {
			t.Fatalf("aster mcp --http printed %q; stderr: %s", url, stderr.String())
		}
		return url
	case <-time.After(30 * time.Second):
		t.Fatalf("aster mcp --http printed no URL; stderr: %s", stderr.String())
	}
	return ""
}

// TestMCPCredential: against a server that admits only enrolled peers,
// "aster mcp --rcan" offers only the methods the credential's capabilities
// allow, and refuses the others when an attacker calls them by name (Go
// SDK client, stdio transport, aster mcp as a subprocess).
func TestMCPCredential(t *testing.T) {
	asterBin, mcBin := binaries(t)
	home, work := t.TempDir(), t.TempDir()
	if code, _, errOut := runBin(t, home, work, asterBin, "trust", "keygen", "--out-key", "~/.aster/root.key"); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := runBin(t, home, work, asterBin, "enroll", "node", "--role", "consumer", "--name", "watcher",
		"--capabilities", "ops.status,ops.logs", "--root-key", "~/.aster/root.key", "--out", "watcher.cred", "-q"); code != 0 {
		t.Fatal(errOut)
	}
	env := []string{"HOME=" + home, "ASTER_ROOT_PUBKEY_FILE=~/.aster/root.pub", "ASTER_ALLOW_ALL_CONSUMERS=false",
		"ASTER_IDENTITY_FILE=" + filepath.Join(work, ".aster-identity"), "ASTER_BIND_ADDR=127.0.0.1:0"}
	addr, _ := startMissionControl(t, mcBin, env)
	cred := filepath.Join(work, "watcher.cred")

	// --list shows what would be offered, and why the rest is not.
	code, out, errOut := runBin(t, home, work, asterBin, "mcp", "--list", "--rcan", cred, addr)
	if code != 0 {
		t.Fatalf("--list: exit %d: %s", code, errOut)
	}
	for _, want := range []string{`(?m)^MissionControl\.getStatus +unary`, `(?m)^MissionControl\.tailLogs +server_stream`,
		`(?m)^AgentSession\.runCommand +not offered +the credential lacks ops\.admin$`,
		`(?m)^MissionControl\.submitLog +not offered +the credential lacks ops\.ingest$`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("--list output lacks %s:\n%s", want, out)
		}
	}

	cmd := exec.Command(asterBin, "mcp", "--rcan", cred, addr)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "HOME="+home)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	client := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v; stderr: %s", err, stderr.String())
	}
	defer cs.Close()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	if want := []string{"MissionControl.getStatus", "MissionControl.tailLogs"}; !slices.Equal(names, want) {
		t.Errorf("tools %v, want %v", names, want)
	}
	got, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "MissionControl.getStatus", Arguments: map[string]any{"agent_id": "trusted"}})
	if err != nil || got.IsError {
		t.Fatalf("getStatus: %v %+v", err, got)
	}
	for _, name := range []string{"AgentSession.runCommand", "MissionControl.submitLog", "MissionControl.ingestMetrics", "AgentSession.register"} {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: map[string]any{"requests": []any{map[string]any{"command": "id"}}}})
		if err == nil || !strings.Contains(err.Error(), "unknown tool") {
			t.Errorf("%s called by name: %v, want an unknown-tool refusal", name, err)
		}
	}
	if !strings.Contains(stderr.String(), "aster mcp: 2 tools for") || !strings.Contains(stderr.String(), "with the credential from --rcan") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// TestMCPFleetTarget: a service target (static:///…) works as with
// "aster call": a fleet's calls, and a session on one producer.
func TestMCPFleetTarget(t *testing.T) {
	asterBin, _ := binaries(t)
	addr := startServer(t)
	cmd := exec.Command(asterBin, "mcp", "static:///"+addr)
	stderr := &testutil.SyncBuffer{}
	cmd.Stderr = stderr
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-test", Version: "1"}, nil).Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect: %v; stderr: %s", err, stderr.String())
	}
	defer cs.Close()
	call := func(name string, args map[string]any) map[string]any {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %+v", name, err, res)
		}
		m, _ := res.StructuredContent.(map[string]any)
		return m
	}
	if got := call("MissionControl.getStatus", map[string]any{"agent_id": "fleet"}); got["agent_id"] != "fleet" {
		t.Errorf("getStatus: %v", got)
	}
	if got := call("AgentSession.register", map[string]any{"agent_id": "edge-f", "capabilities": []any{"gpu"}}); got["task_id"] != "train-42" {
		t.Errorf("register: %v", got)
	}
	got := call("AgentSession.runCommand", map[string]any{"requests": []any{map[string]any{"command": "echo fleet"}}})
	if items, _ := got["items"].([]any); len(items) != 1 || items[0].(map[string]any)["stdout"] != "fleet\n" {
		t.Errorf("runCommand: %v", got)
	}
	if got := call("_aster.endSession", nil); got["ended"] != true {
		t.Errorf("endSession: %v", got)
	}
	if !strings.Contains(stderr.String(), "tools for static:///") {
		t.Errorf("stderr: %s", stderr.String())
	}
}

// TestMCPUsage: bad flags and targets are usage errors (exit 2), before
// anything is dialled.
func TestMCPUsage(t *testing.T) {
	shortToken := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(shortToken, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mcp", "--deny", "x[", "aster1abc"}, `--deny "x["`},
		{[]string{"mcp", "--allow", "tag:admin", "aster1abc"}, "carry no tags"},
		{[]string{"mcp", "--max-items", "0", "aster1abc"}, "--max-items"},
		{[]string{"mcp", "--stream-timeout", "0s", "aster1abc"}, "--stream-timeout"},
		{[]string{"mcp", "not-an-address"}, "bad address"},
		{[]string{"mcp", "a", "b"}, "mcp takes [addr]"},
		{[]string{"mcp", "--http", "0.0.0.0:0", "aster1abc"}, "bind to loopback"},
		{[]string{"mcp", "--http", ":8808", "aster1abc"}, "bind to loopback"},
		{[]string{"mcp", "--http-token-file", "tok", "aster1abc"}, "needs --http"},
		{[]string{"mcp", "--http", "0.0.0.0:0", "--http-token-file", shortToken, "aster1abc"}, "at least 16"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, %q; want exit %d with %q", tc.args, code, errOut, ExitUsage, tc.want)
		}
	}
}

// bearerTransport adds "Authorization: Bearer <token>" to each request.
type bearerTransport struct{ token string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

// TestMCPHTTPToken: with --http-token-file, the Streamable HTTP endpoint
// answers 401 to a request without the token or with another one, and a Go
// SDK client sending it lists and calls tools.
func TestMCPHTTPToken(t *testing.T) {
	asterBin, _ := binaries(t)
	addr := startServer(t)
	const token = "7d1f0c6a52e94b8f9a0e3c1d"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startMCPHTTP(t, asterBin, "--http-token-file", file, addr)
	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Basic " + token, "Bearer " + token + "x"} {
		req, _ := http.NewRequest("POST", url, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", auth, resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-test", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{Transport: bearerTransport{token}}}, nil)
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "MissionControl.getStatus", Arguments: map[string]any{"agent_id": "tok"}})
	if err != nil || res.IsError {
		t.Fatalf("getStatus with the token: %v %+v", err, res)
	}
}

// TestMCPUnmatchedGlob: a --deny or --confirm glob that matches no method
// (a misspelling, a case slip) is a usage error once the contract is
// known, since the method it was meant for would stay offered or
// unconfirmed; --list still lists, warning about it.
func TestMCPUnmatchedGlob(t *testing.T) {
	addr := startServer(t)
	for _, tc := range []struct {
		flag, glob, want string
	}{
		{"--deny", "missioncontrol.submitLog", "did you mean MissionControl.submitLog?"},
		{"--confirm", "MissionControl.submitLogs", `--confirm "MissionControl.submitLogs" matches no method`},
	} {
		code, _, errOut := runCLI(t, "mcp", tc.flag, tc.glob, addr)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s %s: exit %d, %q; want exit %d with %q", tc.flag, tc.glob, code, errOut, ExitUsage, tc.want)
		}
		code, out, errOut := runCLI(t, "mcp", "--list", tc.flag, tc.glob, addr)
		if code != 0 || !strings.Contains(out, "MissionControl.submitLog") || !strings.Contains(errOut, tc.want) {
			t.Errorf("--list %s %s: exit %d, %q, %q", tc.flag, tc.glob, code, out, errOut)
		}
	}
}

// A token file others can read is used, with a warning.
func TestMCPTokenFileWarning(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if w := tokenFileWarning(tok); w != "" {
		t.Errorf("0600: %q", w)
	}
	if err := os.Chmod(tok, 0o644); err != nil {
		t.Fatal(err)
	}
	if w := tokenFileWarning(tok); !strings.Contains(w, "readable by others (mode 0644)") {
		t.Errorf("0644: %q", w)
	}
}
