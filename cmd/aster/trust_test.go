package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// runCLI runs the CLI in-process.
func runCLI(t *testing.T, args ...string) (exit int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	exit = run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return exit, out.String(), errb.String()
}

// runBin runs a built binary with HOME set to home, in dir.
func runBin(t *testing.T, home, dir, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home)
	r := runCmd(t, cmd, "")
	return r.exit, r.stdout, r.stderr
}

var enrollBlock = regexp.MustCompile(`^✓ Enrollment credential created

File: (/.*/edge-node-7\.cred)
Format: TOML \(\.aster-identity\) with \[node\] \+ \[\[peers\]\] sections

Peer: edge-node-7
Role: consumer \(policy\)
Capabilities: ops\.status,ops\.ingest
Endpoint ID: ([0-9a-f]{16})\.\.\.
Trust root: ([0-9a-f]{16})\.\.\.
Expires: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00)

This file lets a consumer connect to your trusted-mode servers\.
It contains a node identity \(secret key\) AND a signed enrollment
credential\. The server validates the credential and grants the
capabilities listed above\.

Use it:
aster shell <peer-addr> --rcan edge-node-7\.cred
aster call <peer-addr> Service\.method '<json>' --rcan edge-node-7\.cred

⚠ Keep this file secret -- it is both an identity AND a credential\.
$`)

