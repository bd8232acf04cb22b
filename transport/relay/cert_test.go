package relay_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/aster-go/aster/transport/relay"
)

// TestLoadOrCreateCertificate: the first start creates the key (0600) and
// the certificate, later starts load the same ones.
func TestLoadOrCreateCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	c1, created, err := relay.LoadOrCreateCertificate(certFile, keyFile, "localhost")
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	c2, created, err := relay.LoadOrCreateCertificate(certFile, keyFile, "localhost")
	if err != nil || created {
		t.Fatalf("second start: created %v, %v", created, err)
	}
	if !bytes.Equal(c1.Certificate[0], c2.Certificate[0]) {
		t.Error("the second start has another certificate")
	}
}

// TestLoadOrCreateCertificateSymlink: a dangling symbolic link at the key's
// path (someone else's, planted where the key will go) makes the creation
// fail; the new private key is not written where the link points.
func TestLoadOrCreateCertificateSymlink(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	target := filepath.Join(dir, "elsewhere", "stolen.key")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, keyFile); err != nil {
		t.Fatal(err)
	}
	if _, _, err := relay.LoadOrCreateCertificate(certFile, keyFile, "localhost"); err == nil {
		t.Error("created a certificate with a symbolic link at the key's path")
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("the private key went where the link points (%v)", err)
	}
}
