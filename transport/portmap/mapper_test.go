package portmap

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// fakeClient is a protocol client whose gateway the test controls.
type fakeClient struct {
	proto Protocol

	mu        sync.Mutex
	probeErr  error
	mapErr    error
	ext       netip.AddrPort
	lifetime  time.Duration
	maps      int
	unmaps    int
	mapped    bool
	hangUnmap bool
}

func (f *fakeClient) name() Protocol { return f.proto }

func (f *fakeClient) probe(ctx context.Context) (netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ext.Addr(), f.probeErr
}

func (f *fakeClient) mapPort(ctx context.Context, internal, suggested uint16, lifetime time.Duration) (mapping, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maps++
	if f.mapErr != nil {
		return mapping{}, f.mapErr
	}
	f.mapped = true
	return mapping{proto: f.proto, external: f.ext, lifetime: f.lifetime, internal: internal}, nil
}

func (f *fakeClient) unmap(ctx context.Context, m mapping) error {
	f.mu.Lock()
	hang := f.hangUnmap
	f.unmaps++
	f.mapped = false
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (f *fakeClient) set(fn func(f *fakeClient)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeClient) counts() (maps, unmaps int, mapped bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maps, f.unmaps, f.mapped
}

// changes records OnChange calls.
type changes struct {
	mu  sync.Mutex
	log []string
}

func (c *changes) on(a netip.AddrPort, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ok {
		c.log = append(c.log, a.String())
	} else {
		c.log = append(c.log, "lost")
	}
}

func (c *changes) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.log, ",")
}

var errRefused = errors.New("refused")

func TestMapperRenewsAndDeletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeClient{proto: PCP, ext: netip.MustParseAddrPort("203.0.113.7:4000"), lifetime: 2 * time.Minute}
		var ch changes
		m := New(4000, &Options{clients: []client{f}, OnChange: ch.on})
		defer m.Close()
		synctest.Wait()
		if ext, ok := m.External(); !ok || ext != f.ext {
			t.Fatalf("External = %v, %v", ext, ok)
		}
		if c := m.Candidates(); len(c) != 1 || c[0] != f.ext {
			t.Fatalf("Candidates = %v", c)
		}
		// Renewed at half the granted lifetime: after 60 s, 120 s, 180 s.
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if maps, _, _ := f.counts(); maps != 1 {
			t.Fatalf("renewed early: %d requests after 59 s", maps)
		}
		time.Sleep(2*time.Minute + 2*time.Second)
		synctest.Wait()
		if maps, _, _ := f.counts(); maps != 4 {
			t.Fatalf("%d requests after 3 min 1 s, want 4", maps)
		}
		if st := m.Status(); !st.Mapped || st.Renewals != 3 || st.Protocol != PCP || st.Lifetime != 2*time.Minute || st.Err != nil {
			t.Fatalf("Status = %+v", st)
		}
		start := time.Now()
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("Close took %v of fake time", d)
		}
		if _, unmaps, mapped := f.counts(); unmaps != 1 || mapped {
			t.Fatalf("after Close: %d deletions, mapped %v", unmaps, mapped)
		}
		if _, ok := m.External(); ok {
			t.Fatal("External after Close")
		}
		if got := ch.String(); got != "203.0.113.7:4000,lost" {
			t.Fatalf("OnChange calls %q", got)
		}
		if err := m.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

// A protocol that answers the probe but refuses the mapping gives way to
// the next one; one that does not answer is not asked.
func TestMapperPreference(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pcp := &fakeClient{proto: PCP, probeErr: errRefused}
		pmp := &fakeClient{proto: NATPMP, mapErr: errRefused, ext: netip.MustParseAddrPort("203.0.113.7:1")}
		upnp := &fakeClient{proto: UPnP, ext: netip.MustParseAddrPort("203.0.113.7:4000")}
		m := New(4000, &Options{clients: []client{pcp, pmp, upnp}})
		defer m.Close()
		synctest.Wait()
		st := m.Status()
		if !st.Mapped || st.Protocol != UPnP || len(st.Available) != 2 || st.Available[0] != NATPMP || st.Available[1] != UPnP {
			t.Fatalf("Status = %+v", st)
		}
		if maps, _, _ := pcp.counts(); maps != 0 {
			t.Fatal("PCP asked for a mapping although its probe failed")
		}
		if maps, _, _ := pmp.counts(); maps != 1 {
			t.Fatal("NAT-PMP not asked")
		}
	})
}

