package aster_test

import (
	"net/netip"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
)

// WithAdvertisedAddrs adds its addresses after the listener's own, once,
// only while a direct listener is served, and within MaxDirectAddrs.
func TestWithAdvertisedAddrs(t *testing.T) {
	ext := netip.MustParseAddrPort("203.0.113.7:4433")
	extra := []netip.AddrPort{ext, ext, {}}
	s := aster.NewServer(aster.WithLogger(quietLogger()), aster.WithAdvertisedAddrs(func() []netip.AddrPort { return extra }))
	if a := s.Address(); len(a.Direct) != 0 {
		t.Fatalf("not listening: Direct = %v, want none", a.Direct)
	}
	ready := make(chan aster.Address, 1)
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	own := (<-ready).Direct
	a := s.Address()
	if len(a.Direct) != len(own)+1 || a.Direct[len(a.Direct)-1] != ext {
		t.Fatalf("Direct = %v; want %v then %v", a.Direct, own, ext)
	}
	many := make([]netip.AddrPort, discovery.MaxDirectAddrs)
	for i := range many {
		many[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}), 4433)
	}
	extra = many // read by Address, not by the option
	if a := s.Address(); len(a.Direct) != discovery.MaxDirectAddrs {
		t.Fatalf("%d direct addresses, want the cap %d", len(a.Direct), discovery.MaxDirectAddrs)
	}
	s.Close()
	<-done
}
