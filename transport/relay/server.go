package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/aster-go/aster/trust"
)

// Defaults of ServerConfig.
const (
	// DefaultMaxConns is the default of ServerConfig.MaxConns.
	DefaultMaxConns = 10000
	// DefaultMaxConnsPerIP is the default of ServerConfig.MaxConnsPerIP.
	DefaultMaxConnsPerIP = 256
	// DefaultBytesPerSecond is the default of ServerConfig.BytesPerSecond.
	DefaultBytesPerSecond = 16 << 20
	// DefaultMaxPeersPerEndpoint is the default of
	// ServerConfig.MaxPeersPerEndpoint.
	DefaultMaxPeersPerEndpoint = 1024
	// DefaultPeerIdle is the default of ServerConfig.PeerIdle.
	DefaultPeerIdle = 2 * time.Minute
	// DefaultHandshakeTimeout is the default of ServerConfig.HandshakeTimeout.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout is the default of ServerConfig.IdleTimeout.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultQueueLen is the default of ServerConfig.QueueLen and
	// Config.QueueLen.
	DefaultQueueLen = 1024
)

// ServerConfig configures a relay Server. Zero fields select the defaults.
type ServerConfig struct {
	// Certificate is the relay's TLS certificate (required); see
	// SelfSignedCertificate and LoadOrCreateCertificate.
	Certificate tls.Certificate
	// MaxConns caps the relay's TCP connections, registered or not
	// (default 10000); connections beyond it are refused with CloseLimit.
	MaxConns int
	// MaxConnsPerIP caps the TCP connections from one IP address (default
	// 256).
	MaxConnsPerIP int
	// BytesPerSecond is each endpoint's bandwidth: the datagram bytes per
	// second it may send through the relay (default 16 MiB/s, bursts of
	// Burst). Datagrams beyond it are dropped, as a congested UDP path
	// would drop them; QUIC's congestion control then slows down. Negative
	// means unlimited.
	BytesPerSecond int
	// Burst is the bandwidth limiter's burst in bytes (default a quarter
	// of BytesPerSecond, at least 64 KiB).
	Burst int
	// MaxPeersPerEndpoint caps the distinct endpoints one endpoint may send
	// to within PeerIdle (default 1024), which bounds the QUIC connections
	// it can run through the relay. Datagrams to further peers are dropped.
	MaxPeersPerEndpoint int
	// PeerIdle is how long a peer counts against MaxPeersPerEndpoint after
	// the last datagram sent to it (default 2 minutes).
	PeerIdle time.Duration
	// HandshakeTimeout bounds the TLS handshake and registration (default
	// 10s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that sent nothing, not even a PING,
	// for this long (default 60s; endpoints ping every 15s).
	IdleTimeout time.Duration
	// QueueLen is how many frames wait for a slow endpoint before further
	// datagrams to it are dropped (default 1024).
	QueueLen int
	// Logger receives connection and traffic logs (default slog.Default()).
	Logger *slog.Logger
}

