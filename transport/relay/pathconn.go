package relay

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/time/rate"

	"github.com/aster-go/aster/trust"
)

// Defaults of DirectConfig.
const (
	// DefaultProbeInterval is the default of DirectConfig.ProbeInterval.
	DefaultProbeInterval = 5 * time.Second
	// DefaultHeartbeatInterval is the default of
	// DirectConfig.HeartbeatInterval.
	DefaultHeartbeatInterval = 500 * time.Millisecond
	// DefaultDirectTimeout is the default of DirectConfig.DirectTimeout.
	DefaultDirectTimeout = 3 * time.Second
	// DefaultObserveInterval is the default of DirectConfig.ObserveInterval.
	DefaultObserveInterval = 25 * time.Second
	// DefaultMaxPeers is the default of DirectConfig.MaxPeers.
	DefaultMaxPeers = 1024
	// peerIdle is how long a peer that exchanged no datagram stays in the
	// table (and is probed: probing stops after activeFor).
	peerIdle  = 2 * time.Minute
	activeFor = 30 * time.Second
	// maxPingsOut bounds the outstanding PINGs per peer; pingExpiry is
	// how long a PING waits for its PONG.
	maxPingsOut = 32
	pingExpiry  = 10 * time.Second
	// maxSeenPings bounds the replay cache of PINGs per peer: those at
	// most pingReorder older than the newest.
	maxSeenPings = 128
	pingReorder  = 2 * time.Second
	// pingBackEvery bounds the PINGs sent back to one address.
	pingBackEvery = 250 * time.Millisecond
	// maxPeerCands bounds the candidates kept per peer (announced and
	// learnt from PING sources), maxVerified the addresses proven by a
	// PING or PONG.
	maxPeerCands = MaxCandidates + 8
	maxVerified  = 8
	// answeredFor is how long an address that answered a PING of ours
	// with a PONG is sent padded probes (the MTU check) without answering
	// again.
	answeredFor = peerIdle
	// unprovenRate bounds the bytes of PINGs to addresses that never
	// answered (announced candidates, PING sources), per second for all
	// peers (a burst of as many): a peer that announces a third party's
	// addresses gets at most that much sent there, in unpadded PINGs.
	unprovenRate = 32 << 10
)

// DirectConfig configures the direct-path upgrade of relayed connections
// (PathConn, PROTOCOL.md §24). Zero fields select the defaults.
type DirectConfig struct {
	// Disable keeps every datagram on the relay (default false: relayed
	// connections move to a direct UDP path when one works).
	Disable bool
	// ListenAddr is the local UDP address of the direct-path socket
	// (default ":0": all interfaces, a port the system picks).
	ListenAddr string
	// ExtraCandidates, if set, is called whenever candidates are announced
	// and returns further addresses at which peers may reach the
	// direct-path socket, such as a port mapping on the gateway. At most
	// MaxCandidates addresses are announced in all.
	ExtraCandidates func() []netip.AddrPort
	// ProbeInterval is how often a peer still on the relay is sent
	// candidates and probed (default 5s).
	ProbeInterval time.Duration
	// HeartbeatInterval is how often a direct path is probed while in use
	// (default 500ms). A direct path whose last PONG is older than 2.5
	// heartbeats is suspect: datagrams go both ways, direct and through the
	// relay, until it answers again or DirectTimeout passes, so that a path
	// that died costs QUIC no more than a few lost packets (QUIC's own idle
	// timeout, 3s by default in transport/quic, must not run out first).
	HeartbeatInterval time.Duration
	// DirectTimeout is how long a direct path may stay unanswered before
	// its peer falls back to the relay alone (default 3s).
	DirectTimeout time.Duration
	// ObserveInterval is how often the relay is asked for the socket's
	// public address (default 25s, which also keeps a NAT mapping open).
	ObserveInterval time.Duration
	// MaxPeers bounds the peers whose paths are tracked (default 1024);
	// datagrams of further peers use the relay.
	MaxPeers int
}

