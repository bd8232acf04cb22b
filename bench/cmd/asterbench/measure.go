package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aster-go/aster/bench/internal/systems"
)

// Metric keys. Each is recorded once per round (RSS once per run).
const (
	mSetup      = "setup"        // ns, dial + first getStatus on a new connection
	mAllocs     = "allocs"       // allocations per sequential unary call (client + server)
	mBytes      = "bytes"        // bytes allocated per sequential unary call
	mRSSBase    = "rss-base"     // KiB, server VmHWM after start and one call
	mRSSIdle    = "rss-idle"     // KiB, server VmHWM with the idle connections
	mRSSStreams = "rss-streams"  // KiB, server VmHWM with the open streams
	mTail       = "tail"         // msgs/s
	mIngestS    = "ingest-small" // msgs/s
	mIngestL    = "ingest-large" // msgs/s
	mEcho       = "echo"         // msgs/s
	suffixRate  = "/calls-per-s" // unary rate
	suffixP50   = "/p50-ns"      // unary latency
	suffixP99   = "/p99-ns"      // unary latency
	unarySeq    = "unary-seq"    // 1 caller
	unary32     = "unary-c32"    // 32 callers
	unary256    = "unary-c256"   // 256 callers
)

// unaryModes are the unary measurements: name and concurrent callers.
var unaryModes = []struct {
	name    string
	callers int
}{{unarySeq, 1}, {unary32, 32}, {unary256, 256}}

// seqLatencies is reused by the sequential measurement so that recording
// latencies allocates nothing inside the measured loop.
var seqLatencies = make([]time.Duration, 0, 1<<20)

