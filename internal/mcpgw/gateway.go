// Package mcpgw serves the methods of an aster server (or fleet) as tools of
// the Model Context Protocol, so that an AI assistant can call them with no
// glue code: "aster mcp" is a thin command around it.
//
// A Gateway takes the connection and the contract the CLI fetched, and
// offers one tool per method of the highest version of each service, named
// "Service.method" (characters MCP tool names do not allow become "_"). The
// input schema of a tool is generated from the method's request type (see
// InputSchema), its output schema from the response type, and the
// annotations mark idempotent methods read-only and idempotent.
//
// Call patterns map to tools this way:
//
//	unary           arguments = the request; result = the response
//	server stream   arguments = the request; result = {"items": [...],
//	                "truncated": bool}, collected until the stream ends,
//	                Options.MaxItems responses arrived or
//	                Options.StreamTimeout passed, with a progress
//	                notification per response
//	client stream   arguments = {"requests": [...]}; result = the response
//	bidi            arguments = {"requests": [...]}; result as server stream
//
// Methods of session-scoped services run in one aster session per MCP
// session: the first such call starts it, the tool "_aster.endSession" ends
// it (the next call starts a new one), and it ends with the MCP session.
//
// Policy: Options.Allow and Options.Deny filter the methods by glob,
// Options.ReadOnly keeps only idempotent ones, and with Options.Capabilities
// set (the credential's capabilities) a method whose required capabilities
// the credential lacks is not offered at all. A method that is not offered
// has no tool: calling it by name is refused as an unknown tool.
// Options.Confirm names tools that run only after a person confirms through
// the client (MCP elicitation); a client without elicitation gets a tool
// error saying so.
//
// Errors: an aster status is a tool error result (isError) whose text is
// "CODE: message" and whose _meta["aster/status"] holds code, code_num and
// message; arguments that do not fit the request type are a tool error
// naming the field (INVALID_ARGUMENT). Everything the gateway buffers is
// bounded: arguments (Options.MaxArgumentBytes), requests per call
// (Options.MaxRequests), collected responses (Options.MaxItems and
// Options.MaxResultBytes).
//
// The contract itself is the resource "aster://contract" (its JSON manifest:
// contract_id and contract).
package mcpgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
)

// Conn is what the gateway needs of a connection: calls, and sessions for
// session-scoped services. *aster.Client and *aster.Fleet implement it.
type Conn interface {
	aster.Caller
	NewSession() *aster.Session
}

// Defaults of Options.
const (
	DefaultMaxItems         = 100
	DefaultStreamTimeout    = 10 * time.Second
	DefaultCallTimeout      = 60 * time.Second
	DefaultMaxArgumentBytes = 4 << 20
	DefaultMaxRequests      = 10000
	DefaultMaxResultBytes   = 4 << 20
	DefaultMaxHTTPSessions  = 1000
)

// Hard limits on Options.
const (
	maxMaxItems = 100000
)

// EndSessionTool is the name of the tool that ends the MCP session's aster
// session (offered when a session-scoped method is). Names starting with
// "_" are reserved in aster, so no method's tool can take it.
const EndSessionTool = "_aster.endSession"

// ContractURI is the URI of the contract resource.
const ContractURI = "aster://contract"