func (c DirectConfig) withDefaults() DirectConfig {
	if c.ListenAddr == "" {
		c.ListenAddr = ":0"
	}
	if c.ProbeInterval <= 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.DirectTimeout <= 0 {
		c.DirectTimeout = DefaultDirectTimeout
	}
	if c.ObserveInterval <= 0 {
		c.ObserveInterval = DefaultObserveInterval
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	return c
}

// PathStats are a PathConn's counters.
type PathStats struct {
	DirectPeers    int    // peers on a direct path now
	DirectSent     uint64 // QUIC datagrams sent on direct paths
	DirectReceived uint64 // QUIC datagrams received on direct paths
	RelaySent      uint64 // QUIC datagrams sent through the relay
	DualSent       uint64 // of those, copies of datagrams also sent on a suspect direct path
	PingsSent      uint64 // PINGs sent
	PongsReceived  uint64 // valid PONGs received
	Rejected       uint64 // disco messages dropped: malformed, bad signature, stale, replayed, unexpected
	Unknown        uint64 // UDP datagrams dropped because they came from no verified address of a peer
	Upgrades       uint64 // switches from the relay to a direct path
	Fallbacks      uint64 // switches from a direct path back to the relay
	// Reflexive is the socket's public address as the relay last observed
	// it (invalid until an answer arrives).
	Reflexive netip.AddrPort
}

// outPkt is a datagram queued for the direct-path writer; b is pooled.
type outPkt struct {
	b  []byte
	to *net.UDPAddr
}

// maxBatch is the most datagrams the writer sends in one system call.
const maxBatch = 64

// writeLoop sends the queued direct datagrams, as many per system call as
// are queued (up to maxBatch), until Close.
func (p *PathConn) writeLoop() {
	defer p.wg.Done()
	msgs := make([]ipv6.Message, maxBatch)
	bufs := make([][]byte, maxBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	for {
		var first outPkt
		select {
		case <-p.closed:
			for {
				select {
				case o := <-p.dsend:
					putBuf(o.b)
				default:
					return
				}
			}
		case <-p.flushDirect:
			// Close: send what is queued (such as QUIC's
			// CONNECTION_CLOSE), then stop.
			for {
				select {
				case o := <-p.dsend:
					msgs[0].Buffers[0], msgs[0].Addr = o.b, o.to
					p.sendBatch(msgs[:1])
					putBuf(o.b)
					msgs[0].Buffers[0], msgs[0].Addr = nil, nil
				default:
					close(p.flushedDirect)
					return
				}
			}
		case first = <-p.dsend:
		}
		n := 0
		add := func(o outPkt) {
			msgs[n].Buffers[0], msgs[n].Addr, bufs[n] = o.b, o.to, o.b
			n++
		}
		add(first)
		for yielded := false; n < maxBatch; {
			select {
			case o := <-p.dsend:
				add(o)
				continue
			default:
			}
			if yielded {
				break
			}
			yielded = true
			runtime.Gosched() // quic-go is likely writing the rest of a burst
		}
		if gsoSupported && !p.noGSO {
			p.sendSegmented(msgs[:n])
		} else {
			p.sendBatch(msgs[:n])
		}
		for i := range n {
			putBuf(bufs[i])
			msgs[i].Buffers[0], msgs[i].Addr, bufs[i] = nil, nil, nil
		}
	}
}

// sendBatch sends msgs with as few system calls as sendmmsg allows.
func (p *PathConn) sendBatch(msgs []ipv6.Message) {
	for sent := 0; sent < len(msgs); {
		k, err := p.batch.WriteBatch(msgs[sent:], 0)
		if err != nil {
			p.log.Debug("relay: direct write failed", "addr", msgs[sent].Addr.String(), "err", err)
			k = max(k, 1) // skip the datagram that failed
		}
		sent += k
	}
}

// maxSegmented bounds the bytes of one segmented send (the kernel's limit
// is 64 KiB, and 64 segments).
const maxSegmented = 65000

// sendSegmented sends runs of datagrams to the same address, of one size
// but for a shorter last one, each as one segmented datagram (UDP GSO), as
// quic-go does on a *net.UDPConn; a datagram of its own goes alone. When the
// kernel cannot segment, it falls back to sendBatch for good.
func (p *PathConn) sendSegmented(msgs []ipv6.Message) {
	for i := 0; i < len(msgs); {
		to := msgs[i].Addr
		size := len(msgs[i].Buffers[0])
		total, j := size, i+1
		for j < len(msgs) && j-i < maxBatch && msgs[j].Addr == to {
			l := len(msgs[j].Buffers[0])
			if l > size || total+l > maxSegmented {
				break
			}
			total += l
			j++
			if l < size {
				break // a shorter datagram ends the run
			}
		}
		if j-i == 1 {
			p.sendBatch(msgs[i:j])
			i = j
			continue
		}
		g := p.gsoBuf[:0]
		for k := i; k < j; k++ {
			g = append(g, msgs[k].Buffers[0]...)
		}
		p.gsoBuf = g
		if p.segOOB == nil || p.segSize != size {
			p.segOOB, p.segSize = segmentOOB(size), size
		}
		if _, _, err := p.udp.WriteMsgUDP(g, p.segOOB, to.(*net.UDPAddr)); err != nil {
			if gsoFailed(err) {
				p.log.Debug("relay: UDP segmentation offload unavailable", "err", err)
				p.noGSO = true
				p.sendBatch(msgs[i:])
				return
			}
			p.log.Debug("relay: direct write failed", "addr", to.String(), "err", err)
		}
		i = j
	}
}

type sentPing struct {
	to   netip.AddrPort
	sent time.Time
	pad  int // bytes of padding: its PONG must carry as many
	kind int // pingBeat, pingProbe or pingBack
}

// pathPeer is one peer's path state, under PathConn.mu.
type pathPeer struct {
	id       trust.EndpointID
	addr     *Addr // its relay address as QUIC sees it
	cands    []netip.AddrPort
	cmmTime  int64 // timestamp of the last CALL-ME-MAYBE accepted
	pings    map[[discoTxLen]byte]sentPing
	seen     map[[discoTxLen]byte]int64   // PINGs answered (replay cache): their timestamps
	pingHigh int64                        // the newest PING timestamp accepted
	verified map[netip.AddrPort]time.Time // addresses proven by a PING or PONG
	answered map[netip.AddrPort]time.Time // addresses proven by a PONG: last one
	direct   netip.AddrPort               // valid when on a direct path
	directUA *net.UDPAddr                 // direct, for the writer
	lastPong time.Time                    // last PONG on direct
	lastBeat time.Time                    // last PING sent to direct
	probed   time.Time                    // last CALL-ME-MAYBE sent
	// active is the time of the last datagram either way (unix
	// nanoseconds), updated without p.mu by the datagram paths.
	active atomic.Int64
}

// touch records a datagram to or from pe at now.
func (pe *pathPeer) touch(now time.Time) {
	if n := now.UnixNano(); pe.active.Load() < n {
		pe.active.Store(n)
	}
}

// activeAt returns the time of pe's last datagram.
func (pe *pathPeer) activeAt() time.Time { return time.Unix(0, pe.active.Load()) }

// PathConn is a net.PacketConn under QUIC that carries each peer's
// datagrams over the best working path: a direct UDP path when one has
// been confirmed, the relay otherwise (PROTOCOL.md §24). QUIC always sees a
// peer at its relay address (*Addr): WriteTo takes it, ReadFrom returns
// it, also for datagrams that arrived directly, so the path can change
// under a QUIC connection without QUIC noticing; QUIC's packet protection
// and its end-to-end check of the peer's key are unchanged.
//
// The PathConn owns a UDP socket and the relay PacketConn. It learns the
// socket's public address from the relay (OBSERVE), announces its
// candidates to each peer it talks to through the relay (CALL-ME-MAYBE),
// and probes the peer's candidates with signed PINGs (small ones until an
// address has answered, then padded to MaxPingLen); a direct path is used
// only after the peer's signed PONG for one of this side's own padded
// PINGs arrived from that address. A direct path that stops answering
// falls back to the relay; probing goes on while the peer is active.
type PathConn struct {
	relay *PacketConn
	udp   *net.UDPConn
	key   trust.SecretKey
	id    trust.EndpointID
	cfg   DirectConfig
	log   *slog.Logger

	relayUDP netip.AddrPort // where OBSERVE goes; invalid if unresolved

	// verifies bounds the signature checks of disco messages, so that a
	// flood of forged ones costs a bounded share of a core.
	verifies *rate.Limiter
	// unproven bounds the bytes of PINGs to addresses that never answered.
	unproven *rate.Limiter

	recv  chan datagram
	dsend chan outPkt // direct datagrams for the writer
	// flushDirect, closed by Close, has the writer send what is queued
	// and close flushedDirect.
	flushDirect, flushedDirect chan struct{}
	flushOnce                  sync.Once
	batch                      *ipv6.PacketConn
	// The writer's segmentation state (writeLoop only).
	noGSO   bool
	gsoBuf  []byte
	segOOB  []byte
	segSize int
	closed  chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	poke    chan struct{} // wakes the maintenance loop

	// mu guards the path state; the datagram paths (WriteTo, the UDP
	// read loop, ReadFrom) only read it (RLock).
	mu        sync.RWMutex
	peers     map[trust.EndpointID]*pathPeer
	byAddr    map[netip.AddrPort]*pathPeer // verified addresses
	reflexive netip.AddrPort
	observeTx [discoTxLen]byte
	lastCMM   int64 // timestamp of the last CALL-ME-MAYBE sent
	fatal     error
	deadline  chan struct{}
	changed   chan struct{}
	timer     *time.Timer

	// filter, if set (tests only), drops the UDP datagrams to or from the
	// addresses it returns true for, as a firewall would.
	filter atomic.Pointer[func(netip.AddrPort) bool]

	directSent, directRecv, relaySent   atomic.Uint64
	pingsSent, pongsRecv, rejected      atomic.Uint64
	upgrades, fallbacks, unknownDropped atomic.Uint64
	dualSent                            atomic.Uint64
}

var _ net.PacketConn = (*PathConn)(nil)

// NewPathConn returns a PathConn over the relay connection rc, opening its
// UDP socket on cfg.ListenAddr. It takes ownership of rc and closes it in
// Close, also when NewPathConn fails. key must be rc's endpoint key.
func NewPathConn(rc *PacketConn, key trust.SecretKey, cfg *DirectConfig) (*PathConn, error) {
	var c DirectConfig
	if cfg != nil {
		c = *cfg
	}
	c = c.withDefaults()
	ua, err := net.ResolveUDPAddr("udp", c.ListenAddr)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("relay: direct path: listen address %q: %w", c.ListenAddr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("relay: direct path: %w", err)
	}
	p := &PathConn{
		verifies:      rate.NewLimiter(maxDiscoVerifies, maxDiscoVerifies/4),
		unproven:      rate.NewLimiter(unprovenRate, unprovenRate),
		relay:         rc,
		udp:           udp,
		key:           key,
		id:            trust.IDOf(key),
		cfg:           c,
		log:           rc.cfg.Logger,
		recv:          make(chan datagram, rc.cfg.QueueLen),
		dsend:         make(chan outPkt, rc.cfg.QueueLen),
		flushDirect:   make(chan struct{}),
		flushedDirect: make(chan struct{}),
		batch:         ipv6.NewPacketConn(udp),
		closed:        make(chan struct{}),
		poke:          make(chan struct{}, 1),
		peers:         map[trust.EndpointID]*pathPeer{},
		byAddr:        map[netip.AddrPort]*pathPeer{},
		deadline:      make(chan struct{}),
		changed:       make(chan struct{}),
	}
	p.wg.Add(4)
	go p.relayLoop()
	go p.udpLoop()
	go p.maintain()
	go p.writeLoop()
	return p, nil
}

// LocalAddr returns this endpoint's relay address (*Addr), as QUIC sees it.
func (p *PathConn) LocalAddr() net.Addr { return p.relay.LocalAddr() }

// UDPAddr returns the local address of the direct-path socket (its port is
// what a port mapping forwards to).
func (p *PathConn) UDPAddr() netip.AddrPort { return p.udp.LocalAddr().(*net.UDPAddr).AddrPort() }

// Relay returns the relay connection under p.
func (p *PathConn) Relay() *PacketConn { return p.relay }

// Path returns the direct address the peer id is reached at now, or ok
// false when its datagrams go through the relay.
func (p *PathConn) Path(id trust.EndpointID) (direct netip.AddrPort, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pe := p.peers[id]; pe != nil && pe.direct.IsValid() {
		return pe.direct, true
	}
	return netip.AddrPort{}, false
}

// Stats returns p's counters.
func (p *PathConn) Stats() PathStats {
	p.mu.Lock()
	n := 0
	for _, pe := range p.peers {
		if pe.direct.IsValid() {
			n++
		}
	}
	refl := p.reflexive
	p.mu.Unlock()
	return PathStats{
		DirectPeers: n, DirectSent: p.directSent.Load(), DirectReceived: p.directRecv.Load(),
		RelaySent: p.relaySent.Load(), DualSent: p.dualSent.Load(), PingsSent: p.pingsSent.Load(), PongsReceived: p.pongsRecv.Load(),
		Rejected: p.rejected.Load(), Unknown: p.unknownDropped.Load(), Upgrades: p.upgrades.Load(), Fallbacks: p.fallbacks.Load(),
		Reflexive: refl,
	}
}

// PathString describes how datagrams to addr travel: "direct <ip:port>"
// or "relay <url>". addr is a relay address that p returned or was given.
func (p *PathConn) PathString(addr *Addr) string {
	if d, ok := p.Path(addr.ID); ok {
		return "direct " + d.String()
	}
	return "relay " + addr.Relay
}

func (p *PathConn) isClosed() bool { return isDone(p.closed) }

// peerLocked returns the peer id, creating it unless the table is full;
// p.mu is held.
func (p *PathConn) peerLocked(id trust.EndpointID, now time.Time) *pathPeer {
	pe := p.peers[id]
	if pe != nil {
		pe.touch(now)
		return pe
	}
	if len(p.peers) >= p.cfg.MaxPeers || id == p.id {
		return nil
	}
	a := newAddr(id, p.relay.local.Relay)
	a.path = p
	pe = &pathPeer{
		id: id, addr: a,
		pings:    map[[discoTxLen]byte]sentPing{},
		seen:     map[[discoTxLen]byte]int64{},
		verified: map[netip.AddrPort]time.Time{},
		answered: map[netip.AddrPort]time.Time{},
	}
	pe.touch(now)
	p.peers[id] = pe
	select {
	case p.poke <- struct{}{}:
	default:
	}
	return pe
}

// peerAddr returns the relay address of peer id that reports its path
// (Addr.Path), or fallback when the peer table is full.
func (p *PathConn) peerAddr(id trust.EndpointID, fallback *Addr) *Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pe := p.peerLocked(id, time.Now()); pe != nil {
		return pe.addr
	}
	return fallback
}

// WriteTo sends p to the peer addr (an *Addr): directly when its direct
// path is confirmed, through the relay otherwise. Like UDP, it does not
// wait; a datagram that cannot be sent now is dropped.
func (p *PathConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	a, ok := addr.(*Addr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "aster-relay", Addr: addr, Err: fmt.Errorf("relay: not a relay address: %T", addr)}
	}
	if p.isClosed() {
		return 0, &net.OpError{Op: "write", Net: "aster-relay", Addr: addr, Err: p.closedErr()}
	}
	now := time.Now()
	var direct netip.AddrPort
	var ua *net.UDPAddr
	suspect := false
	// The peer is known after its first datagram: read its path under
	// the read lock, so that the datagram paths do not contend.
	p.mu.RLock()
	pe := p.peers[a.ID]
	if pe != nil {
		direct, ua = pe.direct, pe.directUA
		suspect = p.cfg.suspect(pe, now)
	}
	p.mu.RUnlock()
	if pe != nil {
		pe.touch(now)
	} else {
		p.mu.Lock()
		if pe := p.peerLocked(a.ID, now); pe != nil {
			direct, ua = pe.direct, pe.directUA
			suspect = p.cfg.suspect(pe, now)
		}
		p.mu.Unlock()
	}
	if direct.IsValid() && len(b) > 0 && len(b) <= MaxDatagramSize {
		if !p.blocked(direct) {
			// To the writer, which sends what queued up in one system
			// call (sendmmsg): quic-go writes a burst one datagram at a
			// time to a packet connection that is not a *net.UDPConn.
			out := outPkt{b: append(getBuf(), b...), to: ua}
			select {
			case p.dsend <- out:
			default:
				putBuf(out.b)
				p.relay.dropped.Add(1)
			}
		}
		p.directSent.Add(1)
		if !suspect {
			return len(b), nil
		}
		// The direct path missed heartbeats: the relay carries a copy
		// (QUIC discards the duplicate) until the path answers or is
		// given up.
		p.dualSent.Add(1)
	}
	p.relaySent.Add(1)
	return p.relay.WriteTo(b, a)
}