func (c ServerConfig) withDefaults() ServerConfig {
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConnsPerIP <= 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.BytesPerSecond == 0 {
		c.BytesPerSecond = DefaultBytesPerSecond
	}
	if c.Burst <= 0 {
		c.Burst = max(c.BytesPerSecond/4, 64<<10)
	}
	if c.MaxPeersPerEndpoint <= 0 {
		c.MaxPeersPerEndpoint = DefaultMaxPeersPerEndpoint
	}
	if c.PeerIdle <= 0 {
		c.PeerIdle = DefaultPeerIdle
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.QueueLen <= 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Drop reasons counted by Stats.Dropped.
const (
	DropUnknownPeer = "unknown_peer" // no endpoint registered with the destination id
	DropRateLimit   = "rate_limit"   // the sender exceeded BytesPerSecond
	DropPeerLimit   = "peer_limit"   // the sender exceeded MaxPeersPerEndpoint
	DropQueueFull   = "queue_full"   // the destination's queue was full
)

var dropReasons = []string{DropUnknownPeer, DropRateLimit, DropPeerLimit, DropQueueFull}

// Stats are a relay's counters.
type Stats struct {
	Endpoints        int              // registered endpoints now
	Conns            int              // TCP connections now
	Accepted         uint64           // TCP connections accepted in total
	Registrations    uint64           // successful registrations in total
	Refused          uint64           // connections refused (bad proof, limits, protocol errors)
	Observed         uint64           // address-observation probes answered (ServeUDP)
	PacketsForwarded uint64           // datagrams delivered to a destination's queue
	BytesForwarded   uint64           // their bytes
	Dropped          map[string]int64 // datagrams dropped, by reason (Drop*)
}

// Server is a relay: endpoints connect to it over TCP+TLS, prove their
// endpoint key, and exchange QUIC datagrams with other endpoints by id. The
// relay sees only the encrypted QUIC packets: it cannot read or alter calls,
// which stay end-to-end encrypted and authenticated between the endpoints.
type Server struct {
	cfg     ServerConfig
	tlsConf *tls.Config
	log     *slog.Logger

	mu        sync.RWMutex // read-locked per forwarded datagram
	closed    bool
	listeners map[net.Listener]struct{}
	udps      map[net.PacketConn]struct{}
	conns     map[net.Conn]struct{}
	perIP     map[string]int
	endpoints map[trust.EndpointID]*session
	wg        sync.WaitGroup // connection goroutines

	accepted, registrations, refused atomic.Uint64
	observed                         atomic.Uint64 // OBSERVE probes answered
	forwarded, forwardedBytes        atomic.Uint64
	dropped                          [4]atomic.Int64 // by dropReasons index

	// tamper, when set (tests only, under mu), may replace each forwarded
	// datagram, or drop it by returning nil.
	tamper func(src, dst trust.EndpointID, pkt []byte) []byte
	// routes, when set (tests only, under mu), redirect datagrams for one
	// id to another endpoint, as a malicious relay could.
	routes map[trust.EndpointID]trust.EndpointID
	// statsHook, when set (tests only), is called after each change of
	// the connections, registrations, forwarded and dropped datagrams that
	// Stats reports, so tests wait for the change instead of polling.
	statsHook atomic.Pointer[func()]
}

// statsChanged calls the stats hook, if any.
func (s *Server) statsChanged() {
	if f := s.statsHook.Load(); f != nil {
		(*f)()
	}
}

// NewServer returns a relay server. It fails if cfg has no certificate.
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("relay: server needs a TLS certificate")
	}
	cfg = cfg.withDefaults()
	return &Server{
		cfg: cfg,
		tlsConf: &tls.Config{
			Certificates: []tls.Certificate{cfg.Certificate},
			MinVersion:   tls.VersionTLS13,
			NextProtos:   []string{ALPN},
		},
		log:       cfg.Logger,
		listeners: map[net.Listener]struct{}{},
		udps:      map[net.PacketConn]struct{}{},
		conns:     map[net.Conn]struct{}{},
		perIP:     map[string]int{},
		endpoints: map[trust.EndpointID]*session{},
	}, nil
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("relay: server closed")

// Serve accepts TCP connections on ln until Shutdown or Close and returns
// ErrServerClosed then. It takes ownership of ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("relay: accept: %w", err)
		}
		backoff = 0
		s.accepted.Add(1)
		tracked := s.track(c)
		s.statsChanged()
		if !tracked {
			continue
		}
		go s.handle(c)
	}
}