// TestChapter5 follows chapter 5 of the guide from a shell: keygen, enroll
// two nodes, inspect, start Mission Control with admission on as its own
// process, and call it with and without the credentials.
func TestChapter5(t *testing.T) {
	defer goleak.VerifyNone(t)
	asterBin, mcBin := binaries(t)
	home, work := t.TempDir(), t.TempDir()

	// Step 1: root key.
	code, out, errOut := runBin(t, home, work, asterBin, "trust", "keygen", "--out-key", "~/.aster/root.key")
	if code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errOut)
	}
	want := "Root private key written to: ~/.aster/root.key\nRoot public key written to: ~/.aster/root.pub\nKeep root.key secret. Share root.pub with nodes that need to verify credentials.\n"
	if out != want {
		t.Errorf("keygen output:\n%s\nwant:\n%s", out, want)
	}
	st, err := os.Stat(filepath.Join(home, ".aster", "root.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("root.key: %v mode %v", err, st)
	}
	rootPub, err := trust.ReadRootPublicKey(filepath.Join(home, ".aster", "root.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runBin(t, home, work, asterBin, "trust", "keygen", "--out-key", "~/.aster/root.key"); code != ExitUsage || !strings.Contains(errOut, "--force") {
		t.Errorf("keygen over an existing key: exit %d %s", code, errOut)
	}

	// Step 4: enroll the edge agent and the ops team.
	code, out, errOut = runBin(t, home, work, asterBin, "enroll", "node", "--role", "consumer", "--name", "edge-node-7",
		"--capabilities", "ops.status,ops.ingest", "--root-key", "~/.aster/root.key", "--out", "edge-node-7.cred")
	if code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, errOut)
	}
	m := enrollBlock.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("enroll output does not match the guide:\n%s", out)
	}
	edge, err := identity.Load(filepath.Join(work, "edge-node-7.cred"))
	if err != nil {
		t.Fatal(err)
	}
	if m[1] != filepath.Join(work, "edge-node-7.cred") || m[2] != edge.ID().Short() || m[3] != rootPub.Short() {
		t.Errorf("summary %q does not describe the file (id %s, root %s)", m[1:4], edge.ID().Short(), rootPub.Short())
	}
	if exp, _ := time.Parse(time.RFC3339, m[4]); exp.Sub(time.Now()) < 29*24*time.Hour || exp.Sub(time.Now()) > 31*24*time.Hour {
		t.Errorf("default expiry %s is not 30 days away", m[4])
	}
	code, out, errOut = runBin(t, home, work, asterBin, "enroll", "node", "--role", "consumer", "--name", "ops-team",
		"--capabilities", "ops.status,ops.logs,ops.admin,ops.ingest", "--root-key", "~/.aster/root.key", "--out", "ops-team.cred", "-q")
	if code != 0 {
		t.Fatalf("enroll ops-team: exit %d: %s", code, errOut)
	}
	ops, err := identity.Load(filepath.Join(work, "ops-team.cred"))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(out); len(f) != 3 || f[0] != filepath.Join(work, "ops-team.cred") || f[1] != ops.ID().String() || f[2] != enroll.FormatTime(ops.Peers[0].ExpiresAt) || strings.Count(out, "\n") != 1 {
		t.Errorf("quiet output %q", out)
	}

	// Inspect against the root, and against another one.
	code, out, _ = runBin(t, home, work, asterBin, "trust", "inspect", "edge-node-7.cred", "--root", "~/.aster/root.pub")
	if code != 0 || !strings.Contains(out, "Verifies against root "+rootPub.Short()+"...: yes") || !strings.Contains(out, "Capabilities: ops.status,ops.ingest") {
		t.Errorf("inspect: exit %d\n%s", code, out)
	}
	code, out, _ = runBin(t, home, work, asterBin, "trust", "inspect", "edge-node-7.cred", "--root", trust.IDOf(trust.GenerateKey()).String())
	if code != ExitFailure || !strings.Contains(out, "NO (trust: credential is signed by another root") {
		t.Errorf("inspect against another root: exit %d\n%s", code, out)
	}

	// Step 3: the control plane with admission on, as its own process.
	env := []string{"HOME=" + home, "ASTER_ROOT_PUBKEY_FILE=~/.aster/root.pub", "ASTER_ALLOW_ALL_CONSUMERS=false",
		"ASTER_IDENTITY_FILE=" + filepath.Join(work, ".aster-identity"), "ASTER_BIND_ADDR=127.0.0.1:0"}
	addr, stop := startMissionControl(t, mcBin, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Step 5: connect with credentials.
	c, err := aster.Dial(ctx, addr, credentialFileOptions(t, filepath.Join(work, "edge-node-7.cred"))...)
	if err != nil {
		t.Fatalf("edge-node-7 refused: %v", err)
	}
	if _, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", &mission.StatusRequest{AgentID: "test"}); err != nil {
		t.Errorf("edge-node-7 getStatus: %v", err)
	}
	ing, err := aster.CallClientStream[mission.MetricPoint, mission.IngestResult](ctx, c, "MissionControl.ingestMetrics")
	if err == nil {
		ing.Send(&mission.MetricPoint{Name: "cpu", Value: 1})
		var res *mission.IngestResult
		res, err = ing.CloseAndRecv()
		if err == nil && res.Accepted != 1 {
			t.Errorf("ingest accepted %d", res.Accepted)
		}
	}
	if err != nil {
		t.Errorf("edge-node-7 ingestMetrics: %v", err)
	}
	if err := runCommand(ctx, c); status.CodeOf(err) != status.PermissionDenied {
		t.Errorf("edge-node-7 runCommand: %v, want PERMISSION_DENIED", err)
	}
	c.Close()

	c, err = aster.Dial(ctx, addr, credentialFileOptions(t, filepath.Join(work, "ops-team.cred"))...)
	if err != nil {
		t.Fatalf("ops-team refused: %v", err)
	}
	if err := runCommand(ctx, c); err != nil {
		t.Errorf("ops-team runCommand: %v", err)
	}
	c.Close()

	_, err = aster.Dial(ctx, addr)
	if status.CodeOf(err) != status.Unauthenticated {
		t.Errorf("no credential: %v, want UNAUTHENTICATED", err)
	}
	// The edge node's credential on another key (a copied credential).
	_, err = aster.Dial(ctx, addr, aster.WithSecretKey(trust.GenerateKey()), aster.WithCredential(edge.Peers[0]))
	if status.CodeOf(err) != status.Unauthenticated {
		t.Errorf("stolen credential: %v, want UNAUTHENTICATED", err)
	}

	// From the shell: aster call presents the credential named by the
	// config (ASTER_ENROLLMENT_CREDENTIAL) or by --rcan.
	callAs := func(cred string, args ...string) (int, string, string) {
		cmd := exec.Command(asterBin, append([]string{"call", addr}, args...)...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "HOME="+home)
		if cred != "" {
			cmd.Env = append(cmd.Env, "ASTER_ENROLLMENT_CREDENTIAL="+cred)
		}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String(), errb.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String(), errb.String()
	}
	if code, out, errOut := callAs("edge-node-7.cred", "MissionControl.getStatus", `{"agent_id":"test"}`); code != 0 || !strings.Contains(out, `"status":"running"`) {
		t.Errorf("aster call with edge-node-7.cred: exit %d %s %s", code, out, errOut)
	}
	if code, _, errOut := callAs("edge-node-7.cred", "MissionControl.tailLogs", `{"level":"warn"}`); code != ExitCodeFor(status.PermissionDenied) ||
		!strings.Contains(errOut, "PERMISSION_DENIED: permission denied (tailLogs requires any_of(ops.logs, ops.admin))") {
		t.Errorf("aster call tailLogs with edge-node-7.cred: exit %d %s", code, errOut)
	}
	if code, out, errOut := callAs("", "--rcan", "edge-node-7.cred", "MissionControl.getStatus", `{"agent_id":"test"}`); code != 0 || !strings.Contains(out, `"status":"running"`) {
		t.Errorf("aster call --rcan edge-node-7.cred: exit %d %s %s", code, out, errOut)
	}
	// A credential file others can read still works, with a warning, by
	// --rcan or by the config.
	if err := os.Chmod(filepath.Join(work, "edge-node-7.cred"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"", "--rcan", "edge-node-7.cred"}, {"edge-node-7.cred"}} {
		code, _, errOut := callAs(args[0], append(args[1:], "MissionControl.getStatus", `{"agent_id":"test"}`)...)
		if code != 0 || !strings.Contains(errOut, "warning: edge-node-7.cred holds a secret key but is readable by others") {
			t.Errorf("aster call %v with a 0644 credential file: exit %d, stderr %q", args, code, errOut)
		}
	}
	os.Chmod(filepath.Join(work, "edge-node-7.cred"), 0o600)
	if code, _, errOut := callAs("", "--rcan", "no-such.cred", "MissionControl.getStatus", `{}`); code != ExitUsage || !strings.Contains(errOut, "no-such.cred") {
		t.Errorf("aster call --rcan no-such.cred: exit %d %s", code, errOut)
	}
	if code, _, errOut := callAs("", "MissionControl.getStatus", `{"agent_id":"test"}`); code != ExitCodeFor(status.Unauthenticated) ||
		!strings.Contains(errOut, "UNAUTHENTICATED: admission refused") || !strings.Contains(errOut, "no credential was presented") {
		t.Errorf("aster call without a credential: exit %d %s", code, errOut)
	}

	// The shell presents the credential given with --rcan: edge-node-7 may
	// call getStatus but not tailLogs, and learns which capability it lacks.
	shell := exec.Command(asterBin, "shell", "--rcan", "edge-node-7.cred", addr)
	shell.Dir = work
	shell.Env = append(os.Environ(), "HOME="+home)
	shell.Stdin = strings.NewReader("cd /services/MissionControl\ngetStatus agent_id=via-shell\ntailLogs level=warn\n")
	shellOut, err := shell.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitCodeFor(status.PermissionDenied) || !strings.Contains(string(shellOut), `"agent_id": "via-shell"`) || !strings.Contains(string(shellOut), "PERMISSION_DENIED") {
		t.Errorf("aster shell --rcan edge-node-7.cred: %v\n%s", err, shellOut)
	}

	// A stable identity: the restarted server has the same address, and the
	// credentials keep working.
	stop()
	addr2, stop2 := startMissionControl(t, mcBin, env)
	defer stop2()
	a1, err1 := aster.ParseAddress(addr)
	a2, err2 := aster.ParseAddress(addr2)
	if err1 != nil || err2 != nil || a1.ID != a2.ID {
		t.Errorf("endpoint id changed across restarts: %s -> %s (%v %v)", a1.ID.Short(), a2.ID.Short(), err1, err2)
	}
	c, err = aster.Dial(ctx, addr2, credentialFileOptions(t, filepath.Join(work, "edge-node-7.cred"))...)
	if err != nil {
		t.Fatalf("edge-node-7 after restart: %v", err)
	}
	if _, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", &mission.StatusRequest{AgentID: "test"}); err != nil {
		t.Errorf("getStatus after restart: %v", err)
	}
	c.Close()
}

