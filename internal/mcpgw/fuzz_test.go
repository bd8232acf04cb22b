package mcpgw

import (
	"encoding/json"
	"testing"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
)

// missionContract is Mission Control's contract, built in process.
func missionContract(t testing.TB) *contract.Contract {
	t.Helper()
	mc := mission.NewMissionControl()
	ct, err := contract.Build([]*handler.Service{mc.Service(), mission.NewAgentSessionService(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

// FuzzSchemas generates the tool schemas of contracts a server may send
// (any bytes contract.Decode accepts): no panic, bounded work, and every
// schema generated resolves.
func FuzzSchemas(f *testing.F) {
	b, err := missionContract(f).Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		ct, err := contract.Decode(b)
		if err != nil {
			return
		}
		for _, s := range ct.Services {
			for i := range s.Methods {
				m := &s.Methods[i]
				if in, err := InputSchema(ct, m, 10); err == nil {
					if _, err := in.Resolve(nil); err != nil {
						t.Fatalf("%s.%s: input schema does not resolve: %v", s.Name, m.Name, err)
					}
				}
				if out, err := OutputSchema(ct, m); err == nil {
					if _, err := out.Resolve(nil); err != nil {
						t.Fatalf("%s.%s: output schema does not resolve: %v", s.Name, m.Name, err)
					}
				}
			}
		}
	})
}

// FuzzArguments feeds any bytes as the arguments of each Mission Control
// tool: the decoder returns requests or a tool error, never panics, and
// what it accepts the schema accepts too (the schema is never looser than
// the converter for JSON objects it validates).
func FuzzArguments(f *testing.F) {
	for _, exs := range seedExamples {
		for _, ex := range exs {
			f.Add([]byte(ex))
		}
	}
	for _, exs := range badExamples {
		for _, ex := range exs {
			f.Add([]byte(ex))
		}
	}
	f.Add([]byte(`null`))
	f.Add([]byte(`[1,2]`))
	f.Add([]byte(`{"requests":null}`))
	ct := missionContract(f)
	g, err := New(nil, ct, Options{MaxRequests: 50})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, tl := range g.tools {
			reqs, res := g.requests(tl, raw)
			if res != nil {
				if !res.IsError || statusCode(res) == "" {
					t.Fatalf("%s: a refusal that is not a tool error with a status: %+v", tl.Name, res)
				}
				continue
			}
			if len(reqs) == 0 && !tl.pattern.ClientStreams() {
				t.Fatalf("%s: no request and no error", tl.Name)
			}
			if len(reqs) > 50 {
				t.Fatalf("%s: %d requests, over the limit", tl.Name, len(reqs))
			}
		}
	})
}

// TestArgumentsAgreeWithSchema: for the guide's examples and the bad ones,
// the gateway's own check and a JSON Schema validator of the generated
// schema agree.
func TestArgumentsAgreeWithSchema(t *testing.T) {
	ct := missionContract(t)
	g, err := New(nil, ct, Options{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(name, ex string, want bool) {
		tl := g.tools[name]
		in, err := InputSchema(ct, tl.m, g.opts.MaxRequests)
		if err != nil {
			t.Fatal(err)
		}
		r := resolveSchema(t, name, in)
		var v any
		if err := json.Unmarshal([]byte(ex), &v); err != nil {
			t.Fatal(err)
		}
		schemaOK := r.Validate(v) == nil
		_, res := g.requests(tl, []byte(ex))
		if gwOK := res == nil; schemaOK != want || gwOK != want {
			t.Errorf("%s %s: schema accepts %v, gateway accepts %v; want %v", name, ex, schemaOK, gwOK, want)
		}
	}
	for name, exs := range seedExamples {
		for _, ex := range exs {
			check(name, ex, true)
		}
	}
	for name, exs := range badExamples {
		for _, ex := range exs {
			check(name, ex, false)
		}
	}
}
