package config_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
)

// Greeting is the example's message.
type Greeting struct {
	Text string `cbor:"text" json:"text"`
}

// ExampleConfig_NewServer resolves a configuration from a TOML file and the
// environment, builds the server it describes (identity, bind address,
// logger, admission gate, health server), serves and shuts down.
func ExampleConfig_NewServer() {
	cfg, err := config.LoadFile("testdata/aster.toml")
	if err != nil {
		log.Fatal(err) // e.g. `ASTER_HOOK_TIMEOUT_MS: "abc" is not an integer (network.hook_timeout_ms)`
	}
	fmt.Println(cfg.BindAddr, "from", cfg.Source("network.bind_addr"))

	srv, err := cfg.NewServer() // options given here override the config's
	if err != nil {
		log.Fatal(err)
	}
	srv.MustRegister(handler.NewService("Greeter", 1).Handle("greet",
		handler.Unary(func(_ context.Context, g *Greeting) (*Greeting, error) { return g, nil })))

	ready := make(chan aster.Address, 1)
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }() // "" = network.bind_addr
	select {
	case <-ready:
		fmt.Println("serving; ready:", srv.Ready())
	case err := <-done:
		log.Fatal(err)
	}
	srv.Shutdown(context.Background()) // also stops the health server, if any
	fmt.Println(<-done)
	// Output:
	// 127.0.0.1:0 from testdata/aster.toml
	// serving; ready: true
	// aster: server closed
}

// ExampleLoadClient resolves a client's configuration: only the settings a
// client uses are checked, so a server-only setting that a server would
// refuse (enable_monitoring without a health port) does not stop it.
func ExampleLoadClient() {
	cfg, err := config.LoadClient("testdata/client.toml", false)
	if err != nil {
		log.Fatal(err)
	}
	opts, err := cfg.ClientOptions() // key, credential, relay settings
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(opts), "client options; relay mode", cfg.RelayMode)
	_, err = config.LoadFile("testdata/client.toml")
	fmt.Println("as a server's:", err != nil)
	// Output:
	// 1 client options; relay mode disabled
	// as a server's: true
}
