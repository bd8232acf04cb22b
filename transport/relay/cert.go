package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"time"
)

// SelfSignedLifetime is the validity of certificates made by
// SelfSignedCertificate. Clients pin the certificate's hash, so its
// lifetime only bounds how long a pinned URL stays usable.
const SelfSignedLifetime = 5 * 365 * 24 * time.Hour

// SelfSignedCertificate returns a new self-signed ECDSA P-256 certificate
// for hosts (names or IP addresses; "localhost" and 127.0.0.1 are always
// included). Clients reach such a relay with a URL pinning its Fingerprint.
func SelfSignedCertificate(hosts ...string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay: generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "aster relay"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(SelfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1"}, hosts...) {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			if !ip.IsUnspecified() {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("relay: parse certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// LoadOrCreateCertificate loads the PEM certificate and key at certFile
// and keyFile. If neither file exists it creates a self-signed certificate
// for hosts (SelfSignedCertificate) and writes it there (the key with mode
// 0600), so that its fingerprint, and the URLs pinning it, survive
// restarts. created reports whether it did.
func LoadOrCreateCertificate(certFile, keyFile string, hosts ...string) (cert tls.Certificate, created bool, err error) {
	_, certErr := os.Stat(certFile)
	_, keyErr := os.Stat(keyFile)
	if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
		cert, err := SelfSignedCertificate(hosts...)
		if err != nil {
			return tls.Certificate{}, false, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			return tls.Certificate{}, false, fmt.Errorf("relay: encode key: %w", err)
		}
		if err := writeNew(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			return tls.Certificate{}, false, fmt.Errorf("relay: write key: %w", err)
		}
		if err := writeNew(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
			os.Remove(keyFile) // ours: a later start creates both again
			return tls.Certificate{}, false, fmt.Errorf("relay: write certificate: %w", err)
		}
		return cert, true, nil
	}
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("relay: load certificate: %w", err)
	}
	return cert, false, nil
}

// writeNew creates path with perm and writes b to it. It fails if
// anything is at path already, a symbolic link too, dangling or not
// (O_EXCL): a new private key never goes where a link planted at the key's
// path points, nor replaces a file created meanwhile.
func writeNew(path string, b []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}
