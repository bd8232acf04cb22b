package main

import (
	"encoding/json"
	"go/format"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/status"
)

func TestContractCommands(t *testing.T) {
	addr := startServer(t)
	dir := t.TempDir()

	// show: text and JSON; the JSON form is a manifest with the live id.
	r := runAster(t, "", "contract", "show", addr)
	r.want(t, 0)
	wantIn(t, "show", r.stdout, "contract ", "2 services, 11 types",
		"service AgentSession v1 (session-scoped, 2 methods)", "service MissionControl v1 (shared-scoped, 4 methods)",
		"tailLogs", "server_stream", "mission/TailRequest → mission/LogEntry",
		"types:", "mission/MetricPoint", "tags", "map<string,string>")
	r = runAster(t, "", "contract", "show", "--json", addr)
	r.want(t, 0)
	m, err := contract.ParseManifest([]byte(r.stdout))
	if err != nil {
		t.Fatalf("show --json is not a valid manifest: %v\n%s", err, r.stdout)
	}
	if !strings.Contains(r.stdout, m.ContractID) || len(m.Contract.Services) != 2 {
		t.Fatalf("show --json: %s", r.stdout)
	}

	// gen writes the manifest; verify accepts the server; show reads it back.
	manifest := filepath.Join(dir, ".aster", "manifest.json")
	r = runAster(t, "", "contract", "gen", addr, "--out", manifest)
	r.want(t, 0)
	wantIn(t, "gen", r.stdout, "wrote "+manifest, m.ContractID)
	r = runAster(t, "", "contract", "verify", addr, "--manifest", manifest)
	r.want(t, 0)
	wantIn(t, "verify", r.stdout, "matches")
	r = runAster(t, "", "contract", "show", manifest)
	r.want(t, 0)
	wantIn(t, "show manifest", r.stdout, "contract "+m.ContractID)

	// A manifest from before a change: verify lists the difference, exit 19.
	old := *m.Contract
	old.Services = append([]contract.Service(nil), old.Services...)
	mc := old.Services[1]
	mc.Methods = append([]contract.Method(nil), mc.Methods[1:]...)
	old.Services[1] = mc
	stale := filepath.Join(dir, "stale.json")
	if _, err := contract.WriteManifest(stale, &old); err != nil {
		t.Fatal(err)
	}
	r = runAster(t, "", "contract", "verify", addr, "--manifest", stale)
	r.want(t, ExitRPCBase+int(status.FailedPrecondition))
	wantIn(t, "verify stale", r.stdout, "differs from", "+ method MissionControl.getStatus")
	wantIn(t, "verify stale", r.stderr, "FAILED_PRECONDITION: the server's contract differs")

	// gen-client from the server and from the manifest.
	for _, src := range []string{addr, manifest} {
		out := filepath.Join(dir, "mcclient")
		r = runAster(t, "", "contract", "gen-client", src, "--lang", "go", "--out", out)
		r.want(t, 0)
		b, err := os.ReadFile(filepath.Join(out, "aster_client.go"))
		if err != nil {
			t.Fatal(err)
		}
		if f, err := format.Source(b); err != nil || string(f) != string(b) {
			t.Fatalf("generated code is not gofmt'd: %v", err)
		}
		wantIn(t, "client", string(b), "package mcclient", `const ContractID = "`+m.ContractID+`"`,
			"type MissionControlClient struct", "func (c *MissionControlClient) TailLogs(ctx context.Context, req *TailRequest")
	}

	// Bad input.
	for _, args := range [][]string{
		{"contract"},
		{"contract", "show"},
		{"contract", "show", "nonsense"},
		{"contract", "show", filepath.Join(dir, "mcclient", "aster_client.go")},
		{"contract", "verify", addr, "--manifest", filepath.Join(dir, "none.json")},
		{"contract", "gen-client", manifest, "--lang", "rust", "--out", dir},
		{"contract", "gen-client", manifest},
		{"contract", "gen-client", manifest, "--out", filepath.Join(dir, "bad-name")},
	} {
		r := runAster(t, "", args...)
		if r.exit != ExitUsage {
			t.Errorf("aster %q: exit %d (stderr %q), want %d", args, r.exit, r.stderr, ExitUsage)
		}
	}
	var je map[string]any
	r = runAster(t, "", "--json-errors", "contract", "gen-client", manifest)
	if json.Unmarshal([]byte(r.stderr), &je) != nil || je["code"] != "INVALID_ARGUMENT" {
		t.Errorf("--json-errors: %q", r.stderr)
	}
}
