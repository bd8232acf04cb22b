package aster_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// Stream reuse: calls one after the other share a stream, which both sides
// count. WithStreamReuse(false) would give each call its own.
func ExampleWithStreamReuse() {
	greet := func(_ context.Context, r *GreetRequest) (*GreetResponse, error) {
		return &GreetResponse{Greeting: "hello " + r.Name}, nil
	}
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(handler.NewService("Greeter", 1).Handle("greet", handler.Unary(greet)))
	nw := mem.NewNetwork()
	ln, err := nw.Listen(key)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialerFor(nw.Dialer), aster.WithStreamReuse(true))
	defer c.Close()
	for _, name := range []string{"a", "b", "c"} {
		if _, err := aster.CallUnary[GreetResponse](context.Background(), c, "Greeter.greet", &GreetRequest{Name: name}); err != nil {
			log.Fatal(err)
		}
	}
	m := c.Metrics() // the admission exchange had a stream of its own
	fmt.Printf("client: %d streams opened, %d calls on reused ones, %d idle\n", m.StreamsOpened, m.StreamsReused, m.IdleStreams)
	fmt.Printf("server: %d calls on reused streams\n", srv.Metrics().StreamsReused)
	// Output:
	// client: 2 streams opened, 2 calls on reused ones, 1 idle
	// server: 2 calls on reused streams
}
