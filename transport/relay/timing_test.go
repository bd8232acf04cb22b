package relay

import (
	"net/netip"
	"testing"
	"time"
)

// peerTimes are the fields of a pathPeer that the timers read.
type peerTimes struct {
	direct                             netip.AddrPort
	lastPong, lastBeat, probed, active time.Time
}

// TestPathTimers checks the timing rules of PROTOCOL.md 24.2 with the
// default intervals: when a direct path is heartbeated, suspect (datagrams
// both ways) and given up, and when a peer on the relay is probed.
func TestPathTimers(t *testing.T) {
	c := DirectConfig{}.withDefaults()
	t0 := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	direct := netip.MustParseAddrPort("192.0.2.1:1000")
	ms := time.Millisecond
	for _, tc := range []struct {
		name                     string
		pe                       peerTimes
		now                      time.Time
		fallback, beat, probe, s bool
	}{
		{"fresh direct path", peerTimes{direct: direct, lastPong: t0, lastBeat: t0, active: t0}, at(100 * ms), false, false, false, false},
		{"heartbeat due", peerTimes{direct: direct, lastPong: t0, lastBeat: t0, active: t0}, at(500 * ms), false, true, false, false},
		{"one heartbeat missed", peerTimes{direct: direct, lastPong: t0, lastBeat: at(1000 * ms), active: t0}, at(1200 * ms), false, false, false, false},
		{"suspect after 2.5 heartbeats", peerTimes{direct: direct, lastPong: t0, lastBeat: at(1000 * ms), active: t0}, at(1251 * ms), false, false, false, true},
		{"still suspect, not given up", peerTimes{direct: direct, lastPong: t0, lastBeat: at(3000 * ms), active: t0}, at(3000 * ms), false, false, false, true},
		{"given up after DirectTimeout", peerTimes{direct: direct, lastPong: t0, lastBeat: at(3000 * ms), active: t0}, at(3001 * ms), true, false, false, true},
		{"relay, never probed", peerTimes{active: t0}, at(10 * ms), false, false, true, false},
		{"relay, probed just now", peerTimes{active: t0, probed: t0}, at(4 * time.Second), false, false, false, false},
		{"relay, probe interval passed", peerTimes{active: t0, probed: t0}, at(5 * time.Second), false, false, true, false},
		{"relay, idle peer not probed", peerTimes{active: t0, probed: t0}, at(31 * time.Second), false, false, false, false},
	} {
		pe := &pathPeer{direct: tc.pe.direct, lastPong: tc.pe.lastPong, lastBeat: tc.pe.lastBeat, probed: tc.pe.probed}
		pe.touch(tc.pe.active)
		fallback, beat, probe := c.due(pe, tc.now)
		if fallback != tc.fallback || beat != tc.beat || probe != tc.probe {
			t.Errorf("%s: due = fallback %v, beat %v, probe %v; want %v, %v, %v", tc.name, fallback, beat, probe, tc.fallback, tc.beat, tc.probe)
		}
		if s := c.suspect(pe, tc.now); s != tc.s {
			t.Errorf("%s: suspect = %v, want %v", tc.name, s, tc.s)
		}
	}
	// The rules keep a dead path from outlasting QUIC's 3 s idle timeout:
	// datagrams take the relay too well before it, and the path is given up
	// by then.
	if c.HeartbeatInterval*5/2 >= 3*time.Second/2 || c.DirectTimeout > 3*time.Second {
		t.Errorf("suspect after %s, give up after %s: too late for a 3 s idle timeout", c.HeartbeatInterval*5/2, c.DirectTimeout)
	}
}
