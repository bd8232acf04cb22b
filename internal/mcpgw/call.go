package mcpgw

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/status"
)

// handle returns the MCP handler of tool t.
func (g *Gateway) handle(t *tool) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (res *mcp.CallToolResult, err error) {
		defer func() {
			// A bug here must not take the gateway (and the assistant's
			// other tools) down with it.
			if r := recover(); r != nil {
				g.opts.Logger.Error("mcp: tool handler panicked", "tool", t.Name, "panic", r, "stack", string(debug.Stack()))
				res, err = statusResult(status.Errorf(status.Internal, "gateway error in %s", t.Name)), nil
			}
		}()
		return g.call(ctx, req, t), nil
	}
}

// call runs one tool call and returns its result; failures are tool errors.
func (g *Gateway) call(ctx context.Context, req *mcp.CallToolRequest, t *tool) *mcp.CallToolResult {
	// The tool was registered only if the policy allows it; check again, so
	// that no path around the registry reaches a method the policy hides.
	if g.tools[t.Name] != t || g.opts.exclusion(t.Method, t.m) != "" {
		return statusResult(status.Errorf(status.PermissionDenied, "%s is not offered by this gateway", t.Name))
	}
	raw := req.Params.Arguments
	if len(raw) > g.opts.MaxArgumentBytes {
		return statusResult(status.Errorf(status.ResourceExhausted, "arguments are %d bytes, over the gateway's limit of %d", len(raw), g.opts.MaxArgumentBytes))
	}
	requests, res := g.requests(t, raw)
	if res != nil {
		return res
	}
	if t.Confirm {
		if res := g.confirm(req, t, raw); res != nil {
			return res
		}
	}

	var cc aster.Caller = g.conn
	if t.session {
		sess, ok := g.asterSession(req.Session)
		if !ok {
			return statusResult(status.New(status.Unavailable, "the gateway is shutting down"))
		}
		cc = sess
	}
	if g.opts.CallTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.opts.CallTimeout)
		defer cancel()
	}
	dc, err := aster.CallDynamic(ctx, cc, g.ct, t.svc.Name+"."+t.m.Name, aster.Version(t.svc.Version))
	if err != nil {
		return g.callError(t, err, nil)
	}
	defer dc.Close()

	// Requests: all of them were checked against the type above, so a send
	// fails only when the call has ended (Recv says how).
	if t.pattern.ClientStreams() {
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			for _, r := range requests {
				if dc.SendValue(r) != nil {
					return
				}
			}
			dc.CloseSend()
		}()
		defer func() { dc.Close(); <-sent }() // Close unblocks a Send
	} else {
		if err := dc.SendValue(requests[0]); err != nil && err != io.EOF {
			return g.callError(t, err, nil)
		}
		dc.CloseSend()
	}

	if !t.pattern.ServerStreams() {
		var resp any
		for n := 0; ; n++ {
			v, err := dc.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				return g.callError(t, err, nil)
			}
			if n > 0 {
				return statusResult(status.Errorf(status.Internal, "%s returned more than one response", t.Method))
			}
			resp = v
		}
		if resp == nil {
			return statusResult(status.Errorf(status.Internal, "%s ended without a response", t.Method))
		}
		return structuredResult(resp)
	}
	return g.collect(ctx, req, t, dc)
}

// requests decodes and checks a call's arguments: the request, or the
// requests of a client-stream or bidi call. A value that does not fit is a
// tool error naming the field.
func (g *Gateway) requests(t *tool, raw json.RawMessage) ([]any, *mcp.CallToolResult) {
	var args any = map[string]any{}
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&args); err != nil {
			return nil, statusResult(status.Errorf(status.InvalidArgument, "arguments are not JSON: %v", err))
		}
		if args == nil {
			args = map[string]any{}
		}
	}
	obj, ok := args.(map[string]any)
	if !ok {
		return nil, statusResult(status.New(status.InvalidArgument, "arguments must be a JSON object"))
	}
	var list []any
	prefix := ""
	if t.pattern.ClientStreams() {
		for k := range obj {
			if k != "requests" {
				return nil, statusResult(status.Errorf(status.InvalidArgument, "field %q: unknown field (the arguments are {\"requests\": [...]})", k))
			}
		}
		switch v := obj["requests"].(type) {
		case []any:
			list = v
		case nil:
			return nil, statusResult(status.New(status.InvalidArgument, `field "requests": missing (want an array of `+t.m.Request+` requests)`))
		default:
			return nil, statusResult(status.Errorf(status.InvalidArgument, `field "requests": want an array of %s requests`, t.m.Request))
		}
		if len(list) > g.opts.MaxRequests {
			return nil, statusResult(status.Errorf(status.ResourceExhausted, `field "requests": %d requests, over the gateway's limit of %d`, len(list), g.opts.MaxRequests))
		}
		prefix = "requests"
	} else {
		list = []any{obj}
	}
	for i, v := range list {
		if _, err := contract.FromJSONValue(g.ct, t.m.Request, v); err != nil {
			var je *contract.JSONError
			if !errors.As(err, &je) {
				return nil, statusResult(status.Errorf(status.InvalidArgument, "%v", err))
			}
			path := je.Path
			if prefix != "" {
				path = fmt.Sprintf("%s[%d]", prefix, i)
				if je.Path != "" {
					path += "." + je.Path
				}
			}
			if path == "" {
				return nil, statusResult(status.Errorf(status.InvalidArgument, "arguments do not fit %s: %s", t.m.Request, je.Msg))
			}
			return nil, statusResult(status.Errorf(status.InvalidArgument, "arguments do not fit %s: field %q: %s", t.m.Request, path, je.Msg))
		}
	}
	return list, nil
}

