package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/relay"
)

// A relay with a self-signed certificate, a server reachable only through
// it, and a client that dials the server's address: the address carries
// the relay URL, which pins the relay's certificate.
func Example() {
	quiet := slog.New(slog.DiscardHandler)
	cert, err := relay.SelfSignedCertificate("127.0.0.1")
	if err != nil {
		panic(err)
	}
	rs, err := relay.NewServer(relay.ServerConfig{Certificate: cert, Logger: quiet})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	relayDone := make(chan error, 1)
	go func() { relayDone <- rs.Serve(ln) }()
	defer func() { rs.Close(); <-relayDone }()
	url := relay.PinnedURL(ln.Addr().String(), cert.Certificate[0])

	srv := aster.NewServer(aster.WithHomeRelay(url), aster.WithIPTransports(false), aster.WithLogger(quiet))
	srv.MustRegister(testService())
	ready := make(chan aster.Address, 1)
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }()
	addr := <-ready
	defer func() { srv.Close(); <-serveDone }()

	c, err := aster.Dial(context.Background(), addr.String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	resp, err := aster.CallUnary[Msg](context.Background(), c, "T.echo", &Msg{Text: "hello through the relay"})
	if err != nil {
		panic(err)
	}
	fmt.Println(resp.Text, len(addr.Direct), addr.Relay == url)
	// Output: hello through the relay 0 true
}

// A connection made through a relay moves to a direct UDP path when the
// two endpoints can reach each other (here: both on loopback), while
// calls go on; Addr.Path says which path it uses. The relay answers
// address-observation probes on UDP at its TLS port number (ServeUDP).
func Example_directPath() {
	quiet := slog.New(slog.DiscardHandler)
	cert, err := relay.SelfSignedCertificate("127.0.0.1")
	if err != nil {
		panic(err)
	}
	rs, err := relay.NewServer(relay.ServerConfig{Certificate: cert, Logger: quiet})
	if err != nil {
		panic(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	udp, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	relayDone := make(chan error, 2)
	go func() { relayDone <- rs.Serve(ln) }()
	go func() { relayDone <- rs.ServeUDP(udp) }()
	defer func() { rs.Close(); <-relayDone; <-relayDone }()
	url := relay.PinnedURL(ln.Addr().String(), cert.Certificate[0])

	srv := aster.NewServer(aster.WithHomeRelay(url), aster.WithIPTransports(false), aster.WithLogger(quiet))
	srv.MustRegister(testService())
	ready := make(chan aster.Address, 1)
	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }()
	addr := <-ready
	defer func() { srv.Close(); <-serveDone }()

	c, err := aster.Dial(context.Background(), addr.String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	direct := false
	for deadline := time.Now().Add(10 * time.Second); !direct && time.Now().Before(deadline); {
		if _, err := aster.CallUnary[Msg](context.Background(), c, "T.echo", &Msg{Text: "hello"}); err != nil {
			panic(err)
		}
		direct = strings.HasPrefix(c.RemoteAddr().(*relay.Addr).Path(), "direct ")
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("moved to a direct path:", direct, "relay forwarded:", rs.Stats().PacketsForwarded > 0)
	// Output: moved to a direct path: true relay forwarded: true
}
