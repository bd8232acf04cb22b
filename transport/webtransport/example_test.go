package webtransport_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/webtransport"
	"github.com/aster-go/aster/trust"
)

type Greeting struct {
	Text string `cbor:"text" json:"text"`
}

// Serve an aster.Server over WebTransport and call it from Go. A Go client
// reaches an address that has only a WebTransport URL with a WebTransport
// dialer (the aster package itself does not link this transport); a
// browser uses the same address (see examples/missioncontrol/web).
func Example() {
	srv := aster.NewServer(aster.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	srv.MustRegister(handler.NewService("Greeter", 1).
		Handle("hello", handler.Unary(func(_ context.Context, g *Greeting) (*Greeting, error) {
			return &Greeting{Text: "hello, " + g.Text}, nil
		})))
	ln, err := webtransport.Listen("127.0.0.1:0", srv.SecretKey(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Close()

	addr := ln.Addr() // endpoint id, https://127.0.0.1:port/aster, certificate hashes
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := aster.Dial(ctx, addr.String(), aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer {
		return webtransport.NewDialer(k, nil)
	}))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	resp, err := aster.CallUnary[Greeting](ctx, c, "Greeter.hello", &Greeting{Text: "WebTransport"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(resp.Text, len(addr.CertHashes))
	// Output: hello, WebTransport 2
}