// track registers c; it refuses (and closes) it beyond the limits.
func (s *Server) track(c net.Conn) bool {
	ip := remoteIP(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if len(s.conns) >= s.cfg.MaxConns || s.perIP[ip] >= s.cfg.MaxConnsPerIP {
		s.refused.Add(1)
		s.log.Warn("relay: connection refused: too many connections", "remote", c.RemoteAddr().String())
		// Best effort, without TLS: the client reports a TLS failure.
		c.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.perIP[ip]++
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	ip := remoteIP(c)
	s.mu.Lock()
	delete(s.conns, c)
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
	s.mu.Unlock()
	s.statsChanged()
	s.wg.Done()
}

func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// session is one registered endpoint connection.
type session struct {
	srv     *Server
	id      trust.EndpointID
	conn    *tls.Conn
	out     chan []byte   // frames to write, bounded
	done    chan struct{} // closed by close
	once    sync.Once
	closeF  []byte // the CLOSE frame to send, set by close
	limiter *rate.Limiter
	peers   map[trust.EndpointID]time.Time // reader goroutine only
	start   time.Time

	sentPkts, sentBytes, recvPkts, recvBytes, drops atomic.Uint64
}

// close ends the session: the writer sends the CLOSE frame and closes the
// connection.
func (se *session) close(code CloseCode, reason string) {
	se.once.Do(func() {
		se.closeF = closeFrame(code, reason)
		close(se.done)
	})
}

// handle runs one connection: TLS, registration, then the session.
func (s *Server) handle(raw net.Conn) {
	defer s.untrack(raw)
	defer raw.Close()
	conn := tls.Server(raw, s.tlsConf)
	deadline := time.Now().Add(s.cfg.HandshakeTimeout)
	_ = conn.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	err := conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.refused.Add(1)
		s.log.Debug("relay: TLS handshake failed", "remote", raw.RemoteAddr().String(), "err", err)
		return
	}
	if cs := conn.ConnectionState(); cs.NegotiatedProtocol != ALPN {
		s.refuse(conn, CloseProtocol, "ALPN "+ALPN+" required")
		return
	}
	id, br, ok := s.register(conn)
	if !ok {
		return
	}
	se := &session{
		srv:   s,
		id:    id,
		conn:  conn,
		out:   make(chan []byte, s.cfg.QueueLen),
		done:  make(chan struct{}),
		peers: map[trust.EndpointID]time.Time{},
		start: time.Now(),
	}
	// ACCEPTED goes first, before any RECV frame forwarded to the id once it
	// is published below.
	se.out <- appendFrame(nil, frameAccepted)
	if s.cfg.BytesPerSecond > 0 {
		se.limiter = rate.NewLimiter(rate.Limit(s.cfg.BytesPerSecond), max(s.cfg.Burst, MaxDatagramSize))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.refuse(conn, CloseShutdown, "relay shutting down")
		return
	}
	old := s.endpoints[id]
	s.endpoints[id] = se
	s.mu.Unlock()
	if old != nil {
		old.close(CloseReplaced, "replaced by a newer registration of the same endpoint id")
	}
	s.registrations.Add(1)
	s.statsChanged()
	_ = conn.SetDeadline(time.Time{})
	s.log.Info("relay: endpoint connected", "endpoint", id.String(), "remote", raw.RemoteAddr().String())

	var wg sync.WaitGroup
	wg.Go(se.writeLoop)
	err = se.readLoop(br)
	var ce *CloseError
	switch {
	case errors.As(err, &ce):
		se.close(CloseNormal, "")
	case errors.Is(err, ErrProtocol):
		se.close(CloseProtocol, err.Error())
	default:
		se.close(CloseNormal, "")
	}
	wg.Wait()
	s.mu.Lock()
	if s.endpoints[id] == se {
		delete(s.endpoints, id)
	}
	s.mu.Unlock()
	s.statsChanged()
	s.log.Info("relay: endpoint disconnected", "endpoint", id.String(), "remote", raw.RemoteAddr().String(),
		"duration", time.Since(se.start).Round(time.Millisecond).String(),
		"sent_packets", se.sentPkts.Load(), "sent_bytes", se.sentBytes.Load(),
		"received_packets", se.recvPkts.Load(), "received_bytes", se.recvBytes.Load(),
		"dropped", se.drops.Load(), "reason", disconnectReason(err))
}

func disconnectReason(err error) string {
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return err.Error()
}

// refuse sends CLOSE and counts the refusal; the caller closes the
// connection.
func (s *Server) refuse(conn *tls.Conn, code CloseCode, reason string) {
	s.refused.Add(1)
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write(closeFrame(code, reason))
	s.log.Info("relay: registration refused", "remote", conn.RemoteAddr().String(), "reason", reason)
}

// register runs the CHALLENGE/REGISTER exchange and returns the proven
// endpoint id.
func (s *Server) register(conn *tls.Conn) (trust.EndpointID, *bufio.Reader, bool) {
	var nonce [nonceLen]byte
	_, _ = rand.Read(nonce[:])
	if _, err := conn.Write(challengeFrame(nonce[:])); err != nil {
		s.refused.Add(1)
		return trust.EndpointID{}, nil, false
	}
	br := bufio.NewReaderSize(conn, 16<<10)
	buf := make([]byte, MaxFrameBody)
	typ, body, err := readFrame(br, buf)
	if err != nil {
		if errors.Is(err, ErrProtocol) {
			s.refuse(conn, CloseProtocol, err.Error())
		} else {
			s.refused.Add(1)
		}
		return trust.EndpointID{}, nil, false
	}
	f, err := parseFrame(typ, body)
	if err != nil || typ != frameRegister {
		s.refuse(conn, CloseProtocol, "expected a version 1 REGISTER frame of 97 bytes")
		return trust.EndpointID{}, nil, false
	}
	cs := conn.ConnectionState()
	exporter, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		s.refuse(conn, CloseProtocol, "TLS exporter unavailable")
		return trust.EndpointID{}, nil, false
	}
	id, ok := verifyRegister(body, nonce[:], exporter)
	if !ok {
		s.refuse(conn, CloseBadProof, "the signature does not prove the endpoint key "+f.id.Short())
		return trust.EndpointID{}, nil, false
	}
	return id, br, true
}

