package contract_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/trust"
)

// seedContracts are encoded real contracts: Mission Control's, the
// conversion tests' one with every kind, and PROTOCOL.md's §13.4 example.
func seedContracts(tb testing.TB) [][]byte {
	tb.Helper()
	mc, err := contract.Build([]*handler.Service{mission.NewMissionControl().Service(), mission.NewAgentSessionService(nil)})
	if err != nil {
		tb.Fatal(err)
	}
	mc.Services[0].Methods[0].Requires = &trust.Expr{AnyOf: []trust.Expr{{Cap: "ops.logs"}, {AllOf: []trust.Expr{{Cap: "ops.admin"}, {Cap: "ops.audit"}}}}}
	all := testContract()
	all.Services = []contract.Service{{Name: "T", Version: 2, Scope: "session", Methods: []contract.Method{
		{Name: "m", Pattern: "bidi_stream", Request: "t/All", Response: "t/Node", Idempotent: true},
	}}}
	msg := contract.TypeRef{Kind: contract.KindString}
	doc := &contract.Contract{
		Types: []contract.TypeDef{{Name: "demo/Msg", Fields: []contract.Field{{Name: "text", Type: msg}}}},
		Services: []contract.Service{{Name: "Echo", Version: 1, Scope: "shared", Methods: []contract.Method{
			{Name: "say", Pattern: "unary", Request: "demo/Msg", Response: "demo/Msg", Requires: &trust.Expr{Cap: "demo.say"}},
		}}},
	}
	var out [][]byte
	for _, c := range []*contract.Contract{mc, all, doc, {}} {
		b, err := c.Encode()
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecodeContract decodes contracts as a client does from a server it
// may not trust, and uses what Decode accepts the way the client, the CLI
// and the shell do (type names, JSON conversion both ways, manifests,
// diffs). Nothing may panic, and an accepted contract must encode to bytes
// that decode to the same contract and encode identically.
func FuzzDecodeContract(f *testing.F) {
	for _, b := range seedContracts(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := contract.Decode(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "contract: ") {
				t.Fatalf("error %q does not say it is about the contract", err)
			}
			return
		}
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("accepted contract does not encode: %v", err)
		}
		c2, err := contract.Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded contract does not decode: %v\n%x", err, enc)
		}
		enc2, err := c2.Encode()
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding is not stable (%v):\n%x\n%x", err, enc, enc2)
		}
		if d := contract.Diff(c, c2); len(d) != 0 {
			t.Fatalf("a contract differs from its own round trip: %q", d)
		}
		for _, d := range c.Types {
			for _, fd := range d.Fields {
				_ = fd.Type.String()
			}
			// The CLI converts user JSON and server responses with the
			// contract's types; a hostile contract must only produce errors.
			_, _ = contract.FromJSON(c, d.Name, []byte(`{}`))
			obj := map[string]any{}
			for _, fd := range d.Fields {
				obj[fd.Name] = []any{"x", map[string]any{"k": 1.5}, nil}
			}
			_, _ = contract.FromJSONValue(c, d.Name, obj)
			_, _ = contract.ToJSON(c, d.Name, obj)
		}
		m, err := contract.NewManifest(c)
		if err != nil {
			t.Fatalf("NewManifest: %v", err)
		}
		js, err := m.MarshalIndent()
		if err != nil {
			t.Fatalf("MarshalIndent: %v", err)
		}
		if _, err := contract.ParseManifest(js); err != nil {
			t.Fatalf("the manifest of an accepted contract does not parse: %v\n%s", err, js)
		}
	})
}
