package relay

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/trust"
)

// probePath is a PathConn whose probes the test drives (ProbeInterval of
// an hour unless cfg says otherwise), a peer it talks to, and a UDP
// socket standing for the peer's candidate address.
type probePath struct {
	p        *PathConn
	peerKey  trust.SecretKey
	peer     trust.EndpointID
	cand     *net.UDPConn
	candAddr netip.AddrPort
}

func startProbePath(t *testing.T, cfg DirectConfig) *probePath {
	t.Helper()
	r := startRelay(t, ServerConfig{})
	key := testutil.Key(t, 1)
	rc, err := DialPacketConn(ctxT(t), r.url, key, clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = time.Hour
	}
	p, err := NewPathConn(rc, key, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	pp := &probePath{p: p, peerKey: testutil.Key(t, 2)}
	pp.peer = trust.IDOf(pp.peerKey)
	p.peerAddr(pp.peer, nil)
	// The peer's first probe round (no candidates yet: a CALL-ME-MAYBE
	// only) is out of the way before the test drives its own.
	waitFor(t, 5*time.Second, "the first probe round", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return !p.peers[pp.peer].probed.IsZero()
	})
	pp.cand, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pp.cand.Close() })
	pp.candAddr = pp.cand.LocalAddr().(*net.UDPAddr).AddrPort()
	return pp
}

// read returns the next disco message at the candidate socket within d,
// with its length, or ok false.
func (pp *probePath) read(t *testing.T, d time.Duration) (m discoMsg, n int, ok bool) {
	t.Helper()
	buf := make([]byte, 2048)
	_ = pp.cand.SetReadDeadline(time.Now().Add(d))
	n, _, err := pp.cand.ReadFromUDPAddrPort(buf)
	if err != nil {
		return discoMsg{}, 0, false
	}
	m, err = parseDisco(append([]byte(nil), buf[:n]...))
	if err != nil {
		t.Fatalf("%d bytes at the candidate: %v", n, err)
	}
	if err := verifyDisco(&m, pp.peer, time.Now()); err != nil {
		t.Fatalf("%#x at the candidate: %v", m.typ, err)
	}
	return m, n, true
}

// peerPing has the peer's PING arrive from the candidate address.
func (pp *probePath) peerPing(tx byte, pad int) {
	pp.p.udpDisco(pp.candAddr, encodeDisco(pp.peerKey, pp.p.id, discoPing, time.Now(), pingBody([discoTxLen]byte{tx}, pp.p.UDPAddr(), pad)))
}

// TestPingBackAfterCrossedProbe: the two sides' first probes cross. This
// side's probe left a moment before the peer's PING arrived, and the
// peer's NAT, not yet open toward this side, dropped it (here: nobody
// answers it). The peer's PING shows its NAT is open now, so this side
// pings back at once rather than waiting for another PING of the peer's;
// further PINGs within pingBackEvery are answered with a PONG alone.
func TestPingBackAfterCrossedProbe(t *testing.T) {
	pp := startProbePath(t, DirectConfig{})
	pp.p.ping(pp.peer, pp.candAddr, time.Now(), pingProbe)
	if m, _, ok := pp.read(t, 5*time.Second); !ok || m.typ != discoPing {
		t.Fatalf("no probe: %+v", m)
	}
	// The peer's PING, 1 ms later: a PONG, and a PING back.
	pp.peerPing(1, 0)
	var pong, ping bool
	for !pong || !ping {
		m, _, ok := pp.read(t, 5*time.Second)
		if !ok {
			t.Fatalf("PONG %v, PING back %v: the PING was not answered by both", pong, ping)
		}
		switch m.typ {
		case discoPong:
			pong = true
		case discoPing:
			if m.addr != pp.candAddr {
				t.Errorf("PING back to %s, want %s", m.addr, pp.candAddr)
			}
			ping = true
		}
	}
	// Another PING at once: a PONG only.
	pp.peerPing(2, 0)
	if m, _, ok := pp.read(t, 5*time.Second); !ok || m.typ != discoPong {
		t.Fatalf("want the PONG, got %+v", m)
	}
	if m, _, ok := pp.read(t, pingBackEvery/2); ok {
		t.Fatalf("a second PING back within %s: %#x", pingBackEvery, m.typ)
	}
}

