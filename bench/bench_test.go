package bench

import (
	"context"
	"testing"

	"github.com/aster-go/aster/bench/internal/systems"
)

// The go test form of the suite, one sub-benchmark per system:
//
//	go test -run=NONE -bench=. -benchmem -count=6 | tee new.txt
//	benchstat -col /system new.txt
//
// One op is one getStatus call (Unary), one new connection with its first
// call (ConnSetup), or one streamed message (TailLogs, IngestMetrics,
// EchoBidi: ns/op is the per-message cost). Client and server run in this
// process, so allocs/op counts both sides, as testing.B sees them.

// env starts sys's server and one client for a benchmark.
func env(b *testing.B, sys systems.System) (systems.Client, systems.Server) {
	b.Helper()
	srv, err := sys.Serve()
	if err != nil {
		b.Fatal(err)
	}
	c, err := sys.Dial(context.Background(), srv.Addr())
	if err != nil {
		srv.Close()
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); srv.Close() })
	return c, srv
}

func BenchmarkUnary(b *testing.B) {
	ctx := context.Background()
	for _, sys := range systems.All() {
		b.Run("system="+sys.Name(), func(b *testing.B) {
			c, _ := env(b, sys)
			b.Run("callers=1", func(b *testing.B) {
				b.ReportAllocs()
				defer reportSched(b)()
				for b.Loop() {
					if err := c.Unary(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
			for _, callers := range []int{32, 256} {
				b.Run("callers="+itoa(callers), func(b *testing.B) {
					if w, ok := c.(systems.Warmer); ok {
						if err := w.Warm(ctx, callers); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportAllocs()
					defer reportSched(b)()
					// RunParallel starts p × GOMAXPROCS goroutines.
					b.SetParallelism(max(1, callers/procs()))
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := c.Unary(ctx); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
}

func BenchmarkConnSetup(b *testing.B) {
	ctx := context.Background()
	for _, sys := range systems.All() {
		b.Run("system="+sys.Name(), func(b *testing.B) {
			_, srv := env(b, sys)
			b.ReportAllocs()
			for b.Loop() {
				c, err := sys.Dial(ctx, srv.Addr())
				if err != nil {
					b.Fatal(err)
				}
				err = c.Unary(ctx)
				c.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchStream runs one streaming call of b.N messages per benchmark run.
func benchStream(b *testing.B, w systems.Workload, call func(systems.Client) func(context.Context, int) error) {
	ctx := context.Background()
	for _, sys := range systems.All() {
		b.Run("system="+sys.Name(), func(b *testing.B) {
			c, _ := env(b, sys)
			b.SetBytes(int64(sys.MessageSize(w)))
			b.ReportAllocs()
			b.ResetTimer()
			if err := call(c)(ctx, b.N); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func BenchmarkTailLogs(b *testing.B) {
	benchStream(b, systems.WorkloadTail, func(c systems.Client) func(context.Context, int) error { return c.Tail })
}

func BenchmarkIngestMetrics(b *testing.B) {
	benchStream(b, systems.WorkloadIngest, func(c systems.Client) func(context.Context, int) error { return c.Ingest })
}

func BenchmarkEchoBidi(b *testing.B) {
	benchStream(b, systems.WorkloadEcho, func(c systems.Client) func(context.Context, int) error { return c.Echo })
}
