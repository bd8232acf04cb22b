// Package discovery finds where an endpoint can be reached.
//
// An EndpointAddr says how to reach one endpoint: its id (the ed25519 public
// key the transport verifies), an optional home relay and up to
// MaxDirectAddrs direct UDP addresses. Its compact text form is the
// "aster1…" address (see address.go and PROTOCOL.md). A Resolver maps an
// endpoint id to an EndpointAddr; Static is the resolver built from known
// addresses, and other backends (mDNS, DNS, a registry) implement the same
// interface.
package discovery

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/aster-go/aster/trust"
)

// MaxDirectAddrs is the most direct addresses an EndpointAddr may carry.
const MaxDirectAddrs = 15

// MaxCertHashes is the most certificate hashes an EndpointAddr may carry.
const MaxCertHashes = 4

// EndpointAddr describes how to reach one endpoint.
type EndpointAddr struct {
	// ID is the endpoint's public key; transports verify the peer against it.
	ID trust.EndpointID
	// Relay is the URL of the endpoint's home relay, or "" for none.
	Relay string
	// Direct lists UDP addresses the endpoint listens on, most preferred first.
	Direct []netip.AddrPort
	// WebTransport is the "https://host:port/path" URL of the endpoint's
	// WebTransport listener, or "" for none.
	WebTransport string
	// CertHashes are the SHA-256 hashes of the TLS certificates the
	// WebTransport listener serves now and next (at most MaxCertHashes), for
	// browsers' serverCertificateHashes. Go clients verify the endpoint id
	// instead and do not need them.
	CertHashes []CertHash
}

// CertHash is the SHA-256 hash of a DER-encoded X.509 certificate.
type CertHash [32]byte

// String returns the hash in lower-case hex.
func (h CertHash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText encodes the hash as hex.
func (h CertHash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes a hash from 64 hex characters.
func (h *CertHash) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(h) {
		return fmt.Errorf("discovery: certificate hash must be %d hex characters, got %d", 2*len(h), len(b))
	}
	_, err := hex.Decode(h[:], b)
	if err != nil {
		return fmt.Errorf("discovery: certificate hash: %w", err)
	}
	return nil
}

// ErrNotFound is returned (wrapped) by a Resolver that knows nothing of an id.
var ErrNotFound = errors.New("discovery: endpoint not found")

// Resolver maps an endpoint id to the addresses it can be reached at.
type Resolver interface {
	Resolve(ctx context.Context, id trust.EndpointID) (EndpointAddr, error)
}

// Static is a Resolver over a fixed, updatable set of addresses. The zero
// value is empty and ready to use; it is safe for concurrent use.
type Static struct {
	mu    sync.RWMutex
	addrs map[trust.EndpointID]EndpointAddr
}

// NewStatic returns a Static resolver that knows addrs.
func NewStatic(addrs ...EndpointAddr) *Static {
	s := &Static{}
	for _, a := range addrs {
		s.Add(a)
	}
	return s
}

// Add records (or replaces) the address of a.ID.
func (s *Static) Add(a EndpointAddr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addrs == nil {
		s.addrs = make(map[trust.EndpointID]EndpointAddr)
	}
	s.addrs[a.ID] = a
}

// Resolve returns the recorded address of id or an error wrapping ErrNotFound.
func (s *Static) Resolve(_ context.Context, id trust.EndpointID) (EndpointAddr, error) {
	s.mu.RLock()
	a, ok := s.addrs[id]
	s.mu.RUnlock()
	if !ok {
		return EndpointAddr{}, fmt.Errorf("%w: %s", ErrNotFound, id.Short())
	}
	return a, nil
}