func (p *PathConn) blocked(ap netip.AddrPort) bool {
	f := p.filter.Load()
	return f != nil && (*f)(ap)
}

// deliver queues a datagram for ReadFrom, dropping it when the queue is
// full.
func (p *PathConn) deliver(from *Addr, b []byte) {
	d := datagram{from: from, data: append(getBuf(), b...)}
	select {
	case p.recv <- d:
	default:
		putBuf(d.data)
		p.relay.dropped.Add(1)
	}
}

// relayLoop reads the relay connection: QUIC datagrams go to ReadFrom,
// CALL-ME-MAYBE messages to the path logic.
func (p *PathConn) relayLoop() {
	defer p.wg.Done()
	buf := make([]byte, MaxDatagramSize)
	for {
		n, from, err := p.relay.ReadFrom(buf)
		if err != nil {
			if !p.isClosed() {
				p.mu.Lock()
				p.fatal = err
				p.mu.Unlock()
				p.shut()
			}
			return
		}
		a := from.(*Addr)
		if isDisco(buf[:n]) {
			p.relayDisco(a.ID, buf[:n])
			continue
		}
		p.mu.Lock()
		if pe := p.peerLocked(a.ID, time.Now()); pe != nil {
			a = pe.addr
		}
		p.mu.Unlock()
		p.deliver(a, buf[:n])
	}
}

