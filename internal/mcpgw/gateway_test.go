package mcpgw

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
)

// seedExamples are the requests of the "Build a Control Plane" guide, as
// tool arguments.
var seedExamples = map[string][]string{
	"MissionControl.getStatus": {`{"agent_id": "edge-node-7"}`},
	"MissionControl.submitLog": {`{"timestamp": 1712567890.1, "level": "warn", "message": "disk 92% full", "agent_id": "edge-node-7"}`},
	"MissionControl.tailLogs":  {`{"agent_id": "edge-node-7", "level": "warn"}`, `{"level": "warn"}`},
	"MissionControl.ingestMetrics": {
		`{"requests": [{"name": "cpu.usage", "value": 0.42, "timestamp": 1712567890.1}, {"name": "cpu.usage", "value": 0.5, "timestamp": 1712567891.1, "tags": {"env": "prod"}}]}`,
	},
	"AgentSession.register":   {`{"agent_id": "edge-7", "capabilities": ["gpu"]}`},
	"AgentSession.runCommand": {`{"requests": [{"command": "df -h"}, {"command": "uptime"}]}`},
}

// badExamples do not fit the schemas (a validator must refuse them).
var badExamples = map[string][]string{
	"MissionControl.getStatus":     {`{"agent_id": 7}`, `{"agent": "x"}`},
	"MissionControl.ingestMetrics": {`{"requests": [{"name": "x", "value": "high"}]}`, `{"name": "x"}`, `{}`},
	"AgentSession.register":        {`{"capabilities": "gpu"}`},
	"AgentSession.runCommand":      {`{"requests": {"command": "ls"}}`},
	"MissionControl.submitLog":     {`{"timestamp": "now"}`},
	"MissionControl.tailLogs":      {`{"level": ["warn"]}`},
}

// TestMissionControlSchemas lists the tools through a real client and
// validates the guide's example requests against the generated input
// schemas with a JSON Schema validator (and checks that bad ones fail).
func TestMissionControlSchemas(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{})
	cs := connectStdio(t, g, nil)
	ctx := context.Background()
	res, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*mcp.Tool{}
	for _, tl := range res.Tools {
		byName[tl.Name] = tl
	}
	want := []string{"AgentSession.register", "AgentSession.runCommand", "MissionControl.getStatus", "MissionControl.ingestMetrics", "MissionControl.submitLog", "MissionControl.tailLogs", EndSessionTool}
	if got := slices.Sorted(func(yield func(string) bool) {
		for n := range byName {
			if !yield(n) {
				return
			}
		}
	}); !slices.Equal(got, want) {
		t.Fatalf("tools %v, want %v", got, want)
	}
	for name, examples := range seedExamples {
		tl := byName[name]
		resolved := resolveSchema(t, name, tl.InputSchema)
		for _, ex := range examples {
			var v any
			if err := json.Unmarshal([]byte(ex), &v); err != nil {
				t.Fatal(err)
			}
			if err := resolved.Validate(v); err != nil {
				t.Errorf("%s: example %s does not validate: %v", name, ex, err)
			}
		}
		for _, ex := range badExamples[name] {
			var v any
			json.Unmarshal([]byte(ex), &v)
			if err := resolved.Validate(v); err == nil {
				t.Errorf("%s: bad example %s validates", name, ex)
			}
		}
		if tl.OutputSchema == nil {
			t.Errorf("%s: no output schema", name)
		} else {
			resolveSchema(t, name+" output", tl.OutputSchema)
		}
		if !strings.Contains(tl.Description, name) {
			t.Errorf("%s: description %q", name, tl.Description)
		}
	}
	gs := byName["MissionControl.getStatus"]
	if a := gs.Annotations; a == nil || !a.ReadOnlyHint || !a.IdempotentHint {
		t.Errorf("getStatus annotations %+v, want read-only and idempotent", gs.Annotations)
	}
	if a := byName["MissionControl.submitLog"].Annotations; a == nil || a.ReadOnlyHint || a.IdempotentHint {
		t.Errorf("submitLog annotations %+v, want neither read-only nor idempotent", a)
	}
	// Field types as the contract says.
	props := schemaJSON(t, byName["MissionControl.ingestMetrics"].InputSchema)
	for _, frag := range []string{`"tags":{"additionalProperties":{"type":"string"},"type":"object"}`, `"value":{"type":"number"}`, `"required":["requests"]`} {
		if !strings.Contains(props, frag) {
			t.Errorf("ingestMetrics schema %s lacks %s", props, frag)
		}
	}
	if s := schemaJSON(t, byName["AgentSession.register"].InputSchema); !strings.Contains(s, `"capabilities":{"items":{"type":"string"},"type":"array"}`) {
		t.Errorf("register schema %s", s)
	}
}

