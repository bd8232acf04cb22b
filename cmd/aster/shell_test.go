package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// These tests drive "aster shell" with a script on stdin (no terminal)
// against the Mission Control example running as a separate process.

// wantIn fails unless s contains every one of subs, in order.
func wantIn(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	rest := s
	for _, sub := range subs {
		i := strings.Index(rest, sub)
		if i < 0 {
			t.Fatalf("%s lacks %q (in order); got:\n%s", what, sub, s)
		}
		rest = rest[i+len(sub):]
	}
}

func TestShellScriptTreeAndCalls(t *testing.T) {
	addr := startServer(t)
	script := `ls
cd services
pwd
ls
describe AgentSession
cd MissionControl
describe getStatus
./getStatus agent_id="edge-node-7"
getStatus {"agent_id": "raw json"}
invoke getStatus '{"agent_id":"invoked"}'
/services/MissionControl/submitLog level=warn message="disk 92% full" agent_id=edge-7 timestamp=1712567890.1
ingestMetrics
{"name":"cpu","value":0.5}
name=mem value=2 tags.env=prod

ingestMetrics [{"name":"a","value":1},{"name":"b","value":2},{"name":"c","value":3}]
cd ..
ls MissionControl
cd /
pwd
MissionControl.getStatus agent_id=dotted
refresh
help
exit
./getStatus agent_id=never-run
`
	r := runAster(t, script, "shell", addr)
	r.want(t, 0)
	if r.stderr != "" {
		t.Fatalf("stderr:\n%s", r.stderr)
	}
	wantIn(t, "stdout", r.stdout,
		"services/", "2 services",
		"/services\n",
		"AgentSession/", "v1", "session", "2 methods", "MissionControl/", "shared", "4 methods",
		"service AgentSession v1 (session-scoped, 2 methods)", "register", "unary", "mission/Heartbeat → mission/Assignment",
		"runCommand", "bidi_stream",
		"MissionControl.getStatus  (unary", "request:   mission/StatusRequest", "agent_id  string", "response:  mission/StatusResponse", "uptime_secs  int",
		`→ MissionControl.getStatus(agent_id="edge-node-7")`, "✓ ", "{\n  \"agent_id\": \"edge-node-7\",\n  \"status\": \"running\",\n  \"uptime_secs\": 3600\n}\n",
		`→ MissionControl.getStatus(agent_id="raw json")`, `"agent_id": "raw json"`,
		`→ MissionControl.getStatus(agent_id="invoked")`, `"agent_id": "invoked"`,
		`→ MissionControl.submitLog(agent_id="edge-7", level="warn", message="disk 92% full", timestamp=1712567890.1)`, `"accepted": true`,
		"→ MissionControl.ingestMetrics(…)", `"accepted": 2`,
		"→ MissionControl.ingestMetrics(3 requests)", `"accepted": 3`,
		"getStatus", "unary", "mission/StatusRequest → mission/StatusResponse", "[requires ops.status, idempotent]",
		"/\n",
		`→ MissionControl.getStatus(agent_id="dotted")`,
		"(unchanged): 2 services",
		"Commands:", "session <Service>",
	)
	if strings.Contains(r.stdout, "never-run") {
		t.Fatal("a command after exit ran")
	}
}

func TestShellScriptServerStreamAndSession(t *testing.T) {
	addr := startServer(t)
	pushLogs(t, addr, "warn")
	// --timeout ends the otherwise endless tail with DEADLINE_EXCEEDED; the
	// shell goes on with the next command.
	script := `cd services/MissionControl
./tailLogs agent_id="edge-7" level="warn"
cd ..
session AgentSession
register agent_id="edge-7" capabilities='["gpu"]'
runCommand command="echo one"
runCommand [{"command":"echo two"},{"command":"exit 3"}]
runCommand
{"command":"echo typed"}
command="echo kv"

ls
pwd
end
end
`
	r := runAster(t, script, "shell", "--timeout", "2s", addr)
	r.want(t, ExitCodeFor(status.DeadlineExceeded)) // the tail, the only failure
	wantIn(t, "stdout", r.stdout,
		`→ MissionControl.tailLogs(agent_id="edge-7", level="warn")`,
		`#0 {"agent_id":"edge-7","level":"warn","message":"line","timestamp":`,
		`#1 {"agent_id":"edge-7"`,
		"session of AgentSession opened",
		`→ AgentSession.register(agent_id="edge-7", capabilities=["gpu"])`, `"task_id": "train-42"`,
		`→ AgentSession.runCommand(command="echo one")`, `#0 {"exit_code":0,"stderr":"","stdout":"one\n"}`, "✓ stream ended: 1 item in",
		`→ AgentSession.runCommand(2 requests)`, `#0 {"exit_code":0,"stderr":"","stdout":"two\n"}`, `#1 {"exit_code":3,`, "✓ stream ended: 2 items in",
		`→ AgentSession.runCommand(…)`, `"stdout":"typed\n"`, `"stdout":"kv\n"`, "✓ stream ended: 2 items in",
		"register", "runCommand",
		"/services (session of AgentSession)",
		"session of AgentSession ended",
	)
	wantIn(t, "stderr", r.stderr,
		"DEADLINE_EXCEEDED: ",
		"FAILED_PRECONDITION: no open session",
	)
	if strings.Contains(r.stderr, "session-scoped: this call runs in a session of its own") {
		t.Fatalf("calls inside the session ran outside it:\n%s", r.stderr)
	}

	// Outside a session, a session-scoped method runs in a session of its
	// own and says so.
	r = runAster(t, "/services/AgentSession/register agent_id=solo\n", "shell", addr)
	r.want(t, 0)
	wantIn(t, "stderr", r.stderr, "AgentSession is session-scoped: this call runs in a session of its own")
	wantIn(t, "stdout", r.stdout, `"task_id": "idle"`)
}