// udpLoop reads the UDP socket: disco messages go to the path logic, QUIC
// datagrams from a verified address of a peer to ReadFrom as from that
// peer's relay address; others are dropped.
func (p *PathConn) udpLoop() {
	defer p.wg.Done()
	// Up to maxBatch datagrams per system call (recvmmsg), as quic-go
	// reads a *net.UDPConn.
	msgs := make([]ipv6.Message, maxBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	for {
		k, err := p.batch.ReadBatch(msgs, 0)
		if err != nil {
			if p.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// A timeout, or an ICMP error some systems report on read: go on.
			continue
		}
		for i := range k {
			ua, ok := msgs[i].Addr.(*net.UDPAddr)
			if !ok {
				continue
			}
			src := ua.AddrPort()
			p.udpDatagram(netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), msgs[i].Buffers[0][:msgs[i].N])
		}
	}
}

// udpDatagram handles one datagram that arrived on the UDP socket.
func (p *PathConn) udpDatagram(src netip.AddrPort, b []byte) {
	if p.blocked(src) || len(b) == 0 {
		return
	}
	if isDisco(b) {
		p.udpDisco(src, b)
		return
	}
	p.mu.RLock()
	pe := p.byAddr[src]
	var a *Addr
	if pe != nil {
		a = pe.addr
	}
	p.mu.RUnlock()
	if pe != nil {
		pe.touch(time.Now())
	}
	if a == nil {
		p.unknownDropped.Add(1)
		return
	}
	p.directRecv.Add(1)
	p.deliver(a, b)
}

