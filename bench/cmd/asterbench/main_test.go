package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedianAndPercentile(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median odd = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
	if got := median(nil); got != 0 {
		t.Errorf("median empty = %v", got)
	}
	lats := make([]time.Duration, 100)
	for i := range lats {
		lats[i] = time.Duration(100-i) * time.Microsecond
	}
	if got := percentile(lats, 0.5); got != 50*time.Microsecond {
		t.Errorf("p50 = %v", got)
	}
	if got := percentile(lats, 0.99); got != 99*time.Microsecond {
		t.Errorf("p99 = %v", got)
	}
}

func TestPeakRSSOfSelf(t *testing.T) {
	kb, err := peakRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if kb < 1024 {
		t.Errorf("peak RSS of the test process = %v KiB", kb)
	}
	if _, err := peakRSS(-1); err == nil {
		t.Error("peakRSS(-1) succeeded")
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick", "-systems", "aster-quic,grpc"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.rounds != 1 || len(cfg.systems) != 2 || cfg.systems[1].Name() != "grpc" {
		t.Errorf("cfg = %+v", cfg)
	}
	if _, err := parseFlags([]string{"-systems", "nope"}); err == nil || !strings.Contains(err.Error(), "unknown system") {
		t.Errorf("unknown system: %v", err)
	}
	if _, err := parseFlags([]string{"-rounds", "0"}); err == nil {
		t.Error("-rounds 0 accepted")
	}
}

// TestTargetsAndReport checks the target verdicts and that the report and
// benchstat output carry the recorded values.
func TestTargetsAndReport(t *testing.T) {
	cfg, err := parseFlags([]string{"-systems", "quic-stream,aster-quic,grpc", "-rss=false"})
	if err != nil {
		t.Fatal(err)
	}
	r := newResults()
	for _, v := range []float64{10000, 30000, 20000} {
		r.add("quic-stream", unarySeq+suffixRate, v)
	}
	r.add("aster-quic", unarySeq+suffixRate, 14000) // 70% of the median 20000
	r.add("quic-stream", mAllocs, 70)
	r.add("aster-quic", mAllocs, 85)
	r.add("aster-quic", mTail, 1.2e6)
	r.add("grpc", mTail, 0.9e6)
	got := map[string]string{}
	for _, tg := range r.targets() {
		got[tg.what] = tg.met
	}
	for what, want := range map[string]string{
		"aster-quic unary, 1 caller ≥ 75% of quic-stream":   "**no**",
		"aster-quic allocs/call ≤ quic-stream's + 20":       "yes",
		"aster-quic server stream (tailLogs) ≥ 1 M msgs/s":  "yes",
		"aster-quic server stream (tailLogs) ≥ 1.5× grpc":   "**no**",
		"aster-quic unary, 32 callers ≥ 75% of quic-stream": "n/a",
	} {
		if got[what] != want {
			t.Errorf("%s: %q, want %q", what, got[what], want)
		}
	}
	var md strings.Builder
	r.writeMarkdown(&md, cfg)
	if !strings.Contains(md.String(), "| aster-quic | 14.0 k | 70% |") {
		t.Errorf("markdown lacks the aster-quic row:\n%s", md.String())
	}
	var bs strings.Builder
	if err := r.writeBenchstat(&bs, cfg); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(bs.String(), "BenchmarkUnary/system=quic-stream/callers=1-"); n != 0 {
		// p50/p99 were not recorded, so no unary lines can be complete.
		t.Errorf("%d incomplete unary lines written", n)
	}
	if !strings.Contains(bs.String(), "BenchmarkTailLogs/system=aster-quic-") || !strings.Contains(bs.String(), "1200000 msgs/s") {
		t.Errorf("benchstat output lacks the tail line:\n%s", bs.String())
	}
}
