package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/internal/mcpgw"
)

func init() { addCommand(newMCPCmd) }

// mcpFlags are the flags of "aster mcp".
type mcpFlags struct {
	connectFlags
	http          string
	tokenFile     string
	allow         []string
	deny          []string
	confirm       []string
	readOnly      bool
	maxItems      int
	streamTimeout time.Duration
	timeout       time.Duration
	idleTimeout   time.Duration
	list          bool
}

func newMCPCmd() *cobra.Command {
	var f mcpFlags
	cmd := &cobra.Command{
		Use:   "mcp [addr|target]",
		Short: "Serve a server's methods as tools for AI assistants (Model Context Protocol)",
		Long: `mcp connects to the server at <addr> (an aster1... address, or a service
target such as etcd:///fleet/MissionControl; default: ASTER_ENDPOINT_ADDR),
fetches its contract and serves its methods as MCP tools, one per method,
named Service.method: on stdin/stdout (the stdio transport an assistant
starts it with) or, with --http, as Streamable HTTP at http://ADDR/mcp.

Each tool's input schema is generated from the method's request type; a
unary or client-stream tool returns the response, a server-stream or bidi
tool the responses collected until the stream ends, --max-items arrived or
--stream-timeout passed ({"items":[...],"truncated":bool}), with progress
notifications as they arrive. Client-stream and bidi tools take
{"requests":[...]}. Session-scoped services run in one aster session per MCP
session; the tool _aster.endSession ends it. The contract is the resource
aster://contract.

Policy: --allow and --deny filter methods by glob over Service.method
(path.Match syntax, case-sensitive, repeatable or comma-separated; a --deny
or --confirm glob that matches no method is an error, since a misspelt one
would protect nothing); --read-only keeps only
idempotent methods; with a credential (--rcan, or the configured one) a
method whose required capabilities it lacks is not offered at all. --confirm
makes matching tools ask the person at the client first (MCP elicitation);
with a client that cannot ask, they refuse.

A failed call is a tool error "CODE: message" (the aster status). --list
prints the tools that would be offered, and the methods left out and why,
and exits.`,
		Example: `  aster mcp aster1...
  aster mcp --read-only --rcan ops.cred aster1...
  aster mcp --deny 'AgentSession.*' --confirm 'MissionControl.submitLog' aster1...
  aster mcp --http 127.0.0.1:8808 etcd:///fleet/MissionControl
  aster mcp --list --rcan edge.cred aster1...`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("mcp takes [addr]; got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			return runMCP(c.Context(), c, &f, args)
		},
	}
	fl := cmd.Flags()
	f.connectFlags.register(cmd)
	fl.StringVar(&f.http, "http", "", "serve Streamable HTTP on this `address` (host:port; path /mcp) instead of stdio")
	fl.StringSliceVar(&f.allow, "allow", nil, "offer only methods matching this `glob` over Service.method (repeatable)")
	fl.StringSliceVar(&f.deny, "deny", nil, "do not offer methods matching this `glob` (repeatable)")
	fl.StringSliceVar(&f.confirm, "confirm", nil, "tools matching this `glob` need a person's confirmation through the client (repeatable)")
	fl.BoolVar(&f.readOnly, "read-only", false, "offer only idempotent methods")
	fl.IntVar(&f.maxItems, "max-items", mcpgw.DefaultMaxItems, "stream tools return at most this many responses")
	fl.DurationVar(&f.streamTimeout, "stream-timeout", mcpgw.DefaultStreamTimeout, "stream tools collect responses for at most this long")
	fl.DurationVar(&f.timeout, "timeout", mcpgw.DefaultCallTimeout, "deadline of each call, sent to the server (0: none)")
	fl.StringVar(&f.tokenFile, "http-token-file", "", "with --http, require \"Authorization: Bearer <token>\" with the token in this `file` (needed to bind beyond loopback)")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", 30*time.Minute, "with --http, end MCP sessions idle this long (0: never)")
	fl.BoolVar(&f.list, "list", false, "print the tools that would be offered and the methods left out, then exit")
	return exitsOnSIGTERM(cmd)
}

