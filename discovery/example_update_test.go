package discovery_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/trust"
)

// A producer whose address changed after it registered (a port mapping
// granted later) updates its entry in place where the registry supports
// it, and registers anew where it does not.
func ExampleRegistrationUpdater() {
	ctx := context.Background()
	src := discovery.NewStaticSource("fleet/MissionControl")
	p := discovery.Producer{Addr: discovery.EndpointAddr{
		ID:     trust.IDOf(trust.GenerateKey()),
		Direct: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.20:4433")},
	}}
	reg, err := src.Register(ctx, "fleet/MissionControl", p)
	if err != nil {
		panic(err)
	}

	p.Addr.Direct = append(p.Addr.Direct, netip.MustParseAddrPort("203.0.113.7:4433"))
	if u, ok := reg.(discovery.RegistrationUpdater); ok {
		err = u.Update(ctx, p)
	} else if err = reg.Deregister(ctx); err == nil {
		reg, err = src.Register(ctx, "fleet/MissionControl", p)
	}
	if err != nil {
		panic(err)
	}
	for _, e := range src.Producers("fleet/MissionControl") {
		fmt.Println(e.Addr.Direct)
	}
	// Output: [192.168.1.20:4433 203.0.113.7:4433]
}
