package config

// TLS to etcd: discovery.tls_ca, tls_cert, tls_key and tls_server_name.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
)

// maxTLSFile bounds a CA bundle, certificate or key file, read before it
// is parsed.
const maxTLSFile = 1 << 20

// maxServerName is the longest discovery.tls_server_name (a DNS name).
const maxServerName = 253

// discoveryTLSKeys are the TLS settings, in the order errors name them.
var discoveryTLSKeys = []string{"discovery.tls_ca", "discovery.tls_cert", "discovery.tls_key", "discovery.tls_server_name"}

// etcdTLS returns the TLS configuration of the connection to etcd: nil
// for plain text (no TLS setting and no https:// endpoint), else a config
// with the CA bundle (or the system's roots), the client certificate and
// the server name. A setting that cannot be used is an *Error naming it:
// TLS is never dropped silently.
func (c *Config) etcdTLS() (*tls.Config, error) {
	bad := func(key, reason string, err error) error {
		f := fieldByKey[key]
		src, raw := c.origin(f)
		return fieldErr(f, src, raw, reason, err)
	}
	set := ""
	for _, key := range discoveryTLSKeys {
		if fieldByKey[key].get(c).(string) != "" {
			set = key
			break
		}
	}
	var plain, secure string // an http:// and an https:// endpoint
	for _, e := range c.DiscoveryEndpointList() {
		switch l := strings.ToLower(e); {
		case strings.HasPrefix(l, "http://"):
			plain = e
		case strings.HasPrefix(l, "https://"):
			secure = e
		}
	}
	if set == "" && secure == "" {
		return nil, nil
	}
	if backend := c.discoveryBackend(); backend != BackendEtcd && backend != "" {
		if set != "" {
			return nil, bad(set, "is for etcd, but discovery.backend is "+backend, nil)
		}
		return nil, nil // https:// is then no etcd endpoint (Validate rejects it)
	}
	switch {
	case plain != "" && set != "":
		return nil, bad("discovery.endpoints", fmt.Sprintf("lists %q, a plain-text endpoint, but %s is set: write https:// (a TLS setting never falls back to plain text)", plain, set), nil)
	case plain != "" && secure != "":
		return nil, bad("discovery.endpoints", fmt.Sprintf("mixes http:// (%q) and https:// (%q) endpoints: the etcd client would use one for all", plain, secure), nil)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	name := c.DiscoveryTLSServerName
	if name != "" && (len(name) > maxServerName || strings.ContainsAny(name, " \t\r\n/:")) {
		return nil, bad("discovery.tls_server_name", fmt.Sprintf("is not a host name (at most %d bytes, no spaces, '/' or ':')", maxServerName), nil)
	}
	if path := c.DiscoveryTLSCA; path != "" {
		pem, err := readCapped(path, maxTLSFile)
		if err != nil {
			return nil, bad("discovery.tls_ca", "cannot be read: "+err.Error(), err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, bad("discovery.tls_ca", "holds no PEM certificate (want a CA bundle: -----BEGIN CERTIFICATE-----…)", nil)
		}
		cfg.RootCAs = pool
	}
	cert, key := c.DiscoveryTLSCert, c.DiscoveryTLSKey
	switch {
	case cert != "" && key == "":
		return nil, bad("discovery.tls_key", "is not set, but discovery.tls_cert is: a client certificate needs its key", nil)
	case cert == "" && key != "":
		return nil, bad("discovery.tls_cert", "is not set, but discovery.tls_key is: a key needs its client certificate", nil)
	case cert != "":
		certPEM, err := readCapped(cert, maxTLSFile)
		if err != nil {
			return nil, bad("discovery.tls_cert", "cannot be read: "+err.Error(), err)
		}
		keyPEM, err := readCapped(key, maxTLSFile)
		if err != nil {
			return nil, bad("discovery.tls_key", "cannot be read: "+err.Error(), err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, bad("discovery.tls_cert", "and discovery.tls_key do not make a certificate and its key: "+err.Error(), err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if name != "" {
		// The etcd client's gRPC TLS sets the server name to each
		// endpoint's host, whatever cfg.ServerName says, so the chain is
		// verified here, against the configured name; only the automatic
		// check is turned off, not the verification.
		cfg.ServerName = name
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = verifyAs(name, cfg.RootCAs)
	}
	return cfg, nil
}

// verifyAs returns a tls.Config.VerifyConnection that verifies the server's
// chain against roots (nil: the system's) for the DNS name or IP address
// name, as crypto/tls does for ServerName.
func verifyAs(name string, roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("tls: etcd sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			DNSName: name, Roots: roots, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("tls: failed to verify etcd's certificate for %s (discovery.tls_server_name): %w", name, err)
		}
		return nil
	}
}

// plainCredentialWarnings warns when etcd credentials would cross a
// network in plain text: discovery.username is set, no TLS is configured,
// and an endpoint is not on loopback. (Not an error: etcd with
// authentication but without TLS is a legitimate set-up inside a trusted
// network, but the password is then readable on the wire.)
func (c *Config) plainCredentialWarnings() []string {
	if c.DiscoveryUsername == "" {
		return nil
	}
	if tc, err := c.etcdTLS(); tc != nil || err != nil {
		return nil // TLS, or a TLS setting Validate rejects
	}
	for _, e := range c.DiscoveryEndpointList() {
		hostPort := e
		if i := strings.Index(e, "://"); i >= 0 {
			hostPort = e[i+3:]
		}
		host, _, err := net.SplitHostPort(strings.TrimSuffix(hostPort, "/"))
		if err != nil {
			host = hostPort
		}
		if loopbackHost(strings.Trim(host, "[]")) {
			continue
		}
		return []string{fmt.Sprintf("discovery.username: the etcd password goes in plain text to %s; use https:// endpoints (and discovery.tls_ca) to protect it", e)}
	}
	return nil
}
