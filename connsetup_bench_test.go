package aster_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// BenchmarkConnSetupPhases splits connection set-up (dial to first call
// answered, as the bench module's BenchmarkConnSetup measures it: a new key
// and a new dialer per connection) into cumulative phases, so that the
// difference between two sub-benchmarks is the cost of one phase:
//
//	handshake   a new dialer (UDP socket, certificate) and the QUIC/TLS handshake
//	admitted    handshake + the admission exchange (aster.DialAddress)
//	first-call  admitted + one unary call answered
//	lazy-first-call  the same from aster.NewClient: the call is sent with the admission request
//	contract    first-call + the contract fetch (aster.Client.Contract)
//
// Besides wall time, each reports cpu-µs/op: the CPU time of the whole
// process (client and server) per connection, which a shared, noisy
// machine disturbs much less than wall time. Run:
//
//	go test -run=NONE -bench='^BenchmarkConnSetupPhases$' -benchmem -count=6 .
func BenchmarkConnSetupPhases(b *testing.B) {
	addr := missionServer(b)
	ctx := context.Background()
	req := &mission.StatusRequest{AgentID: "edge-node-7"}

	b.Run("phase=handshake", func(b *testing.B) {
		defer reportCPU(b)()
		b.ReportAllocs()
		for b.Loop() {
			d := quic.NewDialer(trust.GenerateKey(), nil)
			conn, err := d.Dial(ctx, addr)
			if err != nil {
				b.Fatal(err)
			}
			conn.Close(0, "")
			d.Close()
		}
	})
	dial := func(b *testing.B) *aster.Client {
		c, err := aster.DialAddress(ctx, addr) // a new key and dialer, as in the bench module
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	b.Run("phase=admitted", func(b *testing.B) {
		defer reportCPU(b)()
		b.ReportAllocs()
		for b.Loop() {
			dial(b).Close()
		}
	})
	b.Run("phase=first-call", func(b *testing.B) {
		defer reportCPU(b)()
		b.ReportAllocs()
		for b.Loop() {
			c := dial(b)
			_, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", req)
			c.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	// As first-call, with a client from NewClient, which dials for its
	// first call (grpc.NewClient's way): over QUIC the call goes out
	// with the admission request.
	b.Run("phase=lazy-first-call", func(b *testing.B) {
		defer reportCPU(b)()
		b.ReportAllocs()
		for b.Loop() {
			c := aster.NewClient(addr)
			_, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", req)
			c.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("phase=contract", func(b *testing.B) {
		defer reportCPU(b)()
		b.ReportAllocs()
		for b.Loop() {
			c := dial(b)
			_, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", req)
			if err == nil {
				_, _, err = c.Contract(ctx)
			}
			c.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// reportCPU returns a function that reports the process's CPU time (user
// and system) per iteration since reportCPU was called, as cpu-µs/op.
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
