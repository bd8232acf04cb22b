package relay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/aster-go/aster/trust"
)

// Limits of the relay's address-observation service (ServeUDP).
const (
	// ObserveRate is how many OBSERVE probes per second the relay answers
	// from one source IP address (bursts of ObserveBurst).
	ObserveRate = 4
	// ObserveBurst is the burst of ObserveRate.
	ObserveBurst = 8
	// maxObserveSources bounds the per-source limiters; the table is
	// emptied when full.
	maxObserveSources = 4096
	// maxObserveVerifies bounds the OBSERVE signatures the relay checks
	// per second in all (a burst of a quarter of it).
	maxObserveVerifies = 5000
)

// ServeUDP answers address-observation probes (OBSERVE, PROTOCOL.md §24.3)
// on pc until Shutdown or Close, then returns ErrServerClosed; it takes
// ownership of pc. Run it on a UDP socket with the port number of the TLS
// listener: endpoints send their probes to the relay URL's host and port
// over UDP. A probe is answered only when it is signed by an endpoint
// registered at this relay, with a fresh timestamp, at most ObserveRate per
// second per source IP; the answer (OBSERVED: the source address the probe
// came from) is shorter than the probe, so the service amplifies nothing.
//
// On a host with several addresses, bind pc to the address of the relay
// URL rather than to all interfaces: answers leave from the address the
// system routes them from, and an endpoint accepts only answers from the
// address it sent its probe to.
func (s *Server) ServeUDP(pc net.PacketConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		pc.Close()
		return ErrServerClosed
	}
	s.udps[pc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.udps, pc)
		s.mu.Unlock()
		pc.Close()
	}()
	limiters := map[netip.Addr]*rate.Limiter{}
	verifies := rate.NewLimiter(maxObserveVerifies, maxObserveVerifies/4)
	buf := make([]byte, 2048)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("relay: UDP: %w", err)
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		src := ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if n != discoHeaderLen+discoTxLen+discoSigLen || !isDisco(buf[:n]) || buf[len(discoMagic)] != discoObserve {
			continue // not a probe: no answer, no signature check
		}
		lim := limiters[src.Addr()]
		if lim == nil {
			if len(limiters) >= maxObserveSources {
				clear(limiters)
			}
			lim = rate.NewLimiter(ObserveRate, ObserveBurst)
			limiters[src.Addr()] = lim
		}
		if !lim.Allow() {
			continue
		}
		m, err := parseDisco(buf[:n])
		if err != nil {
			continue
		}
		// Only registered endpoints are answered: look that up before
		// the signature, and check signatures within a budget for the
		// whole socket (source addresses of UDP can be forged, so the
		// per-source limit alone does not bound the work).
		s.mu.RLock()
		_, registered := s.endpoints[m.sender]
		s.mu.RUnlock()
		if !registered || !verifies.Allow() || verifyDisco(&m, trust.EndpointID{}, time.Now()) != nil {
			continue
		}
		if _, err := pc.WriteTo(encodeObserved(m.tx, src), from); err == nil {
			s.observed.Add(1)
		}
	}
}