// runMCP implements "aster mcp".
func runMCP(ctx context.Context, c *cobra.Command, f *mcpFlags, args []string) error {
	switch {
	case f.maxItems < 1:
		return usageErrorf("--max-items must be at least 1, got %d", f.maxItems)
	case f.streamTimeout <= 0:
		return usageErrorf("--stream-timeout must be positive, got %v", f.streamTimeout)
	case f.timeout < 0 || f.connectTimeout < 0 || f.idleTimeout < 0:
		return usageErrorf("timeouts must not be negative")
	case f.tokenFile != "" && f.http == "":
		return usageErrorf("--http-token-file needs --http")
	}
	token, err := mcpHTTPToken(f)
	if err != nil {
		return err
	}
	if w := tokenFileWarning(f.tokenFile); w != "" {
		fmt.Fprintln(c.ErrOrStderr(), "aster mcp: warning:", w)
	}
	cfg, err := loadClientConfig(c)
	if err != nil {
		return err
	}
	rawAddr, rest, err := splitTarget(&cfg, args, 0)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return usageErrorf("mcp takes [addr]; got %d more arguments", len(rest))
	}
	opts := mcpgw.Options{
		Allow:         f.allow,
		Deny:          f.deny,
		Confirm:       f.confirm,
		ReadOnly:      f.readOnly,
		MaxItems:      f.maxItems,
		StreamTimeout: f.streamTimeout,
		CallTimeout:   f.timeout,
		Name:          "aster-mcp",
		Version:       versionString(),
		Logger:        slog.New(slog.NewTextHandler(c.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if f.timeout == 0 {
		opts.CallTimeout = -1 // none
	}
	// Check the policy before connecting: a bad glob is a usage error.
	if _, err := mcpgw.New(nil, &contract.Contract{}, opts); err != nil {
		return usageErrorf("%v", strings.TrimPrefix(err.Error(), "mcpgw: "))
	}
	if err := checkTarget(rawAddr); err != nil {
		return err
	}
	setup, err := setupClient(c, &cfg, f.rcan)
	if err != nil {
		return err
	}
	if setup.cred != nil {
		opts.Capabilities = append([]string{}, setup.cred.cred.Capabilities...)
	}

	tg, err := connect(ctx, c, rawAddr, &f.connectFlags, setup)
	if err != nil {
		return err
	}
	defer tg.client.Close()
	gw, err := mcpgw.New(tg.client, tg.ct, opts)
	if err != nil {
		return usageErrorf("%v", err)
	}
	defer gw.Close()
	un := gw.Unmatched()
	if f.list {
		for _, u := range un {
			fmt.Fprintf(c.ErrOrStderr(), "aster mcp: %v\n", u)
		}
		return printMCPTools(c.OutOrStdout(), gw)
	}
	if len(un) > 0 {
		// A misspelt --deny or --confirm would leave the method it was
		// meant for offered, or unconfirmed.
		msgs := make([]string, len(un))
		for i, u := range un {
			msgs[i] = u.Error()
		}
		return usageErrorf("%s; see the methods with --list", strings.Join(msgs, "; "))
	}
	stderr := c.ErrOrStderr()
	who := "without a credential"
	if setup.cred != nil {
		who = "with the credential from " + setup.cred.from
	}
	fmt.Fprintf(stderr, "aster mcp: %d tools for %s (contract %s), %s\n", len(gw.Tools()), tg.client.Label(), shortID(tg.id), who)
	for _, e := range gw.Excluded() {
		fmt.Fprintf(stderr, "aster mcp: not offered: %s (%s)\n", e.Method, e.Reason)
	}
	if f.http != "" {
		return serveMCPHTTP(ctx, c, f, gw, token)
	}
	in := io.NopCloser(c.InOrStdin())
	return gw.ServeStdio(ctx, in, nopWriteCloser{c.OutOrStdout()})
}

// serveMCPHTTP serves the Streamable HTTP transport on f.http until ctx is
// canceled. The first line of stdout is the endpoint's URL.
func serveMCPHTTP(ctx context.Context, c *cobra.Command, f *mcpFlags, gw *mcpgw.Gateway, token []byte) error {
	ln, err := net.Listen("tcp", f.http)
	if err != nil {
		return usageErrorf("--http %s: %w", f.http, err)
	}
	mux := http.NewServeMux()
	var h http.Handler = gw.HTTPHandler(f.idleTimeout)
	if token != nil {
		h = requireBearer(token, h)
	}
	mux.Handle("/mcp", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/mcp"
	fmt.Fprintln(c.OutOrStdout(), url)
	fmt.Fprintf(c.ErrOrStderr(), "aster mcp: serving Streamable HTTP at %s\n", url)
	select {
	case err := <-served:
		return connectError(fmt.Errorf("serving HTTP: %w", err))
	case <-ctx.Done():
	}
	gw.Close() // ends the MCP sessions, so that Shutdown's wait ends
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// mcpMinTokenLen is the shortest --http-token-file token accepted.
const mcpMinTokenLen = 16

// mcpHTTPToken reads --http-token-file, and refuses --http on an address
// beyond loopback without one: whoever reaches the endpoint calls the
// services with the gateway's credential.
func mcpHTTPToken(f *mcpFlags) ([]byte, error) {
	if f.http == "" {
		return nil, nil
	}
	if f.tokenFile == "" {
		host, _, err := net.SplitHostPort(f.http)
		if err != nil {
			return nil, usageErrorf("--http %s: %v", f.http, err)
		}
		if ip, perr := netip.ParseAddr(host); host != "localhost" && (perr != nil || !ip.IsLoopback()) {
			return nil, usageErrorf("--http %s would serve every host that reaches it with this gateway's credential: bind to loopback (127.0.0.1:PORT) or set --http-token-file", f.http)
		}
		return nil, nil
	}
	b, err := os.ReadFile(f.tokenFile)
	if err != nil {
		return nil, usageErrorf("--http-token-file: %v", err)
	}
	tok := bytes.TrimSpace(b)
	if len(tok) < mcpMinTokenLen || bytes.ContainsAny(tok, " \t\r\n") {
		return nil, usageErrorf("--http-token-file %s: the token must be one line of at least %d characters without spaces", f.tokenFile, mcpMinTokenLen)
	}
	return tok, nil
}

// tokenFileWarning returns a warning when the --http-token-file file can
// be read by group or others (whoever reads the token acts with the
// gateway's credential), else "".
func tokenFileWarning(path string) string {
	if path == "" {
		return ""
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("--http-token-file %s is readable by others (mode %#o): whoever reads it calls the services with this gateway's credential; run: chmod 600 %s", path, st.Mode().Perm(), path)
}

// requireBearer serves only requests carrying "Authorization: Bearer
// <token>" (compared in constant time); others get 401.
func requireBearer(token []byte, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), token) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="aster mcp"`)
			http.Error(w, "a bearer token is required", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// printMCPTools prints --list.
func printMCPTools(w io.Writer, gw *mcpgw.Gateway) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, t := range gw.Tools() {
		switch {
		case t.Method == "":
			fmt.Fprintf(tw, "%s\t\tends the session of the session-scoped services\n", t.Name)
		case t.Confirm:
			fmt.Fprintf(tw, "%s\t%s\tconfirm\n", t.Name, t.Pattern)
		default:
			fmt.Fprintf(tw, "%s\t%s\t\n", t.Name, t.Pattern)
		}
	}
	for _, e := range gw.Excluded() {
		fmt.Fprintf(tw, "%s\tnot offered\t%s\n", e.Method, e.Reason)
	}
	return tw.Flush()
}

// nopWriteCloser is a writer whose Close does nothing (stdout stays open).
type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
