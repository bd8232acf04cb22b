package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/peterh/liner"
	"github.com/spf13/cobra"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/status"
)

func init() { addCommand(newShellCmd) }

// shellFlags are the flags of "aster shell".
type shellFlags struct {
	connectFlags
	json     bool
	timeout  time.Duration
	history  string
	failFast bool
}

func newShellCmd() *cobra.Command {
	var f shellFlags
	cmd := &cobra.Command{
		Use:   "shell [addr]",
		Short: "Explore and call a server's services interactively",
		Long: `shell connects to the server at <addr> (an aster1... address; default:
ASTER_ENDPOINT_ADDR), fetches its contract and presents it as a tree you can browse and call:

  /services/<Service>/<method>

Commands (type 'help' inside for details):
  ls [path]                 list services or methods
  cd <path>, pwd            move around the tree (cd .., cd /, cd services/X)
  describe [Svc|method]     pattern, request/response fields, capabilities
  ./method k=v ...          call a method; also a bare method name, a path
  invoke method '<json>'    call with a JSON request
  session <Service>         open a session of a session-scoped service; the
                            prompt becomes <Service>~ and 'end' closes it
  refresh                   fetch the contract again
  help, exit, quit, Ctrl-D

Arguments are key=value pairs typed from the contract (numbers as numbers,
capabilities='["gpu"]' as a list) or one JSON object. A method called with
no arguments prompts for each field (on a terminal); client-stream and bidi
methods read one request per line and end the stream on an empty line.

Each call prints "→ Service.method(args)", the elapsed time and the response
as indented JSON; server streams print "#0 {...}", "#1 {...}" as items
arrive. Ctrl-C cancels the running call; Ctrl-C twice quickly exits. With
--json only the responses are printed, one JSON value per line.

When stdin is not a terminal, shell reads its commands from stdin (one per
line) without prompts, which makes scripted sessions possible. Every
command runs even after one failed, and the exit status is that of the
first failing command (10 + its status code, as 'aster call' exits: 15 for
NOT_FOUND, 13 for a bad argument); 0 when all succeeded. --fail-fast stops
at the first failure. Tab completes
commands, paths, methods and field names; history is kept in
~/.aster/history.`,
		Example: `  aster shell aster1...
  printf 'cd services/MissionControl\n./getStatus agent_id=edge-7\n' | aster shell --json aster1...`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("shell takes one [addr]; got %d arguments (see 'aster shell --help')", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runShell(cmd, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.json, "json", false, "print responses as raw JSON only, one value per line (for piping)")
	f.connectFlags.register(cmd)
	fl.DurationVar(&f.timeout, "timeout", 0, "deadline of each call, sent to the server (0: none)")
	fl.BoolVar(&f.failFast, "fail-fast", false, "stop at the first command that fails (script mode: stdin not a terminal)")
	fl.StringVar(&f.history, "history", "", "history `file` (default ~/.aster/history; \"-\": none)")
	return cmd
}

// lineReader reads the shell's input lines.
type lineReader interface {
	// Prompt shows p and returns the next line without its newline. It
	// returns io.EOF at the end of input (Ctrl-D) and liner.ErrPromptAborted
	// for Ctrl-C.
	Prompt(p string) (string, error)
}

// scriptReader reads lines from a non-terminal stdin, without prompts.
type scriptReader struct{ sc *bufio.Scanner }

func newScriptReader(r io.Reader) *scriptReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxStdinDoc)
	return &scriptReader{sc: sc}
}

func (r *scriptReader) Prompt(string) (string, error) {
	if r.sc.Scan() {
		return strings.TrimSuffix(r.sc.Text(), "\r"), nil
	}
	if err := r.sc.Err(); err != nil {
		return "", fmt.Errorf("reading stdin: %w", err)
	}
	return "", io.EOF
}

// shell is one interactive session with a server.
type shell struct {
	ctx         context.Context // never canceled by SIGINT
	client      conn
	ct          *contract.Contract
	ctID        string
	cwd         string // canonical directory path
	sess        *shellSession
	asJSON      bool
	interactive bool // stdin is a terminal: prompts, field prompting, history
	timeout     time.Duration
	failFast    bool // stop at the first failing command
	in          lineReader
	out, errw   io.Writer
	outMu       sync.Mutex // serializes output of concurrent stream printing
	inputPrompt string     // guarded by outMu: the request prompt being shown, if any

	// Guarded by outMu: the failed commands, and the status and exit
	// status of the first, for the exit status of a script.
	failures  int
	firstCode status.Code
	firstExit int
	failedNow bool // the current command failed

	mu         sync.Mutex
	cancelCall context.CancelFunc // the running call, for Ctrl-C
	lastInt    time.Time          // the last Ctrl-C, for "twice quickly exits"
}