// Options configure a Gateway. The zero value offers every method, with
// the defaults below.
type Options struct {
	// Allow, if not empty, offers only the methods ("Service.method")
	// matching one of these globs (path.Match syntax: "MissionControl.*").
	Allow []string
	// Deny hides the methods matching one of these globs (after Allow).
	Deny []string
	// Confirm marks the tools of the methods matching one of these globs as
	// needing a person's confirmation (MCP elicitation) before each call.
	Confirm []string
	// ReadOnly offers only idempotent methods.
	ReadOnly bool
	// Capabilities are the capabilities the presented credential grants.
	// When not nil, a method whose requirement they do not satisfy is not
	// offered. nil (no credential): no method is hidden for capabilities
	// (a server that admits peers without a credential does not check them).
	Capabilities []string

	// MaxItems bounds the responses a server-stream or bidi tool collects
	// (default DefaultMaxItems, 100; at most 100000).
	MaxItems int
	// StreamTimeout bounds how long a server-stream or bidi tool collects
	// responses (default DefaultStreamTimeout, 10s).
	StreamTimeout time.Duration
	// CallTimeout is the deadline of each call, sent to the server (default
	// DefaultCallTimeout, 60s; negative: none).
	CallTimeout time.Duration
	// MaxArgumentBytes bounds the JSON arguments of one tool call (default
	// DefaultMaxArgumentBytes, 4 MiB). It is also the limit on one MCP
	// message read by ServeStdio and ServeHTTP's handler.
	MaxArgumentBytes int
	// MaxRequests bounds the requests of one client-stream or bidi call
	// (default DefaultMaxRequests, 10000).
	MaxRequests int
	// MaxResultBytes bounds the JSON size of the responses a stream tool
	// collects (default DefaultMaxResultBytes, 4 MiB); past it the result is
	// cut (truncated: true).
	MaxResultBytes int
	// MaxHTTPSessions bounds the initialized MCP sessions open at once
	// over HTTPHandler (default DefaultMaxHTTPSessions, 1000); a client
	// starting one more gets 503 Service Unavailable. At most 64 requests
	// without a session run at once, so a burst can exceed the bound by
	// that many.
	MaxHTTPSessions int

	// Name and Version name the gateway to clients (default "aster-mcp"
	// and "dev").
	Name, Version string
	// Logger receives the gateway's warnings (default: discard).
	Logger *slog.Logger
}

func (o *Options) check() error {
	for flag, p := range map[string][]string{"--allow": o.Allow, "--deny": o.Deny, "--confirm": o.Confirm} {
		if err := checkGlobs(flag, p); err != nil {
			return err
		}
	}
	switch {
	case o.MaxItems < 0 || o.MaxItems > maxMaxItems:
		return fmt.Errorf("max items %d: want 1 to %d (0: the default %d)", o.MaxItems, maxMaxItems, DefaultMaxItems)
	case o.StreamTimeout < 0:
		return fmt.Errorf("stream timeout %v: must not be negative", o.StreamTimeout)
	case o.MaxArgumentBytes < 0 || o.MaxRequests < 0 || o.MaxResultBytes < 0 || o.MaxHTTPSessions < 0:
		return errors.New("size limits must not be negative")
	}
	if o.MaxItems == 0 {
		o.MaxItems = DefaultMaxItems
	}
	if o.StreamTimeout == 0 {
		o.StreamTimeout = DefaultStreamTimeout
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.MaxArgumentBytes == 0 {
		o.MaxArgumentBytes = DefaultMaxArgumentBytes
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = DefaultMaxRequests
	}
	if o.MaxResultBytes == 0 {
		o.MaxResultBytes = DefaultMaxResultBytes
	}
	if o.MaxHTTPSessions == 0 {
		o.MaxHTTPSessions = DefaultMaxHTTPSessions
	}
	if o.Name == "" {
		o.Name = "aster-mcp"
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Tool describes one tool the gateway offers.
type Tool struct {
	Name    string // the MCP tool name
	Method  string // "Service.method"; "" for EndSessionTool
	Pattern string // the call pattern (unary, server_stream, ...)
	Confirm bool   // needs confirmation (Options.Confirm)
}

// Excluded is a method the gateway does not offer, and why.
type Excluded struct {
	Method string // "Service.method"
	Reason string // "matched by --deny", "the credential lacks ops.admin", ...
}

// tool is an offered method.
type tool struct {
	Tool
	svc     *contract.Service
	m       *contract.Method
	pattern handler.Pattern
	session bool // of a session-scoped service
}

// Gateway serves the methods of one aster connection as MCP tools.
type Gateway struct {
	conn     Conn
	ct       *contract.Contract
	opts     Options
	server   *mcp.Server
	tools    map[string]*tool // by MCP tool name
	methods  []string         // every method considered, "Service.method"
	list     []Tool
	excluded []Excluded
	manifest []byte
	confirms *confirmer

	mu       sync.Mutex
	sessions map[*mcp.ServerSession]*sessionState
	closed   bool
	watchers sync.WaitGroup
}

// sessionState is what the gateway keeps for one MCP session.
type sessionState struct {
	sess *aster.Session // the aster session; nil until a session-scoped call
}

// New returns a gateway for the methods in ct, called through conn. It
// fails for bad options; methods whose schemas cannot be generated (from a
// malformed or hostile contract) are left out and listed by Excluded.
func New(conn Conn, ct *contract.Contract, opts Options) (*Gateway, error) {
	if err := opts.check(); err != nil {
		return nil, fmt.Errorf("mcpgw: %w", err)
	}
	man, err := contract.NewManifest(ct)
	if err != nil {
		return nil, fmt.Errorf("mcpgw: %w", err)
	}
	manJSON, err := man.MarshalIndent()
	if err != nil {
		return nil, fmt.Errorf("mcpgw: %w", err)
	}
	g := &Gateway{
		conn:     conn,
		ct:       ct,
		opts:     opts,
		tools:    map[string]*tool{},
		manifest: manJSON,
		confirms: newConfirmer(),
		sessions: map[*mcp.ServerSession]*sessionState{},
	}
	g.server = mcp.NewServer(&mcp.Implementation{Name: opts.Name, Version: opts.Version}, &mcp.ServerOptions{
		Instructions: "Tools call the methods of an aster RPC service; each tool is named Service.method. " +
			"The resource " + ContractURI + " is the service contract (every method and message type).",
		Logger:   opts.Logger,
		HasTools: true,
	})
	hasSession := false
	for i := range ct.Services {
		svc := &ct.Services[i]
		if strings.HasPrefix(svc.Name, "_") || ct.Service(svc.Name, 0) != svc {
			continue // reserved, or not the highest version
		}
		for j := range svc.Methods {
			m := &svc.Methods[j]
			full := svc.Name + "." + m.Name
			g.methods = append(g.methods, full)
			if why := g.opts.exclusion(full, m); why != "" {
				g.excluded = append(g.excluded, Excluded{Method: full, Reason: why})
				continue
			}
			t, err := g.addTool(svc, m, full)
			if err != nil {
				g.excluded = append(g.excluded, Excluded{Method: full, Reason: err.Error()})
				opts.Logger.Warn("mcp: method not offered", "method", full, "error", err)
				continue
			}
			hasSession = hasSession || t.session
		}
	}
	if hasSession {
		g.addEndSession()
	}
	g.server.AddResource(&mcp.Resource{
		URI:         ContractURI,
		Name:        "contract",
		Title:       "aster contract",
		Description: "The server's contract: services, methods, call patterns, message types and required capabilities (JSON manifest with its contract_id).",
		MIMEType:    "application/json",
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: ContractURI, MIMEType: "application/json", Text: string(g.manifest)}}}, nil
	})
	slices.SortFunc(g.list, func(a, b Tool) int { return strings.Compare(a.Name, b.Name) })
	return g, nil
}

