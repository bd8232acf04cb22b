package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/aster-go/aster/bench/internal/systems"
)

// results collects per-round values by system and metric.
type results struct {
	mu   sync.Mutex
	vals map[string]map[string][]float64
	errs []string
}

func newResults() *results { return &results{vals: map[string]map[string][]float64{}} }

func (r *results) add(sys, metric string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.vals[sys]
	if m == nil {
		m = map[string][]float64{}
		r.vals[sys] = m
	}
	m[metric] = append(m[metric], v)
}

func (r *results) fail(sys string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, sys+": "+err.Error())
}

func (r *results) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs
}

// get returns the median of sys's metric and whether there was a value.
func (r *results) get(sys, metric string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	xs := r.vals[sys][metric]
	if len(xs) == 0 {
		return 0, false
	}
	return median(xs), true
}

func (r *results) series(sys, metric string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vals[sys][metric]
}

// cpuModel returns the model name from /proc/cpuinfo.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// streamFigures are the streaming measurements: metric, benchmark name,
// and the workload whose message size gives MB/s.
var streamFigures = []struct {
	key, bench string
	w          systems.Workload
}{
	{mTail, "TailLogs", systems.WorkloadTail},
	{mIngestS, "IngestMetricsSmall", systems.WorkloadIngest},
	{mIngestL, "IngestMetricsLarge", systems.WorkloadIngest},
	{mEcho, "EchoBidi", systems.WorkloadEcho},
}

