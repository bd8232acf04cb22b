package main

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
)

// missionContract is the Mission Control example's contract plus a type
// with every kind, for argument and completion tests.
func missionContract(t *testing.T) *contract.Contract {
	t.Helper()
	mc := mission.NewMissionControl()
	ct, err := contract.Build([]*handler.Service{mc.Service(), mission.NewAgentSessionService(nil)})
	if err != nil {
		t.Fatal(err)
	}
	return ct
}

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
		err  bool
	}{
		{`./getStatus agent_id="edge-node-7"`, []string{"./getStatus", "agent_id=edge-node-7"}, false},
		{`register capabilities='["gpu"]'  load_avg=0.5`, []string{"register", `capabilities=["gpu"]`, "load_avg=0.5"}, false},
		{`runCommand command="echo \"hi\" \\ there"`, []string{"runCommand", `command=echo "hi" \ there`}, false},
		{`a\ b 'it''s' ""`, []string{"a b", "its", ""}, false},
		{"  \t ", nil, false},
		{`cmd "open`, []string{"cmd", "open"}, true},
	} {
		words, err := splitWords(tc.line)
		if (err != nil) != tc.err {
			t.Errorf("splitWords(%q) error %v, want error %v", tc.line, err, tc.err)
		}
		var got []string
		for _, w := range words {
			got = append(got, w.text)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
	words, _ := splitWords(`cd  services/Mi`)
	if words[1].start != 4 {
		t.Errorf("word start %d, want 4", words[1].start)
	}
}

func TestParseKV(t *testing.T) {
	ct := missionContract(t)
	// Values are typed from the contract: strings stay strings even when
	// they look like numbers, numbers become numbers, lists parse as JSON
	// or comma-separated words.
	got, err := parseKV(ct, "mission/Heartbeat", []string{"agent_id=7", `capabilities=["gpu","arm64"]`, "load_avg=0.75"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"agent_id": "7", "capabilities": []any{"gpu", "arm64"}, "load_avg": json.Number("0.75")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, want %#v", got, want)
	}
	got, err = parseKV(ct, "mission/Heartbeat", []string{"capabilities=gpu, arm64"})
	if err != nil || !reflect.DeepEqual(got["capabilities"], []any{"gpu", "arm64"}) {
		t.Fatalf("comma list: %v, %v", got, err)
	}
	// A dotted key fills a map entry.
	got, err = parseKV(ct, "mission/MetricPoint", []string{"name=cpu", "value=1", "tags.env=prod", "tags.zone=eu-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got["tags"], map[string]any{"env": "prod", "zone": "eu-1"}) || got["value"] != json.Number("1") {
		t.Fatalf("got %#v", got)
	}
	// The result converts to the wire type.
	if _, err := contract.FromJSONValue(ct, "mission/MetricPoint", got); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		typ  string
		args []string
		msg  string
	}{
		{"mission/StatusRequest", []string{"agent"}, "want key=value"},
		{"mission/StatusRequest", []string{"=x"}, "want key=value"},
		{"mission/StatusRequest", []string{"agent_idx=1"}, `unknown field "agent_idx" (mission/StatusRequest has: agent_id)`},
		{"mission/StatusRequest", []string{"agent_id=a", "agent_id=b"}, "given twice"},
		{"mission/MetricPoint", []string{"value=high"}, `field "value": expected a number (float), got "high"`},
		{"mission/MetricPoint", []string{"name.x=1"}, "is a string, not an object"},
		{"mission/MetricPoint", []string{"tags={"}, "want a JSON object"},
		{"mission/Heartbeat", []string{"load_avg="}, "expected a number"},
		{"mission/Heartbeat", []string{"load_avg=1 2"}, "expected a number"},
		{"mission/Heartbeat", []string{"agent_id.=x"}, "empty name"},
	} {
		_, err := parseKV(ct, tc.typ, tc.args)
		var ae *argError
		if err == nil || !errors.As(err, &ae) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("parseKV(%s, %q) = %v, want an argError containing %q", tc.typ, tc.args, err, tc.msg)
		}
	}
}

func TestKVValueKinds(t *testing.T) {
	opt := contract.TypeRef{Kind: contract.KindInt, Optional: true}
	for _, tc := range []struct {
		t    contract.TypeRef
		in   string
		want any
		err  bool
	}{
		{contract.TypeRef{Kind: contract.KindBool}, "true", true, false},
		{contract.TypeRef{Kind: contract.KindBool}, "yes", nil, true},
		{contract.TypeRef{Kind: contract.KindInt}, "-12", json.Number("-12"), false},
		{contract.TypeRef{Kind: contract.KindUint}, "x", nil, true},
		{contract.TypeRef{Kind: contract.KindFloat}, "NaN", "NaN", false},
		{contract.TypeRef{Kind: contract.KindTime}, "2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z", false},
		{contract.TypeRef{Kind: contract.KindAny}, `{"a":1}`, map[string]any{"a": json.Number("1")}, false},
		{contract.TypeRef{Kind: contract.KindAny}, "plain words", "plain words", false},
		{opt, "null", nil, false},
		{contract.TypeRef{Kind: contract.KindInt}, "null", nil, true},
	} {
		got, err := kvValue(tc.t, tc.in)
		if (err != nil) != tc.err || (!tc.err && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("kvValue(%s, %q) = %#v, %v; want %#v (error %v)", tc.t.String(), tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestRequestItems(t *testing.T) {
	ct := missionContract(t)
	items, err := requestItems(ct, "mission/MetricPoint", []string{`[{"name":"a"},{"name":"b"}]`}, true)
	if err != nil || len(items) != 2 {
		t.Fatalf("list: %v, %v", items, err)
	}
	if _, err := requestItems(ct, "mission/StatusRequest", []string{`[{}]`}, false); err == nil {
		t.Fatal("a list for a single-request method was accepted")
	}
	if _, err := requestItems(ct, "mission/StatusRequest", []string{`{"agent_id":`}, false); err == nil || !strings.Contains(err.Error(), "malformed JSON") {
		t.Fatalf("malformed JSON: %v", err)
	}
	if got := lineArgs(`{"agent_id": "a b"}`); len(got) != 1 || got[0] != `{"agent_id": "a b"}` {
		t.Fatalf("lineArgs kept JSON as %q", got)
	}
	if items, _ := requestItems(ct, "mission/StatusRequest", nil, false); items != nil {
		t.Fatalf("no arguments gave %v", items)
	}
}

func TestCompletion(t *testing.T) {
	ct := missionContract(t)
	sess := ct.Service("AgentSession", 0)
	for _, tc := range []struct {
		cwd    string
		sess   bool
		before string
		start  int
		want   []string
	}{
		{"/", false, "", 0, []string{"cd ", "describe ", "end ", "exit ", "help ", "invoke ", "ls ", "pwd ", "quit ", "refresh ", "session "}},
		{"/", false, "c", 0, []string{"cd "}},
		{"/", false, "cd ", 3, []string{"services/"}},
		{"/", false, "cd serv", 3, []string{"services/"}},
		{"/", false, "cd services/", 3, []string{"services/AgentSession/", "services/MissionControl/"}},
		{"/", false, "cd services/Mi", 3, []string{"services/MissionControl/"}},
		{"/", false, "cd /services/Ag", 3, []string{"/services/AgentSession/"}},
		{"/services/MissionControl", false, "get", 0, []string{"getStatus "}},
		{"/services/MissionControl", false, "./", 0, []string{"./getStatus ", "./ingestMetrics ", "./submitLog ", "./tailLogs "}},
		{"/services/MissionControl", false, "./t", 0, []string{"./tailLogs "}},
		{"/services/MissionControl", false, "cd ..", 3, []string{"../"}},
		{"/services/MissionControl", false, "./getStatus ", 12, []string{"agent_id="}},
		{"/services/MissionControl", false, "./tailLogs agent_id=x l", 22, []string{"level="}},
		{"/services/MissionControl", false, "submitLog ", 10, []string{"agent_id=", "level=", "message=", "timestamp="}},
		{"/services/MissionControl", false, "describe t", 9, []string{"tailLogs "}},
		{"/services/MissionControl", false, `./getStatus agent_id="ed`, 12, nil},
		{"/services", false, "session ", 8, []string{"AgentSession"}},
		{"/services", false, "invoke Mission", 7, []string{"MissionControl.getStatus ", "MissionControl.ingestMetrics ", "MissionControl.submitLog ", "MissionControl.tailLogs "}},
		{"/services", false, "invoke MissionControl.getStatus a", 32, []string{"agent_id="}},
		{"/services", false, "MissionControl/getStatus ", 25, []string{"agent_id="}},
		{"/", true, "r", 0, []string{"refresh ", "register ", "runCommand "}},
		{"/", true, "register cap", 9, []string{"capabilities="}},
		{"/", true, "runCommand ", 11, []string{"command="}},
		{"/", false, "nosuch ", 7, nil},
	} {
		var s *contract.Service
		if tc.sess {
			s = sess
		}
		start, got := completeAt(ct, tc.cwd, s, tc.before)
		if start != tc.start || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("complete(%q in %s) = %d %q, want %d %q", tc.before, tc.cwd, start, got, tc.start, tc.want)
		}
	}
	// The liner adapter keeps the text after the cursor.
	sh := &shell{ct: ct, cwd: "/"}
	head, list, tail := sh.complete("cd serv foo", 7)
	if head != "cd " || !reflect.DeepEqual(list, []string{"services/"}) || tail != " foo" {
		t.Fatalf("complete = %q %q %q", head, list, tail)
	}
}

func TestResolvePath(t *testing.T) {
	ct := missionContract(t)
	for _, tc := range []struct{ cwd, p, want string }{
		{"/", "services", "/services"},
		{"/", "services/MissionControl/", "/services/MissionControl"},
		{"/services/MissionControl", "..", "/services"},
		{"/services/MissionControl", "./getStatus", "/services/MissionControl/getStatus"},
		{"/services", "MissionControl@1/tailLogs", "/services/MissionControl/tailLogs"},
		{"/services/MissionControl", "/", "/"},
	} {
		n, err := resolvePath(ct, tc.cwd, tc.p)
		if err != nil || n.path(ct) != tc.want {
			t.Errorf("resolvePath(%s, %s) = %v, %v; want %s", tc.cwd, tc.p, n.path(ct), err, tc.want)
		}
	}
	for _, p := range []string{"/nope", "/services/Nope", "/services/MissionControl/nope", "/services/MissionControl/getStatus/x", "/services/MissionControl@9", "/services/MissionControl@x"} {
		if _, err := resolvePath(ct, "/", p); err == nil {
			t.Errorf("resolvePath(%s) succeeded", p)
		}
	}
}
