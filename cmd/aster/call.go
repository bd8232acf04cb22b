package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	timeout        time.Duration
	connectTimeout time.Duration
	max            int
	headers        []string
	version        uint32
	session        string
	rcan           string
	trace          bool
}

func newCallCmd() *cobra.Command {
	var f callFlags
	cmd := &cobra.Command{
		Use:   "call <addr> <Service.method> [json|-]",
		Short: "Call a method with JSON in and JSON out",
		Long: `call connects to the server at <addr> (an aster1... address), fetches its
contract and calls <Service.method>, converting JSON to the method's wire types
and the responses back to JSON. No generated code is needed.

<addr> may also be a service target, such as etcd:///fleet/MissionControl,
dns:///_mc._udp.example.internal or static:///aster1...,aster1...: the call goes
to one of the producers the [discovery] settings find (see 'aster discover').

Requests:
  unary, server stream   the JSON argument; "-" reads one document from stdin;
                         absent means {} (all fields zero)
  client stream, bidi    NDJSON on stdin (one request per line) when the
                         argument is "-" or absent; else the JSON values in
                         the argument

Responses are printed as they arrive, one JSON object per line (NDJSON).
A server stream or bidi call runs until the server ends it, --max responses
arrived, --timeout passes (DEADLINE_EXCEEDED) or SIGINT (a clean cancel,
exit 0).

Sessions: with --session <Service> the arguments are just <addr>, and stdin
holds the calls of one session, one per line:
  {"method":"register","args":{"agent_id":"edge-7"}}
  {"method":"runCommand","args":[{"command":"uptime"},{"command":"df -h"}]}
"args" is one request object, or for client-stream and bidi methods an array
of requests. All calls share the session's instance; the session ends when
stdin does. A session-scoped method called without --session runs in a
session of its own.

` + exitCodeTable,
		Example: `  aster call aster1... MissionControl.getStatus '{"agent_id":"edge-node-7"}'
  aster call --max 5 aster1... MissionControl.tailLogs '{"level":"info"}'
  printf '{"name":"cpu","value":0.5}\n' | aster call aster1... MissionControl.ingestMetrics
  aster call --session AgentSession aster1... < calls.ndjson`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCall(cmd.Context(), cmd, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&f.timeout, "timeout", 0, "deadline of each call, sent to the server (0: none)")
	fl.DurationVar(&f.connectTimeout, "connect-timeout", 10*time.Second, "limit for connecting and fetching the contract")
	fl.IntVar(&f.max, "max", 0, "stop a server stream or bidi call after this many responses, with exit 0 (0: no limit)")
	fl.StringArrayVarP(&f.headers, "header", "H", nil, "request metadata `key=value` (repeatable)")
	fl.Uint32Var(&f.version, "service-version", 0, "service version to call (0: the highest the server has)")
	fl.StringVar(&f.rcan, "rcan", "", "present the enrollment credential in this .aster-identity `file` (default: ASTER_ENROLLMENT_CREDENTIAL or ASTER_IDENTITY_FILE from the config)")
	fl.StringVar(&f.session, "session", "", "run the NDJSON calls on stdin in one session of this session-scoped `service`")
	addTraceFlag(cmd, &f.trace)
	return cmd
}

// runCall implements "aster call".
func runCall(ctx context.Context, cmd *cobra.Command, f *callFlags, args []string) error {
	if f.session != "" {
		if len(args) != 1 {
			return usageErrorf("with --session, call takes only <addr> (the calls come from stdin); got %d arguments", len(args))
		}
	} else if len(args) < 2 || len(args) > 3 {
		return usageErrorf("call takes <addr> <Service.method> [json|-]; got %d arguments (see 'aster call --help')", len(args))
	}
	if f.max < 0 {
		return usageErrorf("--max must be >= 0, got %d", f.max)
	}
	if f.timeout < 0 || f.connectTimeout < 0 {
		return usageErrorf("timeouts must not be negative")
	}
	if err := checkTarget(args[0]); err != nil {
		return err
	}
	opts := []aster.CallOption{aster.Version(f.version)}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return usageErrorf("--header %q: want key=value", h)
		}
		opts = append(opts, aster.WithHeader(k, v))
	}
	if f.session == "" {
		if i := strings.LastIndexByte(args[1], '.'); i <= 0 || i == len(args[1])-1 {
			return usageErrorf("method %q: want Service.method", args[1])
		}
	}

	cfg, err := loadCLIConfig(cmd, "")
	if err != nil {
		return err
	}
	clientOpts, err := cfg.ClientOptions()
	if err != nil {
		return configError(err)
	}
	credOpts, err := credentialOptions(f.rcan)
	if err != nil {
		return err
	}
	clientOpts = append(clientOpts, credOpts...)
	ctx, traceOpts, endTrace, err := startTrace(ctx, f.trace, "aster call", cmd.ErrOrStderr())
	if err != nil {
		return configError(err)
	}
	defer endTrace()
	clientOpts = append(clientOpts, traceOpts...)

	dialCtx := ctx
	if f.connectTimeout > 0 {
		var cancel context.CancelFunc
		dialCtx, cancel = context.WithTimeout(ctx, f.connectTimeout)
		defer cancel()
	}
	client, err := dialTarget(dialCtx, &cfg, args[0], clientOpts, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer client.Close()
	ct, _, err := client.Contract(dialCtx)
	if err != nil {
		return connectError(fmt.Errorf("fetching the contract: %w", err))
	}

	c := &caller{
		ctx:   ctx,
		flags: f,
		opts:  opts,
		ct:    ct,
		in:    cmd.InOrStdin(),
		out:   newJSONLines(cmd.OutOrStdout()),
	}
	if f.session != "" {
		return c.runSession(client)
	}
	src := requestSource{kind: srcNone}
	if len(args) == 3 {
		if args[2] == "-" {
			src.kind = srcStdin
		} else {
			src = requestSource{kind: srcArg, arg: args[2]}
		}
	}
	// A session-scoped method called on its own runs in a session of its
	// own, ended after the call.
	i := strings.LastIndexByte(args[1], '.')
	if svc := ct.Service(args[1][:i], f.version); svc != nil && svc.Scope == "session" {
		sess := client.NewSession()
		defer c.endSession(sess)
		return c.call(sess, args[1], src)
	}
	return c.call(client, args[1], src)
}

