package dns_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/discovery/dns"
	"github.com/aster-go/aster/internal/testutil/dnstest"
	"github.com/aster-go/aster/status"
	mdns "github.com/miekg/dns"
)

// next calls w.Next with a deadline.
func next(t *testing.T, w discovery.Watch, d time.Duration) ([]discovery.Producer, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return w.Next(ctx)
}

func watch(t *testing.T, r *dns.Resolver, name string) discovery.Watch {
	t.Helper()
	w, err := r.Watch(context.Background(), name)
	if err != nil {
		t.Fatalf("Watch(%s): %v", name, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// The addr= form, the id= form with A and AAAA records, and a credential
// split across several character-strings of one TXT record.
func TestProducersFromSRVAndTXT(t *testing.T) {
	s := dnstest.Start(t)
	a1 := addrOf(t, 1, "192.0.2.1:9000")
	cred1, cred2 := credOf(1, 700), credOf(2, 300)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 30 IN SRV 0 0 7000 p1.example.internal.
%[1]s 30 IN SRV 0 5 7001 p2.example.internal.
p1.example.internal. 30 IN TXT "addr=%[2]s"
p1.example.internal. 30 IN TXT %[3]s
p1.example.internal. 30 IN A 10.9.9.9
p2.example.internal. 30 IN TXT "id=%[4]s"
p2.example.internal. 30 IN TXT %[5]s
p2.example.internal. 30 IN TXT "heritage=external-dns,external-dns/owner=default"
p2.example.internal. 30 IN TXT "v=spf1 -all"
p2.example.internal. 30 IN A 127.0.0.2
p2.example.internal. 30 IN A 127.0.0.1
p2.example.internal. 30 IN AAAA ::1
`, svc, a1, txtStrings("cred="+b64(cred1)), hexID(t, 2), txtStrings("cred="+b64(cred2))))
	if got := strings.Count(txtStrings("cred="+b64(cred1)), `"`); got < 6 {
		t.Fatalf("the credential is in %d strings, want several", got/2)
	}
	r, _ := newResolver(t, s, dns.Config{})
	w := watch(t, r, svc)
	ps, err := next(t, w, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []discovery.Producer{
		{Addr: a1, Credential: cred1},
		{Addr: discovery.EndpointAddr{ID: idOf(t, 2), Direct: []netip.AddrPort{
			netip.MustParseAddrPort("127.0.0.1:7001"),
			netip.MustParseAddrPort("127.0.0.2:7001"),
			netip.MustParseAddrPort("[::1]:7001"),
		}}, Credential: cred2},
	}
	slices.SortFunc(want, func(a, b discovery.Producer) int { return strings.Compare(string(a.Addr.ID[:]), string(b.Addr.ID[:])) })
	if !slices.EqualFunc(ps, want, discovery.Producer.Equal) {
		t.Fatalf("producers:\n got %v\nwant %v", ps, want)
	}
	// The addr= form does not resolve the target's addresses.
	if n := s.Count("p1.example.internal.", mdns.TypeA); n != 0 {
		t.Errorf("%d A queries for the addr= target, want 0", n)
	}
	// The returned slice is the caller's.
	ps[0].Credential[0] ^= 0xff
	ps[0].Addr.Direct[0] = netip.AddrPort{}
	w.ResolveNow()
	if ps2, err := next(t, w, 2*time.Second); err == nil {
		t.Fatalf("Next reported a change after the caller modified its copy: %v", ps2)
	}
}

// Only the lowest priority group with a usable producer is used.
func TestPriorityGroups(t *testing.T) {
	s := dnstest.Start(t) // outside the bubble: its goroutines wait on sockets
	synctest.Test(t, func(t *testing.T) {
		zone := func(mainTXT string) string {
			return fmt.Sprintf(`
%[1]s 5 IN SRV 0 0 7000 main.example.internal.
%[1]s 5 IN SRV 10 0 7000 backup.example.internal.
main.example.internal. 5 IN TXT "%[2]s"
backup.example.internal. 5 IN TXT "addr=%[3]s"
`, svc, mainTXT, addrOf(t, 2, "127.0.0.1:2"))
		}
		s.SetZone(t, zone("addr="+addrOf(t, 1, "127.0.0.1:1").String()))
		r, logs := newResolver(t, s, dns.Config{})
		w, err := r.Watch(t.Context(), svc)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ps, _ := w.Next(t.Context())
		if len(ps) != 1 || ps[0].Addr.ID != idOf(t, 1) {
			t.Fatalf("priority 0 group: got %v, want only key 1", ids(ps))
		}
		// The main producer's record breaks: the backup group takes over.
		s.SetZone(t, zone("addr=garbage"))
		ps, _ = w.Next(t.Context())
		if len(ps) != 1 || ps[0].Addr.ID != idOf(t, 2) {
			t.Fatalf("after main broke: got %v, want only key 2", ids(ps))
		}
		if !strings.Contains(logs.String(), "main.example.internal:7000") {
			t.Errorf("the ignored target is not logged:\n%s", logs)
		}
	})
}

// A producer added in DNS appears within the TTL plus one interval, and
// disappears when removed (real time, short TTLs).
func TestAddAndRemoveRealTime(t *testing.T) {
	s := dnstest.Start(t)
	s.SetNegativeTTL(time.Second)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 1 IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. 1 IN TXT "id=%[2]s"
p1.example.internal. 1 IN A 127.0.0.1
`, svc, hexID(t, 1)))
	r, _ := newResolver(t, s, dns.Config{MinInterval: 100 * time.Millisecond, MaxInterval: 2 * time.Second})
	w := watch(t, r, svc)
	if ps, err := next(t, w, 5*time.Second); err != nil || len(ps) != 1 {
		t.Fatalf("first set: %v, %v", ids(ps), err)
	}

	start := time.Now()
	s.Add(dnstest.RR(svc+" 1 IN SRV 0 0 7000 p2.example.internal."),
		dnstest.RR(fmt.Sprintf(`p2.example.internal. 1 IN TXT "id=%s"`, hexID(t, 2))),
		dnstest.RR("p2.example.internal. 1 IN A 127.0.0.2"))
	ps, err := next(t, w, 10*time.Second) // TTL 1s + one interval is 2s; generous
	if err != nil || len(ps) != 2 {
		t.Fatalf("after adding p2: %v, %v", ids(ps), err)
	}
	t.Logf("added producer seen after %v (TTL 1s)", time.Since(start))

	start = time.Now()
	s.Remove(svc, mdns.TypeSRV)
	s.Add(dnstest.RR(svc + " 1 IN SRV 0 0 7000 p2.example.internal."))
	ps, err = next(t, w, 10*time.Second)
	if err != nil || len(ps) != 1 || ps[0].Addr.ID != idOf(t, 2) {
		t.Fatalf("after removing p1: %v, %v", ids(ps), err)
	}
	t.Logf("removed producer gone after %v (TTL 1s)", time.Since(start))

	// The name disappears: an answer, so the set becomes empty.
	s.Set()
	ps, err = next(t, w, 10*time.Second)
	if err != nil || len(ps) != 0 {
		t.Fatalf("after NXDOMAIN: %v, %v", ids(ps), err)
	}
}

// Re-resolution follows the smallest TTL of the records involved, clamped
// to [MinInterval, MaxInterval].
func TestTTLHonoured(t *testing.T) {
	for _, tc := range []struct {
		name           string
		srvTTL, txtTTL int
		aTTL           int
		min, max       time.Duration
		window         time.Duration
		interval       time.Duration // what the TTLs and clamps give
	}{
		{"srv ttl", 5, 60, 60, time.Second, 30 * time.Second, 60 * time.Second, 5 * time.Second},
		{"txt ttl smaller", 30, 3, 60, time.Second, 30 * time.Second, 60 * time.Second, 3 * time.Second},
		{"a ttl smaller", 30, 30, 4, time.Second, 30 * time.Second, 60 * time.Second, 4 * time.Second},
		{"floor", 0, 0, 0, 2 * time.Second, 30 * time.Second, 60 * time.Second, 2 * time.Second},
		{"ceiling", 3600, 3600, 3600, time.Second, 20 * time.Second, 100 * time.Second, 20 * time.Second},
		// p1 has no AAAA record: the NODATA answer's SOA gives 6s.
		{"negative ttl", 30, 30, 30, time.Second, 30 * time.Second, 60 * time.Second, 6 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetNegativeTTL(time.Hour)
			if tc.name == "negative ttl" {
				s.SetNegativeTTL(6 * time.Second)
			}
			s.SetZone(t, fmt.Sprintf(`
%[1]s %[2]d IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. %[3]d IN TXT "id=%[5]s"
p1.example.internal. %[4]d IN A 127.0.0.1
`, svc, tc.srvTTL, tc.txtTTL, tc.aTTL, hexID(t, 1)))
			synctest.Test(t, func(t *testing.T) {
				r, _ := newResolver(t, s, dns.Config{MinInterval: tc.min, MaxInterval: tc.max})
				w, err := r.Watch(t.Context(), svc)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				if n := s.Count(svc, mdns.TypeSRV); n != 1 {
					t.Fatalf("%d SRV queries at start, want 1", n)
				}
				// Just short of the window's end, so that a resolution
				// due at its end does not race the count.
				time.Sleep(tc.window - time.Millisecond)
				synctest.Wait()
				got := s.Count(svc, mdns.TypeSRV) - 1
				want := int(tc.window/tc.interval) - 1 // the one due at the window's end is not in
				t.Logf("%d SRV re-resolutions in %v, interval %v", got, tc.window, tc.interval)
				if got != want {
					t.Errorf("%d SRV re-resolutions in %v, want %d (interval %v)", got, tc.window, want, tc.interval)
				}
				// Unchanged answers never wake Next.
				ps, _ := w.Next(t.Context())
				ctx, cancel := context.WithTimeout(t.Context(), tc.window)
				defer cancel()
				if _, err := w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Next after %v of unchanged answers: %v, want a deadline (set %v)", tc.window, err, ids(ps))
				}
			})
		})
	}
}

// ResolveNow re-resolves early, but never sooner than MinInterval after the
// previous resolution, and several calls make one resolution.
func TestResolveNow(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 60 IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. 60 IN TXT "addr=%[2]s"
`, svc, addrOf(t, 1, "127.0.0.1:1")))
	synctest.Test(t, func(t *testing.T) {
		r, _ := newResolver(t, s, dns.Config{MinInterval: 2 * time.Second, MaxInterval: 60 * time.Second})
		w, err := r.Watch(t.Context(), svc)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		count := func() int { synctest.Wait(); return s.Count(svc, mdns.TypeSRV) }
		t0 := time.Now()
		time.Sleep(500 * time.Millisecond)
		for range 5 {
			w.ResolveNow()
		}
		time.Sleep(1400 * time.Millisecond) // t0+1.9s
		if n := count(); n != 1 {
			t.Fatalf("%d SRV queries at %v, want 1: ResolveNow did not wait for the floor", n, time.Since(t0))
		}
		time.Sleep(200 * time.Millisecond) // t0+2.1s
		if n := count(); n != 2 {
			t.Fatalf("%d SRV queries at %v, want 2: ResolveNow did not re-resolve at the floor", n, time.Since(t0))
		}
		time.Sleep(8 * time.Second) // t0+10.1s, well past the floor
		w.ResolveNow()
		if n := count(); n != 3 {
			t.Fatalf("%d SRV queries after ResolveNow at %v, want 3: not at once", n, time.Since(t0))
		}
		// The TTL schedule restarts from that resolution: next at t0+70.1s.
		time.Sleep(59 * time.Second)
		if n := count(); n != 3 {
			t.Fatalf("%d SRV queries at %v, want 3", n, time.Since(t0))
		}
		time.Sleep(2 * time.Second)
		if n := count(); n != 4 {
			t.Fatalf("%d SRV queries at %v, want 4", n, time.Since(t0))
		}
	})
}

// Hostile and broken records are ignored, logged, and bounded; the good
// producers beside them are kept.
func TestHostileRecords(t *testing.T) {
	s := dnstest.Start(t)
	good := addrOf(t, 1, "127.0.0.1:1")
	huge := strings.Repeat("A", dns.MaxTXTLen+1)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 30 IN SRV 0 0 7000 good.example.internal.
%[1]s 30 IN SRV 0 0 7000 badaddr.example.internal.
%[1]s 30 IN SRV 0 0 7000 shortid.example.internal.
%[1]s 30 IN SRV 0 0 7000 huge.example.internal.
%[1]s 30 IN SRV 0 0 7000 %[1]s
%[1]s 30 IN SRV 0 0 7000 nokey.example.internal.
%[1]s 30 IN SRV 0 0 7000 noaddrs.example.internal.
%[1]s 30 IN SRV 0 0 7000 twoids.example.internal.
%[1]s 30 IN SRV 0 0 7000 mismatch.example.internal.
%[1]s 30 IN SRV 0 0 7000 badcred.example.internal.
%[1]s 30 IN SRV 0 0 7000 loop1.example.internal.
%[1]s 30 IN SRV 0 0 7000 missing.example.internal.
%[1]s 30 IN SRV 0 0 7000 .
%[1]s 30 IN SRV 0 0 0 zeroport.example.internal.
good.example.internal. 30 IN TXT "addr=%[2]s"
badaddr.example.internal. 30 IN TXT "addr=aster1notanaddress"
shortid.example.internal. 30 IN TXT "id=%[3]s"
shortid.example.internal. 30 IN A 127.0.0.1
huge.example.internal. 30 IN TXT %[4]s
nokey.example.internal. 30 IN TXT "cred=AAAA"
nokey.example.internal. 30 IN A 127.0.0.1
noaddrs.example.internal. 30 IN TXT "id=%[5]s"
twoids.example.internal. 30 IN TXT "id=%[5]s"
twoids.example.internal. 30 IN TXT "id=%[6]s"
twoids.example.internal. 30 IN A 127.0.0.1
mismatch.example.internal. 30 IN TXT "id=%[5]s"
mismatch.example.internal. 30 IN TXT "addr=%[7]s"
badcred.example.internal. 30 IN TXT "id=%[5]s" 
badcred.example.internal. 30 IN TXT "cred=!!notbase64!!"
badcred.example.internal. 30 IN A 127.0.0.1
loop1.example.internal. 30 IN CNAME loop2.example.internal.
loop2.example.internal. 30 IN CNAME loop1.example.internal.
`, svc, good, hexID(t, 2)[:62], txtStrings("id="+hexID(t, 3)+huge), hexID(t, 4), hexID(t, 5), addrOf(t, 6, "127.0.0.1:6")))
	r, logs := newResolver(t, s, dns.Config{})
	w := watch(t, r, svc)
	ps, err := next(t, w, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || !ps[0].Equal(discovery.Producer{Addr: good}) {
		t.Fatalf("got %v, want only the good producer", ids(ps))
	}
	for _, want := range []string{
		"badaddr.example.internal:7000", "bad address",
		"shortid.example.internal:7000", "62 characters",
		"huge.example.internal:7000", "limit 8192",
		"_mc._udp.example.internal:7000", "no TXT records",
		"nokey.example.internal:7000", "the key is mandatory",
		"noaddrs.example.internal:7000", "no A or AAAA records",
		"twoids.example.internal:7000", "two different id=",
		"mismatch.example.internal:7000", "does not match",
		"badcred.example.internal:7000", "not base64",
		"loop1.example.internal:7000", "CNAMEs",
		"missing.example.internal:7000", "NXDOMAIN",
		"zeroport.example.internal", "port 0",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q", want)
		}
	}
	// Logged once per target and reason, not on every resolution.
	before := strings.Count(logs.String(), "badaddr.example.internal:7000")
	w.ResolveNow()
	deadline := time.Now().Add(5 * time.Second)
	for n := s.Count(svc, mdns.TypeSRV); s.Count(svc, mdns.TypeSRV) == n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if after := strings.Count(logs.String(), "badaddr.example.internal:7000"); after != before {
		t.Errorf("an ignored target was logged again (%d times, then %d)", before, after)
	}
}

// 1000 SRV records: the UDP answer is truncated, the client asks again over
// TCP, and at most MaxProducers producers come out.
func TestThousandSRVRecordsOverTCP(t *testing.T) {
	s := dnstest.Start(t)
	var zone strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&zone, "%s 30 IN SRV 0 0 7000 p%04d.example.internal.\n", svc, i)
		fmt.Fprintf(&zone, "p%04d.example.internal. 30 IN TXT \"id=%s\"\n", i, hexID(t, i+10))
		fmt.Fprintf(&zone, "p%04d.example.internal. 30 IN A 127.0.%d.%d\n", i, i/256, i%256)
	}
	s.SetZone(t, zone.String())
	r, logs := newResolver(t, s, dns.Config{})
	start := time.Now()
	w := watch(t, r, svc)
	t.Logf("first resolution of 1000 SRV records: %v, %d queries", time.Since(start), len(s.Queries()))
	ps, err := next(t, w, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != dns.MaxProducers {
		t.Fatalf("%d producers, want %d", len(ps), dns.MaxProducers)
	}
	var udp, tcp int
	for _, q := range s.Queries() {
		if q.Name == svc && q.Type == mdns.TypeSRV {
			if q.Net == "tcp" {
				tcp++
			} else {
				udp++
			}
		}
	}
	if udp != 1 || tcp != 1 {
		t.Errorf("SRV queries: %d over UDP, %d over TCP; want 1 and 1", udp, tcp)
	}
	// Only the kept targets were looked up.
	if n := s.Count("", mdns.TypeTXT); n != dns.MaxProducers {
		t.Errorf("%d TXT queries, want %d", n, dns.MaxProducers)
	}
	if !strings.Contains(logs.String(), "1000 SRV records") {
		t.Errorf("the dropped records are not logged:\n%s", logs)
	}
}

// A long TXT record (a big credential) also comes back over TCP.
func TestTruncatedTXTOverTCP(t *testing.T) {
	s := dnstest.Start(t)
	cred := credOf(3, 4000)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 30 IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. 30 IN TXT "addr=%[2]s"
p1.example.internal. 30 IN TXT %[3]s
`, svc, addrOf(t, 1, "127.0.0.1:1"), txtStrings("cred="+b64(cred))))
	r, _ := newResolver(t, s, dns.Config{})
	w := watch(t, r, svc)
	ps, err := next(t, w, 5*time.Second)
	if err != nil || len(ps) != 1 || string(ps[0].Credential) != string(cred) {
		t.Fatalf("got %v, %v; want the producer with its 4000-byte credential", ids(ps), err)
	}
	nets := map[string]int{}
	for _, q := range s.Queries() {
		if q.Type == mdns.TypeTXT {
			nets[q.Net]++
		}
	}
	if nets["udp"] != 1 || nets["tcp"] != 1 {
		t.Errorf("TXT queries by transport: %v, want one over each", nets)
	}
}

