package relay

import (
	"net/netip"

	"github.com/aster-go/aster/trust"
)

// SetTamper installs fn to see, and possibly replace, every datagram the
// relay forwards, as a malicious relay could; a nil result drops it.
func SetTamper(s *Server, fn func(src, dst trust.EndpointID, pkt []byte) []byte) {
	s.mu.Lock()
	s.tamper = fn
	s.mu.Unlock()
}

// SetBeforeWrite installs fn to run before each queued frame pc writes to
// its relay, so that tests can hold the writer.
func SetBeforeWrite(pc *PacketConn, fn func()) { pc.beforeWrite.Store(&fn) }

// SetPathFilter installs fn to drop the direct-path datagrams to and from
// the addresses it returns true for, as a firewall would; nil removes it.
func SetPathFilter(p *PathConn, fn func(netip.AddrPort) bool) {
	if fn == nil {
		p.filter.Store(nil)
		return
	}
	p.filter.Store(&fn)
}
