package config_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
)

// ExampleConfig_DialFleet calls a service by target rather than by one
// server's address. With ASTER_DISCOVERY_ENDPOINTS set, the target could be
// "etcd:///fleet/Greeter" (servers with ASTER_DISCOVERY=etcd and
// ASTER_DISCOVERY_PREFIX=fleet register there) or
// "dns:///_greeter._udp.example.internal"; here it is a static list.
func ExampleConfig_DialFleet() {
	cfg := config.Default()
	cfg.LogLevel = "error"
	srv, err := cfg.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	srv.MustRegister(handler.NewService("Greeter", 1).Handle("greet",
		handler.Unary(func(_ context.Context, g *Greeting) (*Greeting, error) { return g, nil })))
	ready := make(chan aster.Address, 1)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	addr := <-ready

	ctx := context.Background()
	fleet, err := cfg.DialFleet(ctx, "static:///"+addr.String())
	if err != nil {
		log.Fatal(err)
	}
	resp, err := aster.CallUnary[Greeting](ctx, fleet, "Greeter.greet", &Greeting{Text: "hello, fleet"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Text)
	for _, p := range fleet.Producers() {
		fmt.Println(p.State, p.Calls)
	}
	fleet.Close() // the fleet, then its discovery backend
	srv.Shutdown(ctx)
	<-done
	// Output:
	// hello, fleet
	// ready 1
}
