package relay

import (
	"net"
	"net/netip"
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
