package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

func init() { addCommand(newCallCmd) }

// callFlags are the flags of "aster call".
type callFlags struct {
	connectFlags
	timeout time.Duration
	max     int
	headers []string
	version uint32
	session string
	trace   bool
	data    string
	verbose bool
	format  string
}

func newCallCmd() *cobra.Command {
	var f callFlags
	cmd := &cobra.Command{
		Use:   "call [addr] <Service.method> [json|-]",
		Short: "Call a method with JSON in and JSON out",
		Long: `call connects to the server at <addr> (an aster1... address; default:
ASTER_ENDPOINT_ADDR), fetches its contract and calls <Service.method>,
converting JSON to the method's wire types and the responses back to JSON.
No generated code is needed.

Requests:
  unary, server stream   the JSON argument or -d; "-" or -d @- reads one
                         document from stdin; absent: a document piped on
                         stdin, or {} (all fields zero) when stdin is a
                         terminal, /dev/null or empty
  client stream, bidi    the JSON values in the argument or -d (NDJSON, or
                         one JSON array of requests); absent, "-" or -d @-:
                         NDJSON on stdin (one request per line)
  -d @file               reads the requests from file (streamed, not loaded
                         whole, for client-stream and bidi methods)

Responses are printed as they arrive: --format ndjson (one JSON object per
line; the default when stdout is not a terminal), json (each response
indented) or pretty (indented and coloured; the default on a terminal).
A server stream or bidi call runs until the server ends it, --max responses
arrived, --timeout passes (DEADLINE_EXCEEDED), SIGINT (a clean cancel, exit
0) or SIGTERM (a clean cancel, exit 143).

-v prints on stderr what was sent and received besides the messages: the
request metadata ("> key: value"), the response header metadata ("< header
key: value", with the first response), the trailer metadata ("< trailer
key: value") and the status ("< status OK (1.2ms)"), when the call ends.

Sessions: with --session <Service> the arguments are just [addr], and stdin
holds the calls of one session, one per line:
  {"method":"register","args":{"agent_id":"edge-7"}}
  {"method":"runCommand","args":[{"command":"uptime"},{"command":"df -h"}]}
"args" is one request object, or for client-stream and bidi methods an array
of requests. All calls share the session's instance; the session ends when
stdin does. A session-scoped method called without --session runs in a
session of its own.

` + exitCodeTable,
		Example: `  aster call aster1... MissionControl.getStatus '{"agent_id":"edge-node-7"}'
  aster call -v -H x-request-id=42 aster1... MissionControl.getStatus -d @request.json
  aster call --max 5 aster1... MissionControl.tailLogs '{"level":"info"}'
  printf '{"name":"cpu","value":0.5}\n' | aster call aster1... MissionControl.ingestMetrics
  aster call aster1... MissionControl.ingestMetrics '[{"name":"cpu","value":1},{"name":"cpu","value":2}]'
  aster call --session AgentSession aster1... < calls.ndjson`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCall(cmd.Context(), cmd, &f, args)
		},
		ValidArgsFunction: completeCallArgs,
	}
	fl := cmd.Flags()
	f.connectFlags.register(cmd)
	fl.DurationVar(&f.timeout, "timeout", 0, "deadline of each call, sent to the server (0: none)")
	fl.IntVar(&f.max, "max", 0, "stop a server stream or bidi call after this many responses, with exit 0 (0: no limit)")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "request metadata `key=value` (repeatable)")
	fl.Uint32Var(&f.version, "service-version", 0, "service version to call (0: the highest the server has)")
	fl.StringVar(&f.session, "session", "", "run the NDJSON calls on stdin in one session of this session-scoped `service`")
	fl.StringVarP(&f.data, "data", "d", "", "the request(s): JSON, @file to read a file, @- to read stdin (instead of the json argument)")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "print request and response metadata, trailers and the status on stderr")
	fl.StringVar(&f.format, "format", "", "output `format`: ndjson, json (indented) or pretty (indented, coloured); default pretty on a terminal, else ndjson")
	addTraceFlag(cmd, &f.trace)
	cmd.RegisterFlagCompletionFunc("session", completeSessionServices)
	return exitsOnSIGTERM(cmd)
}

