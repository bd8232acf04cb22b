// Package quic is aster's direct QUIC transport, built on quic-go.
//
// Each endpoint presents a self-signed X.509 certificate for its ed25519
// endpoint key over TLS 1.3 with ALPN "aster/1" (transport.ALPN). There is no
// certificate authority: the dialer checks that the server's key is the
// endpoint id it dialled (otherwise the error wraps
// transport.ErrPeerMismatch), and the server requires a client certificate
// and takes the client's endpoint id from it. Conn.RemoteID is therefore
// proven on both sides.
//
// Errors from quic-go are mapped to *transport.StreamError (stream resets),
// *transport.ConnError (connection closes, idle timeouts, refused
// connections) and os.ErrDeadlineExceeded (deadlines), so callers never need
// quic-go's types.
//
// Things to know about the QUIC semantics underneath:
//   - A stream reaches the peer's AcceptStream only when data (or FIN) is
//     sent on it, not when OpenStream returns.
//   - A stream counts against the peer's MaxIncomingStreams until both
//     directions are finished and its incoming data was read to EOF or
//     discarded: always Close or Reset streams.
//   - quic-go queues at most 32 connections that finished their handshake
//     but were not yet returned by Accept; beyond that it refuses new ones
//     (the dialer sees a *transport.ConnError with ConnRefused), so accept
//     in a loop.
package quic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	quicgo "github.com/quic-go/quic-go"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/internal/quicwrap"
	"github.com/aster-go/aster/trust"
)

// Listener accepts QUIC connections on one UDP socket. It implements
// transport.Listener.
//
// Closing the Listener stops accepting; connections already accepted keep
// working, and the socket is released when the last of them closes.
type Listener struct {
	id      trust.EndpointID
	network string         // "udp", "udp4" or "udp6", as the socket was opened
	udp     *net.UDPConn   // nil for ListenPacketConn
	pc      net.PacketConn // the socket (udp) or the given packet connection
	tr      *quicgo.Transport
	ln      *quicgo.Listener

	mu       sync.Mutex
	closed   bool // Close was called
	live     int  // accepted connections not yet closed
	trClosed bool // the transport and socket were closed
}

var _ transport.Listener = (*Listener)(nil)

// Listen opens a UDP socket on addr ("host:port"; an empty host or "::"
// listens on all interfaces in both IP families, "0.0.0.0" on all IPv4
// interfaces; "" means ":0") and accepts QUIC connections as the endpoint
// key. cfg may be nil for the defaults.
func Listen(addr string, key trust.SecretKey, cfg *Config) (*Listener, error) {
	id, err := checkKey(key)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	c := cfg.withDefaults()
	network, udpAddr, err := resolveListenAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	cert, err := newCertificate(key, id)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	udp, err := net.ListenUDP(network, udpAddr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	tr := &quicgo.Transport{Conn: udp, StatelessResetKey: statelessResetKey(key), VerifySourceAddress: quicwrap.VerifySourceAddress(c.UnvalidatedHandshakes)}
	ln, err := tr.Listen(serverTLSConfig(cert), c.quicConfig())
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	return &Listener{id: id, network: network, udp: udp, pc: udp, tr: tr, ln: ln}, nil
}

// ListenPacketConn is Listen over an existing packet connection instead of
// a UDP socket, such as the relay transport's (transport/relay). The
// Listener takes ownership of pc and closes it like its own socket. Addr
// reports the endpoint id and, if pc.LocalAddr() has a method
// EndpointAddr() discovery.EndpointAddr, what that returns (for a relay:
// the relay URL); no direct addresses otherwise.
func ListenPacketConn(pc net.PacketConn, key trust.SecretKey, cfg *Config) (*Listener, error) {
	id, err := checkKey(key)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	c := cfg.withDefaults()
	cert, err := newCertificate(key, id)
	if err != nil {
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	tr := &quicgo.Transport{Conn: pc, StatelessResetKey: statelessResetKey(key)}
	ln, err := tr.Listen(serverTLSConfig(cert), c.quicConfig())
	if err != nil {
		_ = tr.Close()
		_ = pc.Close()
		return nil, fmt.Errorf("quic: listen: %w", err)
	}
	return &Listener{id: id, pc: pc, tr: tr, ln: ln}, nil
}

// endpointAddresser is implemented by the local address of packet
// connections that know how peers reach them (the relay transport's).
type endpointAddresser interface {
	EndpointAddr() discovery.EndpointAddr
}

// resolveListenAddr picks the socket network for addr and resolves it.
func resolveListenAddr(addr string) (string, *net.UDPAddr, error) {
	if addr == "" {
		addr = ":0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", nil, err
	}
	ip, ok := netip.AddrFromSlice(ua.IP)
	ip = ip.Unmap()
	switch {
	case host == "" || !ok || (ip.Is6() && ip.IsUnspecified()):
		return "udp", ua, nil
	case ip.Is4():
		return "udp4", ua, nil
	default:
		return "udp6", ua, nil
	}
}

// Accept waits for the next connection that completed its handshake. After
// Close it returns an error wrapping transport.ErrListenerClosed.
func (l *Listener) Accept(ctx context.Context) (transport.Conn, error) {
	for {
		if l.isClosed() {
			return nil, fmt.Errorf("quic: accept: %w", transport.ErrListenerClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("quic: accept: %w", err)
		}
		qc, err := l.ln.Accept(ctx)
		if err != nil {
			if errors.Is(err, quicgo.ErrServerClosed) || l.isClosed() {
				return nil, fmt.Errorf("quic: accept: %w", transport.ErrListenerClosed)
			}
			return nil, opError("accept", err)
		}
		c, err := newConn(qc, l.id)
		if err != nil { // cannot happen: the TLS config verified the certificate
			_ = qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ConnProtocolError), "bad certificate")
			continue
		}
		if !l.track(qc) {
			_ = qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ConnShutdown), "listener closed")
			return nil, fmt.Errorf("quic: accept: %w", transport.ErrListenerClosed)
		}
		return c, nil
	}
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// track counts an accepted connection until it closes; it reports false
// after Close.
func (l *Listener) track(qc *quicgo.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.live++
	context.AfterFunc(qc.Context(), l.untrack)
	return true
}