// writeBenchstat writes every round's values as benchmark result lines
// that benchstat reads (one line per round; units are named by metric).
func (r *results) writeBenchstat(w io.Writer, cfg *config) error {
	var b strings.Builder
	fmt.Fprintf(&b, "goos: %s\ngoarch: %s\npkg: github.com/aster-go/aster/bench\ncpu: %s\n", runtime.GOOS, runtime.GOARCH, cpuModel())
	procs := runtime.GOMAXPROCS(0)
	for _, sys := range cfg.systems {
		n := sys.Name()
		for _, m := range unaryModes {
			rate := r.series(n, m.name+suffixRate)
			p50 := r.series(n, m.name+suffixP50)
			p99 := r.series(n, m.name+suffixP99)
			allocs, bytes := r.series(n, mAllocs), r.series(n, mBytes)
			for i := range min(len(rate), len(p50), len(p99)) {
				fmt.Fprintf(&b, "BenchmarkUnary/system=%s/callers=%d-%d\t1\t%.0f ns/op\t%.0f calls/s\t%.0f p50-ns\t%.0f p99-ns",
					n, m.callers, procs, 1e9/rate[i], rate[i], p50[i], p99[i])
				if m.callers == 1 && i < len(allocs) && i < len(bytes) {
					fmt.Fprintf(&b, "\t%.0f B/op\t%.1f allocs/op", bytes[i], allocs[i])
				}
				b.WriteString("\n")
			}
		}
		for _, v := range r.series(n, mSetup) {
			fmt.Fprintf(&b, "BenchmarkConnSetup/system=%s-%d\t1\t%.0f ns/op\n", n, procs, v)
		}
		for _, f := range streamFigures {
			size := float64(sys.MessageSize(f.w))
			for _, v := range r.series(n, f.key) {
				fmt.Fprintf(&b, "Benchmark%s/system=%s-%d\t1\t%.1f ns/op\t%.0f msgs/s\t%.2f MB/s\n", f.bench, n, procs, 1e9/v, v, v*size/1e6)
			}
		}
		for _, m := range []struct{ key, unit string }{
			{mRSSBase, "base-KiB"},
			{mRSSIdle, fmt.Sprintf("idle%d-KiB", cfg.idleConns)},
			{mRSSStreams, fmt.Sprintf("streams%d-KiB", cfg.openStreams)},
		} {
			for _, v := range r.series(n, m.key) {
				fmt.Fprintf(&b, "BenchmarkServerPeakRSS/system=%s/%s-%d\t1\t%.0f %s\n", n, m.key, procs, v, m.unit)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// human formats a rate or count compactly.
func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1f k", v/1e3)
	case v >= 1e3:
		return fmt.Sprintf("%.2f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// us formats nanoseconds as microseconds.
func us(ns float64) string {
	if ns >= 1e6 {
		return fmt.Sprintf("%.1f ms", ns/1e6)
	}
	return fmt.Sprintf("%.0f µs", ns/1e3)
}

// cell formats sys's metric with f, or "n/a".
func (r *results) cell(sys, metric string, f func(float64) string) string {
	v, ok := r.get(sys, metric)
	if !ok {
		return "n/a"
	}
	return f(v)
}

// ratio formats sys's metric divided by its floor's.
func (r *results) ratio(sys systems.System, metric string) string {
	if sys.Floor() == sys.Name() {
		return "floor"
	}
	v, ok1 := r.get(sys.Name(), metric)
	f, ok2 := r.get(sys.Floor(), metric)
	if !ok1 || !ok2 || f == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*v/f)
}

func kib(v float64) string { return fmt.Sprintf("%.1f MiB", v/1024) }

// writeMarkdown writes the tables and the targets.
func (r *results) writeMarkdown(w *strings.Builder, cfg *config) {
	fmt.Fprintf(w, "Median of %d interleaved round(s); %s, GOMAXPROCS=%d, %s. "+
		"\"vs floor\" is the median divided by the floor's median (aster → quic-stream, grpc and connect → tcp-tls).\n\n",
		cfg.rounds, runtime.Version(), runtime.GOMAXPROCS(0), cpuModel())

	fmt.Fprintf(w, "### Unary getStatus (%s per figure)\n\n", cfg.duration)
	w.WriteString("| system | 1 caller calls/s | vs floor | 32 callers | vs floor | 256 callers | vs floor | p50 / p99, 1 caller | p50 / p99, 32 | p50 / p99, 256 | allocs/call | B/call | conn set-up |\n")
	w.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sys := range cfg.systems {
		n := sys.Name()
		fmt.Fprintf(w, "| %s ", n)
		for _, m := range unaryModes {
			fmt.Fprintf(w, "| %s | %s ", r.cell(n, m.name+suffixRate, human), r.ratio(sys, m.name+suffixRate))
		}
		for _, m := range unaryModes {
			fmt.Fprintf(w, "| %s / %s ", r.cell(n, m.name+suffixP50, us), r.cell(n, m.name+suffixP99, us))
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n",
			r.cell(n, mAllocs, func(v float64) string { return fmt.Sprintf("%.0f", v) }),
			r.cell(n, mBytes, func(v float64) string { return fmt.Sprintf("%.0f", v) }),
			r.cell(n, mSetup, us))
	}

	fmt.Fprintf(w, "\n### Streaming (tailLogs %d entries, ingestMetrics %d and %d points, echo bidi %d × 64-byte payloads)\n\n",
		cfg.tail, cfg.ingestSmall, cfg.ingestLarge, cfg.echo)
	w.WriteString("| system | message bytes (log / metric / echo) | tailLogs msgs/s | MB/s | vs floor | ingest small msgs/s | ingest large msgs/s | MB/s | vs floor | echo msgs/s | MB/s | vs floor |\n")
	w.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, sys := range cfg.systems {
		n := sys.Name()
		mb := func(wl systems.Workload) func(float64) string {
			return func(v float64) string { return fmt.Sprintf("%.1f", v*float64(sys.MessageSize(wl))/1e6) }
		}
		fmt.Fprintf(w, "| %s | %d / %d / %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n,
			sys.MessageSize(systems.WorkloadTail), sys.MessageSize(systems.WorkloadIngest), sys.MessageSize(systems.WorkloadEcho),
			r.cell(n, mTail, human), r.cell(n, mTail, mb(systems.WorkloadTail)), r.ratio(sys, mTail),
			r.cell(n, mIngestS, human), r.cell(n, mIngestL, human), r.cell(n, mIngestL, mb(systems.WorkloadIngest)), r.ratio(sys, mIngestL),
			r.cell(n, mEcho, human), r.cell(n, mEcho, mb(systems.WorkloadEcho)), r.ratio(sys, mEcho))
	}

	if cfg.rss {
		fmt.Fprintf(w, "\n### Server peak RSS (VmHWM of a separate server process)\n\n")
		fmt.Fprintf(w, "| system | after 10 connections | %d idle connections | %d open streams |\n|---|--:|--:|--:|\n", cfg.idleConns, cfg.openStreams)
		for _, sys := range cfg.systems {
			n := sys.Name()
			if sys.InProcessOnly() {
				fmt.Fprintf(w, "| %s | n/a (in-process transport) | n/a | n/a |\n", n)
				continue
			}
			label := n
			if rn, ok := sys.(systems.RSSNoter); ok && rn.RSSNote() != "" {
				label += " (" + rn.RSSNote() + ")"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", label, r.cell(n, mRSSBase, kib), r.cell(n, mRSSIdle, kib), r.cell(n, mRSSStreams, kib))
		}
	}

	w.WriteString("\n### Targets (issue 3)\n\n| target | measured | met? |\n|---|---|---|\n")
	for _, t := range r.targets() {
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.what, t.measured, t.met)
	}
}

type target struct{ what, measured, met string }

// targets checks the targets on this run's medians.
func (r *results) targets() []target {
	var out []target
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	ratio := func(what, a, b, metric string, want float64) {
		va, ok1 := r.get(a, metric)
		vb, ok2 := r.get(b, metric)
		if !ok1 || !ok2 || vb == 0 {
			out = append(out, target{what, "not measured", "n/a"})
			return
		}
		q := va / vb
		out = append(out, target{what, fmt.Sprintf("%s / %s = %.2f", human(va), human(vb), q), yes(q >= want)})
	}
	ratio("aster-quic unary, 1 caller ≥ 75% of quic-stream", "aster-quic", "quic-stream", unarySeq+suffixRate, 0.75)
	ratio("aster-quic unary, 32 callers ≥ 75% of quic-stream", "aster-quic", "quic-stream", unary32+suffixRate, 0.75)
	ratio("aster-quic unary, 32 callers ≈ 1.5× grpc", "aster-quic", "grpc", unary32+suffixRate, 1.5)
	for _, s := range []struct{ what, key string }{
		{"server stream (tailLogs)", mTail},
		{"client stream (ingestMetrics, large)", mIngestL},
	} {
		v, ok := r.get("aster-quic", s.key)
		if !ok {
			out = append(out, target{"aster-quic " + s.what + " ≥ 1 M msgs/s", "not measured", "n/a"})
		} else {
			out = append(out, target{"aster-quic " + s.what + " ≥ 1 M msgs/s", human(v) + " msgs/s", yes(v >= 1e6)})
		}
		ratio("aster-quic "+s.what+" ≥ 1.5× grpc", "aster-quic", "grpc", s.key, 1.5)
	}
	a, ok1 := r.get("aster-quic", mAllocs)
	f, ok2 := r.get("quic-stream", mAllocs)
	if ok1 && ok2 {
		out = append(out, target{"aster-quic allocs/call ≤ quic-stream's + 20",
			fmt.Sprintf("%.0f vs %.0f (+%.0f)", a, f, a-f), yes(a <= f+20)})
	} else {
		out = append(out, target{"aster-quic allocs/call ≤ quic-stream's + 20", "not measured", "n/a"})
	}
	return out
}
