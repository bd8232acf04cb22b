package quic

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// BenchmarkHandshake measures one connection set-up without any RPC on
// top: a new client socket, the QUIC/TLS 1.3 handshake and the close, as
// the bench module's quic-stream floor does it (system=raw: quic-go's
// DialAddr with a server-only ed25519 certificate) and as aster's
// transport does it (system=aster: a new key, NewDialer, Dial, Close, with
// mutual authentication). cpu-µs/op is the CPU time of the whole process
// (client and server) per connection; hello-µs/op the wall time from the
// start of the set-up (before NewDialer, or DialAddr) until quic-go creates
// the connection and builds the ClientHello, which is what the client does
// before its first packet and so adds to the set-up's latency whatever the
// server does. Run:
//
//	go test -run=NONE -bench='^BenchmarkHandshake$' -benchmem -count=6 ./transport/quic
func BenchmarkHandshake(b *testing.B) {
	ctx := context.Background()
	defaults := (*Config)(nil).withDefaults()
	qcfg := defaults.quicConfig()
	// withHello returns cfg with a Tracer that adds the time since *start
	// to *hello when quic-go creates a client connection.
	withHello := func(cfg *quicgo.Config, start *time.Time, hello *time.Duration) *quicgo.Config {
		c := cfg.Clone()
		c.Tracer = func(_ context.Context, isClient bool, _ quicgo.ConnectionID) qlogwriter.Trace {
			if isClient {
				*hello += time.Since(*start)
			}
			return nil
		}
		return c
	}
	b.Run("system=raw", func(b *testing.B) {
		skey := trust.GenerateKey()
		cert, err := newCertificate(skey, trust.IDOf(skey))
		if err != nil {
			b.Fatal(err)
		}
		stls := baseTLSConfig(cert)
		udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		tr := &quicgo.Transport{Conn: udp}
		defer func() { _ = tr.Close(); _ = udp.Close() }()
		ln, err := tr.Listen(stls, qcfg)
		if err != nil {
			b.Fatal(err)
		}
		stop := acceptAndHold(func(ctx context.Context) (func(), error) {
			qc, err := ln.Accept(ctx)
			if err != nil {
				return nil, err
			}
			return func() { <-qc.Context().Done() }, nil
		})
		defer func() { _ = ln.Close(); stop() }()
		ctls := &tls.Config{
			MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPN},
			InsecureSkipVerify: true,
		}
		addr := ln.Addr().String()
		var start time.Time
		var hello time.Duration
		ccfg := withHello(qcfg, &start, &hello)
		defer reportHandshakeCPU(b)()
		defer reportHello(b, &hello)
		b.ReportAllocs()
		for b.Loop() {
			start = time.Now()
			qc, err := quicgo.DialAddr(ctx, addr, ctls, ccfg)
			if err != nil {
				b.Fatal(err)
			}
			_ = qc.CloseWithError(0, "")
		}
	})
	b.Run("system=aster", func(b *testing.B) {
		// A loop of handshakes passes UnvalidatedHandshakes (1,000 per
		// second): without a higher rate, some would measure a Retry.
		ln, err := Listen("127.0.0.1:0", trust.GenerateKey(), &Config{UnvalidatedHandshakes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		stop := acceptAndHold(func(ctx context.Context) (func(), error) {
			c, err := ln.Accept(ctx)
			if err != nil {
				return nil, err
			}
			return func() { <-c.Done() }, nil
		})
		defer func() { _ = ln.Close(); stop() }()
		addr := ln.Addr()
		var start time.Time
		var hello time.Duration
		defer reportHandshakeCPU(b)()
		defer reportHello(b, &hello)
		b.ReportAllocs()
		for b.Loop() {
			key := trust.GenerateKey()
			start = time.Now()
			d := NewDialer(key, nil)
			d.qcfg = withHello(d.qcfg, &start, &hello)
			handshakeOnce(b, ctx, d, addr)
		}
	})
}

// reportHello reports *hello per iteration as hello-µs/op.
func reportHello(b *testing.B, hello *time.Duration) {
	if b.N > 0 {
		b.ReportMetric(float64(hello.Microseconds())/float64(b.N), "hello-µs/op")
	}
}

func handshakeOnce(b *testing.B, ctx context.Context, d *Dialer, addr discovery.EndpointAddr) {
	c, err := d.Dial(ctx, addr)
	if err != nil {
		b.Fatal(err)
	}
	_ = c.Close(transport.ConnNoError, "")
	_ = d.Close()
}

// acceptAndHold runs accept in a loop until it fails, holding each
// connection until it closes; the returned stop waits for all of it.
func acceptAndHold(accept func(ctx context.Context) (func(), error)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			hold, err := accept(ctx)
			if err != nil {
				return
			}
			wg.Go(hold)
		}
	})
	return func() { cancel(); wg.Wait() }
}

func reportHandshakeCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}
