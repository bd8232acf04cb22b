package otel_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/middleware"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/transport/quic"
)

// BenchmarkUnaryTracing measures a unary call over loopback QUIC with the
// otel middleware on both sides, against the same call without it:
//
//	off        no otel middleware at all (what Setup-less programs run)
//	unsampled  middleware on, sampler NeverSample (trace context still sent)
//	sampled    middleware on, every call recorded (spans built, then dropped)
//
// Metrics go to the global meter provider, a no-op here; run:
//
//	go test -run=NONE -bench=UnaryTracing -benchmem ./otel
func BenchmarkUnaryTracing(b *testing.B) {
	for _, mode := range []string{"off", "unsampled", "sampled"} {
		b.Run(mode, func(b *testing.B) {
			var srvMW []aster.ServerOption
			var cliMW []middleware.Client
			switch mode {
			case "unsampled", "sampled":
				sampler := sdktrace.NeverSample()
				if mode == "sampled" {
					sampler = sdktrace.AlwaysSample()
				}
				// No span processor: spans are recorded, then dropped.
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler))
				b.Cleanup(func() { tp.Shutdown(context.Background()) })
				opt := asterotel.WithTracerProvider(tp)
				srvMW = append(srvMW, aster.WithMiddleware(asterotel.Server(opt)))
				cliMW = append(cliMW, asterotel.Client(opt))
			}
			key := testutil.Key(b, 1)
			srv := aster.NewServer(append(srvMW, aster.WithSecretKey(key), aster.WithLogger(quiet()))...)
			srv.MustRegister(echoService())
			ln, err := quic.Listen("127.0.0.1:0", key, nil)
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { srv.Serve(ln); close(done) }()
			d := quic.NewDialer(testutil.Key(b, 2), nil)
			c, err := aster.DialAddress(context.Background(), ln.Addr(), aster.WithDialer(d), aster.WithClientMiddleware(cliMW...))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { c.Close(); d.Close(); srv.Close(); <-done })
			ctx := context.Background()
			req := &Msg{Text: "status"}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := aster.CallUnary[Msg](ctx, c, "Echo.say", req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