func TestShellScriptJSON(t *testing.T) {
	addr := startServer(t)
	script := `cd services/MissionControl
./getStatus agent_id=a
./ingestMetrics [{"name":"x","value":1}]
session /services/AgentSession
runCommand [{"command":"echo 1"},{"command":"echo 2"}]
end
`
	r := runAster(t, script, "shell", "--json", addr)
	r.want(t, 0)
	got := lines(t, r.stdout)
	if len(got) != 4 {
		t.Fatalf("want 4 JSON lines, got:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	if got[0]["agent_id"] != "a" || got[1]["accepted"] != json.Number("1") || got[2]["stdout"] != "1\n" || got[3]["stdout"] != "2\n" {
		t.Fatalf("stdout:\n%s", r.stdout)
	}
	// describe prints the contract's JSON form.
	r = runAster(t, "describe /services/MissionControl/getStatus\n", "shell", "--json", addr)
	r.want(t, 0)
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m["pattern"] != "unary" || m["request"] != "mission/StatusRequest" {
		t.Fatalf("describe --json: %v\n%s", err, r.stdout)
	}
}

func TestShellScriptErrors(t *testing.T) {
	addr := startServer(t)
	script := `cd /nope
cd services/Nope
cd services/MissionControl/getStatus
cd /services/MissionControl
./nope
frobnicate
./getStatus agent_idx=1
./getStatus uptime
./getStatus agent_id="unterminated
./getStatus {"agent_id": 7}
./getStatus {"agent_id":
./ingestMetrics value=high
./ingestMetrics [{"name":"a"},{"name":"b","value":"x"}]
./submitLog timestamp=soon
session MissionControl
session Nope
end
ls /services/X
describe nope
invoke
cd /services
MissionControl
MissionControl.nope
pwd
`
	r := runAster(t, script, "shell", addr)
	r.want(t, ExitCodeFor(status.NotFound)) // "cd /nope", the first failure
	wantIn(t, "stderr", r.stderr, "of the script's commands failed; the first with NOT_FOUND (exit 15)")
	wantIn(t, "stderr", r.stderr,
		"NOT_FOUND: no such path /nope",
		"NOT_FOUND: no service Nope (services: AgentSession, MissionControl)",
		"INVALID_ARGUMENT: /services/MissionControl/getStatus is a method, not a directory",
		"NOT_FOUND: no method nope in MissionControl (methods: getStatus, ingestMetrics, submitLog, tailLogs)",
		`NOT_FOUND: unknown command or method "frobnicate"`,
		`INVALID_ARGUMENT: unknown field "agent_idx" (mission/StatusRequest has: agent_id)`,
		`INVALID_ARGUMENT: argument "uptime": want key=value`,
		"INVALID_ARGUMENT: unterminated quote",
		`INVALID_ARGUMENT: request does not fit mission/StatusRequest: field "agent_id": expected string, got number 7`,
		"INVALID_ARGUMENT: malformed JSON argument",
		`INVALID_ARGUMENT: field "value": expected a number (float), got "high"`,
		`INVALID_ARGUMENT: request 2 does not fit mission/MetricPoint: field "value": expected number, got string`,
		`INVALID_ARGUMENT: field "timestamp": expected a number (float), got "soon"`,
		"FAILED_PRECONDITION: MissionControl is shared-scoped",
		"NOT_FOUND: no service Nope",
		"FAILED_PRECONDITION: no open session",
		"NOT_FOUND: no service X",
		"NOT_FOUND: ",
		"INVALID_ARGUMENT: usage: invoke",
		"INVALID_ARGUMENT: /services/MissionControl is a directory, not a method",
		"NOT_FOUND: no method nope in MissionControl",
	)
	// No call was made for a bad argument: nothing printed a call line.
	if strings.Contains(r.stdout, "→") {
		t.Fatalf("a bad request reached the server:\n%s", r.stdout)
	}
	wantIn(t, "stdout", r.stdout, "/services\n")

	// Usage and connection errors of the command itself.
	r = runAster(t, "", "shell")
	r.want(t, ExitUsage)
	r = runAster(t, "", "shell", "aster1bad")
	r.want(t, ExitUsage)
	r = runAster(t, "", "shell", "--rcan", "no-such.cred", addr)
	r.want(t, ExitUsage)
	if !strings.HasPrefix(r.stderr, "INVALID_ARGUMENT: --rcan no-such.cred: ") {
		t.Fatalf("--rcan: stderr %q", r.stderr)
	}
}

func TestShellConnectFailure(t *testing.T) {
	srvAddr := startServer(t)
	parsed, err := aster.ParseAddress(srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	// The right port, the wrong key: the handshake fails.
	a := aster.Address{ID: trust.IDOf(trust.GenerateKey()), Direct: parsed.Direct}
	r := runAster(t, "ls\n", "shell", "--connect-timeout", "5s", a.String())
	r.want(t, ExitConnect)
	if !strings.HasPrefix(r.stderr, "UNAUTHENTICATED: cannot connect") {
		t.Fatalf("stderr %q", r.stderr)
	}
}
