package relay

import (
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/trust"
)

// quic-go compares the addresses of packets from a non-UDP PacketConn by
// their String, twice per packet: a cached Addr's String must cost nothing
// and still follow changes of its exported fields.
func TestAddrString(t *testing.T) {
	id, other := testutil.ID(t, 1), testutil.ID(t, 2)
	const relayURL = "aster-relay://relay.example:443"
	a := newAddr(id, relayURL)
	want := id.String() + "@" + relayURL
	if got := a.String(); got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if got := (&Addr{ID: id, Relay: relayURL}).String(); got != want {
		t.Fatalf("String() of a literal = %q, want %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { _ = a.String() }); n != 0 {
		t.Errorf("String() of a cached Addr allocates %v times", n)
	}
	a.ID = other
	if got, want := a.String(), other.String()+"@"+relayURL; got != want {
		t.Errorf("String() after changing ID = %q, want %q", got, want)
	}
	a.ID, a.Relay = id, "aster-relay://elsewhere:443"
	if got, want := a.String(), id.String()+"@aster-relay://elsewhere:443"; got != want {
		t.Errorf("String() after changing Relay = %q, want %q", got, want)
	}
}

// A datagram's source address comes from a bounded cache: the same *Addr
// for the same sender, and never more than maxAddrCache entries however
// many ids a relay sends from.
func TestAddrCache(t *testing.T) {
	pc := &PacketConn{local: newAddr(testutil.ID(t, 1), "aster-relay://r:1"), addrs: map[trust.EndpointID]*Addr{}}
	a := pc.addrOf(testutil.ID(t, 2))
	if a.ID != testutil.ID(t, 2) || a.Relay != pc.local.Relay {
		t.Fatalf("addrOf = %+v", a)
	}
	if pc.addrOf(testutil.ID(t, 2)) != a {
		t.Error("a second datagram from the same id got a new *Addr")
	}
	for i := range 3 * maxAddrCache {
		var id trust.EndpointID
		id[0], id[1], id[2] = 0xff, byte(i>>8), byte(i)
		if got := pc.addrOf(id); got.ID != id {
			t.Fatalf("addrOf(%x) = %+v", id[:3], got)
		}
		if len(pc.addrs) > maxAddrCache {
			t.Fatalf("%d cached addresses, limit %d", len(pc.addrs), maxAddrCache)
		}
	}
}

// A datagram read through a real relay carries the cached address, equal
// to the sender's, and reading it allocates nothing for the address.
func TestReadFromAddrReused(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	a := dialRelay(t, r, 1)
	b := dialRelay(t, r, 2)
	to := newAddr(testutil.ID(t, 2), r.url)
	var froms []*Addr
	for range 2 {
		if _, err := a.WriteTo([]byte("hi"), to); err != nil {
			t.Fatal(err)
		}
		_, from, err := recvWithin(t, b, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fa, ok := from.(*Addr)
		if !ok || fa.String() != testutil.ID(t, 1).String()+"@"+r.url {
			t.Fatalf("from %v", from)
		}
		froms = append(froms, fa)
	}
	if froms[0] != froms[1] {
		t.Error("two datagrams from the same sender got different *Addr values")
	}
}