// Failures at start are errors with a code, within Timeout-ish bounds.
func TestWatchFailsAtStart(t *testing.T) {
	t.Run("nxdomain", func(t *testing.T) {
		s := dnstest.Start(t)
		r, _ := newResolver(t, s, dns.Config{})
		_, err := r.Watch(t.Context(), svc)
		if status.CodeOf(err) != status.NotFound || !strings.Contains(err.Error(), "no such name") {
			t.Fatalf("Watch of a missing name: %v (code %v), want NotFound, no such name", err, status.CodeOf(err))
		}
	})
	t.Run("bad name", func(t *testing.T) {
		s := dnstest.Start(t)
		r, _ := newResolver(t, s, dns.Config{})
		for _, name := range []string{"", ".", "a..b", "bad name.example", strings.Repeat("a", 64) + ".example", strings.Repeat("abcdefgh.", 32)} {
			_, err := r.Watch(t.Context(), name)
			if status.CodeOf(err) != status.InvalidArgument {
				t.Errorf("Watch(%q): %v, want InvalidArgument", name, err)
			}
		}
		if n := len(s.Queries()); n != 0 {
			t.Errorf("%d queries for bad names", n)
		}
	})
	for _, tc := range []struct {
		name    string
		failure dnstest.Failure
		closed  bool
		want    string
	}{
		{"unreachable", dnstest.Answer, true, "refused the connection"},
		{"no answer", dnstest.Drop, false, "no answer from"},
		{"servfail", dnstest.ServFail, false, "SERVFAIL"},
		{"refused", dnstest.Refused, false, "REFUSED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetFailure(tc.failure)
			r, _ := newResolver(t, s, dns.Config{Timeout: 300 * time.Millisecond})
			if tc.closed {
				s.Close()
			}
			start := time.Now()
			_, err := r.Watch(t.Context(), svc)
			elapsed := time.Since(start)
			t.Logf("error after %v: %v", elapsed, err)
			if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Watch: %v (code %v), want Unavailable, %q", err, status.CodeOf(err), tc.want)
			}
			if elapsed > 2*time.Second {
				t.Errorf("Watch took %v to fail with a 300ms timeout", elapsed)
			}
		})
	}
	t.Run("ctx", func(t *testing.T) {
		s := dnstest.Start(t)
		s.SetFailure(dnstest.Drop)
		r, _ := newResolver(t, s, dns.Config{Timeout: 10 * time.Second})
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, err := r.Watch(ctx, svc)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
			t.Fatalf("Watch with a cancelled ctx: %v after %v, want context.Canceled at once", err, time.Since(start))
		}
	})
}