// relayDisco handles a disco message that came through the relay from the
// proven id src: only CALL-ME-MAYBE travels that way.
func (p *PathConn) relayDisco(src trust.EndpointID, b []byte) {
	now := time.Now()
	m, err := parseDisco(b)
	if err == nil && (m.typ != discoCallMeMaybe || m.sender != src) {
		err = fmt.Errorf("%w: type %#x from %s through the relay", errDisco, m.typ, src.Short())
	}
	if err == nil {
		err = p.checkDisco(&m, now)
	}
	if err != nil {
		p.reject(err)
		return
	}
	p.mu.Lock()
	pe := p.peerLocked(src, now)
	if pe == nil || m.time <= pe.cmmTime {
		p.mu.Unlock()
		p.reject(fmt.Errorf("%w: stale CALL-ME-MAYBE", errDisco))
		return
	}
	pe.cmmTime = m.time
	// The announced candidates replace the announced ones; addresses
	// learnt from PINGs stay at the end.
	keep := pe.cands[:0:0]
	for _, c := range m.cands {
		if p.usableCandidateLocked(c) {
			keep = append(keep, c)
		}
	}
	for _, c := range pe.cands {
		if len(keep) >= maxPeerCands {
			break
		}
		if _, ok := pe.verified[c]; ok && !containsAddr(keep, c) {
			keep = append(keep, c)
		}
	}
	pe.cands = keep
	answer := now.Sub(pe.probed) > time.Second
	p.mu.Unlock()
	p.log.Debug("relay: candidates received", "peer", src.Short(), "candidates", len(m.cands))
	// PINGs first, so that this side's NAT is open toward the peer's
	// candidates before the answer asks the peer to probe back.
	p.pingAll(src, now)
	if answer {
		p.sendCallMeMaybe(src, now) // simultaneous open: both sides probe now
	}
}

// usableCandidate says whether a peer's announced address may be probed:
// not unspecified, multicast or broadcast, not port 0, and not loopback
// unless the relay itself is on loopback (a peer must not make this
// endpoint send to its own local services). p.mu is held.
func (p *PathConn) usableCandidateLocked(a netip.AddrPort) bool {
	ip := a.Addr()
	if !a.IsValid() || a.Port() == 0 || ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	if ip.IsLoopback() {
		return p.relayUDP.IsValid() && p.relayUDP.Addr().IsLoopback()
	}
	return true
}

func containsAddr(s []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range s {
		if sameAddr(x, a) {
			return true
		}
	}
	return false
}

// maxDiscoVerifies is how many disco signatures a PathConn checks per
// second at most (a burst of a quarter of it): a path heartbeat costs
// about four a second per peer on a direct path, and a flood of forged
// messages beyond the budget is dropped unchecked (real peers' paths then
// wait for the next probe, their packets on the relay).
const maxDiscoVerifies = 2000

// checkDisco verifies m's timestamp and signature, within the budget.
func (p *PathConn) checkDisco(m *discoMsg, now time.Time) error {
	if !p.verifies.AllowN(now, 1) {
		return fmt.Errorf("%w: over the signature check budget", errDisco)
	}
	return verifyDisco(m, p.id, now)
}

// udpDisco handles a disco message that arrived on the UDP socket from src.
func (p *PathConn) udpDisco(src netip.AddrPort, b []byte) {
	now := time.Now()
	m, err := parseDisco(b)
	if err != nil {
		p.reject(err)
		return
	}
	switch m.typ {
	case discoObserved:
		p.mu.Lock()
		ok := src == p.relayUDP && m.tx == p.observeTx && m.tx != [discoTxLen]byte{}
		if ok {
			if m.addr != p.reflexive {
				p.log.Debug("relay: public address observed", "addr", m.addr.String())
				// A new candidate: announce it to the peers still on
				// the relay at the next tick.
				for _, pe := range p.peers {
					if !pe.direct.IsValid() {
						pe.probed = time.Time{}
					}
				}
			}
			p.reflexive = m.addr
			p.observeTx = [discoTxLen]byte{}
		}
		p.mu.Unlock()
		if !ok {
			p.reject(fmt.Errorf("%w: unexpected OBSERVED", errDisco))
		}
		return
	case discoPing, discoPong:
	default:
		p.reject(fmt.Errorf("%w: type %#x on UDP", errDisco, m.typ))
		return
	}
	// A PING or PONG is worth a signature check only from a peer this
	// endpoint talks to through the relay, and within the budget.
	p.mu.Lock()
	known := p.peers[m.sender] != nil
	p.mu.Unlock()
	if !known {
		p.reject(fmt.Errorf("%w: %#x from unknown peer %s", errDisco, m.typ, m.sender.Short()))
		return
	}
	if err := p.checkDisco(&m, now); err != nil {
		p.reject(err)
		return
	}
	if m.typ == discoPing {
		p.handlePing(src, &m, now)
		return
	}
	p.handlePong(src, &m, now)
}

// verifyLocked records src as a proven address of pe; p.mu is held.
func (p *PathConn) verifyLocked(pe *pathPeer, src netip.AddrPort, now time.Time) {
	if _, ok := pe.verified[src]; !ok && len(pe.verified) >= maxVerified {
		if oldest := oldestAddr(pe.verified); oldest != pe.direct {
			delete(pe.verified, oldest)
			if p.byAddr[oldest] == pe {
				delete(p.byAddr, oldest)
			}
		}
	}
	pe.verified[src] = now
	p.byAddr[src] = pe
}

