package contract_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/trust"
)

func missionContract(t *testing.T) *contract.Contract {
	t.Helper()
	c, err := contract.Build([]*handler.Service{mission.NewMissionControl().Service(), mission.NewAgentSessionService(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestManifestRoundTrip(t *testing.T) {
	c := missionContract(t)
	c.Services[0].Methods[0].Requires = &trust.Expr{AnyOf: []trust.Expr{{Cap: "ops.logs"}, {Cap: "ops.admin"}}}
	enc, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), ".aster", "manifest.json")
	m, err := contract.WriteManifest(path, c)
	if err != nil {
		t.Fatal(err)
	}
	if m.ContractID != contract.ID(enc) {
		t.Fatalf("manifest id %s, want %s", m.ContractID, contract.ID(enc))
	}
	// JSON and back gives the same canonical bytes, so the same id.
	back, err := contract.ReadManifest(path)
	if err != nil {
		t.Fatal(err)
	}
	enc2, err := back.Contract.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if back.ContractID != m.ContractID || contract.ID(enc2) != m.ContractID || !reflect.DeepEqual(back.Contract, c) {
		t.Fatalf("round trip changed the contract: %s vs %s", contract.ID(enc2), m.ContractID)
	}
	if d := contract.Diff(c, back.Contract); len(d) != 0 {
		t.Fatalf("diff of equal contracts: %q", d)
	}
}

func TestManifestRejectsEdits(t *testing.T) {
	m, err := contract.NewManifest(missionContract(t))
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(b), `"name": "uptime_secs"`, `"name": "uptime"`, 1)
	if _, err := contract.ParseManifest([]byte(edited)); err == nil || !strings.Contains(err.Error(), "edited by hand") {
		t.Fatalf("edited manifest: %v", err)
	}
	for _, bad := range []string{`{}`, `not json`, `{"contract_id":"x","contract":{"services":[],"types":[]},"extra":1}`,
		`{"contract_id":"x","contract":{"services":[{"name":"S","version":1,"scope":"shared","methods":[{"name":"m","pattern":"unary","request":"Nope","response":"Nope"}]}],"types":[]}}`} {
		if _, err := contract.ParseManifest([]byte(bad)); err == nil {
			t.Errorf("ParseManifest(%s) succeeded", bad)
		}
	}
	if _, err := contract.ReadManifest(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("a missing file was read")
	}
	p := filepath.Join(t.TempDir(), "m.json")
	os.WriteFile(p, []byte(edited), 0o644)
	if _, err := contract.ReadManifest(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("ReadManifest error does not name the file: %v", err)
	}
}

func TestDiff(t *testing.T) {
	old := missionContract(t)
	new := missionContract(t)
	// A removed method, a changed pattern and requirement, a new field, a
	// changed field type, a new service.
	mc := &new.Services[1]
	for i := range mc.Methods {
		switch mc.Methods[i].Name {
		case "tailLogs":
			mc.Methods[i].Pattern = "unary"
			mc.Methods[i].Requires = &trust.Expr{Cap: "ops.logs"}
		}
	}
	mc.Methods = mc.Methods[1:] // getStatus is first (sorted)
	for i := range new.Types {
		switch new.Types[i].Name {
		case "mission/StatusResponse":
			new.Types[i].Fields = append(new.Types[i].Fields, contract.Field{Name: "zone", Type: contract.TypeRef{Kind: contract.KindString}})
		case "mission/IngestResult":
			new.Types[i].Fields[0].Type = contract.TypeRef{Kind: contract.KindFloat}
		}
	}
	new.Services = append(new.Services, contract.Service{Name: "Zeta", Version: 1, Scope: "shared"})
	got := contract.Diff(old, new)
	want := []string{
		"- method MissionControl.getStatus",
		`~ method MissionControl.tailLogs: pattern server_stream → unary, requires {"any_of":[{"cap":"ops.logs"},{"cap":"ops.admin"}]} → {"cap":"ops.logs"}`,
		"+ service Zeta v1",
		"~ type mission/IngestResult: field accepted int → float",
		"~ type mission/StatusResponse: + field zone string",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