// A server that goes away (or fails) after the start leaves the last set in
// place; the failures are logged and retried with backoff.
func TestServerDownLaterKeepsSet(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*dnstest.Server)
	}{
		{"closed", (*dnstest.Server).Close},
		{"servfail", func(s *dnstest.Server) { s.SetFailure(dnstest.ServFail) }},
		{"drop", func(s *dnstest.Server) { s.SetFailure(dnstest.Drop) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dnstest.Start(t)
			s.SetZone(t, fmt.Sprintf(`
%[1]s 1 IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. 1 IN TXT "addr=%[2]s"
`, svc, addrOf(t, 1, "127.0.0.1:1")))
			synctest.Test(t, func(t *testing.T) {
				r, logs := newResolver(t, s, dns.Config{Timeout: 100 * time.Millisecond, MinInterval: time.Second, MaxInterval: 8 * time.Second})
				w, err := r.Watch(t.Context(), svc)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				first, _ := w.Next(t.Context())
				tc.down(s)
				before := len(s.Queries())
				// Failures at 1s, then retries after 1, 2, 4, 8, 8 s.
				ctx, cancel := context.WithTimeout(t.Context(), 25*time.Second)
				defer cancel()
				ps, err := w.Next(ctx)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Next while the server is down: %v, %v; want no change from %v", ids(ps), err, ids(first))
				}
				synctest.Wait()
				fails := strings.Count(logs.String(), "re-resolution failed, keeping the last set")
				if fails < 5 || fails > 7 {
					t.Errorf("%d failed re-resolutions logged in 25s, want about 6 (backoff 1,2,4,8,8)", fails)
				}
				if tc.name != "closed" {
					if n := len(s.Queries()) - before; n < 5 || n > 7 {
						t.Errorf("%d queries in 25s while failing, want about 6", n)
					}
				}
			})
		})
	}
}

