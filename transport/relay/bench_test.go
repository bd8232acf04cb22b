package relay_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// waitBenchPath waits until c's connection runs on the path named ("relay":
// it stays there; "upgraded": it moved to a direct path).
func waitBenchPath(b *testing.B, c *aster.Client, path string) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := aster.CallUnary[Msg](context.Background(), c, "T.echo", &Msg{Text: "x"}); err != nil {
			b.Fatal(err)
		}
		p := c.RemoteAddr().(*relay.Addr).Path()
		if path == "relay" && strings.HasPrefix(p, "relay ") {
			return
		}
		if path == "upgraded" && strings.HasPrefix(p, "direct ") {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("path %q after 10s, want %s", p, path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkRelay compares, in the same run on loopback, calls over direct
// QUIC ("direct"), through a relay ("relay": the client's direct paths are
// disabled, so every packet goes through the relay), and over a connection
// made through the relay that then moved to a direct path ("upgraded",
// PROTOCOL.md §24): the unary call rate and server-streaming throughput
// (16 KiB messages). Run:
//
//	go test -run NONE -bench Relay -benchtime 3s ./transport/relay
//
// The relay's bandwidth limit is lifted (BytesPerSecond -1): the default of
// 16 MiB/s per endpoint would be the bottleneck otherwise.
func BenchmarkRelay(b *testing.B) {
	for _, path := range []string{"direct", "relay", "upgraded"} {
		b.Run(path, func(b *testing.B) {
			var addr aster.Address
			r := startBenchRelay(b)
			var opts []aster.ClientOption
			switch path {
			case "direct":
				addr = startBenchServer(b)
			case "relay":
				addr = startBenchServer(b, aster.WithHomeRelay(r.url), aster.WithIPTransports(false))
				opts = append(opts, aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer {
					return relay.NewDialer(k, &relay.Config{Direct: relay.DirectConfig{Disable: true}})
				}))
			case "upgraded":
				addr = startBenchServer(b, aster.WithHomeRelay(r.url), aster.WithIPTransports(false))
			}
			c, err := aster.DialAddress(context.Background(), addr, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			if path != "direct" {
				waitBenchPath(b, c, path)
			}
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
				benchStream16KiB(b, c)
				if path != "direct" {
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

// benchStream16KiB measures one server stream of b.N messages of 16 KiB
// from c's T.count, checking every message arrives whole.
func benchStream16KiB(b *testing.B, c *aster.Client) {
	payload := strings.Repeat("p", 16<<10)
	b.SetBytes(int64(len(payload)))
	ss, err := aster.CallServerStream[Msg](context.Background(), c, "T.count", &Msg{Text: payload, N: b.N})
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
}