func runCommand(ctx context.Context, c *aster.Client) error {
	sess := c.NewSession()
	defer sess.Close(ctx)
	b, err := aster.CallBidiStream[mission.Command, mission.CommandResult](ctx, sess, "AgentSession.runCommand")
	if err != nil {
		return err
	}
	defer b.Close()
	b.Send(&mission.Command{Command: "echo hi"})
	b.CloseSend()
	if _, err := b.Recv(); err != nil {
		return err
	}
	return nil
}

// startMissionControl starts Mission Control with env and returns its address and a
// function that stops it (SIGTERM) and waits for it.
func startMissionControl(t *testing.T, bin string, env []string) (string, func()) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	addr, _, stop := launchServer(t, cmd)
	return addr, stop
}

func TestTrustCLIUsageErrors(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if code, _, errOut := runCLI(t, "trust", "keygen", "--out-key", filepath.Join(home, "root.key")); code != 0 {
		t.Fatal(errOut)
	}
	root := filepath.Join(home, "root.key")
	out := filepath.Join(home, "x.cred")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"enroll", "node", "--root-key", root, "--out", out}, "--name is required"},
		{[]string{"enroll", "node", "--name", "x", "--role", "admin", "--root-key", root, "--out", out}, "--role"},
		{[]string{"enroll", "node", "--name", "x", "--capabilities", "ops status", "--root-key", root, "--out", out}, `invalid character ' '`},
		{[]string{"enroll", "node", "--name", "x", "--expires", "tomorrow", "--root-key", root, "--out", out}, "--expires"},
		{[]string{"enroll", "node", "--name", "x", "--expires", "2001-01-01T00:00:00Z", "--root-key", root, "--out", out}, "not in the future"},
		{[]string{"enroll", "node", "--name", "x", "--attr", "novalue", "--root-key", root, "--out", out}, "key=value"},
		{[]string{"enroll", "node", "--name", "x", "--root-key", filepath.Join(home, "missing.key"), "--out", out}, "aster trust keygen"},
		{[]string{"enroll", "node", "--name", "x", "--type", "forever", "--root-key", root, "--out", out}, "--type"},
		{[]string{"trust", "sign", "--name", "x", "--root-key", root}, "--endpoint-id is required"},
		{[]string{"trust", "sign", "--name", "x", "--endpoint-id", "abc", "--root-key", root}, "--endpoint-id"},
		{[]string{"trust", "inspect", filepath.Join(home, "nope.cred")}, "no such file"},
		{[]string{"trust", "inspect"}, "accepts 1 arg"},
	} {
		code, _, errOut := runCLI(t, tc.args...)
		if code != ExitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 with %q", tc.args, code, errOut, tc.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed enroll wrote its output file")
	}
}