// collect gathers the responses of a server-stream or bidi call until it
// ends, or MaxItems, MaxResultBytes or StreamTimeout cut it, notifying
// progress per response.
func (g *Gateway) collect(ctx context.Context, req *mcp.CallToolRequest, t *tool, dc *aster.DynamicCall) *mcp.CallToolResult {
	var timedOut atomic.Bool
	timer := time.AfterFunc(g.opts.StreamTimeout, func() {
		timedOut.Store(true)
		dc.Close() // Recv returns at once
	})
	defer timer.Stop()
	token := req.Params.GetProgressToken()
	items := []any{}
	size := 0
	truncated := false
	for {
		v, err := dc.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			if timedOut.Load() && ctx.Err() == nil {
				truncated = true
				break
			}
			return g.callError(t, err, items)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return statusResult(status.Errorf(status.Internal, "response %d: %v", len(items)+1, err))
		}
		if size+len(b) > g.opts.MaxResultBytes {
			truncated = true
			break
		}
		size += len(b)
		items = append(items, v)
		if token != nil && req.Session != nil {
			req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
				ProgressToken: token,
				Progress:      float64(len(items)),
				Total:         float64(g.opts.MaxItems),
				Message:       fmt.Sprintf("%s: %d of at most %d responses", t.Method, len(items), g.opts.MaxItems),
			})
		}
		if len(items) >= g.opts.MaxItems {
			truncated = true
			break
		}
	}
	return structuredResult(map[string]any{"items": items, "truncated": truncated})
}

// callError turns a call's error into a tool error. A PERMISSION_DENIED
// names the capability the contract says the method requires; items are
// the responses received before a stream failed.
func (g *Gateway) callError(t *tool, err error, items []any) *mcp.CallToolResult {
	st := status.FromError(err)
	if st.Code() == status.PermissionDenied {
		if r := requiresString(t.m.Requires); r != "" {
			st = status.New(st.Code(), st.Message()+" ("+t.Method+" requires "+r+")")
		}
	}
	res := statusResult(st)
	if len(items) > 0 {
		b, _ := json.Marshal(items)
		res.Content = append(res.Content, &mcp.TextContent{Text: fmt.Sprintf("%d responses arrived before the error: %s", len(items), b)})
	}
	return res
}

// statusResult is the tool error for an aster status: "CODE: message", and
// the status in _meta["aster/status"]. (No structured content: clients
// check it against the output schema, which describes success.)
func statusResult(err error) *mcp.CallToolResult {
	st := status.FromError(err)
	return &mcp.CallToolResult{
		IsError: true,
		Content: []mcp.Content{&mcp.TextContent{Text: st.Code().String() + ": " + st.Message()}},
		Meta: mcp.Meta{"aster/status": map[string]any{
			"code":     st.Code().String(),
			"code_num": int(st.Code()),
			"message":  st.Message(),
		}},
	}
}

// structuredResult is a successful result: v as structured content, and as
// JSON text for clients that read only text.
func structuredResult(v any) *mcp.CallToolResult {
	b, err := json.Marshal(v)
	if err != nil {
		return statusResult(status.Errorf(status.Internal, "response: %v", err))
	}
	return &mcp.CallToolResult{
		Content:           []mcp.Content{&mcp.TextContent{Text: string(b)}},
		StructuredContent: json.RawMessage(b),
	}
}