// toolName turns "Service.method" into a name MCP accepts: at most 128 of
// [A-Za-z0-9_.-], other characters as "_", and a "~2", "~3"... suffix on
// a collision (never with valid aster names, which use only those
// characters).
func (g *Gateway) toolName(full string) string {
	b := []byte(full)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	name := string(b)
	if len(name) > 120 {
		name = name[:120]
	}
	base := name
	for n := 2; g.tools[name] != nil || name == EndSessionTool; n++ {
		name = fmt.Sprintf("%s-%d", base, n)
	}
	return name
}

// addTool registers the tool of method m.
func (g *Gateway) addTool(svc *contract.Service, m *contract.Method, full string) (*tool, error) {
	p, ok := handler.ParsePattern(m.Pattern)
	if !ok {
		return nil, fmt.Errorf("unknown pattern %q", m.Pattern)
	}
	in, err := InputSchema(g.ct, m, g.opts.MaxRequests)
	if err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	out, err := OutputSchema(g.ct, m)
	if err != nil {
		return nil, fmt.Errorf("output schema: %w", err)
	}
	t := &tool{
		Tool:    Tool{Name: g.toolName(full), Method: full, Pattern: m.Pattern, Confirm: matchAny(g.opts.Confirm, full)},
		svc:     svc,
		m:       m,
		pattern: p,
		session: svc.Scope == handler.ScopeSession.String(),
	}
	g.server.AddTool(&mcp.Tool{
		Name:         t.Name,
		Title:        full,
		Description:  g.describe(t),
		InputSchema:  in,
		OutputSchema: out,
		Annotations: &mcp.ToolAnnotations{
			Title:          full,
			ReadOnlyHint:   m.Idempotent,
			IdempotentHint: m.Idempotent,
		},
	}, g.handle(t))
	g.tools[t.Name] = t
	g.list = append(g.list, t.Tool)
	return t, nil
}