func schemaJSON(t testing.TB, s any) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// resolveSchema turns a schema as a client received it into a validator.
func resolveSchema(t testing.TB, name string, s any) *jsonschema.Resolved {
	t.Helper()
	var js jsonschema.Schema
	if err := json.Unmarshal([]byte(schemaJSON(t, s)), &js); err != nil {
		t.Fatalf("%s: schema: %v", name, err)
	}
	r, err := js.Resolve(nil)
	if err != nil {
		t.Fatalf("%s: schema does not resolve: %v", name, err)
	}
	return r
}

// TestRecursiveSchema: a type that contains itself is defined under $defs
// and referred to; the schema resolves and validates nested values.
func TestRecursiveSchema(t *testing.T) {
	ct := &contract.Contract{
		Services: []contract.Service{{Name: "Tree", Version: 1, Scope: "shared", Methods: []contract.Method{
			{Name: "put", Pattern: "unary", Request: "t/Node", Response: "t/Node"},
		}}},
		Types: []contract.TypeDef{{Name: "t/Node", Fields: []contract.Field{
			{Name: "name", Type: contract.TypeRef{Kind: contract.KindString}},
			{Name: "kids", Type: contract.TypeRef{Kind: contract.KindList, Elem: &contract.TypeRef{Kind: contract.KindRef, Ref: "t/Node"}}},
			{Name: "parent", Type: contract.TypeRef{Kind: contract.KindRef, Ref: "t/Node", Optional: true}},
			{Name: "at", Type: contract.TypeRef{Kind: contract.KindTime}},
			{Name: "n", Type: contract.TypeRef{Kind: contract.KindUint}},
			{Name: "blob", Type: contract.TypeRef{Kind: contract.KindBytes}},
			{Name: "byID", Type: contract.TypeRef{Kind: contract.KindMap, Key: &contract.TypeRef{Kind: contract.KindInt}, Elem: &contract.TypeRef{Kind: contract.KindAny}}},
		}}},
	}
	s, err := InputSchema(ct, &ct.Services[0].Methods[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	r := resolveSchema(t, "Tree.put", s)
	for _, ok := range []string{
		`{"name":"a","kids":[{"name":"b","kids":[{"name":"c"}]}],"parent":null}`,
		`{"at":"2026-01-02T03:04:05Z","n":3,"blob":"aGk=","byID":{"-4":{"x":[1]}}}`,
	} {
		var v any
		json.Unmarshal([]byte(ok), &v)
		if err := r.Validate(v); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
		if _, err := contract.FromJSON(ct, "t/Node", []byte(ok)); err != nil {
			t.Errorf("the converter refuses %s, which the schema accepts: %v", ok, err)
		}
	}
	for _, bad := range []string{`{"kids":[{"name":1}]}`, `{"n":-1}`, `{"byID":{"x":1}}`, `{"kids":[{"extra":1}]}`} {
		var v any
		json.Unmarshal([]byte(bad), &v)
		if err := r.Validate(v); err == nil {
			t.Errorf("%s validates", bad)
		}
	}
}

// TestToolCalls calls every pattern of Mission Control through the Go
// SDK's client over the stdio transport.
func TestToolCalls(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{MaxItems: 3, StreamTimeout: 20 * time.Second})
	var progress struct {
		sync.Mutex
		got []float64
	}
	cs := connectStdio(t, g, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, r *mcp.ProgressNotificationClientRequest) {
			progress.Lock()
			progress.got = append(progress.got, r.Params.Progress)
			progress.Unlock()
		},
	})

	t.Run("getStatus", func(t *testing.T) {
		res := callTool(t, cs, "MissionControl.getStatus", map[string]any{"agent_id": "edge-node-7"})
		got := structured(t, res)
		if got["agent_id"] != "edge-node-7" || got["status"] != "running" || got["uptime_secs"] != float64(3600) {
			t.Errorf("getStatus: %v", got)
		}
		if txt := resultText(res); txt != `{"agent_id":"edge-node-7","status":"running","uptime_secs":3600}` {
			t.Errorf("text %s", txt)
		}
	})

	t.Run("tailLogs", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		pushed := pushLogs(ctx, t, ms)
		params := &mcp.CallToolParams{Name: "MissionControl.tailLogs", Arguments: map[string]any{"level": "warn"}}
		params.SetProgressToken("tail-1")
		res, err := cs.CallTool(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		got := structured(t, res)
		items, _ := got["items"].([]any)
		if len(items) != 3 || got["truncated"] != true {
			t.Fatalf("tailLogs: %v", got)
		}
		if e, _ := items[0].(map[string]any); e["level"] != "warn" || e["agent_id"] != "edge-node-7" {
			t.Errorf("item %v", items[0])
		}
		cancel()
		<-pushed
		waitFor(t, "3 progress notifications", func() bool {
			progress.Lock()
			defer progress.Unlock()
			return slices.Equal(progress.got, []float64{1, 2, 3})
		})
	})

	t.Run("ingestMetrics", func(t *testing.T) {
		var reqs []any
		for i := range 5 {
			reqs = append(reqs, map[string]any{"name": "cpu", "value": float64(i) / 10, "timestamp": 1712567890.1})
		}
		got := structured(t, callTool(t, cs, "MissionControl.ingestMetrics", map[string]any{"requests": reqs}))
		if got["accepted"] != float64(5) {
			t.Errorf("ingestMetrics: %v", got)
		}
	})

	t.Run("bad arguments name the field", func(t *testing.T) {
		res := callTool(t, cs, "MissionControl.ingestMetrics", map[string]any{"requests": []any{
			map[string]any{"name": "a", "value": 1},
			map[string]any{"name": "b", "value": "high"},
		}})
		if !res.IsError || statusCode(res) != "INVALID_ARGUMENT" || !strings.Contains(resultText(res), `field "requests[1].value": expected number`) {
			t.Errorf("got %v %q", res.IsError, resultText(res))
		}
		res = callTool(t, cs, "MissionControl.getStatus", map[string]any{"agent_id": 7})
		if !res.IsError || !strings.Contains(resultText(res), `INVALID_ARGUMENT: arguments do not fit mission/StatusRequest: field "agent_id": expected string, got number 7`) {
			t.Errorf("got %q", resultText(res))
		}
		res = callTool(t, cs, "MissionControl.getStatus", map[string]any{"agentid": "x"})
		if !res.IsError || !strings.Contains(resultText(res), `field "agentid": unknown field`) {
			t.Errorf("got %q", resultText(res))
		}
		res = callTool(t, cs, "AgentSession.runCommand", map[string]any{"commands": []any{}})
		if !res.IsError || !strings.Contains(resultText(res), `field "commands": unknown field`) {
			t.Errorf("got %q", resultText(res))
		}
	})

	t.Run("contract resource", func(t *testing.T) {
		res, err := cs.ReadResource(context.Background(), &mcp.ReadResourceParams{URI: ContractURI})
		if err != nil {
			t.Fatal(err)
		}
		var man contract.Manifest
		if len(res.Contents) != 1 || json.Unmarshal([]byte(res.Contents[0].Text), &man) != nil || man.Contract == nil || len(man.Contract.Services) != 2 || len(man.ContractID) != 64 {
			t.Errorf("contract resource: %+v", res.Contents)
		}
	})
}

