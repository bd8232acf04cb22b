package webtransport

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/trust"
)

// certContext prefixes the message an endpoint signs to bind a TLS
// certificate to its endpoint key (see PROTOCOL.md section 18).
const certContext = "aster/1 webtransport certificate\x00"

// serverCert is one of the listener's TLS certificates with the endpoint
// key's signature over its hash.
type serverCert struct {
	tls       *tls.Certificate
	hash      discovery.CertHash // SHA-256 of the DER certificate
	sig       []byte             // ed25519 signature over certMessage(hash)
	servedAt  time.Time          // when it becomes the served certificate
	rotateAt  time.Time          // when the next one replaces it
	notBefore time.Time
	notAfter  time.Time
}

// certMessage is what the endpoint key signs for a certificate.
func certMessage(hash [32]byte) []byte {
	return append([]byte(certContext), hash[:]...)
}

// certSkew is how long before it is first served a certificate becomes
// valid, so peers whose clocks lag a little still accept it.
func certSkew(lifetime time.Duration) time.Duration { return min(time.Hour, lifetime/8) }

// newServerCert creates an ECDSA P-256 certificate (browsers require that key
// type with serverCertificateHashes) valid for lifetime from slightly before
// servedAt, and signs its hash with the endpoint key.
func newServerCert(key trust.SecretKey, id trust.EndpointID, servedAt time.Time, lifetime time.Duration) (*serverCert, error) {
	ck, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("webtransport: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("webtransport: certificate serial: %w", err)
	}
	notBefore := servedAt.Add(-certSkew(lifetime)).UTC().Truncate(time.Second)
	notAfter := notBefore.Add(lifetime)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: id.String()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ck.PublicKey, ck)
	if err != nil {
		return nil, fmt.Errorf("webtransport: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("webtransport: parse own certificate: %w", err)
	}
	hash := sha256.Sum256(der)
	return &serverCert{
		tls:       &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: ck, Leaf: leaf},
		hash:      hash,
		sig:       ed25519.Sign(ed25519.PrivateKey(key), certMessage(hash)),
		servedAt:  servedAt,
		rotateAt:  servedAt.Add(lifetime / 2),
		notBefore: notBefore,
		notAfter:  notAfter,
	}, nil
}

// certSet holds the served certificate and its successor, and rotates them
// lazily: whenever it is consulted after the served one's rotation time.
// No goroutine or timer is involved.
type certSet struct {
	key      trust.SecretKey
	id       trust.EndpointID
	lifetime time.Duration
	now      func() time.Time

	mu   sync.Mutex
	cur  *serverCert // served now
	next *serverCert // served from cur.rotateAt; its hash is published already
}

func newCertSet(key trust.SecretKey, id trust.EndpointID, lifetime time.Duration, now func() time.Time) (*certSet, error) {
	s := &certSet{key: key, id: id, lifetime: lifetime, now: now}
	if err := s.reset(now()); err != nil {
		return nil, err
	}
	return s, nil
}

// reset generates a fresh pair starting at t. Callers hold s.mu or own s.
func (s *certSet) reset(t time.Time) error {
	cur, err := newServerCert(s.key, s.id, t, s.lifetime)
	if err != nil {
		return err
	}
	next, err := newServerCert(s.key, s.id, cur.rotateAt, s.lifetime)
	if err != nil {
		return err
	}
	s.cur, s.next = cur, next
	return nil
}

// advance rotates if the served certificate's time is up. Callers hold s.mu.
func (s *certSet) advance() error {
	t := s.now()
	if t.Before(s.cur.rotateAt) {
		return nil
	}
	if t.Before(s.next.rotateAt) {
		next, err := newServerCert(s.key, s.id, s.next.rotateAt, s.lifetime)
		if err != nil {
			return err
		}
		s.cur, s.next = s.next, next
		return nil
	}
	// Both are stale (the clock jumped, or nothing consulted the set for a
	// whole period): start over from now.
	return s.reset(t)
}

// current returns the certificate to serve now.
func (s *certSet) current() (*serverCert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.advance(); err != nil {
		return nil, err
	}
	return s.cur, nil
}

// hashes returns the hashes of the served certificate and its successor,
// which a browser should pin (serverCertificateHashes).
func (s *certSet) hashes() []discovery.CertHash {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.advance() // on failure keep publishing the existing pair
	return []discovery.CertHash{s.cur.hash, s.next.hash}
}
