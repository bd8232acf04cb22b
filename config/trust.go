package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// OTTNonceFile is the file in storage.path that records used one-time-token
// nonces.
const OTTNonceFile = "ott-nonces"

// admissionFields are the trust.* settings that ask for admission when set
// to false.
var admissionFields = []string{"trust.allow_all_consumers", "trust.allow_all_producers"}

// noRootHint says how to give the root key, for errors about its absence.
const noRootHint = "no root key is set to verify credentials with (trust.root_pubkey/ASTER_ROOT_PUBKEY or " +
	"trust.root_pubkey_file/ASTER_ROOT_PUBKEY_FILE), and without one the server would run in dev mode, admitting every consumer"

// TrustPolicy returns the admission policy of c's trust.* fields:
// root_pubkey (or root_pubkey_file), allow_all_consumers,
// allow_all_producers, and the nonce file in storage.path. It has no side
// effects (NewServer creates the storage directory).
//
// Without a root key the policy is dev mode (enroll.NewGate then opens the
// consumer gate on an ephemeral root), but only if nothing asks for
// admission: it fails with an *Error naming the setting when
// allow_all_consumers or allow_all_producers is set to false in the file
// or the environment, when root_pubkey or root_pubkey_file is given as
// empty text (ASTER_ROOT_PUBKEY="" from an unset shell variable), or when
// an unknown variable or file key looks like a trust setting written
// another way (a misspelling such as ASTER_ROOT_PUBKEY_FLE, a key outside
// [trust] such as network.root_pubkey or a top-level root_pubkey_file, or
// another name such as ASTER_TRUST_ROOT_PUBKEY or ASTER_ROOT_PUBLIC_KEY),
// because each shows that admission was wanted.
func (c *Config) TrustPolicy() (enroll.Policy, error) {
	p := enroll.Policy{AllowAllConsumers: c.AllowAllConsumers, AllowAllProducers: c.AllowAllProducers}
	if c.StoragePath != "" {
		p.NonceFile = filepath.Join(c.StoragePath, OTTNonceFile)
	}
	root, err := c.RootPublicKey()
	if err != nil {
		f := fieldByKey["trust.root_pubkey_file"]
		src, raw := c.origin(f)
		return p, fieldErr(f, src, raw, "cannot be used: "+err.Error(), err)
	}
	if root == nil {
		p.DevMode = true
		return p, c.checkDevMode()
	}
	k, err := trust.EndpointIDFromPublicKey(root)
	if err != nil {
		f := fieldByKey["trust.root_pubkey"]
		src, raw := c.origin(f)
		return p, fieldErr(f, src, raw, err.Error(), err)
	}
	p.RootPubKey = &k
	return p, nil
}

// checkDevMode returns an *Error if c, which has no root key, asks for
// admission anyway.
func (c *Config) checkDevMode() error {
	if len(c.emptyRoot) > 0 {
		e := c.emptyRoot[0]
		f := fieldByKey[e.key]
		return fieldErr(f, e.source, "", "is set but empty; "+noRootHint+
			" (leave the setting out altogether to run in dev mode)", nil)
	}
	var misspelt []string
	for _, u := range c.unknown {
		if u.trust {
			misspelt = append(misspelt, u.name)
		}
	}
	for _, key := range admissionFields {
		f := fieldByKey[key]
		o := c.sources[key]
		if o == nil || o.source == SourceDefault || f.get(c).(bool) {
			continue
		}
		reason := "asks for admission, but " + noRootHint
		if len(misspelt) > 0 {
			reason += fmt.Sprintf(" (unknown settings ignored: %s; see the warnings)", strings.Join(misspelt, ", "))
		}
		return fieldErr(f, o.source, o.raw, reason, nil)
	}
	for _, u := range c.unknown {
		if !u.trust {
			continue
		}
		field := u.near
		switch {
		case strings.HasPrefix(field, "trust."):
		case strings.HasPrefix(u.name, "trust."):
			field = u.name
		default:
			// Written outside [trust], or named some other way: the
			// error names the unknown setting itself.
			field = u.name
		}
		reason := "is not a known setting"
		if u.near != "" {
			reason += fmt.Sprintf(" (did you mean %s?)", nameLike(u, fieldByKey[u.near]))
		}
		return &Error{Field: field, Source: u.source, Value: `"` + u.name + `"`,
			Reason: reason + "; a trust setting that is not understood must not leave admission off: " + noRootHint}
	}
	return nil
}

// nameLike names f the way u was written: its variable for a variable, its
// key for a file key.
func nameLike(u unknownSetting, f *field) string {
	if u.name == u.source { // a variable
		return f.env
	}
	return f.key
}

// trustServer is what NewServer needs from the trust.* and identity.*
// fields: the identity file's key (when secret_key is not set), its
// warnings, and the admission policy.
type trustServer struct {
	key      trust.SecretKey
	warnings []string
	policy   enroll.Policy
}

// trustServerSettings reads the identity file (when secret_key is not set)
// and resolves the admission policy, without side effects.
func (c *Config) trustServerSettings() (trustServer, error) {
	var ts trustServer
	if c.SecretKey == nil && c.IdentityFile != "" {
		f := fieldByKey["identity.identity_file"]
		src, raw := c.origin(f)
		id, err := identity.Load(c.IdentityFile)
		if err != nil {
			return ts, fieldErr(f, src, raw, "cannot be used: "+err.Error(), err)
		}
		if id.Key == nil {
			return ts, fieldErr(f, src, raw, "has no [node] secret_key to serve with", nil)
		}
		ts.key, ts.warnings = id.Key, id.Warnings
	}
	p, err := c.TrustPolicy()
	if err != nil {
		return ts, err
	}
	ts.policy = p
	return ts, nil
}