// pushLogs submits warn log entries every few milliseconds until ctx ends;
// the returned channel closes when it has stopped.
func pushLogs(ctx context.Context, t testing.TB, ms *missionServer) <-chan struct{} {
	c := dialMission(t, ms)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			aster.CallUnary[mission.SubmitLogResult](ctx, c, "MissionControl.submitLog", &mission.LogEntry{Level: "warn", Message: "disk 92% full", AgentID: "edge-node-7", Timestamp: 1712567890.1})
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return done
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamTimeout: a server stream that sends nothing is cut at
// --stream-timeout with what arrived (nothing) and truncated: true.
func TestStreamTimeout(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{StreamTimeout: 300 * time.Millisecond})
	cs := connectStdio(t, g, nil)
	start := time.Now()
	got := structured(t, callTool(t, cs, "MissionControl.tailLogs", map[string]any{"agent_id": "nobody"}))
	if items, _ := got["items"].([]any); len(items) != 0 || got["truncated"] != true {
		t.Errorf("tailLogs: %v", got)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("returned after %v", d)
	}
}

// TestSessionScoped: register and runCommand run in one aster session per
// MCP session (one AgentSession instance, released once, with the agent id
// register gave it), which _aster.endSession ends.
func TestSessionScoped(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{})
	cs := connectStdio(t, g, nil)
	got := structured(t, callTool(t, cs, "AgentSession.register", map[string]any{"agent_id": "edge-7", "capabilities": []any{"gpu"}}))
	if got["task_id"] != "train-42" {
		t.Errorf("register: %v", got)
	}
	got = structured(t, callTool(t, cs, "AgentSession.runCommand", map[string]any{"requests": []any{
		map[string]any{"command": "echo one"}, map[string]any{"command": "echo two; exit 3"},
	}}))
	items, _ := got["items"].([]any)
	if len(items) != 2 || got["truncated"] != false {
		t.Fatalf("runCommand: %v", got)
	}
	if r, _ := items[1].(map[string]any); r["stdout"] != "two\n" || r["exit_code"] != float64(3) {
		t.Errorf("runCommand item 2: %v", items[1])
	}
	if ids := ms.releasedIDs(); len(ids) != 0 {
		t.Fatalf("instances released before the session ended: %q", ids)
	}
	if got := structured(t, callTool(t, cs, EndSessionTool, map[string]any{})); got["ended"] != true {
		t.Errorf("endSession: %v", got)
	}
	waitFor(t, "the instance's release", func() bool { return len(ms.releasedIDs()) == 1 })
	if ids := ms.releasedIDs(); ids[0] != "edge-7" {
		t.Errorf("released %q: runCommand ran in another instance than register", ids)
	}
	if got := structured(t, callTool(t, cs, EndSessionTool, nil)); got["ended"] != false {
		t.Errorf("second endSession: %v", got)
	}
	// A new session starts with the next call, and ends with the MCP session.
	structured(t, callTool(t, cs, "AgentSession.register", map[string]any{"agent_id": "edge-8"}))
	cs.Close()
	waitFor(t, "the second instance's release at the MCP session's end", func() bool { return len(ms.releasedIDs()) == 2 })
	if ids := ms.releasedIDs(); ids[1] != "edge-8" {
		t.Errorf("released %q", ids)
	}
}

