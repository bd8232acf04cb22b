// Command asterbench runs the benchmark suite: the same service (Mission
// Control's getStatus, tailLogs, ingestMetrics and an echo bidi) in aster,
// grpc-go, connect-go and the raw quic-go and TCP+TLS floors, all on
// loopback. Rounds of the systems are interleaved in one run (the order
// rotates each round); the table reports the median of the rounds and the
// ratio to each system's floor, and the raw per-round results are written in
// benchstat's format.
//
// Usage, from the bench directory:
//
//	go run ./cmd/asterbench                  # full suite (several minutes)
//	go run ./cmd/asterbench -quick           # a few seconds: smoke test
//	go run ./cmd/asterbench -systems aster-quic,grpc -rounds 3
//
// The peak-RSS figures run each server in a separate process (this binary
// with the serve subcommand) and read VmHWM from /proc/<pid>/status.
//
// As root, the loss subcommand runs unary calls between two network
// namespaces joined by TUN devices and a forwarder that delays and drops
// packets (see loss.go):
//
//	go build -o /tmp/asterbench ./cmd/asterbench && sudo /tmp/asterbench loss
//
// The probe subcommand runs the load and fault probes of RELIABILITY.md
// (load, streams, connections, killed peers, dead dials, drain, hostile
// inputs, relay closes, soak), each against a server in its own process,
// on loopback, bounded in time:
//
//	go run ./cmd/asterbench probe -quick           # under a minute
//	go run ./cmd/asterbench probe                  # full counts, several minutes
//	go run ./cmd/asterbench probe -only kill-server,drain
//	go run ./cmd/asterbench probe -only soak -soak 10m
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/aster-go/aster/bench/internal/systems"
)

// config holds the flags of a run.
type config struct {
	rounds      int
	duration    time.Duration
	tail        int
	echo        int
	ingestSmall int
	ingestLarge int
	setups      int
	idleConns   int
	openStreams int
	rss         bool
	systems     []systems.System
	out         string
	md          string
}

