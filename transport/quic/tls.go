package quic

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"

	quicgo "github.com/quic-go/quic-go"

	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// ErrInvalidKey is wrapped by errors caused by a secret key that is not a
// well-formed 64-byte ed25519 private key.
var ErrInvalidKey = errors.New("quic: invalid secret key")

// errBadPeerCert is wrapped when the peer's certificate does not carry an
// ed25519 endpoint key.
var errBadPeerCert = errors.New("quic: peer certificate does not carry an ed25519 endpoint key")

// checkKeyLength checks that key has the length of an ed25519 private key
// and returns its endpoint id (its public half), unchecked.
func checkKeyLength(key trust.SecretKey) (trust.EndpointID, error) {
	if len(key) != ed25519.PrivateKeySize {
		return trust.EndpointID{}, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidKey, len(key), ed25519.PrivateKeySize)
	}
	return trust.IDOf(key), nil
}

// checkKey validates key and returns its endpoint id.
func checkKey(key trust.SecretKey) (trust.EndpointID, error) {
	if _, err := checkKeyLength(key); err != nil {
		return trust.EndpointID{}, err
	}
	// The public half must match the seed, or every handshake would fail
	// with a confusing signature error.
	if !ed25519.NewKeyFromSeed(key.Seed()).Equal(key) {
		return trust.EndpointID{}, fmt.Errorf("%w: public half does not match the seed", ErrInvalidKey)
	}
	return trust.IDOf(key), nil
}

// peerID returns the endpoint id proven in a TLS handshake: the ed25519 key
// of the peer's leaf certificate. TLS 1.3's CertificateVerify proves that
// the peer holds the matching private key.
func peerID(cs tls.ConnectionState) (trust.EndpointID, error) {
	if len(cs.PeerCertificates) == 0 {
		return trust.EndpointID{}, fmt.Errorf("%w: no certificate", errBadPeerCert)
	}
	pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return trust.EndpointID{}, fmt.Errorf("%w: key type %T", errBadPeerCert, cs.PeerCertificates[0].PublicKey)
	}
	id, err := trust.EndpointIDFromPublicKey(pub)
	if err != nil {
		return trust.EndpointID{}, fmt.Errorf("%w: %w", errBadPeerCert, err)
	}
	return id, nil
}

// verifyALPN checks the negotiated application protocol.
func verifyALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != transport.ALPN {
		return fmt.Errorf("quic: peer negotiated ALPN %q, want %q", cs.NegotiatedProtocol, transport.ALPN)
	}
	return nil
}

// baseTLSConfig is the configuration both sides share: TLS 1.3 only, ALPN
// aster/1, our certificate, no session resumption (a resumed session would
// skip the certificate exchange).
func baseTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{cert},
		NextProtos:             []string{transport.ALPN},
		SessionTicketsDisabled: true,
	}
}

// dialerTLSConfig is baseTLSConfig for a Dialer whose certificate cert is
// still being made: crypto/tls asks for it when the server's
// CertificateRequest arrives.
func dialerTLSConfig(cert *certFuture) *tls.Config {
	c := baseTLSConfig(tls.Certificate{})
	c.Certificates = nil
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return cert.wait()
	}
	return c
}

// serverTLSConfig requires a client certificate and accepts any whose key is
// ed25519; who may connect is decided above the transport.
func serverTLSConfig(cert tls.Certificate) *tls.Config {
	c := baseTLSConfig(cert)
	c.ClientAuth = tls.RequireAnyClientCert
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if _, err := peerID(cs); err != nil {
			return err
		}
		return verifyALPN(cs)
	}
	return c
}

// clientTLSConfig returns the configuration for dialling want. Certificate
// chains are not verified (there is no CA); VerifyConnection checks that the
// server proved the key want instead. onMismatch is called with the key the
// server proved when it is not want.
func clientTLSConfig(base *tls.Config, want trust.EndpointID, onMismatch func(got trust.EndpointID)) *tls.Config {
	c := base.Clone()
	c.InsecureSkipVerify = true // verification is VerifyConnection's job
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		got, err := peerID(cs)
		if err != nil {
			return err
		}
		if got != want {
			onMismatch(got)
			return mismatchError(want, got)
		}
		return verifyALPN(cs)
	}
	return c
}

func mismatchError(want, got trust.EndpointID) error {
	return fmt.Errorf("%w: dialled %s, peer proved %s", transport.ErrPeerMismatch, want.Short(), got.Short())
}

// statelessResetKey derives the key quic-go uses for stateless reset tokens
// from the endpoint key, so an endpoint that restarts with the same key can
// promptly reset connections its previous incarnation had.
func statelessResetKey(key trust.SecretKey) *quicgo.StatelessResetKey {
	mac := hmac.New(sha256.New, key.Seed())
	mac.Write([]byte("aster/1 quic stateless reset key"))
	var k quicgo.StatelessResetKey
	copy(k[:], mac.Sum(nil))
	return &k
}