// TestPolicy: --allow/--deny/--read-only and the credential's capabilities
// decide what is listed, and an unlisted tool called by name is refused.
func TestPolicy(t *testing.T) {
	ms := startMission(t, nil)
	for _, tc := range []struct {
		name   string
		opts   Options
		listed []string
		hidden []string
	}{
		{"deny", Options{Deny: []string{"AgentSession.*", "*.submitLog"}},
			[]string{"MissionControl.getStatus", "MissionControl.ingestMetrics", "MissionControl.tailLogs"},
			[]string{"AgentSession.register", "AgentSession.runCommand", "MissionControl.submitLog", EndSessionTool}},
		{"allow", Options{Allow: []string{"MissionControl.get*", "AgentSession.register"}},
			[]string{"AgentSession.register", "MissionControl.getStatus", EndSessionTool},
			[]string{"MissionControl.tailLogs", "AgentSession.runCommand"}},
		{"read-only", Options{ReadOnly: true},
			[]string{"MissionControl.getStatus"},
			[]string{"MissionControl.submitLog", "MissionControl.tailLogs", "AgentSession.register"}},
		{"capabilities", Options{Capabilities: []string{"ops.status", "ops.logs"}},
			[]string{"MissionControl.getStatus", "MissionControl.tailLogs"},
			[]string{"MissionControl.submitLog", "MissionControl.ingestMetrics", "AgentSession.register", "AgentSession.runCommand", EndSessionTool}},
		{"no capabilities", Options{Capabilities: []string{}},
			nil,
			[]string{"MissionControl.getStatus", "AgentSession.register"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGateway(t, ms, tc.opts)
			cs := connectStdio(t, g, nil)
			res, err := cs.ListTools(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tl := range res.Tools {
				got = append(got, tl.Name)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.listed) {
				t.Errorf("listed %v, want %v", got, tc.listed)
			}
			for _, h := range tc.hidden {
				_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: h, Arguments: map[string]any{}})
				if err == nil || !strings.Contains(err.Error(), "unknown tool") {
					t.Errorf("calling the unlisted %s by name: %v, want an unknown-tool refusal", h, err)
				}
			}
			if len(tc.listed) > 0 && tc.listed[len(tc.listed)-1] == "MissionControl.getStatus" {
				structured(t, callTool(t, cs, "MissionControl.getStatus", map[string]any{}))
			}
		})
	}
	for _, bad := range []Options{{Deny: []string{"x["}}, {Allow: []string{"tag:admin"}}, {Confirm: []string{""}}, {MaxItems: -1}} {
		if _, err := New(nil, &contract.Contract{}, bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

// TestServerError: a status from the server (PERMISSION_DENIED from a
// server that grants only ops.status) is a tool error carrying the code,
// not a protocol error.
func TestServerError(t *testing.T) {
	ms := startMission(t, []string{"ops.status"})
	g := newGateway(t, ms, Options{})
	cs := connectStdio(t, g, nil)
	structured(t, callTool(t, cs, "MissionControl.getStatus", map[string]any{"agent_id": "x"}))
	res := callTool(t, cs, "MissionControl.submitLog", map[string]any{"message": "m"})
	if !res.IsError || statusCode(res) != "PERMISSION_DENIED" || !strings.HasPrefix(resultText(res), "PERMISSION_DENIED: ") ||
		!strings.Contains(resultText(res), "(MissionControl.submitLog requires ops.ingest)") {
		t.Errorf("submitLog: error %v, %q, meta %v", res.IsError, resultText(res), res.Meta)
	}
	if st, _ := res.Meta["aster/status"].(map[string]any); st["code_num"] != float64(7) {
		t.Errorf("meta %v", res.Meta)
	}
}

// TestConfirm: a --confirm tool asks through elicitation; an accept runs
// it, a decline does not, a client without elicitation is refused with a
// message saying why, and a forged answer is refused.
func TestConfirm(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{Confirm: []string{"MissionControl.submitLog"}})

	plain := connectStdio(t, g, nil)
	res := callTool(t, plain, "MissionControl.submitLog", map[string]any{"message": "m"})
	if !res.IsError || statusCode(res) != "PERMISSION_DENIED" || !strings.Contains(resultText(res), "does not support elicitation") {
		t.Errorf("without elicitation: %v %q", res.IsError, resultText(res))
	}
	structured(t, callTool(t, plain, "MissionControl.getStatus", map[string]any{})) // unconfirmed tools run

	var asked []string
	var answer = "accept"
	var mu sync.Mutex
	asking := connectStdio(t, g, &mcp.ClientOptions{ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, r.Params.Message)
		return &mcp.ElicitResult{Action: answer, Content: map[string]any{}}, nil
	}})
	t.Logf("protocol version negotiated: %s", asking.InitializeResult().ProtocolVersion)
	if got := structured(t, callTool(t, asking, "MissionControl.submitLog", map[string]any{"message": "m"})); got["accepted"] != true {
		t.Errorf("accepted: %v", got)
	}
	mu.Lock()
	if len(asked) != 1 || !strings.Contains(asked[0], `MissionControl.submitLog with arguments {"message":"m"}`) {
		t.Errorf("asked %q", asked)
	}
	answer = "decline"
	mu.Unlock()
	res = callTool(t, asking, "MissionControl.submitLog", map[string]any{"message": "m"})
	if !res.IsError || !strings.Contains(resultText(res), `not confirmed (the person chose "decline")`) {
		t.Errorf("declined: %v %q", res.IsError, resultText(res))
	}

	// A client of an older protocol version gets the question as a
	// server-initiated elicitation/create request instead.
	var askedOld []string
	older := connectStdioSession(t, g, &mcp.ClientOptions{ElicitationHandler: func(_ context.Context, r *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
		mu.Lock()
		defer mu.Unlock()
		askedOld = append(askedOld, r.Params.Message)
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{}}, nil
	}}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if v := older.InitializeResult().ProtocolVersion; v != "2025-11-25" {
		t.Errorf("negotiated %s", v)
	}
	if got := structured(t, callTool(t, older, "MissionControl.submitLog", map[string]any{"message": "old"})); got["accepted"] != true {
		t.Errorf("accepted: %v", got)
	}
	mu.Lock()
	if len(askedOld) != 1 || !strings.Contains(askedOld[0], `{"message":"old"}`) {
		t.Errorf("asked %q", askedOld)
	}
	mu.Unlock()

	// A client that answers a question it was never asked.
	forged := &mcp.CallToolParams{Name: "MissionControl.submitLog", Arguments: map[string]any{"message": "m"},
		InputResponses: mcp.InputResponseMap{"confirm": &mcp.ElicitResult{Action: "accept"}}, RequestState: "made-up"}
	res, err := plain.CallTool(context.Background(), forged)
	if err != nil {
		t.Fatal(err)
	}
	if !res.IsError || !strings.Contains(resultText(res), "does not belong to a question") {
		t.Errorf("forged: %v %q", res.IsError, resultText(res))
	}
}

