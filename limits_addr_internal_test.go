package aster

import (
	"net"
	"net/netip"
	"testing"

	"github.com/aster-go/aster/trust"
)

// With the default limits one IP address gets DefaultMaxConnsPerAddr
// connections whatever keys they use, an IPv6 host its /64, and releasing
// one frees a slot; a connection without an address is not counted.
func TestConnCountsPerAddrDefault(t *testing.T) {
	l := defaultLimits()
	var cc connCounts
	ip := netip.MustParseAddr("192.0.2.7")
	id := func(i int) trust.EndpointID {
		var k trust.EndpointID
		k[0], k[1] = byte(i), byte(i>>8)
		return k
	}
	for i := range DefaultMaxConnsPerAddr {
		if r := cc.admit(&l, id(i), ip, i); r != "" {
			t.Fatalf("connection %d from one address: %s", i+1, r)
		}
	}
	if r := cc.admit(&l, id(9999), ip, DefaultMaxConnsPerAddr); r != reasonTooManyAddr {
		t.Fatalf("connection beyond the cap with a fresh key: %q, want %q", r, reasonTooManyAddr)
	}
	if r := cc.admit(&l, id(9999), netip.MustParseAddr("192.0.2.8"), DefaultMaxConnsPerAddr); r != "" {
		t.Fatalf("another address: %s", r)
	}
	if r := cc.admit(&l, id(9998), netip.Addr{}, DefaultMaxConnsPerAddr); r != "" {
		t.Fatalf("a connection without an address: %s", r)
	}
	cc.release(id(0), ip)
	if r := cc.admit(&l, id(9997), ip, DefaultMaxConnsPerAddr); r != "" {
		t.Fatalf("after a release: %s", r)
	}
	cc.release(id(9998), netip.Addr{})
	if len(cc.byAddr) != 2 {
		t.Fatalf("%d addresses counted, want 2", len(cc.byAddr))
	}
}

// The address a connection counts against: its IP, an IPv6 address by
// its /64; nothing for loopback addresses or a connection without an IP.
func TestConnAddrKey(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4433}, "192.0.2.7"},
		{&net.UDPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::"},
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: 1}, "invalid IP"},
		{&net.UDPAddr{IP: net.ParseIP("::1"), Port: 1}, "invalid IP"},
		{nil, "invalid IP"},
	} {
		if got := addrKeyOf(c.addr).String(); got != c.want {
			t.Errorf("%v: %s, want %s", c.addr, got, c.want)
		}
	}
}