func TestEnrollIdentityAndSign(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root.key")
	if code, _, errOut := runCLI(t, "trust", "keygen", "--out-key", root); code != 0 {
		t.Fatal(errOut)
	}
	cred := filepath.Join(dir, "node.cred")
	if code, _, errOut := runCLI(t, "enroll", "node", "--name", "a", "--capabilities", "x", "--root-key", root, "--out", cred, "--attr", "site=eu", "--expires", "24h"); code != 0 {
		t.Fatal(errOut)
	}
	// Enrolling again into an existing file needs --identity (or --force).
	if code, _, errOut := runCLI(t, "enroll", "node", "--name", "b", "--root-key", root, "--out", cred); code != ExitUsage || !strings.Contains(errOut, "--identity") {
		t.Errorf("overwrite without --identity: %d %s", code, errOut)
	}
	first, _ := identity.Load(cred)
	// --identity adds a producer entry with the same node key; re-enrolling "a" replaces it.
	if code, _, errOut := runCLI(t, "enroll", "node", "--identity", cred, "--name", "b", "--role", "producer", "--type", "ott", "--root-key", root); code != 0 {
		t.Fatal(errOut)
	}
	if code, _, errOut := runCLI(t, "enroll", "node", "--identity", cred, "--name", "a", "--capabilities", "y,z", "--root-key", root); code != 0 {
		t.Fatal(errOut)
	}
	id, err := identity.Load(cred)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Key.Equal(first.Key) || len(id.Peers) != 2 {
		t.Fatalf("identity after re-enrolling: key kept %v, %d peers", id.Key.Equal(first.Key), len(id.Peers))
	}
	if a := id.Peer("a", ""); a == nil || strings.Join(a.Capabilities, ",") != "y,z" || a.Attributes != nil {
		t.Errorf("entry a not replaced: %+v", a)
	}
	if b := id.Peer("b", ""); b == nil || b.Role != enroll.RoleProducer || b.Type != enroll.TypeOTT || len(b.Nonce) != enroll.NonceSize {
		t.Errorf("entry b: %+v", b)
	}

	// trust sign for a key kept elsewhere: printed, and written to a file.
	ep := trust.IDOf(trust.GenerateKey())
	code, out, errOut := runCLI(t, "trust", "sign", "--endpoint-id", ep.String(), "--name", "billing", "--role", "producer", "--root-key", root)
	if code != 0 {
		t.Fatal(errOut)
	}
	printed, err := identity.Parse([]byte(out))
	if err != nil || printed.Key != nil || len(printed.Peers) != 1 || printed.Peers[0].EndpointID != ep {
		t.Fatalf("printed credential: %v\n%s", err, out)
	}
	signed := filepath.Join(dir, "billing.cred")
	code, out, _ = runCLI(t, "trust", "sign", "--endpoint-id", ep.String(), "--name", "billing", "--root-key", root, "--out", signed, "-q")
	if code != 0 || !strings.HasPrefix(out, signed+" "+ep.String()+" ") {
		t.Fatalf("sign -q: %d %q", code, out)
	}
	// The node's own file refuses a credential for another endpoint.
	if code, _, errOut := runCLI(t, "trust", "sign", "--endpoint-id", ep.String(), "--name", "c", "--root-key", root, "--out", cred); code != ExitUsage || !strings.Contains(errOut, "belongs to endpoint") {
		t.Errorf("sign into another node's file: %d %s", code, errOut)
	}

	// inspect --json, and a file whose credential does not match its node.
	code, out, _ = runCLI(t, "trust", "inspect", "--json", signed)
	var rep inspectReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Peers) != 1 || !rep.Peers[0].Valid || rep.Peers[0].Name != "billing" {
		t.Errorf("inspect --json: %d %s", code, out)
	}
	mixed := &identity.Identity{Key: trust.GenerateKey(), Peers: printed.Peers}
	mixedPath := filepath.Join(dir, "mixed.cred")
	identity.Save(mixedPath, mixed)
	if code, out, _ := runCLI(t, "trust", "inspect", mixedPath); code != ExitFailure || !strings.Contains(out, "another endpoint") {
		t.Errorf("inspect of a mismatched file: %d %s", code, out)
	}
	// Group-readable identity: a warning.
	os.Chmod(cred, 0o644)
	if _, _, errOut := runCLI(t, "trust", "inspect", cred); !strings.Contains(errOut, "warning:") || !strings.Contains(errOut, "chmod 600") {
		t.Errorf("no permission warning: %s", errOut)
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"30d":                  now.Add(30 * 24 * time.Hour),
		"24h":                  now.Add(24 * time.Hour),
		"1d12h":                now.Add(36 * time.Hour),
		"90m":                  now.Add(90 * time.Minute),
		"2026-05-10T20:20:12Z": time.Date(2026, 5, 10, 20, 20, 12, 0, time.UTC),
	} {
		got, err := parseExpiry(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "-1h", "d", "30x", "2025-01-01T00:00:00Z", "99999999d"} {
		if _, err := parseExpiry(in, now); err == nil {
			t.Errorf("parseExpiry(%q) succeeded", in)
		}
	}
}

// credentialFileOptions returns the client options of "--rcan path".
func credentialFileOptions(t *testing.T, path string) []aster.ClientOption {
	t.Helper()
	opts, _, err := credentialOptions(path)
	if err != nil {
		t.Fatal(err)
	}
	return opts
}
