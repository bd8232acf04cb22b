package aster_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// A fleet: a client calls the Greeter service by name across three
// producers. Each call goes to a ready producer (power of two choices on
// outstanding calls), and an idempotent call that fails with UNAVAILABLE
// is retried on another producer. Here the producers are listed in a
// StaticSource; in production they announce themselves in etcd or DNS
// (aster.WithRegistry(registry, "fleet") on each server) and the client
// follows the same name there.
func ExampleNewFleet() {
	src := discovery.NewStaticSource("fleet/Greeter")
	nw := mem.NewNetwork() // in-memory transport; QUIC needs no dialer option
	for range 3 {
		key := trust.GenerateKey()
		srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
		srv.MustRegister(handler.NewService("Greeter", 1).
			Handle("greet", handler.Unary(func(_ context.Context, r *GreetRequest) (*GreetResponse, error) {
				return &GreetResponse{Greeting: "hello " + r.Name}, nil
			}), handler.Idempotent()))
		ln, err := nw.Listen(key)
		if err != nil {
			log.Fatal(err)
		}
		go srv.Serve(ln)
		defer srv.Close()
		if _, err := src.Register(context.Background(), "fleet/Greeter", discovery.Producer{Addr: ln.Addr()}); err != nil {
			log.Fatal(err)
		}
	}

	ctx := context.Background()
	// DialFleet waits for the producer set and one connection; NewFleet
	// would not wait.
	f, err := aster.DialFleet(ctx, src, "fleet/Greeter", aster.WithDialerFor(nw.Dialer), aster.WithLogger(quietLogger()))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	r, err := aster.CallUnary[GreetResponse](ctx, f, "Greeter.greet", &GreetRequest{Name: "edge-node-7"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(r.Greeting)
	fmt.Println(len(f.Producers()), "producers listed")
	// Output:
	// hello edge-node-7
	// 3 producers listed
}
