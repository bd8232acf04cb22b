package dns_test

import (
	"net/netip"
	"testing"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/discovery/dns"
	"github.com/aster-go/aster/internal/testutil/dnstest"
	mdns "github.com/miekg/dns"
)

// docZone is the zone-file example of the package documentation and of
// PROTOCOL.md, character for character; the test below checks what it
// means.
const docZone = `$ORIGIN example.internal.
$TTL 30
_mc._udp  IN SRV  0 0 7000 mc-0.mc
_mc._udp  IN SRV  0 0 7000 mc-1.mc
_mc._udp  IN SRV 10 0 7000 mc-dr
mc-0.mc   IN A    10.1.0.17
mc-0.mc   IN AAAA fd00::17
mc-0.mc   IN TXT  "id=e2dce754a9e70f00d848b19b524760c38e466bca2d2cdab9f344aa0b8689ca08"
mc-0.mc   IN TXT  "cred=AAECAwQFBgcI" "CQoLDA0ODw=="
mc-1.mc   IN TXT  "addr=aster12myK31Y2a8SMWNNTBE6spY7nThBRV1qVYxDavK9BMLq2MAAnUeNcszGQXW1RJ"
mc-dr     IN A    10.2.0.5
mc-dr     IN TXT  "id=53a7e2842cb1f23232ce0b7e786be2b475c515135190242569c71fe3ee42b204"
`

func TestDocZoneExample(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, docZone)
	r, _ := newResolver(t, s, dns.Config{})
	w := watch(t, r, "_mc._udp.example.internal")
	ps, err := w.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mc1, err := discovery.ParseAddress("aster12myK31Y2a8SMWNNTBE6spY7nThBRV1qVYxDavK9BMLq2MAAnUeNcszGQXW1RJ")
	if err != nil {
		t.Fatal(err)
	}
	want := []discovery.Producer{
		{Addr: discovery.EndpointAddr{ID: idOf(t, 1), Direct: []netip.AddrPort{
			netip.MustParseAddrPort("10.1.0.17:7000"), netip.MustParseAddrPort("[fd00::17]:7000"),
		}}, Credential: []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}},
		{Addr: mc1},
	}
	// Sorted by id: key 2 (3cb3…) before key 1 (e2dc…).
	want[0], want[1] = want[1], want[0]
	if len(ps) != 2 || !ps[0].Equal(want[0]) || !ps[1].Equal(want[1]) {
		t.Fatalf("the documented zone gives\n%v\nwant\n%v", ps, want)
	}
	if mc1.ID != idOf(t, 2) || mc1.Direct[0] != netip.MustParseAddrPort("10.1.0.18:7000") {
		t.Fatalf("the documented address of mc-1 is %v", mc1)
	}

	// With mc-0 and mc-1 unusable, the priority 10 group (mc-dr) is used.
	s.Remove("mc-0.mc.example.internal.", mdns.TypeANY)
	s.Remove("mc-1.mc.example.internal.", mdns.TypeANY)
	w.ResolveNow()
	ps, err = w.Next(t.Context())
	if err != nil || len(ps) != 1 || ps[0].Addr.ID != idOf(t, 3) || ps[0].Addr.Direct[0] != netip.MustParseAddrPort("10.2.0.5:7000") {
		t.Fatalf("backup group: %v, %v", ps, err)
	}
}
