package relay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	"golang.org/x/time/rate"
)

// fastDirect makes the path logic fast enough for tests.
func fastDirect() DirectConfig {
	return DirectConfig{
		ProbeInterval:     300 * time.Millisecond,
		HeartbeatInterval: 200 * time.Millisecond,
		DirectTimeout:     time.Second,
	}
}

// waitFor polls cond every 10 ms until it holds or d passes. The path
// logic runs on real sockets and real timers, which testing/synctest's
// bubbles cannot hold.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echoServer accepts connections on ln and echoes every stream until ln
// closes.
func echoServer(t *testing.T, ln transport.Listener) {
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close(transport.ConnNoError, "")
				for {
					s, err := c.AcceptStream(context.Background())
					if err != nil {
						return
					}
					wg.Go(func() {
						defer s.Close()
						_, _ = io.Copy(s, s)
					})
				}
			})
		}
	})
}

// pathPair is a relay, a listener behind it and a dialed connection.
type pathPair struct {
	relay *testRelay
	conn  transport.Conn
	path  *PathConn // the dialer's
}

func startPathPair(t *testing.T) *pathPair {
	t.Helper()
	r := startRelay(t, ServerConfig{BytesPerSecond: -1})
	cfg := &Config{Logger: testLog(), Direct: fastDirect()}
	ln, err := Listen(ctxT(t), r.url, testutil.Key(t, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	d := NewDialer(testutil.Key(t, 2), cfg)
	t.Cleanup(func() { d.Close() })
	c, err := d.Dial(ctxT(t), discovery.EndpointAddr{ID: testutil.ID(t, 1), Relay: r.url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(transport.ConnNoError, "") })
	a := c.RemoteAddr().(*Addr)
	if a.path == nil {
		t.Fatal("the dialer does not run over a PathConn")
	}
	return &pathPair{relay: r, conn: c, path: a.path}
}

// streamer writes blocks on one stream and checks the echo, until stop.
type streamer struct {
	t       *testing.T
	s       transport.Stream
	stop    chan struct{}
	done    chan error
	blocks  int
	blockMu sync.Mutex
}

func startStreamer(t *testing.T, c transport.Conn) *streamer {
	s, err := c.OpenStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	st := &streamer{t: t, s: s, stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		block := make([]byte, 16<<10)
		got := make([]byte, len(block))
		for i := 0; ; i++ {
			select {
			case <-st.stop:
				st.done <- s.Close()
				return
			default:
			}
			_, _ = rand.Read(block)
			if _, err := s.Write(block); err != nil {
				st.done <- err
				return
			}
			if _, err := io.ReadFull(s, got); err != nil {
				st.done <- err
				return
			}
			if !bytes.Equal(block, got) {
				st.done <- errors.New("echo differs")
				return
			}
			st.blockMu.Lock()
			st.blocks++
			st.blockMu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return st
}

func (st *streamer) count() int {
	st.blockMu.Lock()
	defer st.blockMu.Unlock()
	return st.blocks
}

// finish stops the streamer and fails the test if the stream failed.
func (st *streamer) finish() {
	st.t.Helper()
	close(st.stop)
	select {
	case err := <-st.done:
		if err != nil {
			st.t.Fatalf("the stream failed: %v", err)
		}
	case <-time.After(10 * time.Second):
		st.t.Fatal("the stream hangs")
	}
}

// progress waits until the streamer echoed n more blocks.
func (st *streamer) progress(n int) {
	st.t.Helper()
	from := st.count()
	waitFor(st.t, 10*time.Second, "the stream to make progress", func() bool {
		select {
		case err := <-st.done:
			st.t.Fatalf("the stream failed: %v", err)
		default:
		}
		return st.count() >= from+n
	})
}

func TestDirectPathUpgradeAndFallback(t *testing.T) {
	pp := startPathPair(t)
	addr := pp.conn.RemoteAddr().(*Addr)
	// The handshake went through the relay (the upgrade may already have
	// happened: on loopback it takes a round trip).
	if pp.relay.srv.Stats().PacketsForwarded == 0 {
		t.Fatal("the relay forwarded nothing for the handshake")
	}
	st := startStreamer(t, pp.conn)
	st.progress(3)

	// The connection moves to the direct path while the stream runs.
	waitFor(t, 10*time.Second, "the direct path", func() bool { return strings.HasPrefix(addr.Path(), "direct ") })
	t.Logf("path: %s", addr.Path())
	st.progress(5)
	// The relay carries (almost) nothing any more: the stream's blocks
	// go direct.
	before, directBefore := pp.relay.srv.Stats().PacketsForwarded, pp.path.Stats().DirectSent
	st.progress(50)
	// A heartbeat late under load makes the path suspect for a moment
	// (datagrams then go both ways): allow the relay a small share.
	grew, direct := pp.relay.srv.Stats().PacketsForwarded-before, pp.path.Stats().DirectSent-directBefore
	if grew > max(10, direct/20) {
		t.Errorf("the relay forwarded %d datagrams after the upgrade, %d went direct", grew, direct)
	}
	ps := pp.path.Stats()
	if ps.Upgrades == 0 || ps.DirectSent == 0 || ps.DirectReceived == 0 || ps.PongsReceived == 0 || !ps.Reflexive.IsValid() {
		t.Errorf("stats after the upgrade: %+v", ps)
	}

	// A firewall drops the direct path mid-stream: back to the relay, the
	// stream goes on.
	// (All of UDP: the peer's socket has a candidate per interface.)
	SetPathFilter(pp.path, func(netip.AddrPort) bool { return true })
	waitFor(t, 10*time.Second, "the fallback to the relay", func() bool { return strings.HasPrefix(addr.Path(), "relay ") })
	before = pp.relay.srv.Stats().PacketsForwarded
	st.progress(10)
	if pp.relay.srv.Stats().PacketsForwarded == before {
		t.Error("the relay forwarded nothing after the fallback")
	}
	if pp.path.Stats().Fallbacks == 0 {
		t.Error("no fallback counted")
	}

	// The path opens again: direct again.
	SetPathFilter(pp.path, nil)
	waitFor(t, 10*time.Second, "the direct path again", func() bool { return strings.HasPrefix(addr.Path(), "direct ") })
	st.progress(10)
	st.finish()
}

func TestDirectPathDisabled(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	cfg := &Config{Logger: quietLog, Direct: DirectConfig{Disable: true}}
	ln, err := Listen(ctxT(t), r.url, testutil.Key(t, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, ln)
	d := NewDialer(testutil.Key(t, 2), cfg)
	defer d.Close()
	c, err := d.Dial(ctxT(t), discovery.EndpointAddr{ID: testutil.ID(t, 1), Relay: r.url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(transport.ConnNoError, "")
	if a := c.RemoteAddr().(*Addr); a.path != nil || a.Path() != "relay "+r.url {
		t.Fatalf("path %q with direct paths disabled", a.Path())
	}
}

// TestForgedAndReplayedProbes feeds a PathConn disco messages a third party
// could send: none makes it use a direct path, except the peer's own PONG
// for this side's own PING from the address pinged.
func TestForgedAndReplayedProbes(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	key := testutil.Key(t, 1)
	rc, err := DialPacketConn(ctxT(t), r.url, key, clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastDirect()
	cfg.ProbeInterval = time.Hour // the test drives the probes
	p, err := NewPathConn(rc, key, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	peerKey, evil := testutil.Key(t, 2), testutil.Key(t, 3)
	peer := trust.IDOf(peerKey)
	p.peerAddr(peer, nil)
	// The peer's candidate: a socket that receives A's PING.
	cand, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer cand.Close()
	candAddr := cand.LocalAddr().(*net.UDPAddr).AddrPort()
	p.ping(peer, candAddr, time.Now(), pingProbe)
	buf := make([]byte, 2048)
	readPing := func(size int) discoMsg {
		t.Helper()
		_ = cand.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := cand.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		ping, err := parseDisco(append([]byte(nil), buf[:n]...))
		if err != nil || ping.typ != discoPing || verifyDisco(&ping, peer, time.Now()) != nil || ping.addr != candAddr || n != size {
			t.Fatalf("PING of %d bytes, want %d: %+v: %v", n, size, ping, err)
		}
		return ping
	}
	// The first probe to an address that never answered is not padded;
	// its PONG makes no direct path, but the padded probe follows.
	small := readPing(pingBaseLen)
	p.udpDisco(candAddr, encodeDisco(peerKey, p.id, discoPong, time.Now(), pingBody(small.tx, candAddr, 0)))
	if _, ok := p.Path(peer); ok {
		t.Fatal("the PONG to an unpadded probe made a direct path")
	}
	ping := readPing(MaxPingLen)
	now := time.Now()
	var otherTx [discoTxLen]byte
	otherTx[0] = 1
	elsewhere := netip.MustParseAddrPort("127.0.0.1:9")
	for _, c := range []struct {
		name string
		src  netip.AddrPort
		msg  []byte
	}{
		{"signed by another key", candAddr, encodeDisco(evil, p.id, discoPong, now, pingBody(ping.tx, candAddr, ping.pad))},
		{"claiming the peer, signed by another key", candAddr, func() []byte {
			m := encodeDisco(evil, p.id, discoPong, now, pingBody(ping.tx, candAddr, ping.pad))
			copy(m[len(discoMagic)+1:], peer[:])
			return m
		}()},
		{"for another receiver", candAddr, encodeDisco(peerKey, peer, discoPong, now, pingBody(ping.tx, candAddr, ping.pad))},
		{"for a PING never sent", candAddr, encodeDisco(peerKey, p.id, discoPong, now, pingBody(otherTx, candAddr, ping.pad))},
		{"from another address", elsewhere, encodeDisco(peerKey, p.id, discoPong, now, pingBody(ping.tx, elsewhere, ping.pad))},
		{"stale", candAddr, encodeDisco(peerKey, p.id, discoPong, now.Add(-2*MaxClockSkew), pingBody(ping.tx, candAddr, ping.pad))},
		{"CALL-ME-MAYBE on UDP", candAddr, encodeDisco(peerKey, p.id, discoCallMeMaybe, now, callMeMaybeBody([]netip.AddrPort{elsewhere}))},
		{"unpadded for a padded PING", candAddr, encodeDisco(peerKey, p.id, discoPong, now, pingBody(ping.tx, candAddr, 0))},
		{"truncated", candAddr, encodeDisco(peerKey, p.id, discoPong, now, pingBody(ping.tx, candAddr, ping.pad))[:100]},
	} {
		before := p.Stats().Rejected
		p.udpDisco(c.src, c.msg)
		if _, ok := p.Path(peer); ok {
			t.Fatalf("%s: the PONG made a direct path", c.name)
		}
		if p.Stats().Rejected != before+1 {
			t.Errorf("%s: not counted as rejected", c.name)
		}
	}
	// The real PONG is accepted once; its replay is not (the PING's
	// transaction is spent), nor does it move the path elsewhere.
	pong := encodeDisco(peerKey, p.id, discoPong, now, pingBody(ping.tx, candAddr, ping.pad))
	p.udpDisco(candAddr, pong)
	if d, ok := p.Path(peer); !ok || d != candAddr {
		t.Fatalf("the peer's PONG did not make the direct path: %v %v", d, ok)
	}
	before := p.Stats().Rejected
	p.udpDisco(candAddr, pong)
	if p.Stats().Rejected != before+1 {
		t.Error("a replayed PONG was accepted")
	}

	// A PING is answered once; its replay is dropped. A PING from an id
	// this endpoint does not talk to creates nothing.
	in := encodeDisco(peerKey, p.id, discoPing, now, pingBody(otherTx, p.UDPAddr(), 0))
	from, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer from.Close()
	fromAddr := from.LocalAddr().(*net.UDPAddr).AddrPort()
	p.udpDisco(fromAddr, in)
	p.udpDisco(fromAddr, in)
	_ = from.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := from.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("no PONG: %v", err)
	}
	answer, err := parseDisco(buf[:n])
	if err != nil || answer.typ != discoPong || answer.tx != otherTx || answer.addr != fromAddr || verifyDisco(&answer, peer, time.Now()) != nil {
		t.Fatalf("PONG %+v: %v", answer, err)
	}
	if n > len(in) {
		t.Errorf("PONG of %d bytes answers a PING of %d", n, len(in))
	}
	// A padded PING is answered by a PONG of the same size; padding that
	// is not zero does not parse.
	padded := encodeDisco(peerKey, p.id, discoPing, now, pingBody([discoTxLen]byte{5}, p.UDPAddr(), MaxPingLen-pingBaseLen))
	p.udpDisco(fromAddr, padded)
	if n, _, err = from.ReadFromUDPAddrPort(buf); err != nil || n != len(padded) || n != MaxPingLen {
		t.Fatalf("PONG of %d bytes to a PING of %d: %v", n, len(padded), err)
	}
	bad := encodeDisco(peerKey, p.id, discoPing, now, append(pingBody([discoTxLen]byte{6}, p.UDPAddr(), 0), 1))
	if _, err := parseDisco(bad); err == nil {
		t.Error("a PING with non-zero padding parses")
	}
	before = p.Stats().Rejected
	p.udpDisco(fromAddr, encodeDisco(evil, p.id, discoPing, now, pingBody(otherTx, p.UDPAddr(), 0)))
	if p.Stats().Rejected != before+1 {
		t.Error("a PING from an unknown peer was answered")
	}
	p.mu.Lock()
	_, known := p.peers[trust.IDOf(evil)]
	p.mu.Unlock()
	if known {
		t.Error("a PING from an unknown peer created state")
	}

	// Heartbeats for a long time (the peer's clock ahead of the first
	// PING): every one is answered, the replay cache stays bounded, and
	// a PING older than the reorder window is not.
	before = p.Stats().Rejected
	start := now.Add(10 * time.Second)
	for i := range 4 * maxSeenPings {
		var tx [discoTxLen]byte
		tx[0], tx[1], tx[2] = 7, byte(i), byte(i>>8)
		p.udpDisco(fromAddr, encodeDisco(peerKey, p.id, discoPing, start.Add(time.Duration(i)*100*time.Millisecond), pingBody(tx, p.UDPAddr(), 0)))
	}
	if got := p.Stats().Rejected - before; got != 0 {
		t.Errorf("%d of %d heartbeat PINGs rejected", got, 4*maxSeenPings)
	}
	p.mu.Lock()
	seen := len(p.peers[peer].seen)
	p.mu.Unlock()
	if seen > maxSeenPings {
		t.Errorf("replay cache of %d", seen)
	}
	old := [discoTxLen]byte{8}
	p.udpDisco(fromAddr, encodeDisco(peerKey, p.id, discoPing, start, pingBody(old, p.UDPAddr(), 0)))
	if p.Stats().Rejected != before+1 {
		t.Error("a PING older than the reorder window was answered")
	}
}

func TestObserve(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	key := testutil.Key(t, 1)
	rc, err := DialPacketConn(ctxT(t), r.url, key, clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	u, _ := ParseURL(r.url)
	relayUDP, _ := net.ResolveUDPAddr("udp", u.HostPort())
	c, err := net.DialUDP("udp", nil, relayUDP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	me := c.LocalAddr().(*net.UDPAddr).AddrPort()
	ask := func(msg []byte) ([]byte, bool) {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return nil, false
		}
		return buf[:n], true
	}
	tx := [discoTxLen]byte{9}
	probe := encodeDisco(key, trust.EndpointID{}, discoObserve, time.Now(), tx[:])
	ans, ok := ask(probe)
	if !ok {
		t.Fatal("no answer to a registered endpoint's OBSERVE")
	}
	m, err := parseDisco(ans)
	if err != nil || m.typ != discoObserved || m.tx != tx || m.addr != me {
		t.Fatalf("OBSERVED %+v %v, want %v", m, err, me)
	}
	if len(ans) >= len(probe) {
		t.Errorf("answer of %d bytes to a probe of %d", len(ans), len(probe))
	}
	for name, msg := range map[string][]byte{
		"unregistered": encodeDisco(testutil.Key(t, 5), trust.EndpointID{}, discoObserve, time.Now(), tx[:]),
		"bad signature": func() []byte {
			b := bytes.Clone(probe)
			b[len(b)-1] ^= 1
			return b
		}(),
		"stale":   encodeDisco(key, trust.EndpointID{}, discoObserve, time.Now().Add(-time.Hour), tx[:]),
		"garbage": bytes.Repeat([]byte{0}, len(probe)),
	} {
		if _, ok := ask(msg); ok {
			t.Errorf("%s OBSERVE answered", name)
		}
	}
	// The rate limit: a flood from one source gets at most a burst.
	answered := 0
	for range 3 * ObserveBurst {
		if _, err := c.Write(encodeDisco(key, trust.EndpointID{}, discoObserve, time.Now(), tx[:])); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 2048)
	for {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			break
		}
		answered++
	}
	if answered > ObserveBurst+2 {
		t.Errorf("%d of %d flooded probes answered", answered, 3*ObserveBurst)
	}
}

func TestDiscoNeverQUIC(t *testing.T) {
	// Every QUIC v1 packet has bit 0x40 (fixed) or 0x80 (long header,
	// Version Negotiation) of its first byte set; a disco message neither.
	if discoMagic[0]&0xc0 != 0 {
		t.Fatalf("magic starts with %#x", discoMagic[0])
	}
	if isDisco([]byte{0x40, 0x61, 0x73}) || isDisco(nil) {
		t.Fatal("isDisco accepts a non-disco datagram")
	}
}

// testLog is quiet unless ASTER_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("ASTER_TEST_LOG") == "" {
		return quietLog
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestDirectPathCloseFlushes closes a dialer whose connection runs on the
// direct path: its CONNECTION_CLOSE goes out on that path before the path
// layer closes (Close sends what is queued), so the peer learns at once
// rather than by its idle timeout.
func TestDirectPathCloseFlushes(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	cfg := &Config{Logger: quietLog, Direct: fastDirect()}
	ln, err := Listen(ctxT(t), r.url, testutil.Key(t, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept(context.Background())
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	d := NewDialer(testutil.Key(t, 2), cfg)
	c, err := d.Dial(ctxT(t), discovery.EndpointAddr{ID: testutil.ID(t, 1), Relay: r.url})
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	s, err := c.OpenStream(ctxT(t)) // the listener accepts on the first stream
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Write([]byte("x"))
	sc, ok := <-accepted
	if !ok {
		t.Fatal("no connection accepted")
	}
	defer sc.Close(transport.ConnNoError, "")
	addr := c.RemoteAddr().(*Addr)
	waitFor(t, 10*time.Second, "the direct path", func() bool { return strings.HasPrefix(addr.Path(), "direct ") })
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sc.Done():
		t.Logf("the peer saw the close after %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(time.Second): // the idle timeout is 3 s
		t.Fatal("the peer did not see the close")
	}
}

// TestCandidatesFiltered: a peer's CALL-ME-MAYBE cannot make this endpoint
// probe unspecified, multicast, broadcast or port-0 addresses, nor its own
// loopback when the relay is elsewhere.
func TestCandidatesFiltered(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	key := testutil.Key(t, 1)
	rc, err := DialPacketConn(ctxT(t), r.url, key, clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastDirect()
	cfg.ProbeInterval = time.Hour
	p, err := NewPathConn(rc, key, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	peerKey := testutil.Key(t, 2)
	peer := trust.IDOf(peerKey)
	bad := []netip.AddrPort{
		netip.MustParseAddrPort("0.0.0.0:1000"), netip.MustParseAddrPort("[::]:1000"),
		netip.MustParseAddrPort("224.0.0.1:1000"), netip.MustParseAddrPort("255.255.255.255:1000"),
		netip.MustParseAddrPort("192.0.2.1:0"),
	}
	good := netip.MustParseAddrPort("192.0.2.1:1000")
	loop := netip.MustParseAddrPort("127.0.0.1:1000")
	send := func(cands []netip.AddrPort, at time.Time) []netip.AddrPort {
		p.relayDisco(peer, encodeDisco(peerKey, p.id, discoCallMeMaybe, at, callMeMaybeBody(cands)))
		p.mu.Lock()
		defer p.mu.Unlock()
		return slices.Clone(p.peers[peer].cands)
	}
	now := time.Now()
	// The relay is on loopback here: loopback candidates are kept.
	waitFor(t, 5*time.Second, "the relay's UDP address", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.relayUDP.IsValid()
	})
	if got := send(append(slices.Clone(bad), good, loop), now); !slices.Equal(got, []netip.AddrPort{good, loop}) {
		t.Errorf("kept %v", got)
	}
	p.mu.Lock()
	p.relayUDP = netip.MustParseAddrPort("192.0.2.9:443")
	p.mu.Unlock()
	if got := send([]netip.AddrPort{good, loop}, now.Add(time.Millisecond)); !slices.Equal(got, []netip.AddrPort{good}) {
		t.Errorf("kept %v with the relay off loopback", got)
	}
	// A replayed (not newer) CALL-ME-MAYBE changes nothing.
	before := p.Stats().Rejected
	if got := send([]netip.AddrPort{loop}, now); !slices.Equal(got, []netip.AddrPort{good}) || p.Stats().Rejected != before+1 {
		t.Errorf("a replayed CALL-ME-MAYBE was accepted: %v", got)
	}
	// Through the relay, a CALL-ME-MAYBE must come from its sender.
	before = p.Stats().Rejected
	p.relayDisco(testutil.ID(t, 3), encodeDisco(peerKey, p.id, discoCallMeMaybe, now.Add(time.Second), callMeMaybeBody([]netip.AddrPort{good})))
	if p.Stats().Rejected != before+1 {
		t.Error("a CALL-ME-MAYBE relayed from another id was accepted")
	}
}

// TestDiscoVerifyBudget: a PathConn checks at most maxDiscoVerifies disco
// signatures a second (a burst of a quarter of it), so a flood of forged
// probes in the name of a known peer costs a bounded share of a core; the
// budget refills with time.
func TestDiscoVerifyBudget(t *testing.T) {
	key, peerKey := trust.GenerateKey(), trust.GenerateKey()
	p := &PathConn{id: trust.IDOf(key), verifies: rate.NewLimiter(maxDiscoVerifies, maxDiscoVerifies/4)}
	now := time.Now()
	m, err := parseDisco(encodeDisco(peerKey, p.id, discoPing, now, pingBody([discoTxLen]byte{1}, netip.MustParseAddrPort("192.0.2.1:4000"), 0)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxDiscoVerifies / 4 {
		if err := p.checkDisco(&m, now); err != nil {
			t.Fatalf("check %d within the burst: %v", i, err)
		}
	}
	if err := p.checkDisco(&m, now); err == nil || !strings.Contains(err.Error(), "budget") {
		t.Fatalf("check beyond the burst: %v, want the budget refusal", err)
	}
	if err := p.checkDisco(&m, now.Add(time.Second)); err != nil {
		t.Fatalf("a second later: %v", err)
	}
}
