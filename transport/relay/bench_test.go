package relay_test

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/relay"
)

// BenchmarkRelay compares calls through a relay on loopback with direct
// QUIC in the same run: the unary call rate and server-streaming
// throughput (16 KiB messages). Run:
//
//	go test -run NONE -bench Relay -benchtime 3s ./transport/relay
//
// The relay's bandwidth limit is lifted (BytesPerSecond -1): the default of
// 16 MiB/s per endpoint would be the bottleneck otherwise.
func BenchmarkRelay(b *testing.B) {
	for _, path := range []string{"direct", "relay"} {
		b.Run(path, func(b *testing.B) {
			var addr aster.Address
			r := startBenchRelay(b)
			if path == "direct" {
				addr = startBenchServer(b)
			} else {
				addr = startBenchServer(b, aster.WithHomeRelay(r.url), aster.WithIPTransports(false))
			}
			c, err := aster.DialAddress(context.Background(), addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			b.Run("unary", func(b *testing.B) {
				for b.Loop() {
					if _, err := aster.CallUnary[Msg](ctx, c, "T.echo", &Msg{Text: "x"}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
			// 32 concurrent callers on the one connection, as the bench
			// module's 32-caller unary figure.
			b.Run("unary32", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := aster.CallUnary[Msg](ctx, c, "T.echo", &Msg{Text: "x"}); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
			b.Run("stream16KiB", func(b *testing.B) {
				payload := strings.Repeat("p", 16<<10)
				b.SetBytes(int64(len(payload)))
				ss, err := aster.CallServerStream[Msg](ctx, c, "T.count", &Msg{Text: payload, N: b.N})
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for m, err := range ss.All() {
					if err != nil {
						b.Fatal(err)
					}
					if len(m.Text) != len(payload) {
						b.Fatalf("message of %d bytes", len(m.Text))
					}
					n++
				}
				if n != b.N {
					b.Fatalf("%d of %d messages", n, b.N)
				}
				if path == "relay" {
					st := r.srv.Stats()
					b.Logf("relay: forwarded %d packets, dropped %v", st.PacketsForwarded, st.Dropped)
				}
			})
		})
	}
}

func startBenchRelay(b *testing.B) *testRelay {
	b.Helper()
	return startRelayTB(b, "127.0.0.1:0", relay.ServerConfig{BytesPerSecond: -1})
}

func startBenchServer(b *testing.B, opts ...aster.ServerOption) aster.Address {
	b.Helper()
	return startServerTB(b, opts...)
}
