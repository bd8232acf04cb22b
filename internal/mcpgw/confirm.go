package mcpgw

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster/status"
)

// Confirmation (--confirm) asks the person at the client through MCP
// elicitation. The tool returns an input request (the SDK sends it as an
// elicitation/create request to clients of protocol versions before
// 2026-07-28, and as an input-required result to newer ones, which retry the
// call with the answer). The retry must carry the request state the gateway
// issued for this tool and these exact arguments, once: a client cannot
// skip the question by sending an "accept" it was never asked for, nor
// reuse one answer for other arguments.

const (
	confirmTTL        = 10 * time.Minute // how long a question stays answerable
	maxPendingConfirm = 4096             // questions outstanding at once
	confirmInputID    = "confirm"
	maxShownArguments = 2000 // bytes of arguments shown in the question
)

type pendingConfirm struct {
	digest  [32]byte // of tool name and arguments
	expires time.Time
}

// confirmer remembers the questions asked and not yet answered.
type confirmer struct {
	mu      sync.Mutex
	pending map[string]pendingConfirm // by request state
}

func newConfirmer() *confirmer {
	return &confirmer{pending: map[string]pendingConfirm{}}
}

func confirmDigest(tool string, args []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(tool))
	h.Write([]byte{0})
	h.Write(args)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// issue records a question about tool with args and returns its state.
func (c *confirmer) issue(tool string, args []byte, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.pending) >= maxPendingConfirm {
		for k, p := range c.pending {
			if now.After(p.expires) {
				delete(c.pending, k)
			}
		}
		if len(c.pending) >= maxPendingConfirm {
			return "", false
		}
	}
	var nonce [18]byte
	rand.Read(nonce[:])
	state := base64.RawURLEncoding.EncodeToString(nonce[:])
	c.pending[state] = pendingConfirm{digest: confirmDigest(tool, args), expires: now.Add(confirmTTL)}
	return state, true
}

// redeem checks that state was issued for tool with args, unexpired, and
// forgets it (an answer counts once).
func (c *confirmer) redeem(state, tool string, args []byte, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[state]
	if !ok {
		return false
	}
	delete(c.pending, state)
	return now.Before(p.expires) && p.digest == confirmDigest(tool, args)
}

// clientElicits reports whether the client of ss said it supports
// elicitation.
func clientElicits(ss *mcp.ServerSession) bool {
	if ss == nil {
		return false
	}
	ip := ss.InitializeParams()
	return ip != nil && ip.Capabilities != nil && ip.Capabilities.Elicitation != nil
}

// confirm asks for, or checks, the confirmation of a call of t with args.
// It returns nil when the call may go ahead, else the result to return: the
// question, or a refusal.
func (g *Gateway) confirm(req *mcp.CallToolRequest, t *tool, args json.RawMessage) *mcp.CallToolResult {
	p := req.Params
	if p.RequestState != "" || p.InputResponses != nil {
		if !g.confirms.redeem(p.RequestState, t.Name, args, time.Now()) {
			return statusResult(status.Errorf(status.PermissionDenied, "%s needs a person's confirmation: the answer does not belong to a question this gateway asked for these arguments (or it expired); call the tool again", t.Name))
		}
		r, ok := p.InputResponses[confirmInputID].(*mcp.ElicitResult)
		if !ok {
			return statusResult(status.Errorf(status.PermissionDenied, "%s needs a person's confirmation, and the client returned no answer", t.Name))
		}
		if r.Action != "accept" {
			return statusResult(status.Errorf(status.PermissionDenied, "%s was not confirmed (the person chose %q); not called", t.Name, r.Action))
		}
		return nil
	}
	if !clientElicits(req.Session) {
		return statusResult(status.Errorf(status.PermissionDenied,
			"%s needs a person's confirmation (aster mcp --confirm), and this MCP client does not support elicitation, so it cannot ask; refused", t.Name))
	}
	state, ok := g.confirms.issue(t.Name, args, time.Now())
	if !ok {
		return statusResult(status.Errorf(status.ResourceExhausted, "%s needs a person's confirmation, and %d questions are already waiting for an answer", t.Name, maxPendingConfirm))
	}
	shown := string(args)
	if len(shown) > maxShownArguments {
		cut := maxShownArguments
		for cut > 0 && !utf8.RuneStart(shown[cut]) {
			cut--
		}
		shown = shown[:cut] + fmt.Sprintf("… (%d bytes)", len(args))
	}
	if shown == "" {
		shown = "{}"
	}
	return &mcp.CallToolResult{
		InputRequests: mcp.InputRequestMap{confirmInputID: &mcp.ElicitParams{
			Mode:            "form",
			Message:         fmt.Sprintf("An assistant wants to call %s with arguments %s. Allow it?", t.Method, shown),
			RequestedSchema: json.RawMessage(`{"type":"object","properties":{}}`),
		}},
		RequestState: state,
	}
}