// TestLimits: arguments and request counts over the limits are refused as
// tool errors; the gateway goes on serving.
func TestLimits(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{MaxArgumentBytes: 1000, MaxRequests: 3})
	cs := connectStdio(t, g, nil)
	res := callTool(t, cs, "MissionControl.getStatus", map[string]any{"agent_id": strings.Repeat("x", 2000)})
	if !res.IsError || statusCode(res) != "RESOURCE_EXHAUSTED" {
		t.Errorf("large arguments: %q", resultText(res))
	}
	var reqs []any
	for range 4 {
		reqs = append(reqs, map[string]any{"name": "x"})
	}
	res = callTool(t, cs, "MissionControl.ingestMetrics", map[string]any{"requests": reqs})
	if !res.IsError || statusCode(res) != "RESOURCE_EXHAUSTED" || !strings.Contains(resultText(res), "4 requests") {
		t.Errorf("4 requests: %q", resultText(res))
	}
	structured(t, callTool(t, cs, "MissionControl.getStatus", map[string]any{"agent_id": "still here"}))

	// A JSON-RPC message larger than the transport's limit ends that
	// session, not the process; a new session works.
	g2 := newGateway(t, ms, Options{MaxArgumentBytes: 1000, MaxResultBytes: 10})
	cs2 := connectStdio(t, g2, nil)
	_, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "MissionControl.getStatus", Arguments: map[string]any{"agent_id": strings.Repeat("y", 200000)}})
	if err == nil {
		t.Error("a 200 kB message was accepted")
	}
	cs3 := connectStdio(t, g2, nil)
	structured(t, callTool(t, cs3, "MissionControl.getStatus", map[string]any{}))
}