// endSession ends sess on the server, briefly even after SIGINT.
func (c *caller) endSession(sess *aster.Session) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 2*time.Second)
	defer cancel()
	sess.Close(ctx)
}

// caller runs the calls of one "aster call" invocation.
type caller struct {
	ctx   context.Context // canceled by SIGINT
	flags *callFlags
	opts  []aster.CallOption
	ct    *contract.Contract
	in    io.Reader
	out   *jsonLines
}

// requestSource says where a call's requests come from.
type requestSource struct {
	kind   sourceKind
	arg    string // srcArg: the JSON argument
	values []any  // srcValues: requests decoded already (session mode)
}

type sourceKind int

const (
	srcNone   sourceKind = iota // no argument: {} for one request, NDJSON stdin for a stream
	srcArg                      // the JSON argument
	srcStdin                    // "-": stdin
	srcValues                   // values
)

// call makes one call of method on cc and prints its responses.
func (c *caller) call(cc aster.Caller, method string, src requestSource) error {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	if c.flags.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.flags.timeout)
		defer cancel()
	}
	dc, err := aster.CallDynamic(ctx, cc, c.ct, method, c.opts...)
	if err != nil {
		return c.callErr(err, false)
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
	case srcStdin:
		b, rerr := io.ReadAll(io.LimitReader(c.in, maxStdinDoc+1))
		if rerr != nil {
			return fmt.Errorf("reading stdin: %w", rerr)
		}
		if len(b) > maxStdinDoc {
			return usageErrorf("request on stdin is larger than %d bytes", maxStdinDoc)
		}
		err = dc.SendJSON(b)
	default:
		err = dc.SendJSON([]byte("{}"))
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
	if !aster.IsJSONError(err) {
		return callError(err)
	}
	var je *contract.JSONError
	errors.As(err, &je)
	where := "request"
	if n > 0 {
		where = fmt.Sprintf("request %d", n)
	}
	return usageErrorf("%s does not fit %s: %w", where, dc.Method().Request, je)
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
	default:
		return jsonValues(c.in, "stdin")
	}
}

// jsonValues decodes a sequence of JSON values (NDJSON, or values separated
// by any white space) from r.
func jsonValues(r io.Reader, name string) func() (any, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	n := 0
	return func() (any, error) {
		var v any
		if err := dec.Decode(&v); err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, usageErrorf("request %d on %s is not JSON: %w", n+1, name, err)
		}
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