func (p *PathConn) handlePing(src netip.AddrPort, m *discoMsg, now time.Time) {
	p.mu.Lock()
	pe := p.peers[m.sender]
	if pe == nil {
		// Only peers this endpoint talks to through the relay are
		// answered: a PING cannot create state.
		p.mu.Unlock()
		p.reject(fmt.Errorf("%w: PING from unknown peer %s", errDisco, m.sender.Short()))
		return
	}
	// Replay protection: a PING must be at most pingReorder older than
	// the newest one accepted from the peer (by the peer's own clock), and
	// its transaction id unseen among those within that window.
	if _, dup := pe.seen[m.tx]; dup || m.time < pe.pingHigh-pingReorder.Milliseconds() {
		p.mu.Unlock()
		p.reject(fmt.Errorf("%w: replayed or reordered PING", errDisco))
		return
	}
	if m.time > pe.pingHigh {
		pe.pingHigh = m.time
	}
	if len(pe.seen) >= maxSeenPings {
		for tx, t := range pe.seen {
			if t < pe.pingHigh-pingReorder.Milliseconds() {
				delete(pe.seen, tx)
			}
		}
		if len(pe.seen) >= maxSeenPings {
			p.mu.Unlock()
			p.reject(fmt.Errorf("%w: too many PINGs", errDisco))
			return
		}
	}
	pe.seen[m.tx] = m.time
	p.verifyLocked(pe, src, now)
	if !containsAddr(pe.cands, src) && len(pe.cands) < maxPeerCands {
		pe.cands = append(pe.cands, src)
	}
	// The PING opened the peer's side toward src (a PING this side sent
	// there earlier may have been dropped by the peer's NAT before it
	// opened): unless this side is on a direct path already, probe back
	// at once, so that both sides confirm it within a round trip. Only
	// earlier answers to PINGs count against this, not probes: a probe
	// sent a moment before the peer's PING arrived is the one its NAT
	// most likely dropped (the two cross on the way). At most one answer
	// per pingBackEvery to an address, so that two endpoints with several
	// addresses each cannot keep each other pinging.
	back := !pe.direct.IsValid()
	for _, sp := range pe.pings {
		if sp.kind == pingBack && sp.to == src && now.Sub(sp.sent) < pingBackEvery {
			back = false
		}
	}
	p.mu.Unlock()
	// As long as the PING (same padding): a PONG amplifies nothing, and
	// shows that the way back carries that size too.
	pong := encodeDisco(p.key, m.sender, discoPong, now, pingBody(m.tx, src, m.pad))
	p.writeUDP(pong, src)
	if back {
		p.ping(m.sender, src, now, pingBack)
	}
}

func (p *PathConn) handlePong(src netip.AddrPort, m *discoMsg, now time.Time) {
	p.mu.Lock()
	pe := p.peers[m.sender]
	var sp sentPing
	var ok bool
	if pe != nil {
		sp, ok = pe.pings[m.tx]
	}
	if !ok || !sameAddr(sp.to, src) || m.pad != sp.pad {
		p.mu.Unlock()
		p.reject(fmt.Errorf("%w: PONG for no PING of ours to %s", errDisco, src))
		return
	}
	delete(pe.pings, m.tx)
	p.pongsRecv.Add(1)
	p.verifyLocked(pe, src, now)
	p.answeredLocked(pe, src, now)
	// Only a PONG to a padded probe shows that the path carries datagrams
	// as large as QUIC's (both ways: a PONG is as long as its PING); an
	// unpadded probe went to an address that had not answered yet, and
	// now that it has, the padded probe follows at once.
	padded := sp.pad == MaxPingLen-pingBaseLen
	upgraded, followUp := false, false
	switch {
	case pe.direct == src:
		pe.lastPong = now
	case !padded:
		followUp = sp.kind != pingBeat
	case !pe.direct.IsValid():
		pe.direct, pe.lastPong, pe.lastBeat = src, now, now
		pe.directUA = net.UDPAddrFromAddrPort(src)
		upgraded = true
	default:
		// Already direct on another address: keep it while it answers.
		if now.Sub(pe.lastPong) > p.cfg.HeartbeatInterval*2 {
			pe.direct, pe.lastPong = src, now
			pe.directUA = net.UDPAddrFromAddrPort(src)
			upgraded = true
		}
	}
	p.mu.Unlock()
	if upgraded {
		p.upgrades.Add(1)
		p.log.Info("relay: direct path", "peer", m.sender.Short(), "addr", src.String(), "rtt", now.Sub(sp.sent).Round(time.Microsecond).String())
	}
	if followUp {
		p.ping(m.sender, src, now, pingProbe)
	}
}

// answeredLocked records that src answered a PING of pe's with a PONG:
// probes to it are padded from now on. At most maxVerified addresses are
// kept (the oldest answer goes); p.mu is held.
func (p *PathConn) answeredLocked(pe *pathPeer, src netip.AddrPort, now time.Time) {
	if _, ok := pe.answered[src]; !ok && len(pe.answered) >= maxVerified {
		delete(pe.answered, oldestAddr(pe.answered))
	}
	pe.answered[src] = now
}

// oldestAddr returns the address of m with the earliest time.
func oldestAddr(m map[netip.AddrPort]time.Time) netip.AddrPort {
	var oldest netip.AddrPort
	var t time.Time
	for a, at := range m {
		if t.IsZero() || at.Before(t) {
			oldest, t = a, at
		}
	}
	return oldest
}

func (p *PathConn) reject(err error) {
	p.rejected.Add(1)
	p.log.Debug("relay: disco message dropped", "err", err)
}

func (p *PathConn) writeUDP(b []byte, to netip.AddrPort) {
	if p.blocked(to) {
		return
	}
	_, _ = p.udp.WriteToUDPAddrPort(b, to)
}

// Kinds of PING.
const (
	pingBeat  = iota // heartbeat on the direct path
	pingProbe        // probe of a candidate
	pingBack         // probe in answer to the peer's PING from that address
)