// A failed renewal drops the mapping (OnChange reports it) and maps again
// at once; a failed attempt is retried after RetryInterval, doubling.
func TestMapperRenewalFailureAndRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeClient{proto: NATPMP, ext: netip.MustParseAddrPort("203.0.113.7:4000"), lifetime: time.Hour}
		var ch changes
		m := New(4000, &Options{clients: []client{f}, OnChange: ch.on, RetryInterval: 10 * time.Second, MaxRetryInterval: 30 * time.Second})
		defer m.Close()
		synctest.Wait()
		f.set(func(f *fakeClient) { f.mapErr, f.probeErr = errRefused, errRefused })
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		if _, ok := m.External(); ok {
			t.Fatal("still mapped after a failed renewal")
		}
		if st := m.Status(); st.Err == nil || st.Attempts != 2 {
			t.Fatalf("Status = %+v", st)
		}
		// Retries after 10 s, then 20 s, then 30 s (the cap), 30 s.
		for i, wait := range []time.Duration{10, 20, 30, 30} {
			time.Sleep(wait*time.Second - time.Millisecond)
			synctest.Wait()
			if st := m.Status(); st.Attempts != uint64(2+i) {
				t.Fatalf("retry %d early: %d attempts", i, st.Attempts)
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			if st := m.Status(); st.Attempts != uint64(3+i) {
				t.Fatalf("retry %d: %d attempts", i, st.Attempts)
			}
		}
		// The gateway is back with another address.
		f.set(func(f *fakeClient) {
			f.mapErr, f.probeErr, f.ext = nil, nil, netip.MustParseAddrPort("198.51.100.9:4001")
		})
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if ext, ok := m.External(); !ok || ext.String() != "198.51.100.9:4001" {
			t.Fatalf("External = %v, %v", ext, ok)
		}
		if got := ch.String(); got != "203.0.113.7:4000,lost,198.51.100.9:4001" {
			t.Fatalf("OnChange calls %q", got)
		}
	})
}

// Close waits at most CloseTimeout for a gateway that does not answer
// the deletion.
func TestMapperCloseBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeClient{proto: PCP, ext: netip.MustParseAddrPort("203.0.113.7:4000"), lifetime: time.Hour, hangUnmap: true}
		m := New(4000, &Options{clients: []client{f}, CloseTimeout: 3 * time.Second})
		defer m.Close()
		synctest.Wait()
		start := time.Now()
		if err := m.Close(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Close = %v, want deadline exceeded", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("Close took %v, want 3s", d)
		}
	})
}

// With no gateway the Mapper keeps retrying quietly and Close is
// immediate.
func TestMapperNoGateway(t *testing.T) {
	m := New(4000, &Options{Gateway: netip.MustParseAddr("127.0.0.1"), LocalAddr: netip.MustParseAddr("127.0.0.1"),
		pcpPort: 9, ssdpPort: 9, noMulticast: true, Protocols: []Protocol{PCP, UPnP}, ProbeTimeout: 300 * time.Millisecond})
	deadline := time.Now().Add(5 * time.Second)
	for m.Status().Err == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := m.Status()
	if st.Mapped || st.Err == nil || st.Attempts != 1 || len(st.Available) != 0 {
		t.Fatalf("Status = %+v", st)
	}
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Close took %v", d)
	}
}

// The Mapper over real sockets against a PCP server.
func TestMapperPCP(t *testing.T) {
	s := startFakePCP(t, "127.0.0.1")
	changed := make(chan netip.AddrPort, 4)
	m := New(40001, &Options{Gateway: netip.MustParseAddr("127.0.0.1"), LocalAddr: netip.MustParseAddr("127.0.0.1"),
		pcpPort: s.port(), ssdpPort: 9, noMulticast: true,
		OnChange: func(a netip.AddrPort, ok bool) { changed <- a }})
	select {
	case a := <-changed:
		if a.String() != "203.0.113.7:40001" {
			t.Fatalf("mapped %v", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no mapping: %+v", m.Status())
	}
	if _, ok := s.mapped(40001); !ok {
		t.Fatal("server holds no mapping")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.mapped(40001); ok {
		t.Fatal("mapping not deleted by Close")
	}
}

func TestParseRouteTable(t *testing.T) {
	table := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"bad\t00000000\tzz\t0003\n"
	gw, err := parseRouteTable(strings.NewReader(table))
	if err != nil || gw.String() != "192.0.2.1" {
		t.Fatalf("gateway %v, %v; want 192.0.2.1 (lowest metric)", gw, err)
	}
	noDefault := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n" +
		"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
	if _, err := parseRouteTable(strings.NewReader(noDefault)); !errors.Is(err, ErrNoGateway) {
		t.Fatalf("no default route: err = %v", err)
	}
}