// readLoop reads the session's frames until the connection ends.
func (se *session) readLoop(br *bufio.Reader) error {
	s := se.srv
	buf := make([]byte, MaxFrameBody)
	var pushed time.Time
	for {
		if now := time.Now(); now.Sub(pushed) > deadlineEvery {
			_ = se.conn.SetReadDeadline(now.Add(s.cfg.IdleTimeout))
			pushed = now
		}
		typ, body, err := readFrame(br, buf)
		if err != nil {
			return err
		}
		f, err := parseFrame(typ, body)
		if err != nil {
			return err
		}
		switch {
		case typ == frameSend:
			s.forward(se, f.id, f.data)
		case typ == framePing:
			se.enqueue(appendFrame(nil, framePong, f.data))
		case typ == framePong:
		case typ == frameClose:
			return f.close
		case typ >= frameOptional:
		default:
			return fmt.Errorf("%w: unexpected %s frame", ErrProtocol, frameName(typ))
		}
	}
}

// enqueue queues a frame for the session's writer; it reports false (and
// drops the frame) when the queue is full or the session is closing.
func (se *session) enqueue(f []byte) bool {
	select {
	case <-se.done:
		return false
	default:
	}
	select {
	case se.out <- f:
		return true
	default:
		return false
	}
}

// forward delivers one datagram from src to dst, or drops it.
func (s *Server) forward(src *session, dst trust.EndpointID, pkt []byte) {
	src.sentPkts.Add(1)
	src.sentBytes.Add(uint64(len(pkt)))
	now := time.Now()
	if src.limiter != nil && !src.limiter.AllowN(now, len(pkt)) {
		s.drop(src, 1)
		return
	}
	if _, known := src.peers[dst]; !known && len(src.peers) >= s.cfg.MaxPeersPerEndpoint {
		for p, last := range src.peers {
			if now.Sub(last) > s.cfg.PeerIdle {
				delete(src.peers, p)
			}
		}
		if len(src.peers) >= s.cfg.MaxPeersPerEndpoint {
			s.drop(src, 2)
			return
		}
	}
	s.mu.RLock()
	d := s.endpoints[dst]
	if to, ok := s.routes[dst]; ok {
		d = s.endpoints[to]
	}
	tamper := s.tamper
	s.mu.RUnlock()
	if d == nil {
		s.drop(src, 0)
		return
	}
	src.peers[dst] = now
	if tamper != nil {
		if pkt = tamper(src.id, dst, append([]byte(nil), pkt...)); pkt == nil {
			return // the tamperer dropped it
		}
	}
	if f := datagramFrame(frameRecv, src.id, pkt); !d.enqueue(f) {
		putBuf(f)
		s.drop(src, 3)
		return
	}
	d.recvPkts.Add(1)
	d.recvBytes.Add(uint64(len(pkt)))
	s.forwarded.Add(1)
	s.forwardedBytes.Add(uint64(len(pkt)))
	s.statsChanged()
}

