package mission

import (
	"bytes"
	"context"
	"errors"
	"iter"
	"os/exec"
	"strings"
	"sync"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// levelOrder ranks log levels; unknown levels rank as debug.
var levelOrder = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3, "fatal": 4}

func levelRank(l string) int { return levelOrder[strings.ToLower(l)] }

// subscriberBuffer is how many entries a tail may fall behind before it is
// cut off (it is told so; entries are never dropped silently).
const subscriberBuffer = 4096

// MissionControl is the shared, fleet-wide service.
type MissionControl struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	req TailRequest
	ch  chan *LogEntry
	cut chan struct{} // closed when the subscriber fell too far behind
}

// NewMissionControl returns the shared service state.
func NewMissionControl() *MissionControl {
	return &MissionControl{subs: map[*subscriber]struct{}{}}
}

// The roles of chapter 5: capabilities granted by enrollment credentials.
const (
	RoleStatus = trust.Cap("ops.status")
	RoleLogs   = trust.Cap("ops.logs")
	RoleAdmin  = trust.Cap("ops.admin")
	RoleIngest = trust.Cap("ops.ingest")
)

// Service returns MissionControl v1 with its four methods and the
// capabilities each requires (enforced only when the server's admission gate
// is closed; an open gate admits everyone unrestricted).
func (mc *MissionControl) Service() *handler.Service {
	return handler.NewService("MissionControl", 1).
		Handle("getStatus", handler.Unary(mc.GetStatus), handler.Idempotent(), handler.Requires(RoleStatus)).
		Handle("submitLog", handler.Unary(mc.SubmitLog), handler.Requires(RoleIngest)).
		Handle("tailLogs", handler.ServerStream(mc.TailLogs), handler.Requires(trust.AnyOf(RoleLogs, RoleAdmin))).
		Handle("ingestMetrics", handler.ClientStream(mc.IngestMetrics), handler.Requires(RoleIngest))
}

// GetStatus reports an agent as running.
func (mc *MissionControl) GetStatus(_ context.Context, req *StatusRequest) (*StatusResponse, error) {
	return &StatusResponse{AgentID: req.AgentID, Status: "running", UptimeSecs: 3600}, nil
}

// SubmitLog fans a log entry out to every tail whose filter matches.
func (mc *MissionControl) SubmitLog(_ context.Context, e *LogEntry) (*SubmitLogResult, error) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	for s := range mc.subs {
		if !s.matches(e) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			close(s.cut)
			delete(mc.subs, s)
		}
	}
	return &SubmitLogResult{Accepted: true}, nil
}

func (s *subscriber) matches(e *LogEntry) bool {
	if s.req.AgentID != "" && e.AgentID != s.req.AgentID {
		return false
	}
	return levelRank(e.Level) >= levelRank(s.req.Level)
}

// TailLogs streams matching log entries as they are submitted, until the
// caller cancels.
func (mc *MissionControl) TailLogs(ctx context.Context, req *TailRequest, send func(*LogEntry) error) error {
	s := &subscriber{req: *req, ch: make(chan *LogEntry, subscriberBuffer), cut: make(chan struct{})}
	mc.mu.Lock()
	mc.subs[s] = struct{}{}
	mc.mu.Unlock()
	defer func() {
		mc.mu.Lock()
		delete(mc.subs, s)
		mc.mu.Unlock()
	}()
	for {
		select {
		case e := <-s.ch:
			if err := send(e); err != nil {
				return err
			}
		case <-s.cut:
			return status.Errorf(status.ResourceExhausted, "tail fell more than %d entries behind", subscriberBuffer)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Subscribers returns the number of active tails.
func (mc *MissionControl) Subscribers() int {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return len(mc.subs)
}

// IngestMetrics counts the metric points streamed by an agent.
func (mc *MissionControl) IngestMetrics(_ context.Context, points iter.Seq2[*MetricPoint, error]) (*IngestResult, error) {
	var res IngestResult
	for _, err := range points {
		if err != nil {
			return nil, err
		}
		res.Accepted++
	}
	return &res, nil
}

// AgentSession is the per-session service: one instance per client session.
type AgentSession struct {
	mu        sync.Mutex // calls within a session may run concurrently
	peer      handler.Peer
	agentID   string
	caps      []string
	onRelease func(agentID string)
}

// NewAgentSessionService returns AgentSession v1. onRelease, if not nil, is
// called with the registered agent id when a session's instance is released.
func NewAgentSessionService(onRelease func(agentID string)) *handler.Service {
	factory := func(_ context.Context, p handler.Peer) (*AgentSession, error) {
		return &AgentSession{peer: p, onRelease: onRelease}, nil
	}
	return handler.NewSessionService("AgentSession", 1, factory).
		Handle("register", handler.On(func(a *AgentSession) handler.Def { return handler.Unary(a.Register) }), handler.Requires(RoleIngest)).
		Handle("runCommand", handler.On(func(a *AgentSession) handler.Def { return handler.BidiStream(a.RunCommand) }), handler.Requires(RoleAdmin))
}

// Register records the agent and assigns it a task.
func (a *AgentSession) Register(_ context.Context, hb *Heartbeat) (*Assignment, error) {
	a.mu.Lock()
	a.agentID, a.caps = hb.AgentID, hb.Capabilities
	a.mu.Unlock()
	for _, c := range hb.Capabilities {
		if c == "gpu" {
			return &Assignment{TaskID: "train-42", Command: "python train.py"}, nil
		}
	}
	return &Assignment{TaskID: "idle", Command: "sleep 60"}, nil
}

// AgentID returns the id given at registration ("" before).
func (a *AgentSession) AgentID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.agentID
}

// RunCommand runs each command it receives through the system shell and
// streams back its output and exit code.
func (a *AgentSession) RunCommand(ctx context.Context, b *handler.Bidi[Command, CommandResult]) error {
	for cmd, err := range b.All() {
		if err != nil {
			return err
		}
		if err := b.Send(run(ctx, cmd.Command)); err != nil {
			return err
		}
	}
	return nil
}

func run(ctx context.Context, command string) *CommandResult {
	var out, errb bytes.Buffer
	c := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	res := &CommandResult{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.ExitCode = ee.ExitCode()
	default:
		res.ExitCode = -1
		res.Stderr += err.Error()
	}
	return res
}

// Close releases the session instance.
func (a *AgentSession) Close() error {
	if a.onRelease != nil {
		a.onRelease(a.AgentID())
	}
	return nil
}