// Close unblocks Next, interrupts a query in flight, and is idempotent.
func TestCloseUnblocksNext(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 1 IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. 1 IN TXT "addr=%[2]s"
`, svc, addrOf(t, 1, "127.0.0.1:1")))
	r, _ := newResolver(t, s, dns.Config{Timeout: 30 * time.Second, MinInterval: 10 * time.Millisecond, MaxInterval: 10 * time.Millisecond})
	w, err := r.Watch(t.Context(), svc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Next(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The loop is now stuck in a query that will not be answered for 30s.
	s.SetFailure(dnstest.Drop)
	n := len(s.Queries())
	for deadline := time.Now().Add(5 * time.Second); len(s.Queries()) == n; {
		if time.Now().After(deadline) {
			t.Fatal("no re-resolution")
		}
		time.Sleep(5 * time.Millisecond)
	}
	errc := make(chan error, 1)
	go func() { _, err := w.Next(context.Background()); errc <- err }()
	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a query in flight", d)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked 5s after Close")
	}
	if _, err := w.Next(t.Context()); !errors.Is(err, discovery.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg  dns.Config
		want string
	}{
		{dns.Config{Server: "127.0.0.1:53", MinInterval: -1}, "MinInterval"},
		{dns.Config{Server: "127.0.0.1:53", MaxInterval: -time.Second}, "MaxInterval"},
		{dns.Config{Server: "127.0.0.1:53", Timeout: -time.Second}, "Timeout"},
		{dns.Config{Server: "127.0.0.1:53", Timeout: 48 * time.Hour}, "Timeout"},
		{dns.Config{Server: "127.0.0.1:53", MinInterval: time.Minute, MaxInterval: time.Second}, "MaxInterval"},
		{dns.Config{Server: "127.0.0.1:53", MinInterval: time.Minute}, "MaxInterval"}, // above the default ceiling
		{dns.Config{Server: "127.0.0.1:0"}, "Server"},
		{dns.Config{Server: "127.0.0.1:99999"}, "Server"},
		{dns.Config{Server: "bad host!:53"}, "Server"},
		{dns.Config{Server: "host:port"}, "Server"},
	} {
		_, err := dns.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), "Config."+tc.want) || status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("New(%+v): %v, want InvalidArgument naming Config.%s", tc.cfg, err, tc.want)
		}
	}
	for in, want := range map[string]string{
		"127.0.0.1:5353":   "127.0.0.1:5353",
		"127.0.0.1":        "127.0.0.1:53",
		"::1":              "[::1]:53",
		"[::1]:5353":       "[::1]:5353",
		"ns.example":       "ns.example:53",
		"ns.example:10053": "ns.example:10053",
	} {
		r, err := dns.New(dns.Config{Server: in})
		if err != nil || r.Server() != want {
			t.Errorf("New(Server %q): %v, %v; want server %s", in, r, err, want)
		}
	}
}

// A name that exists without SRV records is an empty set, not an error.
func TestNoDataAtStart(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, svc+" 30 IN TXT \"something else\"")
	r, _ := newResolver(t, s, dns.Config{})
	w := watch(t, r, svc)
	ps, err := next(t, w, 5*time.Second)
	if err != nil || len(ps) != 0 {
		t.Fatalf("Next: %v, %v; want an empty set", ids(ps), err)
	}
}

// The id= form keeps at most MaxDirectAddrs addresses; one id at two
// targets is one producer; names are matched case-insensitively and through
// a CNAME.
func TestIDFormBounds(t *testing.T) {
	s := dnstest.Start(t)
	var zone strings.Builder
	fmt.Fprintf(&zone, "%s 30 IN SRV 0 0 7000 MANY.example.internal.\n", svc)
	fmt.Fprintf(&zone, "%s 30 IN SRV 0 0 7001 zdup.example.internal.\n", svc)
	fmt.Fprintf(&zone, "%s 30 IN SRV 0 0 7002 alias.example.internal.\n", svc)
	fmt.Fprintf(&zone, "many.example.internal. 30 IN TXT \"id=%s\"\n", hexID(t, 1))
	for i := range 40 {
		fmt.Fprintf(&zone, "many.example.internal. 30 IN A 10.0.0.%d\n", 100-i)
	}
	fmt.Fprintf(&zone, "many.example.internal. 30 IN A 0.0.0.0\n")
	fmt.Fprintf(&zone, "many.example.internal. 30 IN AAAA ff02::1\n")
	fmt.Fprintf(&zone, "zdup.example.internal. 30 IN TXT \"id=%s\"\n", hexID(t, 1))
	fmt.Fprintf(&zone, "zdup.example.internal. 30 IN A 10.9.9.9\n")
	fmt.Fprintf(&zone, "alias.example.internal. 30 IN CNAME real.example.internal.\n")
	fmt.Fprintf(&zone, "real.example.internal. 30 IN TXT \"id=%s\"\n", hexID(t, 2))
	fmt.Fprintf(&zone, "real.example.internal. 30 IN A 10.8.8.8\n")
	s.SetZone(t, zone.String())
	r, logs := newResolver(t, s, dns.Config{})
	w := watch(t, r, svc)
	ps, err := next(t, w, 5*time.Second)
	if err != nil || len(ps) != 2 {
		t.Fatalf("Next: %v, %v; want 2 producers", ids(ps), err)
	}
	for _, p := range ps {
		switch p.Addr.ID {
		case idOf(t, 1):
			if len(p.Addr.Direct) != discovery.MaxDirectAddrs || p.Addr.Direct[0] != netip.MustParseAddrPort("10.0.0.61:7000") {
				t.Errorf("key 1: %v; want the %d lowest addresses with port 7000", p.Addr.Direct, discovery.MaxDirectAddrs)
			}
			if err := p.Addr.Validate(); err != nil {
				t.Error(err)
			}
		case idOf(t, 2):
			if len(p.Addr.Direct) != 1 || p.Addr.Direct[0] != netip.MustParseAddrPort("10.8.8.8:7002") {
				t.Errorf("key 2 (through a CNAME): %v", p.Addr.Direct)
			}
		default:
			t.Errorf("unexpected producer %v", p.Addr.ID.Short())
		}
	}
	if !strings.Contains(logs.String(), "is also at another target") {
		t.Errorf("the duplicate id is not logged:\n%s", logs)
	}
}

// A target whose own queries fail keeps its last producer, and the name is
// asked again after MinInterval rather than after the TTL.
func TestTargetFailureKeepsItsProducer(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 30 IN SRV 0 0 7000 p1.example.internal.
%[1]s 30 IN SRV 0 0 7000 p2.example.internal.
p1.example.internal. 30 IN TXT "addr=%[2]s"
p2.example.internal. 30 IN TXT "addr=%[3]s"
`, svc, addrOf(t, 1, "127.0.0.1:1"), addrOf(t, 2, "127.0.0.1:2")))
	synctest.Test(t, func(t *testing.T) {
		r, logs := newResolver(t, s, dns.Config{MinInterval: time.Second})
		w, err := r.Watch(t.Context(), svc)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		first, _ := w.Next(t.Context())
		if len(first) != 2 {
			t.Fatalf("first set %v", ids(first))
		}
		s.SetNameFailure("p2.example.internal.", dnstest.ServFail)
		defer s.SetNameFailure("p2.example.internal.", dnstest.Answer)
		n := s.Count(svc, mdns.TypeSRV)
		time.Sleep(30 * time.Second) // the TTL: one re-resolution, which fails for p2
		synctest.Wait()
		if got := s.Count(svc, mdns.TypeSRV) - n; got != 1 {
			t.Fatalf("%d SRV queries at the TTL, want 1", got)
		}
		time.Sleep(time.Second) // then again after MinInterval
		synctest.Wait()
		if got := s.Count(svc, mdns.TypeSRV) - n; got != 2 {
			t.Fatalf("%d SRV queries 1s after a failed target, want 2", got)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if ps, err := w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the set changed while p2's lookups failed: %v, %v", ids(ps), err)
		}
		if !strings.Contains(logs.String(), "keeping its last producer") {
			t.Errorf("the kept producer is not logged:\n%s", logs)
		}
	})
}

