package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/trust"
)

// trustSettings are the trust fields of the configuration reference, read
// from the environment by trustFromEnv. (This function stands in for
// aster.Config; it reads the same ASTER_* variables.)
type trustSettings struct {
	RootPubKey        string // ASTER_ROOT_PUBKEY: 64 hex characters, wins over the file
	RootPubKeyFile    string // ASTER_ROOT_PUBKEY_FILE
	AllowAllConsumers bool   // ASTER_ALLOW_ALL_CONSUMERS, default false
	AllowAllProducers bool   // ASTER_ALLOW_ALL_PRODUCERS, default true
	IdentityFile      string // ASTER_IDENTITY_FILE, default .aster-identity if it exists
	SecretKey         string // ASTER_SECRET_KEY (base64), wins over the identity file
	StoragePath       string // ASTER_STORAGE_PATH: where used one-time tokens are remembered
	Credential        string // ASTER_ENROLLMENT_CREDENTIAL: the -demo client's credential file
}

// trustFromEnv reads the trust settings from the environment.
func trustFromEnv() (trustSettings, error) {
	s := trustSettings{
		RootPubKey:        os.Getenv("ASTER_ROOT_PUBKEY"),
		RootPubKeyFile:    os.Getenv("ASTER_ROOT_PUBKEY_FILE"),
		AllowAllProducers: true,
		IdentityFile:      os.Getenv("ASTER_IDENTITY_FILE"),
		SecretKey:         os.Getenv("ASTER_SECRET_KEY"),
		StoragePath:       os.Getenv("ASTER_STORAGE_PATH"),
		Credential:        os.Getenv("ASTER_ENROLLMENT_CREDENTIAL"),
	}
	for name, dst := range map[string]*bool{"ASTER_ALLOW_ALL_CONSUMERS": &s.AllowAllConsumers, "ASTER_ALLOW_ALL_PRODUCERS": &s.AllowAllProducers} {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			b, err := parseBool(v)
			if err != nil {
				return s, fmt.Errorf("%s: %w", name, err)
			}
			*dst = b
		}
	}
	if s.IdentityFile == "" {
		if _, err := os.Stat(".aster-identity"); err == nil {
			s.IdentityFile = ".aster-identity"
		}
	}
	return s, nil
}

// parseBool accepts true/false, 1/0, yes/no, on/off (any case).
func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes", "on":
		return true, nil
	case "false", "0", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true/false, 1/0, yes/no, on/off)", v)
}

// serverTrust turns the settings into server options: the identity key and
// the admission gate (dev mode when no root key is configured).
func (s trustSettings) serverTrust(logger *slog.Logger) ([]aster.ServerOption, error) {
	var opts []aster.ServerOption
	switch {
	case s.SecretKey != "":
		key, err := trust.ParseSecretKeyBase64(s.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("ASTER_SECRET_KEY: %w", err)
		}
		opts = append(opts, aster.WithSecretKey(key))
	case s.IdentityFile != "":
		id, created, err := trust.LoadOrCreateIdentity(s.IdentityFile)
		if err != nil {
			return nil, err
		}
		for _, w := range id.Warnings {
			logger.Warn(w)
		}
		if created {
			logger.Info("created identity file", "path", s.IdentityFile, "endpoint_id", id.ID().String())
		}
		opts = append(opts, aster.WithSecretKey(id.Key))
	}
	p := trust.Policy{AllowAllConsumers: s.AllowAllConsumers, AllowAllProducers: s.AllowAllProducers}
	switch {
	case s.RootPubKey != "":
		k, err := trust.ParseRootPublicKey(s.RootPubKey)
		if err != nil {
			return nil, fmt.Errorf("ASTER_ROOT_PUBKEY: %w", err)
		}
		p.RootPubKey = &k
	case s.RootPubKeyFile != "":
		k, err := trust.ReadRootPublicKey(s.RootPubKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ASTER_ROOT_PUBKEY_FILE: %w", err)
		}
		p.RootPubKey = &k
	}
	if s.StoragePath != "" {
		p.NonceFile = filepath.Join(s.StoragePath, "ott-nonces")
	}
	gate, err := trust.NewGate(p, logger)
	if err != nil {
		return nil, err
	}
	if !gate.DevMode() {
		logger.Info("admission on", "root", gate.Root().Short(), "allow_all_consumers", p.AllowAllConsumers, "allow_all_producers", p.AllowAllProducers)
	}
	return append(opts, aster.WithGate(gate)), nil
}

// clientTrust is the -demo client's credential, if one is configured.
func (s trustSettings) clientTrust() []aster.ClientOption {
	if s.Credential == "" {
		return nil
	}
	return []aster.ClientOption{aster.WithCredentialFile(s.Credential)}
}
