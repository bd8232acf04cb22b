package relay_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// A server whose home relay is reachable only through an HTTP proxy that
// wants credentials: its relay connection is tunneled with CONNECT, and
// the relay's TLS runs end to end through the tunnel.
func ExampleProxyURL() {
	proxy, err := relay.ParseProxyURL("http://alice:secret@proxy.example:3128")
	if err != nil {
		log.Fatal(err)
	}
	srv := aster.NewServer(
		aster.WithHomeRelay("https://relay.example:3340"),
		aster.WithRelayProxy(relay.ProxyURL(proxy)),
	)
	_ = srv // srv.Register(...); srv.ListenAndServe("", nil)

	// The same at the transport level.
	cfg := &relay.Config{Proxy: relay.ProxyURL(proxy)}
	ln, err := relay.Listen(context.Background(), "https://relay.example:3340", trust.GenerateKey(), cfg)
	if err != nil {
		log.Fatal(err) // e.g. a *relay.ProxyError: proxy http://alice:xxxxx@proxy.example:3128: ...
	}
	defer ln.Close()
}

// A client that takes its proxy from HTTPS_PROXY and NO_PROXY, as Go's
// net/http does, when it falls back to a server's relay.
func ExampleProxyFromEnvironment() {
	c, err := aster.Dial(context.Background(), "aster1…", aster.WithRelayProxy(relay.ProxyFromEnvironment()))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// ParseProxyURL checks a proxy URL; its errors never repeat the URL, which
// may hold a password.
func ExampleParseProxyURL() {
	_, err := relay.ParseProxyURL("socks5://alice:secret@proxy.example:1080")
	fmt.Println(err)
	u, err := relay.ParseProxyURL("http://alice:secret@proxy.example:3128")
	fmt.Println(u.Redacted(), err)
	// Output:
	// relay: proxy URL scheme "socks5" is not supported (want "http" or "https")
	// http://alice:xxxxx@proxy.example:3128 <nil>
}