// TestStreamableHTTP: the same gateway over Streamable HTTP, with a Go SDK
// client: a unary call, and a session-scoped pair in one MCP session.
func TestStreamableHTTP(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{})
	srv := httptest.NewServer(g.HTTPHandler(time.Minute))
	defer srv.Close()
	defer g.Close()
	client := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-http-test", Version: "1"}, nil)
	ctx := context.Background()
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if got := structured(t, callTool(t, cs, "MissionControl.getStatus", map[string]any{"agent_id": "http"})); got["agent_id"] != "http" {
		t.Errorf("getStatus: %v", got)
	}
	structured(t, callTool(t, cs, "AgentSession.register", map[string]any{"agent_id": "edge-http"}))
	structured(t, callTool(t, cs, "AgentSession.runCommand", map[string]any{"requests": []any{map[string]any{"command": "true"}}}))
	structured(t, callTool(t, cs, EndSessionTool, nil))
	waitFor(t, "the release", func() bool { return len(ms.releasedIDs()) == 1 })
	if ids := ms.releasedIDs(); ids[0] != "edge-http" {
		t.Errorf("released %q", ids)
	}
}

// TestHTTPSessionLimit: a gateway serving at most one MCP session over
// HTTP refuses a second client until the first ends its session.
func TestHTTPSessionLimit(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{MaxHTTPSessions: 1})
	srv := httptest.NewServer(g.HTTPHandler(time.Minute))
	defer srv.Close()
	defer g.Close()
	ctx := context.Background()
	connect := func() (*mcp.ClientSession, error) {
		return mcp.NewClient(&mcp.Implementation{Name: "go-sdk-http-test", Version: "1"}, nil).
			Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL, MaxRetries: -1}, nil)
	}
	first, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	structured(t, callTool(t, first, "MissionControl.getStatus", nil))
	if second, err := connect(); err == nil {
		second.Close()
		t.Fatal("a second session was served")
	} else if !strings.Contains(err.Error(), "503") && !strings.Contains(err.Error(), "Service Unavailable") {
		t.Errorf("second session: %v", err)
	}
	first.Close()
	waitFor(t, "the first session's end", func() bool {
		n := 0
		for range g.Server().Sessions() {
			n++
		}
		return n == 0
	})
	// The slot frees once the first session's requests have all ended,
	// which may lag a moment behind Sessions().
	var third *mcp.ClientSession
	waitFor(t, "a new session after the first ended", func() bool {
		third, err = connect()
		return err == nil
	})
	structured(t, callTool(t, third, "MissionControl.getStatus", nil))
	third.Close()
}