// ping sends a PING of kind to peer id at to, unless too many are
// outstanding. A probe (not a heartbeat) to an address that answered a
// PING with a PONG in the last answeredFor is padded to MaxPingLen, so
// that a path that drops datagrams as large as QUIC's is never taken (only
// the PONG to a padded probe makes a direct path). A probe to any other
// address is not padded and counts against the unproven budget: a peer
// can name any host as its candidate, and that host gets small PINGs
// only, few of them.
func (p *PathConn) ping(id trust.EndpointID, to netip.AddrPort, now time.Time, kind int) {
	var tx [discoTxLen]byte
	_, _ = rand.Read(tx[:])
	p.mu.Lock()
	pe := p.peers[id]
	if pe == nil {
		p.mu.Unlock()
		return
	}
	if len(pe.pings) >= maxPingsOut {
		for t, sp := range pe.pings {
			if now.Sub(sp.sent) > pingExpiry {
				delete(pe.pings, t)
			}
		}
		if len(pe.pings) >= maxPingsOut {
			p.mu.Unlock()
			return
		}
	}
	pad := 0
	if kind != pingBeat {
		if at, ok := pe.answered[to]; ok && now.Sub(at) < answeredFor {
			pad = MaxPingLen - pingBaseLen
		} else if !p.unproven.AllowN(now, pingBaseLen) {
			p.mu.Unlock()
			return
		}
	}
	pe.pings[tx] = sentPing{to: to, sent: now, pad: pad, kind: kind}
	p.mu.Unlock()
	p.pingsSent.Add(1)
	p.writeUDP(encodeDisco(p.key, id, discoPing, now, pingBody(tx, to, pad)), to)
}

// pingAll pings every candidate of peer id.
func (p *PathConn) pingAll(id trust.EndpointID, now time.Time) {
	p.mu.Lock()
	var cands []netip.AddrPort
	if pe := p.peers[id]; pe != nil {
		cands = append(cands, pe.cands...)
	}
	p.mu.Unlock()
	for _, c := range cands {
		p.ping(id, c, now, pingProbe)
	}
}

// candidates returns this endpoint's candidates: the relay-observed
// address, the local interface addresses with the socket's port, and
// ExtraCandidates, at most MaxCandidates.
func (p *PathConn) candidates() []netip.AddrPort {
	var out []netip.AddrPort
	add := func(a netip.AddrPort) {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if a.IsValid() && a.Port() != 0 && !a.Addr().IsUnspecified() && len(out) < MaxCandidates && !containsAddr(out, a) {
			out = append(out, a)
		}
	}
	p.mu.Lock()
	add(p.reflexive)
	p.mu.Unlock()
	if p.cfg.ExtraCandidates != nil {
		for _, a := range p.cfg.ExtraCandidates() {
			add(a)
		}
	}
	local := p.UDPAddr()
	if !local.Addr().IsUnspecified() {
		add(local)
	} else if addrs, err := net.InterfaceAddrs(); err == nil {
		p.mu.Lock()
		loopbackRelay := p.relayUDP.IsValid() && p.relayUDP.Addr().IsLoopback()
		p.mu.Unlock()
		for _, ia := range addrs {
			pfx, err := netip.ParsePrefix(ia.String())
			if err != nil {
				continue
			}
			ip := pfx.Addr()
			if ip.IsLinkLocalUnicast() || ip.IsMulticast() || (ip.IsLoopback() && !loopbackRelay) {
				continue
			}
			if ip.Is6() && p.udp.LocalAddr().(*net.UDPAddr).IP.To4() != nil {
				continue
			}
			add(netip.AddrPortFrom(ip, local.Port()))
		}
	}
	return out
}

// sendCallMeMaybe announces the candidates to peer id through the relay.
// Its timestamps increase strictly, as the receiver ignores a
// CALL-ME-MAYBE no newer than the last one it accepted.
func (p *PathConn) sendCallMeMaybe(id trust.EndpointID, now time.Time) {
	cands := p.candidates()
	p.mu.Lock()
	pe := p.peers[id]
	if pe == nil {
		p.mu.Unlock()
		return
	}
	pe.probed = now
	a := pe.addr
	ts := time.Now()
	if ms := ts.UnixMilli(); ms <= p.lastCMM {
		ts = time.UnixMilli(p.lastCMM + 1)
	}
	p.lastCMM = ts.UnixMilli()
	msg := encodeDisco(p.key, id, discoCallMeMaybe, ts, callMeMaybeBody(cands))
	// Under mu, so that two announcements reach the relay in the order
	// of their timestamps.
	_, _ = p.relay.WriteTo(msg, a)
	p.mu.Unlock()
}

// resolveRelay finds the relay's UDP address: the port of its TLS
// listener at the first address its host name resolves to.
func (p *PathConn) resolveRelay() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.relay.url.Host); err == nil && len(ips) > 0 {
		a := netip.AddrPortFrom(ips[0].Unmap(), p.relay.url.Port)
		p.mu.Lock()
		p.relayUDP = a
		p.mu.Unlock()
	} else {
		p.log.Debug("relay: cannot resolve the relay for address observation", "host", p.relay.url.Host, "err", err)
	}
}

// observe asks the relay for the socket's public address.
func (p *PathConn) observe(now time.Time) {
	p.mu.Lock()
	relayUDP := p.relayUDP
	p.mu.Unlock()
	if !relayUDP.IsValid() {
		p.resolveRelay()
		p.mu.Lock()
		relayUDP = p.relayUDP
		p.mu.Unlock()
		if !relayUDP.IsValid() {
			return
		}
	}
	var tx [discoTxLen]byte
	_, _ = rand.Read(tx[:])
	p.mu.Lock()
	p.observeTx = tx
	p.mu.Unlock()
	p.writeUDP(encodeDisco(p.key, trust.EndpointID{}, discoObserve, now, tx[:]), relayUDP)
}

