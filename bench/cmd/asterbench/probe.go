package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// asterbench probe: the load and fault probes behind RELIABILITY.md. Each
// probe starts its own server process (asterbench probe-serve), drives it
// over loopback, is bounded in time and count, and prints result lines:
// probe, system, figure, unit, notes. See RELIABILITY.md for what each
// measures.

// probeEnv is what the probes share: sizes, bounds and the output.
type probeEnv struct {
	quick   bool
	wait    time.Duration // how long a probe waits for an outcome that may never come
	soak    time.Duration
	systems []string
	out     io.Writer
	log     io.Writer

	mu     sync.Mutex
	failed []string
}

// n picks the full or the quick size.
func (e *probeEnv) n(full, quick int) int {
	if e.quick {
		return quick
	}
	return full
}

func (e *probeEnv) has(system string) bool { return slices.Contains(e.systems, system) }

// report prints one result line.
func (e *probeEnv) report(probe, system, figure, unit, notes string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.out, "%-18s %-6s %14s %-10s %s\n", probe, system, figure, unit, notes)
}

// fail records a probe that could not run to its end.
func (e *probeEnv) fail(probe, system string, err error) {
	e.report(probe, system, "error", "-", err.Error())
	e.mu.Lock()
	e.failed = append(e.failed, fmt.Sprintf("%s/%s: %v", probe, system, err))
	e.mu.Unlock()
}

// probeDef is one probe; run is called once per system it supports.
type probeDef struct {
	name    string
	systems []string
	run     func(ctx context.Context, e *probeEnv, system string) error
	// optIn probes run only when named in -only (or, for soak, with -soak).
	optIn bool
}

func probeTable() []probeDef {
	both := []string{"aster", "grpc"}
	asterOnly := []string{"aster"}
	return []probeDef{
		{name: "load", systems: both, run: probeLoad},
		{name: "streams", systems: asterOnly, run: probeStreams},
		{name: "conns", systems: asterOnly, run: probeConns},
		{name: "kill-server", systems: both, run: probeKillServer},
		{name: "kill-client", systems: both, run: probeKillClient},
		{name: "dead-dial", systems: both, run: probeDeadDial},
		{name: "drain", systems: both, run: probeDrain},
		{name: "hostile-claimed", systems: asterOnly, run: probeClaimed},
		{name: "hostile-stalled", systems: asterOnly, run: probeStalled},
		{name: "hostile-unread", systems: asterOnly, run: probeUnread},
		{name: "hostile-garbage", systems: asterOnly, run: probeGarbage},
		{name: "relay-close", systems: asterOnly, run: probeRelayClose},
		{name: "restart", systems: both, run: probeRestart},
		{name: "relay-restart", systems: asterOnly, run: probeRelayRestart},
		{name: "soak", systems: asterOnly, run: probeSoak, optIn: true},
	}
}

func probeNames() []string {
	var out []string
	for _, p := range probeTable() {
		out = append(out, p.name)
	}
	return out
}