// runCall implements "aster call".
func runCall(ctx context.Context, cmd *cobra.Command, f *callFlags, args []string) error {
	if f.max < 0 {
		return usageErrorf("--max must be >= 0, got %d", f.max)
	}
	if f.timeout < 0 || f.connectTimeout < 0 {
		return usageErrorf("timeouts must not be negative")
	}
	out, err := newPrinter(cmd.OutOrStdout(), f.format)
	if err != nil {
		return err
	}
	cfg, err := loadClientConfig(cmd)
	if err != nil {
		return err
	}
	need := 1 // arguments besides the target
	if f.session != "" {
		need = 0
	}
	rawAddr, args, err := splitTarget(&cfg, args, need)
	if err != nil {
		return err
	}
	if f.session != "" {
		if len(args) != 0 {
			return usageErrorf("with --session, call takes only [addr] (the calls come from stdin); got %d more arguments", len(args))
		}
		if f.data != "" {
			return usageErrorf("with --session the calls come from stdin; -d is not used")
		}
	} else if len(args) < 1 || len(args) > 2 {
		return usageErrorf("call takes [addr] <Service.method> [json|-]; got %d arguments after the address (see 'aster call --help')", len(args))
	}
	opts := []aster.CallOption{aster.Version(f.version)}
	reqMD := handler.Metadata{}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return usageErrorf("--header %q: want key=value", h)
		}
		opts = append(opts, aster.WithHeader(k, v))
		reqMD[k] = v
	}
	src := requestSource{kind: srcNone}
	if f.session == "" {
		if i := strings.LastIndexByte(args[0], '.'); i <= 0 || i == len(args[0])-1 {
			return usageErrorf("method %q: want Service.method", args[0])
		}
		if src, err = callSource(cmd, f, args[1:]); err != nil {
			return err
		}
		if src.file != nil {
			defer src.file.Close()
		}
	}
	setup, err := setupClient(cmd, &cfg, f.rcan)
	if err != nil {
		return err
	}
	ctx, traceOpts, endTrace, err := startTrace(ctx, f.trace, "aster call", cmd.ErrOrStderr())
	if err != nil {
		return configError(err)
	}
	defer endTrace()

	start := time.Now()
	tg, err := connect(ctx, cmd, rawAddr, &f.connectFlags, setup, traceOpts...)
	if err != nil {
		return err
	}
	defer tg.client.Close()
	client, ct := tg.client, tg.ct

	c := &caller{
		ctx:   ctx,
		flags: f,
		opts:  opts,
		ct:    ct,
		in:    cmd.InOrStdin(),
		out:   out,
	}
	if f.verbose {
		c.verbose = cmd.ErrOrStderr()
		c.reqMD = reqMD
		fmt.Fprintf(c.verbose, "* connected to %s in %s (contract %s, %d services)\n", tg.client.Label(), elapsed(time.Since(start)), shortID(tg.id), len(ct.Services))
		defer func() { fmt.Fprintf(c.verbose, "* path: %s\n", connPath(tg.client)) }()
	}
	if f.session != "" {
		return c.runSession(client)
	}
	method := args[0]
	// A session-scoped method called on its own runs in a session of its
	// own, ended after the call.
	i := strings.LastIndexByte(method, '.')
	if svc := ct.Service(method[:i], f.version); svc != nil && svc.Scope == "session" {
		sess := client.NewSession()
		defer c.endSession(sess)
		return c.call(sess, method, src)
	}
	return c.call(client, method, src)
}

// endSession ends sess on the server, briefly even after SIGINT.
func (c *caller) endSession(sess *aster.Session) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 2*time.Second)
	defer cancel()
	sess.Close(ctx)
}

// caller runs the calls of one "aster call" invocation.
type caller struct {
	ctx     context.Context // canceled by SIGINT and SIGTERM
	flags   *callFlags
	opts    []aster.CallOption
	ct      *contract.Contract
	in      io.Reader
	out     printer
	verbose io.Writer        // -v: where metadata and status go; nil: off
	reqMD   handler.Metadata // -v: the request metadata sent

	headerShown bool // -v: the current call's header was printed
}

// requestSource says where a call's requests come from.
type requestSource struct {
	kind   sourceKind
	arg    string   // srcArg: the JSON argument
	values []any    // srcValues: requests decoded already (session mode)
	file   *os.File // srcFile: -d @file
}

type sourceKind int

const (
	srcNone   sourceKind = iota // no argument: piped stdin or {} for one request, NDJSON stdin for a stream
	srcArg                      // the JSON argument
	srcStdin                    // "-": stdin
	srcValues                   // values
	srcFile                     // -d @file
)

