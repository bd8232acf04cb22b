package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/status"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

var serial int64 = 1

// newKeyAndTemplate makes a P-256 key and a certificate template named
// name, with the next serial number, valid from an hour ago to an hour
// from now.
func newKeyAndTemplate(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	return key, &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
}

func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, tmpl := newKeyAndTemplate(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate signed by ca and its key to dir/name.pem and
// dir/name-key.pem: a server certificate for 127.0.0.1 and localhost, or a
// client certificate.
func (ca *testCA) issue(t *testing.T, dir, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, tmpl := newKeyAndTemplate(t, name)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost", "etcd.test"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsEtcd is an etcd server that requires TLS and client certificates.
type tlsEtcd struct {
	endpoint              string // https://127.0.0.1:PORT
	ca                    *testCA
	clientCert, clientKey string
	dir                   string
}

func startTLSEtcd(t *testing.T) *tlsEtcd {
	t.Helper()
	dir := t.TempDir()
	serverCA := newTestCA(t, dir, "server-ca")
	clientCA := newTestCA(t, dir, "client-ca")
	cert, key := serverCA.issue(t, dir, "etcd-server", true)
	ccert, ckey := clientCA.issue(t, dir, "aster-client", false)
	s := etcdtest.StartServerTLS(t, etcdtest.TLS{CertFile: cert, KeyFile: key, ClientCAFile: clientCA.file})
	return &tlsEtcd{endpoint: s.Endpoint(), ca: serverCA, clientCert: ccert, clientKey: ckey, dir: dir}
}

// etcdConfig is a client Config for e with mutual TLS.
func (e *tlsEtcd) config() config.Config {
	c := config.Default()
	c.Discovery = config.BackendEtcd
	c.DiscoveryEndpoints = e.endpoint
	c.DiscoveryTLSCA = e.ca.file
	c.DiscoveryTLSCert, c.DiscoveryTLSKey = e.clientCert, e.clientKey
	return c
}

// roundTrip connects to c's etcd (DiscoverySource reads from it) and
// reads the first producer set of a watch.
func roundTrip(t *testing.T, c config.Config) error {
	t.Helper()
	ctx := ctxT(t)
	d, err := c.DiscoverySource(ctx, "etcd:///fleet/TLS", quiet)
	if err != nil {
		return err
	}
	defer d.Close()
	w, err := d.Source.Watch(ctx, d.Name)
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = w.Next(ctx)
	return err
}

// Mutual TLS to a real etcd: the right CA and client certificate work
// (https:// and host:port endpoints); a wrong CA, the system roots, or no
// client certificate fail at start with a clear UNAVAILABLE error.
func TestDiscoveryEtcdTLS(t *testing.T) {
	e := startTLSEtcd(t)
	isolate(t)

	if err := roundTrip(t, e.config()); err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	hostPort := e.config()
	hostPort.DiscoveryEndpoints = strings.TrimPrefix(e.endpoint, "https://")
	if err := roundTrip(t, hostPort); err != nil {
		t.Fatalf("mutual TLS to host:port: %v", err)
	}
	// An endpoint given by address, verified as a name its certificate
	// carries (the wrong name fails below).
	named := e.config()
	named.DiscoveryTLSServerName = "etcd.test"
	if err := roundTrip(t, named); err != nil {
		t.Fatalf("mutual TLS with tls_server_name: %v", err)
	}

	failures := []struct {
		name string
		edit func(c *config.Config)
		want string
	}{
		{"wrong CA", func(c *config.Config) { c.DiscoveryTLSCA = newTestCA(t, e.dir, "other-ca").file }, "certificate"},
		{"system roots", func(c *config.Config) { c.DiscoveryTLSCA = "" }, "certificate"},
		{"no client certificate", func(c *config.Config) { c.DiscoveryTLSCert, c.DiscoveryTLSKey = "", "" }, "certificate required"},
		{"wrong server name", func(c *config.Config) { c.DiscoveryTLSServerName = "not-etcd.test" }, "certificate"},
	}
	for _, f := range failures {
		t.Run(f.name, func(t *testing.T) {
			c := e.config()
			f.edit(&c)
			err := roundTrip(t, c)
			if status.CodeOf(err) != status.Unavailable {
				t.Fatalf("got %v, want UNAVAILABLE", err)
			}
			if f.want != "" && !strings.Contains(err.Error(), f.want) {
				t.Fatalf("error %q does not say what failed (%q)", err, f.want)
			}
			t.Logf("%s: %v", f.name, err)
		})
	}
}

// Bad TLS settings are startup errors naming the setting, before any
// connection: nothing falls back to plain text.
func TestDiscoveryTLSValidation(t *testing.T) {
	dir := isolate(t)
	ca := newTestCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "client", false)
	other := newTestCA(t, dir, "other")
	_, otherKey := other.issue(t, dir, "other-client", false)
	junk := writeFile(t, dir, "junk.pem", "not a certificate\n")
	base := func() config.Config {
		c := config.Default()
		c.Discovery = config.BackendEtcd
		c.DiscoveryEndpoints = "https://127.0.0.1:1"
		return c
	}
	cases := []struct {
		name  string
		edit  func(c *config.Config)
		field string
		want  string
	}{
		{"http endpoint with a CA", func(c *config.Config) {
			c.DiscoveryEndpoints, c.DiscoveryTLSCA = "http://127.0.0.1:1", ca.file
		}, "discovery.endpoints", "plain-text endpoint"},
		{"http endpoint with a server name", func(c *config.Config) {
			c.DiscoveryEndpoints, c.DiscoveryTLSServerName = "127.0.0.1:2,HTTP://127.0.0.1:1", "etcd"
		}, "discovery.endpoints", "plain-text endpoint"},
		{"mixed schemes", func(c *config.Config) { c.DiscoveryEndpoints = "https://127.0.0.1:1,http://127.0.0.1:2" }, "discovery.endpoints", "mixes"},
		{"cert without key", func(c *config.Config) { c.DiscoveryTLSCert = cert }, "discovery.tls_key", "is not set"},
		{"key without cert", func(c *config.Config) { c.DiscoveryTLSKey = key }, "discovery.tls_cert", "is not set"},
		{"missing CA file", func(c *config.Config) { c.DiscoveryTLSCA = filepath.Join(dir, "nope.pem") }, "discovery.tls_ca", "cannot be read"},
		{"CA file without a certificate", func(c *config.Config) { c.DiscoveryTLSCA = junk }, "discovery.tls_ca", "no PEM certificate"},
		{"key of another certificate", func(c *config.Config) { c.DiscoveryTLSCert, c.DiscoveryTLSKey = cert, otherKey }, "discovery.tls_cert", "do not make"},
		{"unreadable key", func(c *config.Config) { c.DiscoveryTLSCert, c.DiscoveryTLSKey = cert, dir }, "discovery.tls_key", "cannot be read"},
		{"bad server name", func(c *config.Config) { c.DiscoveryTLSServerName = "a b" }, "discovery.tls_server_name", "host name"},
		{"dns backend", func(c *config.Config) {
			c.Discovery, c.DiscoveryEndpoints, c.DiscoveryTLSCA = config.BackendDNS, "127.0.0.1:53", ca.file
		}, "discovery.tls_ca", "is for etcd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			err := c.Validate()
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(ce.Reason, tc.want) {
				t.Fatalf("Validate: %v; want an *Error on %s saying %q", err, tc.field, tc.want)
			}
			// The same error when the source is asked for, before any dial.
			_, err = c.DiscoverySource(ctxT(t), "etcd:///fleet/X", quiet)
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("DiscoverySource: %v; want the *Error on %s", err, tc.field)
			}
		})
	}
	// A good set validates.
	c := base()
	c.DiscoveryTLSCA, c.DiscoveryTLSCert, c.DiscoveryTLSKey, c.DiscoveryTLSServerName = ca.file, cert, key, "etcd.internal"
	if err := c.Validate(); err != nil {
		t.Fatalf("good TLS settings: %v", err)
	}
}