func (s *Server) drop(src *session, reason int) {
	src.drops.Add(1)
	s.dropped[reason].Add(1)
	s.statsChanged()
}

// writeLoop writes queued frames, flushing when the queue is empty, until
// the session closes; then it sends the CLOSE frame and closes the
// connection (which ends the reader).
func (se *session) writeLoop() {
	bw := bufio.NewWriterSize(se.conn, 32<<10)
	defer func() {
		_ = se.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = bw.Write(se.closeF)
		_ = bw.Flush()
		_ = se.conn.Close()
	}()
	var pushed time.Time
	for {
		select {
		case f := <-se.out:
			if now := time.Now(); now.Sub(pushed) > deadlineEvery {
				_ = se.conn.SetWriteDeadline(now.Add(se.srv.cfg.IdleTimeout))
				pushed = now
			}
			_, err := bw.Write(f)
			putBuf(f)
			if err != nil {
				se.close(CloseNormal, "")
				return
			}
			for more := true; more; {
				select {
				case f := <-se.out:
					_, err := bw.Write(f)
					putBuf(f)
					if err != nil {
						se.close(CloseNormal, "")
						return
					}
				default:
					more = false
				}
			}
			if err := bw.Flush(); err != nil {
				se.close(CloseNormal, "")
				return
			}
		case <-se.done:
			return
		}
	}
}

// Stats returns the relay's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	st := Stats{Endpoints: len(s.endpoints), Conns: len(s.conns)}
	s.mu.Unlock()
	st.Accepted = s.accepted.Load()
	st.Registrations = s.registrations.Load()
	st.Refused = s.refused.Load()
	st.Observed = s.observed.Load()
	st.PacketsForwarded = s.forwarded.Load()
	st.BytesForwarded = s.forwardedBytes.Load()
	st.Dropped = make(map[string]int64, len(dropReasons))
	for i, r := range dropReasons {
		st.Dropped[r] = s.dropped[i].Load()
	}
	return st
}

// Endpoints returns the ids of the endpoints registered now.
func (s *Server) Endpoints() []trust.EndpointID {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]trust.EndpointID, 0, len(s.endpoints))
	for id := range s.endpoints {
		ids = append(ids, id)
	}
	return ids
}

// Shutdown stops the relay gracefully: it stops accepting, sends every
// registered endpoint a CLOSE with CloseShutdown, and waits for the
// connections to end or ctx to be done (then it closes them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for pc := range s.udps {
		pc.Close()
	}
	sessions := make([]*session, 0, len(s.endpoints))
	for _, se := range s.endpoints {
		sessions = append(sessions, se)
	}
	s.mu.Unlock()
	for _, se := range sessions {
		se.close(CloseShutdown, "relay shutting down")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.closeConns()
		<-done
		return ctx.Err()
	}
}

// Close stops the relay at once: listeners and connections are closed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for pc := range s.udps {
		pc.Close()
	}
	s.mu.Unlock()
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}