// callSource decides where the requests come from: the JSON argument (or
// "-") in rest, or -d.
func callSource(cmd *cobra.Command, f *callFlags, rest []string) (requestSource, error) {
	if f.data != "" && len(rest) > 0 {
		return requestSource{}, usageErrorf("give the request either as an argument or with -d, not both")
	}
	arg := f.data
	if len(rest) == 1 {
		if rest[0] == "-" {
			return requestSource{kind: srcStdin}, nil
		}
		arg = rest[0]
	}
	switch {
	case arg == "":
		return requestSource{kind: srcNone}, nil
	case arg == "@-":
		return requestSource{kind: srcStdin}, nil
	case strings.HasPrefix(arg, "@"): // no JSON document starts with "@"
		name := arg[1:]
		fh, err := os.Open(name)
		if err != nil {
			return requestSource{}, usageErrorf("@%s: %w", name, errors.Unwrap(err))
		}
		if st, err := fh.Stat(); err != nil || !st.Mode().IsRegular() && st.Mode()&os.ModeNamedPipe == 0 {
			fh.Close()
			return requestSource{}, usageErrorf("@%s: not a regular file or pipe", name)
		}
		return requestSource{kind: srcFile, file: fh}, nil
	}
	return requestSource{kind: srcArg, arg: arg}, nil
}

// stdinPiped reports whether r is a pipe or a regular file (not a terminal
// or /dev/null), so that a unary call reads its request from it.
func stdinPiped(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return true // a reader given by a test or a wrapper: read it
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice == 0
}

// call makes one call of method on cc and prints its responses; with -v
// also the metadata sent and received and the status.
func (c *caller) call(cc aster.Caller, method string, src requestSource) error {
	if c.verbose == nil {
		return c.callOnce(cc, method, src, c.opts)
	}
	var header, trailer handler.Metadata
	opts := append(slices.Clip(c.opts), aster.ResponseHeader(&header), aster.ResponseTrailer(&trailer))
	w := c.verbose
	fmt.Fprintf(w, "> %s\n", method)
	printMetadata(w, "> ", c.reqMD)
	start := time.Now()
	c.headerShown = false
	err := c.callOnce(cc, method, src, opts)
	if !c.headerShown {
		printMetadata(w, "< header ", header)
	}
	printMetadata(w, "< trailer ", trailer)
	var ce *cliError
	switch {
	case err == nil:
		fmt.Fprintf(w, "< status OK (%s)\n", elapsed(time.Since(start)))
	case errors.As(err, &ce) && ce.exit != ExitUsage:
		fmt.Fprintf(w, "< status %s (%s)\n", ce.Error(), elapsed(time.Since(start)))
	}
	return err
}

// printMetadata prints md sorted by key, one "prefix key: value" a line.
func printMetadata(w io.Writer, prefix string, md handler.Metadata) {
	for _, k := range slices.Sorted(maps.Keys(md)) {
		fmt.Fprintf(w, "%s%s: %s\n", prefix, sanitize(k), sanitize(md[k]))
	}
}

// callOnce is call without -v.
func (c *caller) callOnce(cc aster.Caller, method string, src requestSource, opts []aster.CallOption) error {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	if c.flags.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.flags.timeout)
		defer cancel()
	}
	dc, err := aster.CallDynamic(ctx, cc, c.ct, method, opts...)
	if err != nil {
		return c.callErr(err, serverStreams(c.ct, method, c.flags.version))
	}
	defer dc.Close()
	p, _ := handler.ParsePattern(dc.Method().Pattern)

	// Requests: one for unary and server-stream methods, sent before reading;
	// a stream for the others, sent by a goroutine while responses arrive.
	sendErr := make(chan error, 1)
	if p.ClientStreams() {
		next := c.requests(src)
		go func() {
			err := c.sendAll(dc, next)
			sendErr <- err
			if err != nil {
				cancel() // a bad request aborts the call
			}
		}()
	} else {
		if err := c.sendOne(dc, src); err != nil {
			return err
		}
		sendErr <- nil
	}

	n := 0
	for {
		v, err := dc.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			// A bad request (usage error) is the cause, not the cancel it caused.
			select {
			case se := <-sendErr:
				if se != nil {
					return se
				}
			default:
			}
			return c.callErr(deniedWithRequirement(dc.Method(), err), p.ServerStreams())
		}
		if n == 0 && c.verbose != nil {
			// The header came before the first response: show it now,
			// not only when a long stream ends.
			printMetadata(c.verbose, "< header ", dc.Header())
			c.headerShown = true
		}
		if err := c.out.Write(v); err != nil {
			return err
		}
		n++
		if c.flags.max > 0 && n >= c.flags.max && p.ServerStreams() {
			return nil // the deferred Close cancels the rest
		}
	}
	// The call ended with OK; the request goroutine has finished or is
	// blocked reading input nobody needs any more.
	select {
	case se := <-sendErr:
		return se
	default:
		return nil
	}
}

