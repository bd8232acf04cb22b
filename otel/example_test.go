package otel_test

import (
	"context"
	"fmt"
	"log"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/aster-go/aster"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// Example wires tracing into a server and a client. Real programs call
// otelexport.Setup once at start (it reads the OTEL_* variables) and use the
// global providers; here a span recorder shows what is produced.
func Example() {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))

	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quiet()),
		aster.WithMiddleware(asterotel.Server(asterotel.WithTracerProvider(tp))),
		aster.WithConnHook(asterotel.ConnHook()))
	srv.MustRegister(echoService())
	nw := mem.NewNetwork()
	ln, err := nw.Listen(key)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	client := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())),
		aster.WithClientMiddleware(asterotel.Client(asterotel.WithTracerProvider(tp))))
	defer client.Close()
	if _, err := aster.CallUnary[Msg](context.Background(), client, "Echo.say", &Msg{Text: "hello"}); err != nil {
		log.Fatal(err)
	}
	for _, s := range sr.Ended() {
		fmt.Println(s.SpanKind(), s.Name(), s.Parent().SpanID() != [8]byte{})
	}
	// Output:
	// server Echo/say true
	// client Echo/say false
}
