package config

import (
	"strings"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/trust/identity"
)

// ClientOptions validates c and returns the client options it implies,
// without side effects (it reads the identity files it names):
//
//   - network.secret_key → aster.WithSecretKey (unset: a fresh key)
//   - network.relay_mode "disabled" or clear_relay_transports →
//     aster.WithRelayFallback(false)
//   - network.clear_ip_transports → aster.WithIPTransports(false)
//   - trust.enrollment_credential_file → aster.WithSecretKey and
//     aster.WithCredential from that .aster-identity file; else
//     identity.identity_file → its key and credential, when
//     network.secret_key is not set
//
// Options given after these override them. Errors are *Error values naming
// the field.
func (c *Config) ClientOptions() ([]aster.ClientOption, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var opts []aster.ClientOption
	if c.SecretKey != nil {
		opts = append(opts, aster.WithSecretKey(c.SecretKey))
	}
	if !c.relaysEnabled() {
		opts = append(opts, aster.WithRelayFallback(false))
	}
	if c.ClearIPTransports {
		opts = append(opts, aster.WithIPTransports(false))
	}
	topts, err := c.trustClientOptions()
	if err != nil {
		return nil, err
	}
	return append(opts, topts...), nil
}

// trustClientOptions are the client options of the trust and identity
// fields: enrollment_credential_file (an .aster-identity file: its key and
// first consumer credential), or else identity_file (its key, and its
// credential if it has one) when secret_key is not set.
func (c *Config) trustClientOptions() ([]aster.ClientOption, error) {
	switch {
	case c.EnrollmentCredentialFile != "":
		f := fieldByKey["trust.enrollment_credential_file"]
		src, raw := c.origin(f)
		id, err := identity.Load(c.EnrollmentCredentialFile)
		if err != nil {
			// The path is sensitive: the error names the field instead.
			msg := strings.ReplaceAll(err.Error(), c.EnrollmentCredentialFile, "<the file>")
			return nil, fieldErr(f, src, raw, "cannot be used: "+msg, err)
		}
		if id.Key == nil || len(id.Peers) == 0 {
			return nil, fieldErr(f, src, raw, "needs a [node] secret_key and a [[peers]] credential", nil)
		}
		cred, err := id.Credential("")
		if err != nil {
			return nil, fieldErr(f, src, raw, "cannot be used: "+err.Error(), err)
		}
		return []aster.ClientOption{aster.WithSecretKey(id.Key), aster.WithCredential(cred)}, nil
	case c.SecretKey == nil && c.IdentityFile != "":
		f := fieldByKey["identity.identity_file"]
		src, raw := c.origin(f)
		id, err := identity.Load(c.IdentityFile)
		if err != nil {
			return nil, fieldErr(f, src, raw, "cannot be used: "+err.Error(), err)
		}
		if id.Key == nil {
			return nil, fieldErr(f, src, raw, "has no [node] secret_key", nil)
		}
		cred, err := id.Credential("")
		if len(id.Peers) == 0 || err != nil {
			return []aster.ClientOption{aster.WithSecretKey(id.Key)}, nil
		}
		return []aster.ClientOption{aster.WithSecretKey(id.Key), aster.WithCredential(cred)}, nil
	}
	return nil, nil
}