func (l *Listener) untrack() {
	l.mu.Lock()
	l.live--
	release := l.closed && l.live == 0 && !l.trClosed
	if release {
		l.trClosed = true
	}
	l.mu.Unlock()
	if release {
		_ = l.closeTransport()
	}
}

func (l *Listener) closeTransport() error {
	return errors.Join(l.tr.Close(), l.pc.Close())
}

// Close stops accepting. Handshakes in progress are refused, connections
// that finished their handshake but were not accepted are closed with
// transport.ConnShutdown, and accepted connections stay open; the UDP socket
// is closed once they are all closed. Close is safe to call more than once.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	err := l.ln.Close()
	// After Close, Accept returns the queued connections without blocking,
	// then ErrServerClosed.
	for {
		qc, aerr := l.ln.Accept(context.Background())
		if aerr != nil {
			break
		}
		_ = qc.CloseWithError(quicgo.ApplicationErrorCode(transport.ConnShutdown), "listener closed")
	}

	l.mu.Lock()
	release := l.live == 0 && !l.trClosed
	if release {
		l.trClosed = true
	}
	l.mu.Unlock()
	if release {
		err = errors.Join(err, l.closeTransport())
	}
	if err != nil {
		return fmt.Errorf("quic: close listener: %w", err)
	}
	return nil
}

// LocalAddr returns the address the UDP socket is bound to (the packet
// connection's local address for ListenPacketConn).
func (l *Listener) LocalAddr() net.Addr { return l.pc.LocalAddr() }

// Addr returns the listener's endpoint id and the UDP addresses it can be
// dialled at. For a socket bound to a specific IP that is the bound address.
// For one bound to all interfaces it is the interfaces' addresses (computed
// on every call), 127.0.0.1 first so the address is always dialable on this
// host, at most discovery.MaxDirectAddrs of them; link-local and multicast
// addresses are left out.
func (l *Listener) Addr() discovery.EndpointAddr {
	if l.udp == nil {
		a := discovery.EndpointAddr{ID: l.id}
		if ea, ok := l.pc.LocalAddr().(endpointAddresser); ok {
			a = ea.EndpointAddr()
			a.ID = l.id
		}
		return a
	}
	return discovery.EndpointAddr{ID: l.id, Direct: l.directAddrs()}
}

func (l *Listener) directAddrs() []netip.AddrPort {
	bound := l.udp.LocalAddr().(*net.UDPAddr).AddrPort()
	ip, port := bound.Addr().Unmap(), bound.Port()
	if !ip.IsUnspecified() {
		return []netip.AddrPort{netip.AddrPortFrom(ip, port)}
	}
	// A "udp" socket bound to the unspecified address is dual-stack unless
	// the system lacks IPv6, in which case Go binds 0.0.0.0.
	v4 := l.network != "udp6"
	v6 := l.network != "udp4" && ip.Is6()
	return interfaceAddrs(v4, v6, port)
}

// interfaceAddrs lists this host's unicast addresses of the wanted families
// with port: 127.0.0.1 first (or ::1 for IPv6 only), then other IPv4, then
// other IPv6 addresses, at most discovery.MaxDirectAddrs.
func interfaceAddrs(v4, v6 bool, port uint16) []netip.AddrPort {
	var ordered []netip.Addr
	switch {
	case v4:
		ordered = append(ordered, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	case v6:
		ordered = append(ordered, netip.IPv6Loopback())
	}
	var others4, others6 []netip.Addr
	ifaddrs, _ := net.InterfaceAddrs() // on error, the loopback address remains
	for _, a := range ifaddrs {
		var ipSlice net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ipSlice = a.IP
		case *net.IPAddr:
			ipSlice = a.IP
		default:
			continue
		}
		ip, ok := netip.AddrFromSlice(ipSlice)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || ip.IsLinkLocalUnicast() || ip.Zone() != "" {
			continue
		}
		if ip.Is4() && v4 {
			others4 = append(others4, ip)
		} else if ip.Is6() && v6 {
			others6 = append(others6, ip)
		}
	}
	ordered = append(ordered, others4...)
	ordered = append(ordered, others6...)

	out := make([]netip.AddrPort, 0, min(len(ordered), discovery.MaxDirectAddrs))
	seen := make(map[netip.Addr]bool, len(ordered))
	for _, ip := range ordered {
		if seen[ip] || len(out) == discovery.MaxDirectAddrs {
			continue
		}
		seen[ip] = true
		out = append(out, netip.AddrPortFrom(ip, port))
	}
	return out
}
