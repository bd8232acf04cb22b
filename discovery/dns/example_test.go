package dns_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/aster-go/aster/discovery/dns"
	"github.com/aster-go/aster/internal/testutil/dnstest"
)

// A client follows the producers of "_mc._udp.example.internal". Here a
// DNS server on loopback serves the records; in production Config.Server
// is left empty (the nameserver of /etc/resolv.conf) or names the
// cluster's DNS service.
func Example() {
	srv, err := dnstest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	rrs, err := dnstest.ParseZone(`
_mc._udp.example.internal. 30 IN SRV 0 0 7000 mc-0.mc.example.internal.
_mc._udp.example.internal. 30 IN SRV 0 0 7000 mc-1.mc.example.internal.
mc-0.mc.example.internal.  30 IN A   10.1.0.17
mc-0.mc.example.internal.  30 IN TXT "id=3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
mc-1.mc.example.internal.  30 IN A   10.1.0.18
mc-1.mc.example.internal.  30 IN TXT "id=d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
`)
	if err != nil {
		log.Fatal(err)
	}
	srv.Set(rrs...)

	r, err := dns.New(dns.Config{
		Server:      srv.Addr(),
		MaxInterval: 10 * time.Second,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	w, err := r.Watch(ctx, "_mc._udp.example.internal")
	if err != nil {
		log.Fatal(err) // NotFound: no such name; Unavailable: no DNS server
	}
	defer w.Close()

	ps, err := w.Next(ctx) // the current set; later calls block until it changes
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range ps {
		fmt.Println(p.Addr.ID.Short(), p.Addr.Direct)
	}
	// Output:
	// 3b6a27bcceb6a42d [10.1.0.17:7000]
	// d75a980182b10ab7 [10.1.0.18:7000]
}
