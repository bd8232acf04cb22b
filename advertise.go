package aster

import (
	"net/netip"
	"slices"

	"github.com/aster-go/aster/discovery"
)

// WithAdvertisedAddrs adds to the server's direct addresses those fn
// returns: Address calls fn each time it is built and appends its
// addresses after the listeners' own (skipping duplicates, up to
// discovery.MaxDirectAddrs in all), but only while the server serves at
// least one direct QUIC listener. The use is an address the listener
// cannot see itself, such as the external address a NAT gateway forwards
// to it (config wires transport/portmap's Mapper.Candidates here when
// network.portmapper_config allows it). fn must be quick and safe for
// concurrent use. Default: none.
func WithAdvertisedAddrs(fn func() []netip.AddrPort) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.advertised = fn })
}

// appendAdvertised appends the WithAdvertisedAddrs addresses to direct, a
// server's direct addresses.
func (o *serverOptions) appendAdvertised(direct []netip.AddrPort) []netip.AddrPort {
	if o.advertised == nil || len(direct) == 0 {
		return direct
	}
	for _, d := range o.advertised() {
		if len(direct) >= discovery.MaxDirectAddrs {
			break
		}
		if d.IsValid() && !slices.Contains(direct, d) {
			direct = append(direct, d)
		}
	}
	return direct
}
