package aster_test

import (
	"context"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport/quic"
)

// Benchmarks of the four figures the Core issue sets targets for. Run:
//
//	go test -run=NONE -bench=. -benchmem -count=6 . | tee new.txt
//
// The raw quic-go floor is BenchmarkRawQUICEcho in transport/quic.

func benchEnv(b *testing.B, tk transportKind) *aster.Client {
	b.Helper()
	key := testutil.Key(b, 1)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	mc := mission.NewMissionControl()
	srv.MustRegister(mc.Service(), newTestService().service())
	ln, dialer := tk.setup(b, key)
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	c, err := aster.DialAddress(context.Background(), ln.Addr(), aster.WithDialer(dialer(testutil.Key(b, 2))))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); srv.Close(); <-done })
	return c
}

// missionServer serves Mission Control over QUIC on loopback (key 1) until
// the benchmark ends, and returns its address.
func missionServer(b *testing.B) aster.Address {
	b.Helper()
	key := testutil.Key(b, 1)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(mission.NewMissionControl().Service())
	// A loop of connection set-ups passes UnvalidatedHandshakes (1,000
	// per second): without a higher rate, some would measure a Retry.
	ln, err := quic.Listen("127.0.0.1:0", key, &quic.Config{UnvalidatedHandshakes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	b.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr()
}

func BenchmarkUnary(b *testing.B) {
	for _, tk := range transports {
		b.Run(tk.name, func(b *testing.B) {
			c := benchEnv(b, tk)
			ctx := context.Background()
			req := &mission.StatusRequest{AgentID: "edge-node-7"}
			b.Run("sequential", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel32", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 callers
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			// As asterbench calls: every call under one shared context
			// with a deadline, which the client sends as the call's timeout
			// and the server arms as the handler context's deadline.
			b.Run("parallel32-deadline", func(b *testing.B) {
				dctx, cancel := context.WithTimeout(ctx, time.Hour)
				defer cancel()
				b.ReportAllocs()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := aster.CallUnary[mission.StatusResponse](dctx, c, "MissionControl.getStatus", req); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// BenchmarkClientStream streams metric points through ingestMetrics; one
// op is one message, so ns/op is the per-message cost and msgs/s the rate.
func BenchmarkClientStream(b *testing.B) {
	for _, tk := range transports {
		b.Run(tk.name, func(b *testing.B) {
			c := benchEnv(b, tk)
			ctx := context.Background()
			p := &mission.MetricPoint{Name: "cpu.usage", Value: 0.5, Timestamp: 1712567890.1}
			b.ReportAllocs()
			cs, err := aster.CallClientStream[mission.MetricPoint, mission.IngestResult](ctx, c, "MissionControl.ingestMetrics")
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				if err := cs.Send(p); err != nil {
					b.Fatal(err)
				}
				n++
			}
			res, err := cs.CloseAndRecv()
			if err != nil {
				b.Fatal(err)
			}
			if res.Accepted != int64(n) {
				b.Fatalf("accepted %d of %d", res.Accepted, n)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkFleetUnary compares unary calls at 32 callers to one producer
// through a direct Client and through a Fleet of that one producer: the
// cost of the balancer (pick, outstanding count, stream wrapper) and, in
// "fleet", of the Fleet's default Retry; "fleet-noretry" turns it off
// (WithFleetRetry(nil)). Run the sub-benchmarks in one process, on a quiet
// machine:
//
//	go test -run=NONE -bench=FleetUnary -benchmem -count=6 .
func BenchmarkFleetUnary(b *testing.B) {
	addr := missionServer(b)
	ctx := context.Background()
	req := &mission.StatusRequest{AgentID: "edge-node-7"}
	run := func(b *testing.B, cc aster.Caller) {
		b.ReportAllocs()
		b.SetParallelism(16) // 16 × GOMAXPROCS(2) = 32 callers
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := aster.CallUnary[mission.StatusResponse](ctx, cc, "MissionControl.getStatus", req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("client", func(b *testing.B) {
		c, err := aster.DialAddress(ctx, addr, aster.WithSecretKey(testutil.Key(b, 2)))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
	fleet := func(b *testing.B, opts ...aster.ClientOption) {
		src := discovery.NewStaticSource("bench/MissionControl", discovery.Producer{Addr: addr})
		f, err := aster.DialFleet(ctx, src, "bench/MissionControl", append([]aster.ClientOption{aster.WithSecretKey(testutil.Key(b, 3))}, opts...)...)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		run(b, f)
	}
	b.Run("fleet", func(b *testing.B) { fleet(b) })
	b.Run("fleet-noretry", func(b *testing.B) { fleet(b, aster.WithFleetRetry(nil)) })
}