// maintain runs the timers: observation, probing of peers on the relay,
// heartbeats and fallback of direct paths, and the expiry of idle peers.
func (p *PathConn) maintain() {
	defer p.wg.Done()
	tick := min(p.cfg.HeartbeatInterval, p.cfg.ProbeInterval) / 4
	t := time.NewTicker(max(tick, 10*time.Millisecond))
	defer t.Stop()
	var lastObserve time.Time
	observed := 0
	for first := true; ; first = false {
		if !first {
			select {
			case <-p.closed:
				return
			case <-t.C:
			case <-p.poke:
			}
		}
		now := time.Now()
		p.mu.Lock()
		haveRefl := p.reflexive.IsValid()
		p.mu.Unlock()
		// Until the first answer, ask quickly (0.25 s apart, 8 times).
		if (!haveRefl && observed < 8 && now.Sub(lastObserve) >= 250*time.Millisecond) || now.Sub(lastObserve) >= p.cfg.ObserveInterval {
			p.observe(now)
			lastObserve = now
			observed++
		}
		type job struct {
			id     trust.EndpointID
			cmm    bool
			beat   netip.AddrPort
			probes bool
		}
		var jobs []job
		p.mu.Lock()
		for id, pe := range p.peers {
			if now.Sub(pe.activeAt()) > peerIdle {
				p.dropPeerLocked(pe)
				continue
			}
			for tx, sp := range pe.pings {
				if now.Sub(sp.sent) > pingExpiry {
					delete(pe.pings, tx)
				}
			}
			fallback, beat, probe := p.cfg.due(pe, now)
			if fallback {
				p.log.Info("relay: direct path lost, back to the relay", "peer", id.Short(), "addr", pe.direct.String(), "silent", now.Sub(pe.lastPong).Round(time.Millisecond).String())
				p.fallbacks.Add(1)
				pe.direct, pe.directUA = netip.AddrPort{}, nil
				pe.probed = time.Time{} // probe again at once
				_, beat, probe = p.cfg.due(pe, now)
			}
			var j job
			j.id = id
			if beat {
				pe.lastBeat = now
				j.beat = pe.direct
			}
			j.cmm, j.probes = probe, probe
			if j.cmm || j.beat.IsValid() {
				jobs = append(jobs, j)
			}
		}
		p.mu.Unlock()
		for _, j := range jobs {
			if j.beat.IsValid() {
				p.ping(j.id, j.beat, now, pingBeat)
			}
			if j.probes {
				p.pingAll(j.id, now) // first: see relayDisco
			}
			if j.cmm {
				p.sendCallMeMaybe(j.id, now)
			}
		}
	}
}

// suspect says whether pe's direct path missed heartbeats at now, so that
// datagrams also go through the relay.
func (c *DirectConfig) suspect(pe *pathPeer, now time.Time) bool {
	return pe.direct.IsValid() && now.Sub(pe.lastPong) > c.HeartbeatInterval*5/2
}

// due says what the timers ask of pe at now: give up its direct path
// (no PONG for DirectTimeout), send a heartbeat on it (one per
// HeartbeatInterval), or probe (off a direct path, active within
// activeFor, last probed ProbeInterval ago).
func (c *DirectConfig) due(pe *pathPeer, now time.Time) (fallback, beat, probe bool) {
	if pe.direct.IsValid() {
		if now.Sub(pe.lastPong) > c.DirectTimeout {
			return true, false, false
		}
		return false, now.Sub(pe.lastBeat) >= c.HeartbeatInterval, false
	}
	return false, false, now.Sub(pe.activeAt()) < activeFor && now.Sub(pe.probed) >= c.ProbeInterval
}

func (p *PathConn) dropPeerLocked(pe *pathPeer) {
	for a := range pe.verified {
		if p.byAddr[a] == pe {
			delete(p.byAddr, a)
		}
	}
	delete(p.peers, pe.id)
}

// ReadFrom reads the next datagram; addr is the sender's relay address
// (*Addr) whichever path it took.
func (p *PathConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		p.mu.RLock()
		dl, changed := p.deadline, p.changed
		p.mu.RUnlock()
		select {
		case d := <-p.recv:
			n := copy(b, d.data)
			putBuf(d.data)
			return n, d.from, nil
		case <-p.closed:
			return 0, nil, &net.OpError{Op: "read", Net: "aster-relay", Addr: p.relay.local, Err: p.closedErr()}
		case <-dl:
			return 0, nil, &net.OpError{Op: "read", Net: "aster-relay", Addr: p.relay.local, Err: os.ErrDeadlineExceeded}
		case <-changed:
		}
	}
}

func (p *PathConn) closedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fatal != nil {
		return p.fatal
	}
	return net.ErrClosed
}

func (p *PathConn) shut() {
	p.once.Do(func() {
		close(p.closed)
		p.udp.Close()
	})
}

// Close closes the UDP socket and the relay connection and stops the path
// logic. It first sends the datagrams already queued on both paths (a QUIC
// CONNECTION_CLOSE sent just before Close among them), waiting at most
// CloseFlushTimeout for each (see PacketConn.Close).
func (p *PathConn) Close() error {
	p.flushOnce.Do(func() { close(p.flushDirect) })
	t := time.NewTimer(CloseFlushTimeout)
	select {
	case <-p.flushedDirect:
	case <-p.closed:
	case <-t.C:
	}
	t.Stop()
	err := p.relay.Close()
	p.shut()
	p.wg.Wait()
	p.mu.Lock()
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	return err
}

// SetDeadline sets the read deadline; writes never block.
func (p *PathConn) SetDeadline(t time.Time) error { return p.SetReadDeadline(t) }

// SetWriteDeadline does nothing: writes never block.
func (p *PathConn) SetWriteDeadline(time.Time) error { return nil }

// SetReadDeadline sets the deadline of pending and later ReadFrom calls;
// the zero time clears it.
func (p *PathConn) SetReadDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	ch := make(chan struct{})
	p.deadline = ch
	close(p.changed)
	p.changed = make(chan struct{})
	switch {
	case t.IsZero():
	case !t.After(time.Now()):
		close(ch)
	default:
		p.timer = time.AfterFunc(time.Until(t), func() { close(ch) })
	}
	return nil
}

// SetReadBuffer sets the UDP socket's receive buffer.
func (p *PathConn) SetReadBuffer(n int) error { return p.udp.SetReadBuffer(n) }

// SetWriteBuffer sets the UDP socket's send buffer.
func (p *PathConn) SetWriteBuffer(n int) error { return p.udp.SetWriteBuffer(n) }

// String describes the PathConn for logs.
func (p *PathConn) String() string {
	return "path " + p.id.Short() + " udp " + p.UDPAddr().String() + " relay " + p.relay.url.HostPort() + " (" + strconv.Itoa(int(p.Stats().DirectPeers)) + " direct)"
}
