package dnstest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/dnstest"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func ask(t *testing.T, s *dnstest.Server, network, name string, qtype uint16, edns bool) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	c := dns.Client{Net: network}
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

func TestServer(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, `
$ORIGIN example.internal.
_mc._udp 30 IN SRV 0 0 7000 p1
p1       IN TXT "id=ab" "cd"
p1       10 IN A 127.0.0.1
alias    IN CNAME p1
`)
	r := ask(t, s, "udp", "_MC._udp.example.internal.", dns.TypeSRV, true)
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("SRV: %v", r)
	}
	if srv := r.Answer[0].(*dns.SRV); srv.Target != "p1.example.internal." || srv.Port != 7000 {
		t.Fatalf("SRV record: %v", srv)
	}
	r = ask(t, s, "tcp", "p1.example.internal.", dns.TypeTXT, false)
	if len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "|") != "id=ab|cd" || r.Answer[0].Header().Ttl != 30 {
		t.Fatalf("TXT: %v", r)
	}
	r = ask(t, s, "udp", "alias.example.internal.", dns.TypeA, false)
	if len(r.Answer) != 2 || r.Answer[0].Header().Rrtype != dns.TypeCNAME || r.Answer[1].(*dns.A).A.String() != "127.0.0.1" {
		t.Fatalf("A via CNAME: %v", r)
	}
	// NODATA, empty non-terminal, NXDOMAIN: all with the negative TTL.
	for _, tc := range []struct {
		name  string
		rcode int
	}{{"p1.example.internal.", dns.RcodeSuccess}, {"_udp.example.internal.", dns.RcodeSuccess}, {"nope.example.internal.", dns.RcodeNameError}} {
		r = ask(t, s, "udp", tc.name, dns.TypeAAAA, false)
		if r.Rcode != tc.rcode || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].(*dns.SOA).Minttl != 5 {
			t.Errorf("AAAA %s: %v", tc.name, r)
		}
	}

	if n, want := s.Count("", dns.TypeANY), 6; n != want {
		t.Errorf("Count: %d, want %d", n, want)
	}
	if n := s.Count("_mc._udp.EXAMPLE.internal", dns.TypeSRV); n != 1 {
		t.Errorf("Count(SRV): %d, want 1", n)
	}
	if q := s.Queries()[1]; q.Net != "tcp" || q.Type != dns.TypeTXT || q.Name != "p1.example.internal." {
		t.Errorf("second query: %+v", q)
	}
	s.ResetQueries()
	if len(s.Queries()) != 0 {
		t.Error("ResetQueries kept queries")
	}

	// Changes at run time.
	s.Remove("p1.example.internal.", dns.TypeA)
	s.Add(dnstest.RR("p1.example.internal. 7 IN A 127.0.0.9"))
	r = ask(t, s, "udp", "p1.example.internal.", dns.TypeA, false)
	if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.9" {
		t.Fatalf("A after the change: %v", r)
	}
}

func TestTruncation(t *testing.T) {
	s := dnstest.Start(t)
	var zone strings.Builder
	for i := range 60 { // 60 A records: about 1000 bytes compressed
		fmt.Fprintf(&zone, "big.example. IN A 10.0.0.%d\n", i)
	}
	s.SetZone(t, zone.String())
	if r := ask(t, s, "udp", "big.example.", dns.TypeA, false); !r.Truncated || len(r.Answer) >= 60 {
		t.Errorf("UDP without EDNS0: truncated %v, %d records", r.Truncated, len(r.Answer))
	}
	if r := ask(t, s, "udp", "big.example.", dns.TypeA, true); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("UDP with a 1232-byte buffer: truncated %v, %d records", r.Truncated, len(r.Answer))
	}
	if r := ask(t, s, "tcp", "big.example.", dns.TypeA, false); r.Truncated || len(r.Answer) != 60 {
		t.Errorf("TCP: truncated %v, %d records", r.Truncated, len(r.Answer))
	}
}

func TestFailures(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, "a.example. IN A 10.0.0.1")
	s.SetFailure(dnstest.ServFail)
	if r := ask(t, s, "udp", "a.example.", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("ServFail: %v", r)
	}
	s.SetFailure(dnstest.Refused)
	if r := ask(t, s, "tcp", "a.example.", dns.TypeA, false); r.Rcode != dns.RcodeRefused {
		t.Errorf("Refused: %v", r)
	}
	s.SetFailure(dnstest.Drop)
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	c := dns.Client{Timeout: 200e6}
	if _, _, err := c.Exchange(m, s.Addr()); err == nil {
		t.Error("Drop: got an answer")
	}
	s.SetFailure(dnstest.Answer)
	if r := ask(t, s, "udp", "a.example.", dns.TypeA, false); len(r.Answer) != 1 {
		t.Errorf("Answer again: %v", r)
	}
	s.SetNameFailure("A.example", dnstest.ServFail)
	if r := ask(t, s, "udp", "a.example.", dns.TypeA, false); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("SetNameFailure: %v", r)
	}
	if r := ask(t, s, "udp", "b.example.", dns.TypeA, false); r.Rcode != dns.RcodeNameError {
		t.Errorf("another name under SetNameFailure: %v", r)
	}
	s.SetNameFailure("a.example.", dnstest.Answer)
	s.Close()
	s.Close()
	if _, _, err := c.Exchange(m, s.Addr()); err == nil {
		t.Error("closed server answered")
	}
	if _, err := dnstest.ParseZone("x.example. IN BOGUS 1"); err == nil {
		t.Error("ParseZone accepted a bad record")
	}
}