// shellSession is an open session subshell.
type shellSession struct {
	svc  *contract.Service
	s    *aster.Session
	lost bool // a call failed because the connection is gone
}

// doubleInterrupt is how close two Ctrl-C must be to exit the shell.
const doubleInterrupt = time.Second

// runShell implements "aster shell".
func runShell(cmd *cobra.Command, f *shellFlags, args []string) error {
	if f.timeout < 0 || f.connectTimeout < 0 {
		return usageErrorf("timeouts must not be negative")
	}
	cfg, err := loadClientConfig(cmd)
	if err != nil {
		return err
	}
	rawAddr, _, err := splitTarget(&cfg, args, 0)
	if err != nil {
		return err
	}
	setup, err := setupClient(cmd, &cfg, f.rcan)
	if err != nil {
		return err
	}

	// SIGINT must not end the shell: it cancels the running call. The
	// root context is canceled by the first SIGINT, so the shell runs on a
	// context of its own and watches the signals itself.
	base := context.WithoutCancel(cmd.Context())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	dialCtx, cancelDial := context.WithCancel(base)
	defer cancelDial()
	stopDialOnSignal := make(chan struct{})
	go func() { // a Ctrl-C while connecting gives up
		select {
		case <-sigs:
			cancelDial()
		case <-stopDialOnSignal:
		}
	}()
	tg, err := connect(dialCtx, cmd, rawAddr, &f.connectFlags, setup)
	close(stopDialOnSignal)
	if err != nil {
		return err
	}
	client, ct, id := tg.client, tg.ct, tg.id
	defer client.Close()

	sh := &shell{
		ctx: base, client: client, ct: ct, ctID: id, cwd: "/",
		asJSON: f.json, timeout: f.timeout, failFast: f.failFast,
		out: cmd.OutOrStdout(), errw: cmd.ErrOrStderr(),
	}
	var ln *liner.State
	if _, terr := liner.TerminalMode(); terr == nil && cmd.InOrStdin() == os.Stdin {
		sh.interactive = true
		ln = liner.NewLiner()
		ln.SetCtrlCAborts(true)
		ln.SetTabCompletionStyle(liner.TabPrints)
		ln.SetWordCompleter(func(line string, pos int) (string, []string, string) {
			return sh.complete(line, pos)
		})
		sh.in = ln
	} else {
		sh.in = newScriptReader(cmd.InOrStdin())
	}
	histFile := historyPath(f.history)
	if ln != nil && histFile != "" {
		if hf, err := os.Open(histFile); err == nil {
			ln.ReadHistory(hf)
			hf.Close()
		}
	}
	finish := sync.OnceFunc(func() {
		sh.endSession(false)
		if ln != nil {
			if histFile != "" {
				if err := saveHistory(ln, histFile); err != nil {
					fmt.Fprintln(sh.errw, "warning: history not saved:", err)
				}
			}
			ln.Close()
		}
	})
	defer finish()

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sh.watchSignals(sigs, done, func(code int) {
			finish()
			os.Exit(code)
		})
	}()
	defer func() { close(done); wg.Wait() }()

	if sh.interactive && !sh.asJSON {
		fmt.Fprintf(sh.out, "connected to %s (contract %s, %d services); 'help' lists commands\n",
			client.Label(), shortID(id), len(ct.Services))
	}
	sh.loop(ln)
	if sh.failures > 0 && !sh.interactive {
		return &cliError{exit: sh.firstExit, code: sh.firstCode,
			msg: fmt.Sprintf("%s of the script's commands failed; the first with %s (exit %d)", strconv.Itoa(sh.failures), sh.firstCode, sh.firstExit)}
	}
	return nil
}

// historyPath returns the history file: flag "-" disables it, "" means
// ~/.aster/history.
func historyPath(flag string) string {
	switch flag {
	case "-":
		return ""
	case "":
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		return filepath.Join(home, ".aster", "history")
	}
	return flag
}