func main() {
	if len(os.Args) > 1 {
		sub := map[string]func([]string) error{
			"serve": serve, "loss": lossMain, "lossclient": lossClient,
			"probe": probeMain, "probe-serve": probeServe, "probe-client": probeClient,
		}[os.Args[1]]
		if sub != nil {
			if err := sub(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "asterbench %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "asterbench:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "asterbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("asterbench", flag.ContinueOnError)
	cfg := &config{}
	quick := fs.Bool("quick", false, "tiny sizes and one round: a smoke test of a few seconds")
	fs.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds of every system; the table shows medians")
	fs.DurationVar(&cfg.duration, "duration", time.Second, "how long each unary measurement runs")
	fs.IntVar(&cfg.tail, "tail", 200_000, "log entries per tailLogs call")
	fs.IntVar(&cfg.echo, "echo", 200_000, "messages per echo bidi call")
	fs.IntVar(&cfg.ingestSmall, "ingest-small", 10_000, "metric points of the small ingestMetrics call")
	fs.IntVar(&cfg.ingestLarge, "ingest-large", 1_000_000, "metric points of the large ingestMetrics call")
	fs.IntVar(&cfg.setups, "setups", 20, "new connections per round for the set-up time")
	fs.IntVar(&cfg.idleConns, "idle-conns", 1000, "idle connections for the server's peak RSS")
	fs.IntVar(&cfg.openStreams, "open-streams", 10_000, "concurrent open streams for the server's peak RSS")
	fs.BoolVar(&cfg.rss, "rss", true, "measure the server's peak RSS in a separate process")
	names := fs.String("systems", "", "comma-separated systems to run (default all: "+strings.Join(allNames(), ",")+")")
	fs.StringVar(&cfg.out, "out", filepath.Join("results", "asterbench.txt"), "file for the raw results in benchstat format (its directory is created)")
	fs.StringVar(&cfg.md, "md", "", "file for a copy of the markdown table (optional)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *quick {
		cfg.rounds, cfg.duration = 1, 50*time.Millisecond
		cfg.tail, cfg.echo, cfg.ingestSmall, cfg.ingestLarge = 2000, 2000, 1000, 10_000
		cfg.setups, cfg.idleConns, cfg.openStreams = 2, 10, 100
	}
	if cfg.rounds < 1 || cfg.duration <= 0 || cfg.tail < 1 || cfg.echo < 1 || cfg.ingestSmall < 1 ||
		cfg.ingestLarge < 1 || cfg.setups < 1 || cfg.idleConns < 1 || cfg.openStreams < 1 {
		return nil, fmt.Errorf("rounds, duration and every size must be positive")
	}
	if *names == "" {
		cfg.systems = systems.All()
	} else {
		for n := range strings.SplitSeq(*names, ",") {
			s := systems.ByName(strings.TrimSpace(n))
			if s == nil {
				return nil, fmt.Errorf("unknown system %q (have %s)", n, strings.Join(allNames(), ", "))
			}
			cfg.systems = append(cfg.systems, s)
		}
	}
	return cfg, nil
}

func allNames() []string {
	var out []string
	for _, s := range systems.All() {
		out = append(out, s.Name())
	}
	return out
}

// serve runs one system's server until standard input closes, printing its
// address first: the separate server process of the peak-RSS figures.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("system", "", "system whose server to run")
	host := fs.String("host", systems.ListenHost, "IP address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	systems.ListenHost = *host
	sys := systems.ByName(*name)
	if sys == nil {
		return fmt.Errorf("unknown system %q", *name)
	}
	srv, err := sys.Serve()
	if err != nil {
		return err
	}
	fmt.Println(srv.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return srv.Close()
}

// run measures every system for cfg.rounds interleaved rounds, then the
// peak RSS, and prints the tables.
func run(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	res := newResults()
	fmt.Fprintf(stderr, "asterbench: %d systems, %d rounds, %s, GOMAXPROCS=%d\n",
		len(cfg.systems), cfg.rounds, runtime.Version(), runtime.GOMAXPROCS(0))
	for r := range cfg.rounds {
		for i := range cfg.systems {
			sys := cfg.systems[(i+r)%len(cfg.systems)]
			start := time.Now()
			if err := measureRound(ctx, cfg, sys, res); err != nil {
				res.fail(sys.Name(), err)
				fmt.Fprintf(stderr, "round %d %s: %v\n", r+1, sys.Name(), err)
				continue
			}
			fmt.Fprintf(stderr, "round %d/%d %-12s %6.1fs\n", r+1, cfg.rounds, sys.Name(), time.Since(start).Seconds())
		}
	}
	if cfg.rss {
		for _, sys := range cfg.systems {
			if sys.InProcessOnly() {
				continue
			}
			start := time.Now()
			if err := measureRSS(ctx, cfg, sys, res); err != nil {
				res.fail(sys.Name(), fmt.Errorf("rss: %w", err))
				fmt.Fprintf(stderr, "rss %s: %v\n", sys.Name(), err)
				continue
			}
			fmt.Fprintf(stderr, "rss %-12s %6.1fs\n", sys.Name(), time.Since(start).Seconds())
		}
	}
	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(cfg.out)
	if err != nil {
		return err
	}
	if err := res.writeBenchstat(f, cfg); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var md strings.Builder
	res.writeMarkdown(&md, cfg)
	if _, err := io.WriteString(stdout, md.String()); err != nil {
		return err
	}
	if cfg.md != "" {
		if err := os.WriteFile(cfg.md, []byte(md.String()), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "raw results: %s\n", cfg.out)
	if errs := res.failures(); len(errs) > 0 {
		return fmt.Errorf("%d measurements failed: %s", len(errs), strings.Join(errs, "; "))
	}
	return nil
}
