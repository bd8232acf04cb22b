package bench

import (
	"runtime/metrics"
	"syscall"
	"testing"
	"time"
)

// reportSched reports, per op, the CPU time the process used (cpu-µs/op,
// both sides and the runtime) and how many times a goroutine was
// scheduled to run (sched/op: 8× the count of runtime/metrics'
// /sched/latencies:seconds histogram, which samples one goroutine
// wakeup or hand-off in 8). Call it as defer reportSched(b)() before the timed loop.
func reportSched(b *testing.B) func() {
	cpu0, n0 := cpuTime(), schedCount()
	return func() {
		if b.N == 0 {
			return
		}
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-µs/op")
		b.ReportMetric(float64(schedCount()-n0)*schedSampling/float64(b.N), "sched/op")
	}
}

const schedMetric = "/sched/latencies:seconds"

// schedSampling is the runtime's sampling of scheduling latencies: one
// goroutine transition in 8 is recorded (runtime.gTrackingPeriod), so
// sched/op is an estimate.
const schedSampling = 8

// schedCount is how many times goroutines were scheduled so far.
func schedCount() uint64 {
	s := []metrics.Sample{{Name: schedMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return n
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