// callErr maps the error a call ended with. SIGINT during a streamed call
// is a clean stop (nil); otherwise the call's status decides the exit.
func (c *caller) callErr(err error, streamed bool) error {
	if c.ctx.Err() != nil {
		if streamed {
			return nil
		}
		return callError(status.New(status.Canceled, "interrupted"))
	}
	return callError(err)
}

// serverStreams reports whether method (Service.method) answers with a
// stream, by the contract.
func serverStreams(ct *contract.Contract, method string, version uint32) bool {
	i := strings.LastIndexByte(method, '.')
	if i < 0 {
		return false
	}
	svc := ct.Service(method[:i], version)
	if svc == nil {
		return false
	}
	m := svc.Method(method[i+1:])
	if m == nil {
		return false
	}
	p, _ := handler.ParsePattern(m.Pattern)
	return p.ServerStreams()
}

// deniedWithRequirement adds to a PERMISSION_DENIED error the capability
// the contract says m requires (the server tells the caller only that it
// was denied), as "(getStatus requires ops.status)". Other errors pass
// through.
func deniedWithRequirement(m *contract.Method, err error) error {
	st := status.FromError(err)
	if m == nil || st.Code() != status.PermissionDenied {
		return err
	}
	r := requiresString(m.Requires)
	if r == "" {
		return err
	}
	return status.New(st.Code(), st.Message()+" ("+m.Name+" requires "+r+")")
}

// sendOne sends the single request of a unary or server-streaming call.
func (c *caller) sendOne(dc *aster.DynamicCall, src requestSource) error {
	var err error
	switch src.kind {
	case srcValues:
		if len(src.values) > 1 {
			return usageErrorf("%s takes one request, got %d", dc.Method().Name, len(src.values))
		}
		var v any = map[string]any{}
		if len(src.values) == 1 {
			v = src.values[0]
		}
		err = dc.SendValue(v)
	case srcArg:
		err = dc.SendJSON([]byte(src.arg))
	case srcStdin, srcFile, srcNone:
		r, name := c.in, "stdin"
		if src.kind == srcFile {
			r, name = src.file, src.file.Name()
			if st, serr := src.file.Stat(); serr == nil && st.Mode().IsRegular() && st.Size() > maxStdinDoc {
				return usageErrorf("request in %s is %d bytes, over the %d-byte limit for one JSON request", name, st.Size(), maxStdinDoc)
			}
		}
		var b []byte
		if src.kind != srcNone || stdinPiped(c.in) {
			var rerr error
			b, rerr = io.ReadAll(io.LimitReader(r, maxStdinDoc+1))
			if rerr != nil {
				return fmt.Errorf("reading %s: %w", name, rerr)
			}
			if len(b) > maxStdinDoc {
				return usageErrorf("request on %s is larger than %d bytes", name, maxStdinDoc)
			}
		}
		if len(bytes.TrimSpace(b)) == 0 {
			if src.kind != srcNone {
				return usageErrorf("no request on %s (want one JSON document; {} for all fields zero)", name)
			}
			b = []byte("{}") // nothing piped: all fields zero
		}
		err = dc.SendJSON(b)
	}
	if err != nil && err != io.EOF { // io.EOF: the server ended the call; Recv tells how
		return c.requestErr(dc, 0, err)
	}
	if err := dc.CloseSend(); err != nil && err != io.EOF {
		return callError(err)
	}
	return nil
}

// requestErr reports a failed send: a request that does not fit the type is
// a usage error naming the request (n > 0 counts requests of a stream).
func (c *caller) requestErr(dc *aster.DynamicCall, n int, err error) error {
	if status.CodeOf(err) == status.ResourceExhausted {
		return callError(status.Errorf(status.ResourceExhausted, "%s is too large to send: %s", where(n), status.FromError(err).Message()))
	}
	if !aster.IsJSONError(err) {
		return callError(err)
	}
	var je *contract.JSONError
	errors.As(err, &je)
	return usageErrorf("%s does not fit %s: %w", where(n), dc.Method().Request, je)
}

// where names request n of a stream (n > 0) or the single request.
func where(n int) string {
	if n > 0 {
		return fmt.Sprintf("request %d", n)
	}
	return "request"
}

// maxStdinDoc bounds a single request read from stdin.
const maxStdinDoc = 64 << 20

