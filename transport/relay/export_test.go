package relay

import "github.com/aster-go/aster/trust"

// SetTamper installs fn to see, and possibly replace, every datagram the
// relay forwards, as a malicious relay could.
func SetTamper(s *Server, fn func(src, dst trust.EndpointID, pkt []byte) []byte) {
	s.mu.Lock()
	s.tamper = fn
	s.mu.Unlock()
}

// SetBeforeWrite installs fn to run before each queued frame pc writes to
// its relay, so that tests can hold the writer.
func SetBeforeWrite(pc *PacketConn, fn func()) { pc.beforeWrite.Store(&fn) }
