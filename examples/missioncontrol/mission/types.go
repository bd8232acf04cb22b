// Package mission is the Mission Control example's services and wire types:
// the Go form of chapters 1–4 of the "Build a Control Plane" guide.
//
// MissionControl is a shared service (status, log submission and tailing,
// metric ingestion); AgentSession is session-scoped (register, then run
// commands over a bidirectional stream).
package mission

// StatusRequest asks for an agent's status.
type StatusRequest struct {
	AgentID string `cbor:"agent_id" json:"agent_id"`
}

// WireType implements handler.WireTyper.
func (StatusRequest) WireType() string { return "mission/StatusRequest" }

// StatusResponse reports an agent's status.
type StatusResponse struct {
	AgentID    string `cbor:"agent_id" json:"agent_id"`
	Status     string `cbor:"status" json:"status"`
	UptimeSecs int64  `cbor:"uptime_secs" json:"uptime_secs"`
}

// WireType implements handler.WireTyper.
func (StatusResponse) WireType() string { return "mission/StatusResponse" }

// LogEntry is one log line pushed by an agent.
type LogEntry struct {
	Timestamp float64 `cbor:"timestamp" json:"timestamp"`
	Level     string  `cbor:"level" json:"level"`
	Message   string  `cbor:"message" json:"message"`
	AgentID   string  `cbor:"agent_id" json:"agent_id"`
}

// WireType implements handler.WireTyper.
func (LogEntry) WireType() string { return "mission/LogEntry" }

// SubmitLogResult acknowledges a log entry.
type SubmitLogResult struct {
	Accepted bool `cbor:"accepted" json:"accepted"`
}

// WireType implements handler.WireTyper.
func (SubmitLogResult) WireType() string { return "mission/SubmitLogResult" }

// TailRequest selects the log entries to stream: one agent (or all when
// empty) at or above a minimum level.
type TailRequest struct {
	AgentID string `cbor:"agent_id" json:"agent_id"`
	Level   string `cbor:"level" json:"level"`
}

// WireType implements handler.WireTyper.
func (TailRequest) WireType() string { return "mission/TailRequest" }

// MetricPoint is one metric sample.
type MetricPoint struct {
	Name      string            `cbor:"name" json:"name"`
	Value     float64           `cbor:"value" json:"value"`
	Timestamp float64           `cbor:"timestamp" json:"timestamp"`
	Tags      map[string]string `cbor:"tags,omitempty" json:"tags,omitempty"`
}

// WireType implements handler.WireTyper.
func (MetricPoint) WireType() string { return "mission/MetricPoint" }

// IngestResult counts the metric points accepted.
type IngestResult struct {
	Accepted int64 `cbor:"accepted" json:"accepted"`
	Dropped  int64 `cbor:"dropped" json:"dropped"`
}

// WireType implements handler.WireTyper.
func (IngestResult) WireType() string { return "mission/IngestResult" }

// Heartbeat registers an agent with its capabilities.
type Heartbeat struct {
	AgentID      string   `cbor:"agent_id" json:"agent_id"`
	Capabilities []string `cbor:"capabilities" json:"capabilities"`
	LoadAvg      float64  `cbor:"load_avg" json:"load_avg"`
}

// WireType implements handler.WireTyper.
func (Heartbeat) WireType() string { return "mission/Heartbeat" }

// Assignment is the task given to a registered agent.
type Assignment struct {
	TaskID  string `cbor:"task_id" json:"task_id"`
	Command string `cbor:"command" json:"command"`
}

// WireType implements handler.WireTyper.
func (Assignment) WireType() string { return "mission/Assignment" }

// Command is a shell command to run on the agent.
type Command struct {
	Command string `cbor:"command" json:"command"`
}

// WireType implements handler.WireTyper.
func (Command) WireType() string { return "mission/Command" }

// CommandResult is a command's output and exit status.
type CommandResult struct {
	Stdout   string `cbor:"stdout" json:"stdout"`
	Stderr   string `cbor:"stderr" json:"stderr"`
	ExitCode int    `cbor:"exit_code" json:"exit_code"`
}

// WireType implements handler.WireTyper.
func (CommandResult) WireType() string { return "mission/CommandResult" }
