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

// tally is a session-scoped service: each client session gets its own.
type tally struct{ total int }

func (t *tally) add(_ context.Context, r *GreetRequest) (*GreetResponse, error) {
	t.total += len(r.Name)
	return &GreetResponse{Greeting: fmt.Sprint(t.total)}, nil
}

// A session: its calls reach one instance of a session-scoped service, on
// the connection the session started on. Close ends it on the server.
func ExampleSession() {
	svc := handler.NewSessionService("Tally", 1, func(context.Context, handler.Peer) (*tally, error) { return &tally{}, nil }).
		Handle("add", handler.On(func(t *tally) handler.Def { return handler.Unary(t.add) }))
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, err := nw.Listen(key)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	// The client's key is given once: WithDialerFor builds the dialer from it.
	c := aster.NewClient(ln.Addr(), aster.WithSecretKey(trust.GenerateKey()), aster.WithDialerFor(nw.Dialer))
	defer c.Close()
	ctx := context.Background()

	a, b := c.NewSession(), c.NewSession()
	for _, name := range []string{"ab", "cde"} {
		r, err := aster.CallUnary[GreetResponse](ctx, a, "Tally.add", &GreetRequest{Name: name})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("a:", r.Greeting)
	}
	r, err := aster.CallUnary[GreetResponse](ctx, b, "Tally.add", &GreetRequest{Name: "x"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("b:", r.Greeting)
	fmt.Println(a.Close(ctx), b.Close(ctx))

	// A session-scoped method called outside a session.
	_, err = aster.CallUnary[GreetResponse](ctx, c, "Tally.add", &GreetRequest{})
	fmt.Println(aster.CodeOf(err))
	// Output:
	// a: 2
	// a: 5
	// b: 1
	// <nil> <nil>
	// FAILED_PRECONDITION
}

// ResponseTrailer reads the trailer metadata of a call; ResponseHeader the
// response metadata the server sent before its first message. Both work
// with every call function; the stream call types also have Header and
// Trailer methods.
func ExampleResponseTrailer() {
	svc := handler.NewService("Quota", 1).
		Handle("spend", handler.Unary(func(ctx context.Context, r *GreetRequest) (*GreetResponse, error) {
			if err := handler.SetHeader(ctx, "quota-pool", "eu-1"); err != nil {
				return nil, err
			}
			return nil, status.New(status.ResourceExhausted, "quota spent").WithMetadata("retry-after-ms", "1500")
		}))
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, err := nw.Listen(key)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialerFor(nw.Dialer))
	defer c.Close()

	var header, trailer handler.Metadata
	_, err = aster.CallUnary[GreetResponse](context.Background(), c, "Quota.spend", &GreetRequest{},
		aster.ResponseHeader(&header), aster.ResponseTrailer(&trailer))
	fmt.Println(aster.CodeOf(err))
	fmt.Println("retry after", trailer["retry-after-ms"], "ms; header:", header)
	// Output:
	// RESOURCE_EXHAUSTED
	// retry after 1500 ms; header: map[quota-pool:eu-1]
}

// With the server's contract fetched, a call of the wrong pattern or with
// message types of other wire names fails before anything is sent.
func ExampleClient_Contract() {
	c, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	if _, _, err := c.Contract(ctx); err != nil {
		log.Fatal(err)
	}
	// Greeter.countdown streams its responses.
	_, err := aster.CallUnary[GreetResponse](ctx, c, "Greeter.countdown", &GreetRequest{})
	fmt.Println(aster.CodeOf(err))
	// Greeter.greet answers a GreetResponse, not a GreetRequest.
	_, err = aster.CallUnary[GreetRequest](ctx, c, "Greeter.greet", &GreetRequest{Name: "x"})
	fmt.Println(aster.CodeOf(err))
	// Output:
	// FAILED_PRECONDITION
	// INVALID_ARGUMENT
}
