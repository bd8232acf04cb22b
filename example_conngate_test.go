package aster_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// Connection gates: the server serves only the endpoints on its
// allow-list, at most 10 new connections per second from one address; a
// stranger's connection is closed before anything on it is served, and
// its client reports PERMISSION_DENIED.
func ExampleWithConnGate() {
	friend, stranger := trust.GenerateKey(), trust.GenerateKey()
	svc := handler.NewService("Greeter", 1).
		Handle("greet", handler.Unary(func(_ context.Context, m *GreetRequest) (*GreetResponse, error) {
			return &GreetResponse{Greeting: "hello, " + m.Name}, nil
		}))
	serverKey := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(serverKey), aster.WithLogger(quietLogger()),
		aster.WithConnGate(
			aster.AllowPeers(trust.IDOf(friend)),
			aster.ConnRateLimit(10, 20),
		),
		aster.WithConnGateTimeout(aster.DefaultConnGateTimeout))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, err := nw.Listen(serverKey)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()

	ctx := context.Background()
	for _, key := range []trust.SecretKey{friend, stranger} {
		c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(key)))
		resp, err := aster.CallUnary[GreetResponse](ctx, c, "Greeter.greet", &GreetRequest{Name: "gate"})
		if err != nil {
			fmt.Println(status.CodeOf(err))
		} else {
			fmt.Println(resp.Greeting)
		}
		c.Close()
	}
	fmt.Println("refused connections:", srv.Metrics().ConnsGateRefused)
	// Output:
	// hello, gate
	// PERMISSION_DENIED
	// refused connections: 1
}