// TestUnansweredCandidateCheap: a peer can announce any host's address as
// its candidate. What this endpoint sends there while it never answers:
// unpadded PINGs only, at most maxPingsOut per pingExpiry (here: in 2 s,
// with a probe round every 50 ms), where padded probes used to send 1452
// bytes a round. Once the unproven budget of all peers is spent, nothing
// more goes to such addresses, while an address that answered is still
// probed (padded).
func TestUnansweredCandidateCheap(t *testing.T) {
	pp := startProbePath(t, DirectConfig{ProbeInterval: 50 * time.Millisecond})
	p := pp.p
	waitFor(t, 5*time.Second, "the relay's UDP address", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.relayUDP.IsValid() // loopback: loopback candidates are probed
	})
	// The announcement arrives through the relay, as the peer's.
	p.relayDisco(pp.peer, encodeDisco(pp.peerKey, p.id, discoCallMeMaybe, time.Now(), callMeMaybeBody([]netip.AddrPort{pp.candAddr})))
	var total, pings, largest int
	end := time.Now().Add(2 * time.Second)
	for time.Now().Before(end) {
		m, n, ok := pp.read(t, time.Until(end))
		if !ok {
			break
		}
		if m.typ != discoPing {
			t.Fatalf("%#x at the candidate", m.typ)
		}
		total += n
		pings++
		largest = max(largest, n)
	}
	t.Logf("the silent candidate got %d PINGs, %d bytes (largest %d)", pings, total, largest)
	if pings == 0 {
		t.Fatal("the announced candidate was not probed")
	}
	if largest > pingBaseLen {
		t.Errorf("a PING of %d bytes to an address that never answered, want at most %d", largest, pingBaseLen)
	}
	if total > maxPingsOut*pingBaseLen {
		t.Errorf("%d bytes to an address that never answered, want at most %d", total, maxPingsOut*pingBaseLen)
	}

	// The budget for all peers: spent, nothing goes to an unproven
	// address; an address that answered still gets its padded probe.
	p.unproven.SetBurst(0)
	p.unproven.SetLimit(0)
	for {
		if _, _, ok := pp.read(t, 100*time.Millisecond); !ok {
			break
		}
	}
	p.mu.Lock()
	p.peers[pp.peer].pings = map[[discoTxLen]byte]sentPing{} // room for more
	p.mu.Unlock()
	p.ping(pp.peer, pp.candAddr, time.Now(), pingProbe)
	if m, n, ok := pp.read(t, 200*time.Millisecond); ok && n == pingBaseLen {
		t.Fatalf("an unpadded %#x beyond the unproven budget", m.typ)
	}
	p.mu.Lock()
	p.peers[pp.peer].answered[pp.candAddr] = time.Now()
	p.mu.Unlock()
	p.ping(pp.peer, pp.candAddr, time.Now(), pingProbe)
	for {
		m, n, ok := pp.read(t, 5*time.Second)
		if !ok {
			t.Fatal("no padded probe to an address that answered")
		}
		if m.typ == discoPing && n == MaxPingLen {
			break
		}
	}
}

// TestProbePaddingDoc checks the sizes PROTOCOL.md §24 gives for probes
// against the code: the documented PING is an unpadded one, padding makes
// it MaxPingLen, and the bound on what an unanswered address receives.
func TestProbePaddingDoc(t *testing.T) {
	ping := hexExamples(t, "disco-example")["ping"]
	if len(ping) != pingBaseLen {
		t.Errorf("the documented PING is %d bytes, an unpadded one %d", len(ping), pingBaseLen)
	}
	raw, err := os.ReadFile("../../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(raw)), " ")
	thousands := func(n int) string {
		if n < 1000 {
			return strconv.Itoa(n)
		}
		return fmt.Sprintf("%d,%03d", n/1000, n%1000)
	}
	for _, want := range []string{
		fmt.Sprintf("adds %d zero bytes before the signature, %d bytes in all", MaxPingLen-pingBaseLen, MaxPingLen),
		fmt.Sprintf("MUST NOT be padded (%d bytes)", pingBaseLen),
		fmt.Sprintf("at most %d PINGs outstanding per peer, each for %d s, and %d KiB per second for all peers", maxPingsOut, int(pingExpiry/time.Second), unprovenRate>>10),
		fmt.Sprintf("%d × %d = %s bytes", maxPingsOut, pingBaseLen, thousands(maxPingsOut*pingBaseLen)),
		fmt.Sprintf("%d × %s = %s", maxPingsOut, thousands(MaxPingLen), thousands(maxPingsOut*MaxPingLen)),
		fmt.Sprintf("in the last %d minutes", int(answeredFor/time.Minute)),
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("PROTOCOL.md §24 lacks %q", want)
		}
	}
}
