package dns_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/aster-go/aster/discovery/dns"
	"github.com/aster-go/aster/internal/testutil/dnstest"
)

// BenchmarkResolve measures one whole resolution (Watch then Close) against
// the loopback server: the SRV query, then TXT, A and AAAA per target (id=
// form), 16 targets at a time.
func BenchmarkResolve(b *testing.B) {
	for _, n := range []int{3, dns.MaxProducers} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			s := dnstest.Start(b)
			var zone strings.Builder
			for i := range n {
				fmt.Fprintf(&zone, "%s 30 IN SRV 0 0 7000 p%04d.example.internal.\n", svc, i)
				fmt.Fprintf(&zone, "p%04d.example.internal. 30 IN TXT \"id=%s\"\n", i, hexID(b, i+10))
				fmt.Fprintf(&zone, "p%04d.example.internal. 30 IN A 127.0.%d.%d\n", i, i/256, i%256)
			}
			s.SetZone(b, zone.String())
			r, _ := newResolver(b, s, dns.Config{})
			b.ReportAllocs()
			for b.Loop() {
				w, err := r.Watch(b.Context(), svc)
				if err != nil {
					b.Fatal(err)
				}
				w.Close()
			}
			b.ReportMetric(float64(len(s.Queries()))/float64(b.N), "queries/op")
		})
	}
}