// probeMain is the probe subcommand.
func probeMain(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	only := fs.String("only", "", "comma-separated probes to run (default all but soak: "+strings.Join(probeNames(), ",")+"); a prefix such as hostile selects every hostile-* probe")
	quick := fs.Bool("quick", false, "small counts and short waits: a smoke test (under a minute)")
	wait := fs.Duration("wait", 0, "longest wait for an outcome that may never come (default 90s, -quick 4s)")
	soak := fs.Duration("soak", 0, "run the soak probe for this long (heap and goroutines sampled every 10s); off by default, 30s when soak is named in -only without it")
	syss := fs.String("systems", "aster,grpc", "systems to probe where a probe supports them (aster, grpc)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	e := &probeEnv{quick: *quick, wait: *wait, soak: *soak, out: os.Stdout, log: os.Stderr}
	if e.wait <= 0 {
		e.wait = 90 * time.Second
		if e.quick {
			e.wait = 4 * time.Second
		}
	}
	for s := range strings.SplitSeq(*syss, ",") {
		s = strings.TrimSpace(s)
		if s != "aster" && s != "grpc" {
			return fmt.Errorf("unknown system %q (aster, grpc)", s)
		}
		e.systems = append(e.systems, s)
	}
	sel, err := selectProbes(*only, e.soak > 0 && !e.quick)
	if err != nil {
		return err
	}
	if e.quick {
		// The soak is long by nature: never part of a quick run.
		sel = slices.DeleteFunc(sel, func(p probeDef) bool { return p.name == "soak" })
	}
	return runProbes(context.Background(), e, sel)
}

// selectProbes resolves -only: exact names or prefixes; empty means every
// probe that is not opt-in (soak joins when withSoak).
func selectProbes(only string, withSoak bool) ([]probeDef, error) {
	var sel []probeDef
	if only == "" {
		for _, p := range probeTable() {
			if !p.optIn || (p.name == "soak" && withSoak) {
				sel = append(sel, p)
			}
		}
		return sel, nil
	}
	for n := range strings.SplitSeq(only, ",") {
		n = strings.TrimSpace(n)
		found := false
		for _, p := range probeTable() {
			if p.name == n || strings.HasPrefix(p.name, n+"-") {
				if !slices.ContainsFunc(sel, func(q probeDef) bool { return q.name == p.name }) {
					sel = append(sel, p)
				}
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown probe %q (have %s)", n, strings.Join(probeNames(), ", "))
		}
	}
	return sel, nil
}

func runProbes(ctx context.Context, e *probeEnv, sel []probeDef) error {
	mode := "full"
	if e.quick {
		mode = "quick"
	}
	fmt.Fprintf(e.log, "asterbench probe: %d probes, %s mode, wait bound %s, %s, GOMAXPROCS=%d\n",
		len(sel), mode, e.wait, runtime.Version(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(e.out, "%-18s %-6s %14s %-10s %s\n", "probe", "system", "figure", "unit", "notes")
	for _, p := range sel {
		for _, sys := range p.systems {
			if !e.has(sys) {
				continue
			}
			start := time.Now()
			if err := p.run(ctx, e, sys); err != nil {
				e.fail(p.name, sys, err)
			}
			fmt.Fprintf(e.log, "probe %s/%s: %.1fs\n", p.name, sys, time.Since(start).Seconds())
		}
	}
	if len(e.failed) > 0 {
		return fmt.Errorf("%d probes failed: %s", len(e.failed), strings.Join(e.failed, "; "))
	}
	return nil
}

// probeProc is a probe server process.
type probeProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	addr  string
	mu    sync.Mutex
	done  chan struct{}
}

// probeChildEnv marks a process started by the probe as a child, so that
// the test binary runs main for it.
const probeChildEnv = "ASTERBENCH_PROBE_CHILD"

// probeCommand returns a command running this binary with args.
func probeCommand(args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), probeChildEnv+"=1")
	cmd.Stderr = os.Stderr
	return cmd, nil
}

// startProbeServer starts asterbench probe-serve for system and waits for
// its address.
func startProbeServer(system string, extra ...string) (*probeProc, error) {
	cmd, err := probeCommand(append([]string{"probe-serve", "-system", system}, extra...)...)
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &probeProc{cmd: cmd, in: in, lines: make(chan string, 16), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	addr, err := p.readLine(30 * time.Second)
	if err != nil {
		p.kill()
		return nil, fmt.Errorf("probe server did not start: %w", err)
	}
	p.addr = addr
	return p, nil
}

func (p *probeProc) readLine(timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l, ok := <-p.lines:
		if !ok {
			return "", errors.New("probe server exited")
		}
		return l, nil
	case <-t.C:
		return "", fmt.Errorf("no answer from the probe server within %s", timeout)
	}
}

// ctl sends a command and returns its answer.
func (p *probeProc) ctl(cmd string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		return "", err
	}
	return p.readLine(60 * time.Second)
}

func (p *probeProc) stats() (*probeStats, error) {
	l, err := p.ctl("stats")
	if err != nil {
		return nil, err
	}
	var s probeStats
	if err := json.Unmarshal([]byte(l), &s); err != nil {
		return nil, fmt.Errorf("stats %q: %w", l, err)
	}
	return &s, nil
}

// kill sends SIGKILL and waits for the process to go.
func (p *probeProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop closes standard input (the server exits) and kills it if it lingers.
func (p *probeProc) stop() {
	_ = p.in.Close()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.kill()
	}
}

// dialAster connects a new aster client (its own key and UDP socket).
func dialAster(ctx context.Context, addr string) (*aster.Client, error) {
	return aster.Dial(ctx, addr, aster.WithSecretKey(trust.GenerateKey()))
}

// asterCode is the name of err's aster status code.
func asterCode(err error) string {
	if err == nil {
		return "OK"
	}
	return status.CodeOf(err).String()
}

// capCtx is a context cancelled (not given a deadline, which would travel
// with the call) after d, to bound a wait without changing the call.
func capCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	t := time.AfterFunc(d, cancel)
	return ctx, func() { t.Stop(); cancel() }
}

// secs formats a duration in seconds (or ms below one second).
func secs(d time.Duration) (string, string) {
	if d < time.Second {
		return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)), "ms"
	}
	return fmt.Sprintf("%.2f", d.Seconds()), "s"
}

func kibOf(b float64) string { return fmt.Sprintf("%.1f", b/1024) }

func mib(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }

// delta is after - before as a signed float.
func delta(after, before uint64) float64 { return float64(after) - float64(before) }