// describe writes a tool's description from the contract (which has no
// documentation of its own): what is called, how, with what.
func (g *Gateway) describe(t *tool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Calls %s (version %d) on the aster service", t.Method, t.svc.Version)
	switch {
	case t.pattern == handler.PatternUnary:
		fmt.Fprintf(&b, ": arguments are one %s request; the result is its %s response.", t.m.Request, t.m.Response)
	case t.pattern == handler.PatternServerStream:
		fmt.Fprintf(&b, ", a server stream: arguments are one %s request; the result is {items: [%s...], truncated} with at most %d items, collected for at most %v (truncated: the stream was cut there).",
			t.m.Request, t.m.Response, g.opts.MaxItems, g.opts.StreamTimeout)
	case t.pattern == handler.PatternClientStream:
		fmt.Fprintf(&b, ", a client stream: arguments are {requests: [%s...]} (at most %d), sent in order; the result is one %s response.", t.m.Request, g.opts.MaxRequests, t.m.Response)
	default:
		fmt.Fprintf(&b, ", a bidirectional stream: arguments are {requests: [%s...]} (at most %d); the result is {items: [%s...], truncated} with at most %d items, collected for at most %v.",
			t.m.Request, g.opts.MaxRequests, t.m.Response, g.opts.MaxItems, g.opts.StreamTimeout)
	}
	if t.m.Idempotent {
		b.WriteString(" Idempotent (safe to retry).")
	}
	if r := requiresString(t.m.Requires); r != "" {
		fmt.Fprintf(&b, " Requires capability %s.", r)
	}
	if t.session {
		fmt.Fprintf(&b, " %s is session-scoped: calls in this MCP session share one instance until %s ends it.", t.svc.Name, EndSessionTool)
	}
	if t.Confirm {
		b.WriteString(" A person must confirm each call.")
	}
	return b.String()
}

// addEndSession registers EndSessionTool.
func (g *Gateway) addEndSession() {
	g.server.AddTool(&mcp.Tool{
		Name:  EndSessionTool,
		Title: "end the aster session",
		Description: "Ends this MCP session's aster session: the session-scoped services' instances (their state, " +
			"e.g. a registration) are released on the server. The next call of a session-scoped method starts a new session.",
		InputSchema: json.RawMessage(`{"type":"object","additionalProperties":false}`),
		Annotations: &mcp.ToolAnnotations{Title: "end the aster session", IdempotentHint: true},
	}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		ended := g.endSession(req.Session)
		msg := "no aster session was open"
		if ended {
			msg = "the aster session ended"
		}
		return &mcp.CallToolResult{
			Content:           []mcp.Content{&mcp.TextContent{Text: msg}},
			StructuredContent: map[string]any{"ended": ended},
		}, nil
	})
	g.list = append(g.list, Tool{Name: EndSessionTool})
}

// Unmatched is a --deny or --confirm glob that matches no method of the
// contract.
type Unmatched struct {
	Flag    string // "--deny" or "--confirm"
	Pattern string
	// Like names a method the glob matches when letters' case is
	// ignored ("" if none): names are case-sensitive, so the glob was
	// likely meant for it.
	Like string
}

// Error describes the glob.
func (u Unmatched) Error() string {
	msg := fmt.Sprintf("%s %q matches no method", u.Flag, u.Pattern)
	if u.Like != "" {
		msg += fmt.Sprintf(" (names are case-sensitive: did you mean %s?)", u.Like)
	}
	return msg
}

// Unmatched returns the Deny and Confirm globs that match no method of the
// contract (the highest version of each service): a misspelt one protects
// nothing, so the method meant stays offered, or runs unconfirmed.
func (g *Gateway) Unmatched() []Unmatched {
	var out []Unmatched
	for _, fp := range []struct {
		flag     string
		patterns []string
	}{{"--deny", g.opts.Deny}, {"--confirm", g.opts.Confirm}} {
		for _, p := range fp.patterns {
			if slices.ContainsFunc(g.methods, func(m string) bool { return matchAny([]string{p}, m) }) {
				continue
			}
			u := Unmatched{Flag: fp.flag, Pattern: p}
			lp := strings.ToLower(p)
			for _, m := range g.methods {
				if matchAny([]string{lp}, strings.ToLower(m)) {
					u.Like = m
					break
				}
			}
			out = append(out, u)
		}
	}
	return out
}

// Tools returns the tools offered, sorted by name.
func (g *Gateway) Tools() []Tool { return slices.Clone(g.list) }

// Excluded returns the methods not offered, and why.
func (g *Gateway) Excluded() []Excluded { return slices.Clone(g.excluded) }