// requests returns an iterator over the requests of a stream: it returns
// the next request, io.EOF after the last, or a usage error for input that
// is not JSON.
func (c *caller) requests(src requestSource) func() (any, error) {
	switch src.kind {
	case srcValues:
		i := 0
		return func() (any, error) {
			if i == len(src.values) {
				return nil, io.EOF
			}
			i++
			return src.values[i-1], nil
		}
	case srcArg:
		return jsonValues(strings.NewReader(src.arg), "argument")
	case srcFile:
		return jsonValues(src.file, src.file.Name())
	default:
		return jsonValues(c.in, "stdin")
	}
}

// jsonValues decodes a sequence of JSON values (NDJSON, or values separated
// by any white space) from r, as it is read. A JSON array holds requests:
// its elements are sent one by one, as the shell and --session do.
func jsonValues(r io.Reader, name string) func() (any, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	n := 0
	var pending []any // the rest of an array
	return func() (any, error) {
		for len(pending) == 0 {
			var v any
			if err := dec.Decode(&v); err != nil {
				if err == io.EOF {
					return nil, io.EOF
				}
				return nil, usageErrorf("request %d on %s is not JSON: %w", n+1, name, err)
			}
			list, ok := v.([]any)
			if !ok {
				n++
				return v, nil
			}
			pending = list
		}
		v := pending[0]
		pending = pending[1:]
		n++
		return v, nil
	}
}

// sendAll sends every request from next, then closes the request stream.
// It stops early without error when the server has ended the call (Recv
// reports the outcome) and returns a usage error for bad input.
func (c *caller) sendAll(dc *aster.DynamicCall, next func() (any, error)) error {
	for n := 1; ; n++ {
		v, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if err := dc.SendValue(v); err != nil {
			if aster.IsJSONError(err) {
				return c.requestErr(dc, n, err)
			}
			return nil // the call ended; Recv reports why
		}
	}
	dc.CloseSend()
	return nil
}

// sessionStep is one line of --session input.
type sessionStep struct {
	Method string          `json:"method"`
	Args   json.RawMessage `json:"args"`
}

// runSession runs the NDJSON calls on stdin in one session.
func (c *caller) runSession(client conn) error {
	svc := c.flags.session
	cs := c.ct.Service(svc, c.flags.version)
	if cs == nil {
		return callError(status.Errorf(status.NotFound, "unknown service %s", svc))
	}
	if cs.Scope != "session" {
		return usageErrorf("service %s is %s-scoped; --session needs a session-scoped service", svc, cs.Scope)
	}
	sess := client.NewSession()
	defer c.endSession(sess)
	dec := json.NewDecoder(c.in)
	dec.DisallowUnknownFields()
	for line := 1; ; line++ {
		var step sessionStep
		if err := dec.Decode(&step); err != nil {
			if err == io.EOF {
				return nil
			}
			return usageErrorf("session call %d: want {\"method\":...,\"args\":...}: %w", line, err)
		}
		if step.Method == "" {
			return usageErrorf("session call %d: \"method\" is missing", line)
		}
		method := step.Method
		if !strings.Contains(method, ".") {
			method = svc + "." + method
		} else if !strings.HasPrefix(method, svc+".") {
			return usageErrorf("session call %d: %s is not a method of %s", line, method, svc)
		}
		src := requestSource{kind: srcValues}
		args := bytes.TrimSpace(step.Args)
		if len(args) > 0 && !bytes.Equal(args, []byte("null")) {
			d := json.NewDecoder(bytes.NewReader(args))
			d.UseNumber()
			var v any
			if err := d.Decode(&v); err != nil {
				return usageErrorf("session call %d: args: %w", line, err)
			}
			if list, ok := v.([]any); ok {
				src.values = list
			} else {
				src.values = []any{v}
			}
		}
		if err := c.call(sess, method, src); err != nil {
			return err
		}
		if c.ctx.Err() != nil {
			return nil // interrupted during a stream: stop cleanly
		}
	}
}

// connPath says how the connection of cc travels: "direct <addr>", "relay
// <url>" or, for a relayed connection that moved to a direct path (PROTOCOL.md
// §24), "direct <addr>" too, as the relay address reports it.
func connPath(cc conn) string {
	c, ok := cc.(clientConn)
	if !ok {
		return "per call (a fleet)"
	}
	switch a := c.RemoteAddr().(type) {
	case nil:
		return "not connected"
	case interface{ Path() string }:
		return a.Path()
	default:
		return "direct " + a.String()
	}
}