// The TLS settings load from ASTER_DISCOVERY_TLS_* and the TOML file, and
// Print shows them with their sources.
func TestDiscoveryTLSSettingsLoad(t *testing.T) {
	dir := isolate(t)
	ca := newTestCA(t, dir, "ca")
	cert, key := ca.issue(t, dir, "client", false)
	t.Setenv("ASTER_DISCOVERY", "etcd")
	t.Setenv("ASTER_DISCOVERY_ENDPOINTS", "https://etcd-0.internal:2379")
	t.Setenv("ASTER_DISCOVERY_TLS_CA", ca.file)
	t.Setenv("ASTER_DISCOVERY_TLS_CERT", cert)
	t.Setenv("ASTER_DISCOVERY_TLS_KEY", key)
	file := writeFile(t, dir, "aster.toml", "[discovery]\ntls_server_name = \"etcd.internal\"\n")
	c, err := config.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if c.DiscoveryTLSCA != ca.file || c.DiscoveryTLSCert != cert || c.DiscoveryTLSKey != key || c.DiscoveryTLSServerName != "etcd.internal" {
		t.Fatalf("loaded %q %q %q %q", c.DiscoveryTLSCA, c.DiscoveryTLSCert, c.DiscoveryTLSKey, c.DiscoveryTLSServerName)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	m := printMap(t, &c)
	for key, src := range map[string]string{
		"discovery.tls_ca": "ASTER_DISCOVERY_TLS_CA", "discovery.tls_cert": "ASTER_DISCOVERY_TLS_CERT",
		"discovery.tls_key": "ASTER_DISCOVERY_TLS_KEY", "discovery.tls_server_name": file,
	} {
		if m[key].Source != src || m[key].Value == nil {
			t.Errorf("%s printed as %+v; want a value from %s", key, m[key], src)
		}
	}
	// A CA file that disappears after loading fails when it is used.
	os.Remove(ca.file)
	if _, err := c.DiscoverySource(ctxT(t), "etcd:///fleet/X", quiet); err == nil || !strings.Contains(err.Error(), "discovery.tls_ca") {
		t.Fatalf("DiscoverySource with the CA file gone: %v", err)
	}
}

// An etcd password bound for a non-loopback endpoint without TLS is
// warned about; with TLS, or to loopback, it is not.
func TestDiscoveryPlainCredentialsWarning(t *testing.T) {
	dir := isolate(t)
	ca := newTestCA(t, dir, "ca")
	t.Setenv("ASTER_DISCOVERY", "etcd")
	t.Setenv("ASTER_DISCOVERY_USERNAME", "aster")
	t.Setenv("ASTER_DISCOVERY_PASSWORD", "secret")
	for _, tc := range []struct {
		endpoints, caFile string
		warn              bool
	}{
		{"etcd-0.internal:2379", "", true},
		{"http://10.0.0.5:2379", "", true},
		{"127.0.0.1:2379,localhost:2379,http://[::1]:2379", "", false},
		{"https://etcd-0.internal:2379", "", false},
		{"https://etcd-0.internal:2379", ca.file, false},
	} {
		t.Setenv("ASTER_DISCOVERY_ENDPOINTS", tc.endpoints)
		t.Setenv("ASTER_DISCOVERY_TLS_CA", tc.caFile)
		c, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		w := strings.Join(c.Warnings(), "\n")
		if got := strings.Contains(w, "plain text"); got != tc.warn {
			t.Errorf("endpoints %q (CA %q): warnings %q; want a plain-text warning: %v", tc.endpoints, tc.caFile, w, tc.warn)
		}
	}
}