func saveHistory(ln *liner.State, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	hf, err := os.OpenFile(file, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := ln.WriteHistory(hf); err != nil {
		hf.Close()
		return err
	}
	return hf.Close()
}

// watchSignals handles SIGINT and SIGTERM until done: SIGINT cancels the
// running call; two within doubleInterrupt, or SIGTERM, exit the shell.
func (sh *shell) watchSignals(sigs <-chan os.Signal, done <-chan struct{}, exit func(code int)) {
	for {
		select {
		case <-done:
			return
		case s := <-sigs:
			if s == syscall.SIGTERM {
				exit(128 + int(syscall.SIGTERM))
				return
			}
			if sh.interrupt() {
				fmt.Fprintln(sh.errw, "\n^C^C: exiting")
				exit(128 + int(syscall.SIGINT))
				return
			}
		}
	}
}

// interrupt records a Ctrl-C, cancels the running call if any, and reports
// whether this was the second Ctrl-C in quick succession.
func (sh *shell) interrupt() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	now := time.Now()
	double := !sh.lastInt.IsZero() && now.Sub(sh.lastInt) < doubleInterrupt
	sh.lastInt = now
	if sh.cancelCall != nil {
		sh.cancelCall()
	}
	return double
}

// prompt returns the prompt for the current state.
func (sh *shell) prompt() string {
	if !sh.interactive {
		return ""
	}
	if sh.sess != nil {
		return sh.sess.svc.Name + "~ "
	}
	return sh.cwd + "> "
}

// loop reads and runs commands until exit or end of input.
func (sh *shell) loop(ln *liner.State) {
	for {
		line, err := sh.in.Prompt(sh.prompt())
		switch {
		case errors.Is(err, liner.ErrPromptAborted):
			if sh.interrupt() {
				return
			}
			fmt.Fprintln(sh.errw, "(Ctrl-C again to exit, or type exit)")
			continue
		case err == io.EOF:
			if sh.sess != nil && sh.interactive {
				fmt.Fprintln(sh.out)
				sh.endSession(true) // Ctrl-D leaves the session subshell first
				continue
			}
			if sh.interactive {
				fmt.Fprintln(sh.out)
			}
			return
		case err != nil:
			fmt.Fprintln(sh.errw, "error:", err)
			return
		}
		if ln != nil && strings.TrimSpace(line) != "" {
			ln.AppendHistory(line)
		}
		// Ctrl-C twice "quickly" means with no command in between.
		sh.mu.Lock()
		sh.lastInt = time.Time{}
		sh.mu.Unlock()
		sh.outMu.Lock()
		sh.failedNow = false
		sh.outMu.Unlock()
		if sh.exec(line) {
			return
		}
		sh.outMu.Lock()
		stop := sh.failedNow && sh.failFast && !sh.interactive
		sh.outMu.Unlock()
		if stop {
			return
		}
	}
}

// exec runs one command line and reports whether the shell should exit.
func (sh *shell) exec(line string) (quit bool) {
	words, err := splitWords(line)
	if err != nil {
		sh.printErr(status.Errorf(status.InvalidArgument, "%v", err))
		return false
	}
	if len(words) == 0 || strings.HasPrefix(words[0].text, "#") {
		return false
	}
	args := make([]string, len(words))
	for i, w := range words {
		args[i] = w.text
	}
	cmdName, rest := args[0], args[1:]
	switch cmdName {
	case "exit", "quit":
		return true
	case "help", "?":
		sh.help()
	case "pwd":
		if sh.sess != nil {
			fmt.Fprintf(sh.out, "%s (session of %s)\n", sh.cwd, sh.sess.svc.Name)
		} else {
			fmt.Fprintln(sh.out, sh.cwd)
		}
	case "ls":
		sh.ls(rest)
	case "cd":
		sh.cd(rest)
	case "describe", "desc":
		sh.describe(rest)
	case "refresh":
		sh.refresh()
	case "session":
		sh.openSession(rest)
	case "end":
		if sh.sess == nil {
			sh.printErr(status.New(status.FailedPrecondition, "no open session ('session <Service>' opens one)"))
		} else {
			sh.endSession(true)
		}
	case "invoke", "call":
		if len(rest) == 0 {
			sh.printErr(status.New(status.InvalidArgument, "usage: invoke <method> ['<json>' | k=v ...]"))
			return false
		}
		sh.callByName(rest[0], callArgs(line, words, 2))
	default:
		sh.callByName(cmdName, callArgs(line, words, 1))
	}
	return false
}

// callArgs returns the call arguments that start at word i of line.
func callArgs(line string, words []shellWord, i int) []string {
	if i >= len(words) {
		return nil
	}
	return lineArgs(line[words[i].start:])
}

