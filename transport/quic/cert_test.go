package quic

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"

	"github.com/aster-go/aster/trust"
)

// The certificate built by hand is the one x509.CreateCertificate makes for
// the same template and serial, byte for byte, and it parses to what peerID
// and crypto/tls need.
func TestCertificateMatchesX509(t *testing.T) {
	for range 20 {
		key := trust.GenerateKey()
		id := trust.IDOf(key)
		der, err := buildCertificate(key, id)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          certSerial(id),
			Subject:               pkix.Name{CommonName: id.String()},
			NotBefore:             certNotBefore,
			NotAfter:              certNotAfter,
			KeyUsage:              x509.KeyUsageDigitalSignature,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			BasicConstraintsValid: true,
		}
		want, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(der, want) {
			t.Fatalf("certificate differs from x509.CreateCertificate's:\n got %x\nwant %x", der, want)
		}
		if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
			t.Fatalf("self-signature: %v", err)
		}
		if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 127 {
			t.Errorf("serial %v: want positive, at most 127 bits", leaf.SerialNumber)
		}
		got, err := peerID(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
		if err != nil || got != id {
			t.Fatalf("peerID = %v, %v; want %v", got, err, id)
		}
	}
}

// The cache returns the certificate of the key asked for, and stays within
// certCacheSize entries.
func TestCertificateCache(t *testing.T) {
	keys := make([]trust.SecretKey, certCacheSize+8)
	first := make([]tls.Certificate, len(keys))
	for i := range keys {
		keys[i] = trust.GenerateKey()
		c, err := newCertificate(keys[i], trust.IDOf(keys[i]))
		if err != nil {
			t.Fatal(err)
		}
		first[i] = c
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if got, err := peerID(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); err != nil || got != trust.IDOf(keys[i]) {
			t.Fatalf("certificate %d proves %v, %v", i, got, err)
		}
	}
	certs.mu.Lock()
	n := len(certs.m)
	certs.mu.Unlock()
	if n > certCacheSize {
		t.Errorf("cache holds %d certificates, want at most %d", n, certCacheSize)
	}
	// The most recent key is cached: the same certificate comes back.
	last := len(keys) - 1
	again, err := newCertificate(keys[last], trust.IDOf(keys[last]))
	if err != nil {
		t.Fatal(err)
	}
	if &again.Certificate[0][0] != &first[last].Certificate[0][0] {
		t.Error("the most recent key's certificate was built again")
	}
	// The first key was evicted: building it again gives the same bytes.
	again, err = newCertificate(keys[0], trust.IDOf(keys[0]))
	if err != nil {
		t.Fatal(err)
	}
	if &again.Certificate[0][0] == &first[0].Certificate[0][0] {
		t.Error("the oldest key's certificate was not evicted")
	}
	if !bytes.Equal(again.Certificate[0], first[0].Certificate[0]) {
		t.Error("a rebuilt certificate differs from the first one")
	}
}
