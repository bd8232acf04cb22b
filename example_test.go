package aster_test

import (
	"context"
	"fmt"
	"io"
	"iter"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

type GreetRequest struct {
	Name string `cbor:"name" json:"name"`
}

type GreetResponse struct {
	Greeting string `cbor:"greeting" json:"greeting"`
}

// exampleServer starts a server with a Greeter service on an in-memory
// network and returns a client for it.
func exampleServer() (*aster.Client, func()) {
	greeter := handler.NewService("Greeter", 1).
		Handle("greet", handler.Unary(func(_ context.Context, r *GreetRequest) (*GreetResponse, error) {
			if r.Name == "" {
				return nil, aster.NewError(aster.InvalidArgument, "name is required")
			}
			return &GreetResponse{Greeting: "hello, " + r.Name}, nil
		})).
		Handle("countdown", handler.ServerStream(func(_ context.Context, r *GreetRequest, send func(*GreetResponse) error) error {
			for i := 3; i > 0; i-- {
				if err := send(&GreetResponse{Greeting: fmt.Sprint(i)}); err != nil {
					return err
				}
			}
			return nil
		})).
		Handle("greetAll", handler.ClientStream(func(_ context.Context, reqs iter.Seq2[*GreetRequest, error]) (*GreetResponse, error) {
			n := 0
			for _, err := range reqs {
				if err != nil {
					return nil, err
				}
				n++
			}
			return &GreetResponse{Greeting: fmt.Sprintf("hello, all %d of you", n)}, nil
		}))

	serverKey := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(serverKey), aster.WithLogger(quietLogger()))
	srv.MustRegister(greeter)
	nw := mem.NewNetwork()
	ln, err := nw.Listen(serverKey)
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)
	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())))
	return c, func() { c.Close(); srv.Close() }
}

// A unary call and a status error.
func Example() {
	c, stop := exampleServer()
	defer stop()
	ctx := context.Background()

	resp, err := aster.CallUnary[GreetResponse](ctx, c, "Greeter.greet", &GreetRequest{Name: "edge-node-7"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Greeting)

	_, err = aster.CallUnary[GreetResponse](ctx, c, "Greeter.greet", &GreetRequest{})
	fmt.Println(aster.CodeOf(err), err)
	// Output:
	// hello, edge-node-7
	// INVALID_ARGUMENT INVALID_ARGUMENT: name is required
}

// Server streaming: range over the responses.
func ExampleCallServerStream() {
	c, stop := exampleServer()
	defer stop()
	s, err := aster.CallServerStream[GreetResponse](context.Background(), c, "Greeter.countdown", &GreetRequest{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	for r, err := range s.All() {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(r.Greeting)
	}
	// Output:
	// 3
	// 2
	// 1
}

// Client streaming: send many requests, receive one response.
func ExampleCallClientStream() {
	c, stop := exampleServer()
	defer stop()
	cs, err := aster.CallClientStream[GreetRequest, GreetResponse](context.Background(), c, "Greeter.greetAll")
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		if err := cs.Send(&GreetRequest{Name: name}); err == io.EOF {
			break // the server ended the call early; CloseAndRecv says why
		} else if err != nil {
			log.Fatal(err)
		}
	}
	resp, err := cs.CloseAndRecv()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Greeting)
	// Output: hello, all 3 of you
}

// Server middleware is a func(handler.Handler) handler.Handler, as in
// net/http.
func ExampleWithMiddleware() {
	logCalls := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			err := next.ServeRPC(ctx, s)
			fmt.Printf("%s -> %v\n", s.Method().FullName(), aster.CodeOf(err))
			return err
		})
	}
	svc := handler.NewService("Greeter", 1).
		Handle("greet", handler.Unary(func(_ context.Context, r *GreetRequest) (*GreetResponse, error) {
			return &GreetResponse{Greeting: "hi " + r.Name}, nil
		}))
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithMiddleware(logCalls), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, _ := nw.Listen(key)
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())))
	defer c.Close()
	if _, err := aster.CallUnary[GreetResponse](context.Background(), c, "Greeter.greet", &GreetRequest{Name: "x"}); err != nil {
		log.Fatal(err)
	}
	// Output: Greeter.greet -> OK
}

// A typed handler reads the call's request metadata, its caller and the
// method from ctx (handler.IncomingMetadata, PeerFromContext,
// MethodFromContext) and adds trailer metadata with handler.SetTrailer;
// handler.SetHeader sets response metadata the same way.
func Example_handlerContext() {
	callerKey := trust.GenerateKey()
	svc := handler.NewService("Greeter", 1).
		Handle("greet", handler.Unary(func(ctx context.Context, r *GreetRequest) (*GreetResponse, error) {
			peer, _ := handler.PeerFromContext(ctx)
			method := handler.MethodFromContext(ctx)
			lang := handler.IncomingMetadata(ctx).Get("accept-language")
			if err := handler.SetTrailer(ctx, "served-in", lang); err != nil {
				return nil, err
			}
			known := peer.ID == trust.IDOf(callerKey)
			return &GreetResponse{Greeting: fmt.Sprintf("%s: hello %s (%s), known caller: %v", method.FullName(), r.Name, lang, known)}, nil
		}))
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, _ := nw.Listen(key)
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(callerKey)))
	defer c.Close()

	resp, err := aster.CallUnary[GreetResponse](context.Background(), c, "Greeter.greet", &GreetRequest{Name: "Ada"},
		aster.WithHeader("accept-language", "en"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Greeting)
	// Output: Greeter.greet: hello Ada (en), known caller: true
}

// QuotaInfo is an error detail: a message type with a wire type name.
type QuotaInfo struct {
	Limit int `cbor:"limit" json:"limit"`
}

func (QuotaInfo) WireType() string { return "example/QuotaInfo" }

// A handler attaches typed details to its error; the caller reads them back
// typed with aster.AsDetail.
func ExampleAsDetail() {
	svc := handler.NewService("Quota", 1).
		Handle("use", handler.Unary(func(ctx context.Context, r *GreetRequest) (*GreetResponse, error) {
			err, derr := aster.Errorf(aster.ResourceExhausted, "quota of %s exceeded", r.Name).WithDetails(&QuotaInfo{Limit: 1000})
			if derr != nil {
				return nil, derr
			}
			return nil, err
		}))
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, _ := nw.Listen(key)
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())))
	defer c.Close()

	_, err := aster.CallUnary[GreetResponse](context.Background(), c, "Quota.use", &GreetRequest{Name: "edge-node-7"})
	fmt.Println(aster.CodeOf(err))
	if q, ok := aster.AsDetail[QuotaInfo](err); ok {
		fmt.Println("limit:", q.Limit)
	}
	// Output:
	// RESOURCE_EXHAUSTED
	// limit: 1000
}