// help prints the command list.
func (sh *shell) help() {
	fmt.Fprint(sh.out, `Commands:
  ls [path]                 list: / has services/, /services the services,
                            /services/<Service> its methods
  cd <path>                 change directory (.., /, services/MissionControl)
  pwd                       print the current directory
  describe [Svc|method]     show a service's methods or a method's pattern,
                            request and response fields and capabilities
  ./method k=v ...          call a method of the current service; a bare
                            method name, a path or Service.method work too
  invoke <method> '<json>'  call with one JSON request ('[...]' for a stream)
  session <Service>         open a session of a session-scoped service: calls
                            share one instance; prompt <Service>~; 'end' closes
  end                       close the session
  refresh                   fetch the contract again
  exit, quit, Ctrl-D        leave (Ctrl-D in a session ends the session)

Arguments: key=value typed from the contract (agent_id=edge-7 uptime=30
capabilities='["gpu"]' tags.env=prod), or one JSON object. No arguments:
prompts per field on a terminal. Client-stream and bidi methods without
arguments read one request per line (JSON or k=v); an empty line ends it.
Ctrl-C cancels a running call; twice quickly exits. Tab completes.
`)
}

// ls lists a path.
func (sh *shell) ls(args []string) {
	if len(args) > 1 {
		sh.printErr(status.New(status.InvalidArgument, "usage: ls [path]"))
		return
	}
	var n node
	var err error
	switch {
	case len(args) == 1:
		n, err = sh.resolve(args[0])
	case sh.sess != nil:
		n = node{kind: nodeService, svc: sh.sess.svc}
	default:
		n, err = resolvePath(sh.ct, "/", sh.cwd)
	}
	if err != nil {
		sh.printErr(status.Wrap(status.NotFound, err))
		return
	}
	printLs(sh.out, sh.ct, n)
}

// resolve resolves a path, a method name of the current service (or the
// session's) or a Service.method name.
func (sh *shell) resolve(arg string) (node, error) {
	if sh.sess != nil && !strings.Contains(arg, "/") {
		if m := sh.sess.svc.Method(arg); m != nil {
			return node{kind: nodeMethod, svc: sh.sess.svc, m: m}, nil
		}
	}
	n, err := resolvePath(sh.ct, sh.cwd, arg)
	if err == nil {
		return n, nil
	}
	if !strings.Contains(arg, "/") {
		if i := strings.LastIndexByte(arg, '.'); i > 0 && i < len(arg)-1 {
			if svc := lookupService(sh.ct, arg[:i]); svc != nil {
				if m := svc.Method(arg[i+1:]); m != nil {
					return node{kind: nodeMethod, svc: svc, m: m}, nil
				}
				return node{}, fmt.Errorf("no method %s in %s (methods: %s)", arg[i+1:], svc.Name, methodList(svc))
			}
		}
		if svc := lookupService(sh.ct, arg); svc != nil {
			return node{kind: nodeService, svc: svc}, nil
		}
	}
	return node{}, err
}

// cd changes the directory.
func (sh *shell) cd(args []string) {
	if sh.sess != nil {
		sh.printErr(status.Errorf(status.FailedPrecondition, "in a session of %s: 'end' it before cd", sh.sess.svc.Name))
		return
	}
	target := "/"
	if len(args) > 1 {
		sh.printErr(status.New(status.InvalidArgument, "usage: cd [path]"))
		return
	}
	if len(args) == 1 {
		target = args[0]
	}
	n, err := resolvePath(sh.ct, sh.cwd, target)
	if err != nil {
		sh.printErr(status.Wrap(status.NotFound, err))
		return
	}
	if n.kind == nodeMethod {
		sh.printErr(status.Errorf(status.InvalidArgument, "%s is a method, not a directory: call it with ./%s or describe it", n.path(sh.ct), n.m.Name))
		return
	}
	sh.cwd = n.path(sh.ct)
}

// describe describes the current node or the argument.
func (sh *shell) describe(args []string) {
	if len(args) > 1 {
		sh.printErr(status.New(status.InvalidArgument, "usage: describe [Service|method|path]"))
		return
	}
	var n node
	var err error
	switch {
	case len(args) == 1:
		n, err = sh.resolve(args[0])
	case sh.sess != nil:
		n = node{kind: nodeService, svc: sh.sess.svc}
	default:
		n, err = resolvePath(sh.ct, "/", sh.cwd)
	}
	if err != nil {
		sh.printErr(status.Wrap(status.NotFound, err))
		return
	}
	if sh.asJSON {
		var v any = sh.ct
		switch n.kind {
		case nodeService:
			v = n.svc
		case nodeMethod:
			v = n.m
		}
		writeIndentedJSON(sh.out, v)
		return
	}
	printDescribe(sh.out, sh.ct, n)
}