// TestToolNames: names MCP does not allow are sanitised and kept apart.
func TestToolNames(t *testing.T) {
	g := &Gateway{tools: map[string]*tool{}}
	for in, want := range map[string]string{"A.b": "A.b", "A b.c/d": "A_b.c_d", strings.Repeat("x", 200): strings.Repeat("x", 120)} {
		if got := g.toolName(in); got != want {
			t.Errorf("toolName(%q) = %q, want %q", in, got, want)
		}
	}
	g.tools["A_b.c"] = &tool{}
	if got := g.toolName("A b.c"); got != "A_b.c-2" {
		t.Errorf("collision: %q", got)
	}
}

// TestUnmatchedGlobs: a --deny or --confirm glob that matches no method
// (names are case-sensitive) protects nothing; Unmatched reports it, with
// the method a case slip was likely meant for.
func TestUnmatchedGlobs(t *testing.T) {
	ms := startMission(t, nil)
	g := newGateway(t, ms, Options{
		Deny:    []string{"MissionControl.submitLog", "missioncontrol.submitlog", "Mission.*"},
		Confirm: []string{"*.ingestMetrics", "MissionControl.tailLog"},
	})
	got := g.Unmatched()
	want := []Unmatched{
		{Flag: "--deny", Pattern: "missioncontrol.submitlog", Like: "MissionControl.submitLog"},
		{Flag: "--deny", Pattern: "Mission.*"},
		{Flag: "--confirm", Pattern: "MissionControl.tailLog"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Unmatched = %+v, want %+v", got, want)
	}
	if msg := got[0].Error(); !strings.Contains(msg, "did you mean MissionControl.submitLog") {
		t.Errorf("message %q", msg)
	}
	if un := newGateway(t, ms, Options{Deny: []string{"AgentSession.*"}, Confirm: []string{"*.submitLog"}}).Unmatched(); len(un) != 0 {
		t.Errorf("globs that match: %+v", un)
	}
}
