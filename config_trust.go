package aster

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// TrustPolicy returns the admission policy of c's [trust] fields:
// root_pubkey (or root_pubkey_file; none means dev mode), allow_all_consumers
// and allow_all_producers.
func (c *Config) TrustPolicy() (enroll.Policy, error) {
	p := enroll.Policy{AllowAllConsumers: c.AllowAllConsumers, AllowAllProducers: c.AllowAllProducers}
	if c.StoragePath != "" {
		if err := os.MkdirAll(c.StoragePath, 0o700); err != nil {
			return p, fmt.Errorf("config: storage.path: %w", err)
		}
		p.NonceFile = filepath.Join(c.StoragePath, OTTNonceFile)
	}
	root, err := c.RootPublicKey()
	if err != nil {
		return p, fmt.Errorf("config: trust.root_pubkey_file: %w", err)
	}
	if root != nil {
		k, err := trust.EndpointIDFromPublicKey(root)
		if err != nil {
			return p, fmt.Errorf("config: trust.root_pubkey: %w", err)
		}
		p.RootPubKey = &k
	}
	return p, nil
}

// OTTNonceFile is the file in storage.path that records used one-time-token
// nonces.
const OTTNonceFile = "ott-nonces"

// trustServerOptions are the server options of the trust and identity
// fields: the key of identity_file (when secret_key is not set) and the
// admission gate (WithGate). Without a root key the gate runs in dev mode and
// logs its warning on logger.
func (c *Config) trustServerOptions(logger *slog.Logger) ([]ServerOption, error) {
	var opts []ServerOption
	if c.SecretKey == nil && c.IdentityFile != "" {
		id, err := identity.Load(c.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("config: identity.identity_file: %w", err)
		}
		if id.Key == nil {
			return nil, fmt.Errorf("config: identity.identity_file %s has no [node] secret_key", c.IdentityFile)
		}
		for _, w := range id.Warnings {
			logger.Warn(w)
		}
		opts = append(opts, WithSecretKey(id.Key))
	}
	p, err := c.TrustPolicy()
	if err != nil {
		return nil, err
	}
	gate, err := enroll.NewGate(p, logger)
	if err != nil {
		return nil, err
	}
	if !gate.DevMode() {
		logger.Info("aster: admission on", "root", gate.Root().Short(),
			"allow_all_consumers", p.AllowAllConsumers, "allow_all_producers", p.AllowAllProducers)
	}
	return append(opts, WithGate(gate)), nil
}

// trustClientOptions are the client options of the trust and identity
// fields: enrollment_credential_file (an .aster-identity file: its key and
// first consumer credential), or else identity_file (its key, and its
// credential if it has one) when secret_key is not set.
func (c *Config) trustClientOptions() ([]ClientOption, error) {
	switch {
	case c.EnrollmentCredentialFile != "":
		id, err := identity.Load(c.EnrollmentCredentialFile)
		if err != nil {
			return nil, fmt.Errorf("config: trust.enrollment_credential_file: %w", err)
		}
		if id.Key == nil || len(id.Peers) == 0 {
			return nil, fmt.Errorf("config: trust.enrollment_credential_file %s needs a [node] secret_key and a [[peers]] credential", c.EnrollmentCredentialFile)
		}
		cred, err := id.Credential("")
		if err != nil {
			return nil, fmt.Errorf("config: trust.enrollment_credential_file: %w", err)
		}
		return []ClientOption{WithClientKey(id.Key), WithCredential(cred)}, nil
	case c.SecretKey == nil && c.IdentityFile != "":
		id, err := identity.Load(c.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("config: identity.identity_file: %w", err)
		}
		if id.Key == nil {
			return nil, fmt.Errorf("config: identity.identity_file %s has no [node] secret_key", c.IdentityFile)
		}
		if len(id.Peers) == 0 {
			return []ClientOption{WithClientKey(id.Key)}, nil
		}
		cred, err := id.Credential("")
		if err != nil {
			return nil, fmt.Errorf("config: identity.identity_file: %w", err)
		}
		return []ClientOption{WithClientKey(id.Key), WithCredential(cred)}, nil
	}
	return nil, nil
}