// Long failure runs with long intervals: the backoff stays at MaxInterval
// (no overflow into a busy loop).
func TestLongFailureBackoff(t *testing.T) {
	s := dnstest.Start(t)
	s.SetZone(t, fmt.Sprintf(`
%[1]s 1 IN SRV 0 0 7000 p1.example.internal.
p1.example.internal. 1 IN TXT "addr=%[2]s"
`, svc, addrOf(t, 1, "127.0.0.1:1")))
	synctest.Test(t, func(t *testing.T) {
		r, _ := newResolver(t, s, dns.Config{MinInterval: time.Hour, MaxInterval: 24 * time.Hour})
		w, err := r.Watch(t.Context(), svc)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		s.SetNameFailure(svc, dnstest.ServFail)
		defer s.SetNameFailure(svc, dnstest.Answer)
		time.Sleep(60 * 24 * time.Hour)
		synctest.Wait()
		// Failures at 1h (the TTL, clamped), then 1, 2, 4, 8, 16h later
		// (at 2, 4, 8, 16, 32h), then every 24h: 6 + (1440-32)/24 = 64.
		if n := s.Count(svc, mdns.TypeSRV) - 1; n != 64 {
			t.Fatalf("%d SRV queries in 60 days of failures, want 64", n)
		}
	})
}