// measureRound runs one round of every figure except RSS for sys.
func measureRound(ctx context.Context, cfg *config, sys systems.System, res *results) error {
	runtime.GC()
	srv, err := sys.Serve()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := sys.Dial(ctx, srv.Addr())
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	name := sys.Name()

	// Warm up: connection state, pools, JIT-free but cache-warm paths.
	for range 200 {
		if err := c.Unary(ctx); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	if err := c.Echo(ctx, 100); err != nil {
		return fmt.Errorf("warm-up echo: %w", err)
	}

	// Connection set-up: dial and first call on a new connection.
	setups := make([]float64, 0, cfg.setups)
	for range cfg.setups {
		start := time.Now()
		c2, err := sys.Dial(ctx, srv.Addr())
		if err != nil {
			return fmt.Errorf("setup dial: %w", err)
		}
		err = c2.Unary(ctx)
		d := time.Since(start)
		c2.Close()
		if err != nil {
			return fmt.Errorf("setup call: %w", err)
		}
		setups = append(setups, float64(d.Nanoseconds()))
	}
	res.add(name, mSetup, median(setups))

	for _, m := range unaryModes {
		if w, ok := c.(systems.Warmer); ok {
			if err := w.Warm(ctx, m.callers); err != nil {
				return fmt.Errorf("warm %s: %w", m.name, err)
			}
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		calls, elapsed, lats, err := runUnary(ctx, c, m.callers, cfg.duration)
		runtime.ReadMemStats(&after)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		res.add(name, m.name+suffixRate, float64(calls)/elapsed.Seconds())
		res.add(name, m.name+suffixP50, float64(percentile(lats, 0.50)))
		res.add(name, m.name+suffixP99, float64(percentile(lats, 0.99)))
		if m.callers == 1 {
			res.add(name, mAllocs, float64(after.Mallocs-before.Mallocs)/float64(calls))
			res.add(name, mBytes, float64(after.TotalAlloc-before.TotalAlloc)/float64(calls))
		}
	}

	streams := []struct {
		key string
		n   int
		fn  func(context.Context, int) error
	}{
		{mTail, cfg.tail, c.Tail},
		{mIngestS, cfg.ingestSmall, c.Ingest},
		{mIngestL, cfg.ingestLarge, c.Ingest},
		{mEcho, cfg.echo, c.Echo},
	}
	for _, s := range streams {
		runtime.GC()
		start := time.Now()
		if err := s.fn(ctx, s.n); err != nil {
			return fmt.Errorf("%s: %w", s.key, err)
		}
		res.add(name, s.key, float64(s.n)/time.Since(start).Seconds())
	}
	return nil
}

// runUnary calls getStatus from callers goroutines for d and returns the
// calls made, the wall time and every call's latency.
func runUnary(ctx context.Context, c systems.Client, callers int, d time.Duration) (int, time.Duration, []time.Duration, error) {
	if callers == 1 {
		lats := seqLatencies[:0]
		start := time.Now()
		deadline := start.Add(d)
		for {
			t0 := time.Now()
			if !t0.Before(deadline) {
				break
			}
			if err := c.Unary(ctx); err != nil {
				return 0, 0, nil, err
			}
			if len(lats) < cap(lats) {
				lats = append(lats, time.Since(t0))
			}
		}
		return len(lats), time.Since(start), lats, nil
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		all   []time.Duration
		first error
	)
	start := time.Now()
	deadline := start.Add(d)
	for range callers {
		wg.Go(func() {
			var lats []time.Duration
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				if err := c.Unary(ctx); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lats...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return len(all), time.Since(start), all, first
}

// percentile returns the p-quantile of lats (sorted in place).
func percentile(lats []time.Duration, p float64) time.Duration {
	if len(lats) == 0 {
		return 0
	}
	slices.Sort(lats)
	i := int(p * float64(len(lats)-1))
	return lats[i]
}

// median returns the median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// serverProc is a server running in a child process (this binary's serve
// subcommand), so that its memory is its own.
type serverProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

func startServerProc(ctx context.Context, sys systems.System) (*serverProc, error) {
	return startServerCmd(ctx, nil, sys, nil)
}

// startServerCmd starts this binary's serve subcommand for sys, run through
// the command prefix wrap (such as ip netns exec NS), if any, with extra
// serve flags.
func startServerCmd(ctx context.Context, wrap []string, sys systems.System, extra []string) (*serverProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := append(append(append([]string{}, wrap...), exe, "serve", "-system", sys.Name()), extra...)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stdin.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("server process printed no address: %w", err)
	}
	return &serverProc{cmd: cmd, stdin: stdin, addr: strings.TrimSpace(line)}, nil
}

// stop closes the child's standard input (it then closes its server and
// exits) and waits for it.
func (p *serverProc) stop() error {
	p.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return errors.Join(errors.New("server process did not exit; killed"), <-done)
	}
}

// peakRSS reads VmHWM (the peak resident set) of pid in KiB.
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmHWM line %q", line)
			}
			return strconv.ParseFloat(f[0], 64)
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// measureRSS starts the server in a child process twice: once for idle
// connections (each made one call), once for open streams (spread over 10
// connections, each stream with one echo round trip done).
func measureRSS(ctx context.Context, cfg *config, sys systems.System, res *results) error {
	name := sys.Name()
	// Idle connections.
	p, err := startServerProc(ctx, sys)
	if err != nil {
		return err
	}
	clients, err := dialMany(ctx, sys, p.addr, cfg.idleConns)
	if err == nil {
		time.Sleep(500 * time.Millisecond) // let the server settle
		var base float64
		if base, err = peakRSS(p.cmd.Process.Pid); err == nil {
			res.add(name, mRSSIdle, base)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	if serr := p.stop(); err == nil && serr != nil {
		err = fmt.Errorf("server process: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("idle connections: %w", err)
	}

	// Baseline and open streams.
	if p, err = startServerProc(ctx, sys); err != nil {
		return err
	}
	defer p.stop()
	conns := min(10, cfg.openStreams)
	clients, err = dialMany(ctx, sys, p.addr, conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	if err != nil {
		return err
	}
	base, err := peakRSS(p.cmd.Process.Pid)
	if err != nil {
		return err
	}
	res.add(name, mRSSBase, base)
	var (
		mu    sync.Mutex
		open  []io.Closer
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, 64)
	for i := range cfg.openStreams {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, err := clients[i%conns].OpenStream(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			open = append(open, st)
		})
	}
	wg.Wait()
	defer func() {
		for _, st := range open {
			st.Close()
		}
	}()
	if errors.Is(first, systems.ErrNotSupported) {
		return nil
	}
	if first != nil {
		return fmt.Errorf("open streams: %w", first)
	}
	time.Sleep(500 * time.Millisecond)
	peak, err := peakRSS(p.cmd.Process.Pid)
	if err != nil {
		return err
	}
	res.add(name, mRSSStreams, peak)
	return nil
}

// dialMany dials n clients (each makes one call), 32 at a time.
func dialMany(ctx context.Context, sys systems.System, addr string, n int) ([]systems.Client, error) {
	var (
		mu    sync.Mutex
		out   []systems.Client
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, 32)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := sys.Dial(ctx, addr)
			if err == nil {
				if err = c.Unary(ctx); err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
				}
				return
			}
			out = append(out, c)
		})
	}
	wg.Wait()
	return out, first
}