// refresh fetches the contract again, bypassing the client's cache.
func (sh *shell) refresh() {
	ctx, cancel := context.WithTimeout(sh.ctx, 30*time.Second)
	defer cancel()
	ct, id, err := sh.client.RefreshContract(ctx)
	if err != nil {
		sh.printErr(err)
		return
	}
	changed := id != sh.ctID
	sh.ct, sh.ctID = ct, id
	if sh.sess != nil {
		if svc := ct.Service(sh.sess.svc.Name, sh.sess.svc.Version); svc != nil {
			sh.sess.svc = svc
		}
	}
	if _, err := resolvePath(ct, "/", sh.cwd); err != nil {
		sh.cwd = "/"
	}
	note := "unchanged"
	if changed {
		note = "changed"
	}
	fmt.Fprintf(sh.out, "contract %s (%s): %d services\n", shortID(id), note, len(ct.Services))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// openSession opens the session subshell.
func (sh *shell) openSession(args []string) {
	if sh.sess != nil {
		sh.printErr(status.Errorf(status.FailedPrecondition, "already in a session of %s ('end' it first)", sh.sess.svc.Name))
		return
	}
	var svc *contract.Service
	switch len(args) {
	case 0:
		if n, err := resolvePath(sh.ct, "/", sh.cwd); err == nil && n.kind == nodeService {
			svc = n.svc
		} else {
			sh.printErr(status.New(status.InvalidArgument, "usage: session <Service>"))
			return
		}
	case 1:
		n, err := sh.resolve(args[0])
		if err != nil || n.kind != nodeService {
			sh.printErr(status.Errorf(status.NotFound, "no service %s (services: %s)", args[0], serviceList(sh.ct)))
			return
		}
		svc = n.svc
	default:
		sh.printErr(status.New(status.InvalidArgument, "usage: session <Service>"))
		return
	}
	if svc.Scope != "session" {
		sh.printErr(status.Errorf(status.FailedPrecondition, "%s is %s-scoped: every call already reaches the same instance; session needs a session-scoped service", svc.Name, svc.Scope))
		return
	}
	sh.mu.Lock()
	sh.sess = &shellSession{svc: svc, s: sh.client.NewSession()}
	sh.mu.Unlock()
	if !sh.asJSON {
		fmt.Fprintf(sh.out, "session of %s opened: calls share one instance; 'end' closes it\n", svc.Name)
	}
}

// endSession closes the open session, if any.
func (sh *shell) endSession(report bool) {
	// The signal watcher may end the session on its way out, so the swap
	// is under the lock (only the main goroutine sets sh.sess otherwise).
	sh.mu.Lock()
	sess := sh.sess
	sh.sess = nil
	sh.mu.Unlock()
	if sess == nil {
		return
	}
	ctx, cancel := context.WithTimeout(sh.ctx, 5*time.Second)
	defer cancel()
	if sess.lost {
		// The session died with its connection: nothing to tell the server.
		cancel()
		sess.s.Close(ctx)
		if report && !sh.asJSON {
			fmt.Fprintf(sh.out, "session of %s ended (its connection was lost)\n", sess.svc.Name)
		}
		return
	}
	if err := sess.s.Close(ctx); err != nil && report {
		fmt.Fprintf(sh.errw, "session of %s closed locally; the server did not confirm: %s\n", sess.svc.Name, statusText(err))
		return
	}
	if report && !sh.asJSON {
		fmt.Fprintf(sh.out, "session of %s ended\n", sess.svc.Name)
	}
}

// printErr prints an error as "STATUS_NAME: message".
// It counts as a failure of the current command.
func (sh *shell) printErr(err error) {
	sh.outMu.Lock()
	defer sh.outMu.Unlock()
	fmt.Fprintln(sh.errw, sanitize(statusText(err)))
	if !sh.failedNow {
		sh.failedNow = true
		if sh.failures == 0 {
			sh.firstCode = statusCode(err)
			if sh.firstCode == status.OK {
				sh.firstCode = status.Unknown
			}
			sh.firstExit = ExitCodeFor(sh.firstCode)
		}
		sh.failures++
	}
}

// statusCode is the code statusText prints.
func statusCode(err error) status.Code {
	var ae *argError
	if errors.As(err, &ae) {
		return status.InvalidArgument
	}
	return status.FromError(err).Code()
}

func statusText(err error) string {
	var ae *argError
	if errors.As(err, &ae) {
		return status.InvalidArgument.String() + ": " + ae.msg
	}
	st := status.FromError(err)
	return st.Code().String() + ": " + st.Message()
}
