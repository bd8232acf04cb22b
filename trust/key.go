// Package trust holds what every aster endpoint needs to know about trust:
// endpoint keys and ids, root key files, and the capability requirements
// attached to methods (Cap, AnyOf, AllOf). It imports only the standard
// library, so that handlers and transports can name an endpoint or a
// requirement without linking any encoding library.
//
// Every aster endpoint has an ed25519 secret key. Its public key is the
// endpoint id, which replaces host names and certificate authorities: a client
// dials an endpoint id and the transport proves that the peer holds the
// matching secret key.
//
// Enrollment credentials and the admission gate are in trust/enroll; the
// .aster-identity file that stores a node key with its credentials is in
// trust/identity.
package trust

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// EndpointID is an endpoint's ed25519 public key. Its text form is 64
// lowercase hex characters.
type EndpointID [ed25519.PublicKeySize]byte

// String returns the id as 64 lowercase hex characters.
func (id EndpointID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 16 hex characters, for logs and summaries.
func (id EndpointID) Short() string { return id.String()[:16] }

// IsZero reports whether id is all zeros (unset).
func (id EndpointID) IsZero() bool { return id == EndpointID{} }

// PublicKey returns id as an ed25519 public key.
func (id EndpointID) PublicKey() ed25519.PublicKey { return ed25519.PublicKey(id[:]) }

// MarshalText implements encoding.TextMarshaler (hex).
func (id EndpointID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (hex).
func (id *EndpointID) UnmarshalText(b []byte) error {
	v, err := ParseEndpointID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseEndpointID parses a 64-character hex endpoint id.
func ParseEndpointID(s string) (EndpointID, error) {
	var id EndpointID
	s = strings.TrimSpace(s)
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("trust: endpoint id must be %d hex characters, got %d", 2*len(id), len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("trust: endpoint id is not hex: %w", err)
	}
	return id, nil
}

// EndpointIDFromPublicKey converts an ed25519 public key to an EndpointID.
func EndpointIDFromPublicKey(pub ed25519.PublicKey) (EndpointID, error) {
	var id EndpointID
	if len(pub) != len(id) {
		return id, fmt.Errorf("trust: public key must be %d bytes, got %d", len(id), len(pub))
	}
	copy(id[:], pub)
	return id, nil
}

// PublicKey is an ed25519 public key, such as a root public key. It has the
// same form as an EndpointID (an endpoint id is its key's public key): 32
// bytes, written as 64 lowercase hex characters.
type PublicKey = EndpointID

// SecretKey is an endpoint's ed25519 private key.
type SecretKey = ed25519.PrivateKey

// GenerateKey returns a fresh random secret key.
func GenerateKey() SecretKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil { // crypto/rand does not fail on supported platforms
		panic("trust: crypto/rand failed: " + err.Error())
	}
	return priv
}

// KeyFromSeed returns the secret key for a 32-byte seed.
func KeyFromSeed(seed []byte) (SecretKey, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("trust: secret key must be %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// ParseSecretKeyBase64 decodes a base64 (standard or URL alphabet, padded or
// not) 32-byte seed, as ASTER_SECRET_KEY and .aster-identity files hold it.
func ParseSecretKeyBase64(s string) (SecretKey, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("trust: secret key is empty")
	}
	var raw []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("trust: secret key is not base64: %w", err)
	}
	return KeyFromSeed(raw)
}

// EncodeSecretKeyBase64 returns the standard base64 encoding of key's 32-byte
// seed, the inverse of ParseSecretKeyBase64.
func EncodeSecretKeyBase64(key SecretKey) string {
	return base64.StdEncoding.EncodeToString(key.Seed())
}

// IDOf returns the endpoint id of a secret key.
func IDOf(key SecretKey) EndpointID {
	var id EndpointID
	copy(id[:], key.Public().(ed25519.PublicKey))
	return id
}