// Server returns the MCP server, to connect to other transports.
func (g *Gateway) Server() *mcp.Server { return g.server }

// ServeStdio serves one MCP session over r and w (newline-delimited JSON-RPC,
// the stdio transport) until the client closes r or ctx is canceled, then
// ends the aster session if one was open.
func (g *Gateway) ServeStdio(ctx context.Context, r io.ReadCloser, w io.WriteCloser) error {
	err := g.server.Run(ctx, &mcp.IOTransport{Reader: r, Writer: w, MaxLineLength: g.opts.MaxArgumentBytes + 64<<10})
	if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("mcpgw: the MCP session on stdio ended: %w", err)
}

// HTTPHandler returns a handler serving the Streamable HTTP transport: each
// MCP session (Mcp-Session-Id) its own, at most Options.MaxHTTPSessions at
// once, idle sessions closed after idleTimeout (0: never). Close the
// gateway to end the sessions.
func (g *Gateway) HTTPHandler(idleTimeout time.Duration) http.Handler {
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return g.server }, &mcp.StreamableHTTPOptions{
		SessionTimeout:      idleTimeout,
		MaxRequestBodyBytes: int64(g.opts.MaxArgumentBytes) + 64<<10,
		Logger:              g.opts.Logger,
	})
	// starting bounds the requests without a session that run at once
	// (each may create one): sessions counted below are the initialized
	// ones, so a burst of initialize requests can exceed MaxHTTPSessions
	// by at most maxStartingHTTP.
	starting := make(chan struct{}, maxStartingHTTP)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Mcp-Session-Id") != "" {
			h.ServeHTTP(w, r)
			return
		}
		// Only initialized sessions count: a request such as
		// server/discover runs in a short-lived session of its own.
		open := 0
		for ss := range g.server.Sessions() {
			if ss.InitializeParams() != nil {
				open++
			}
		}
		if open >= g.opts.MaxHTTPSessions {
			http.Error(w, fmt.Sprintf("aster mcp: %d MCP sessions are open, the most this gateway serves", g.opts.MaxHTTPSessions), http.StatusServiceUnavailable)
			return
		}
		select {
		case starting <- struct{}{}:
		default:
			http.Error(w, "aster mcp: too many MCP sessions starting at once", http.StatusServiceUnavailable)
			return
		}
		defer func() { <-starting }()
		h.ServeHTTP(w, r)
	})
}

// maxStartingHTTP is how many requests without an MCP session
// HTTPHandler serves at once.
const maxStartingHTTP = 64

// Close ends every MCP session the gateway has seen and their aster
// sessions. It does not close the connection.
func (g *Gateway) Close() error {
	g.mu.Lock()
	g.closed = true
	var all []*mcp.ServerSession
	for ss := range g.sessions {
		all = append(all, ss)
	}
	g.mu.Unlock()
	for _, ss := range all {
		ss.Close()
	}
	g.watchers.Wait()
	return nil
}

// state returns the state of MCP session ss, starting to watch it for its
// end the first time.
func (g *Gateway) state(ss *mcp.ServerSession) (*sessionState, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, false
	}
	st := g.sessions[ss]
	if st == nil {
		st = &sessionState{}
		g.sessions[ss] = st
		g.watchers.Add(1)
		go func() {
			defer g.watchers.Done()
			ss.Wait()
			g.endSession(ss)
			g.mu.Lock()
			delete(g.sessions, ss)
			g.mu.Unlock()
		}()
	}
	return st, true
}

// asterSession returns the aster session of MCP session ss, starting one.
func (g *Gateway) asterSession(ss *mcp.ServerSession) (*aster.Session, bool) {
	st, ok := g.state(ss)
	if !ok {
		return nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sessions[ss] != st {
		return nil, false // the MCP session ended meanwhile
	}
	if st.sess == nil {
		st.sess = g.conn.NewSession()
	}
	return st.sess, true
}

// endSession ends the aster session of ss, if one is open, and reports
// whether one was.
func (g *Gateway) endSession(ss *mcp.ServerSession) bool {
	g.mu.Lock()
	st := g.sessions[ss]
	var sess *aster.Session
	if st != nil {
		sess, st.sess = st.sess, nil
	}
	g.mu.Unlock()
	if sess == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sess.Close(ctx); err != nil {
		g.opts.Logger.Warn("mcp: ending the aster session", "error", err)
	}
	return true
}
