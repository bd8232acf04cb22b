package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/identity"
)

// LoadClient resolves the configuration as LoadFile does (Load when path
// is ""; unknown keys in the file are an error when strict) but checks only
// the settings a client uses (see ValidateClient): a server-only setting
// such as enable_monitoring without a health port, or enable_hooks, does
// not stop a client.
func LoadClient(path string, strict bool) (Config, error) {
	c, err := resolve(path, os.Environ(), strict)
	if err != nil {
		return Config{}, err
	}
	if err := c.ValidateClient(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ValidateClient is Validate for a client: it checks the settings a client
// uses (secret_key, enrollment_credential_file, endpoint_addr, relay_mode,
// clear_ip_transports, clear_relay_transports, proxy settings,
// identity_file, logging) and ignores the server's (root key, admission
// gates, storage, health, bind_addr, monitoring, hooks, port mapping).
func (c *Config) ValidateClient() error {
	v := *c
	v.RootPubkey, v.RootPubkeyFile = nil, ""
	v.AllowAllConsumers, v.AllowAllProducers = false, false
	v.StoragePath = ""
	v.HealthPort, v.HealthHost = 0, ""
	v.BindAddr = ""
	v.EnableMonitoring, v.EnableHooks, v.HookTimeoutMS = false, false, DefaultHookTimeoutMS
	v.PortmapperConfig = ""
	return v.Validate()
}

// ClientOptions validates c and returns the client options it implies,
// without side effects (it reads the identity files it names):
//
//   - network.secret_key → aster.WithSecretKey (unset: a fresh key)
//   - network.relay_mode "disabled" or clear_relay_transports →
//     aster.WithRelayFallback(false)
//   - network.clear_ip_transports → aster.WithIPTransports(false)
//   - network.proxy_url, else network.proxy_from_env →
//     aster.WithRelayProxy (relay connections go through the HTTP proxy)
//   - trust.enrollment_credential_file → aster.WithSecretKey and
//     aster.WithCredential from that .aster-identity file; else
//     identity.identity_file → its key and credential, when
//     network.secret_key is not set
//
// Only client settings are validated (ValidateClient). An .aster-identity
// file that was not asked for but found in the working directory (the
// identity_file default) and cannot be used is skipped with a warning
// (see Warnings); one named by ASTER_IDENTITY_FILE or the file is an
// error. An identity file that holds a key and is readable by group or
// others is used, with a warning (see Warnings). Options given after these override them. Errors are *Error values
// naming the field.
func (c *Config) ClientOptions() ([]aster.ClientOption, error) {
	if err := c.ValidateClient(); err != nil {
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
	if p, err := c.relayProxyOption(); err != nil || p != nil {
		if err != nil {
			return nil, err
		}
		opts = append(opts, p) // network.proxy_url, proxy_from_env
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
		id, err := loadIdentity(c.EnrollmentCredentialFile)
		if err != nil {
			// The path is sensitive: the error names the field instead.
			msg := strings.ReplaceAll(err.Error(), c.EnrollmentCredentialFile, "<the file>")
			return nil, fieldErr(f, src, raw, "cannot be used: "+msg, err)
		}
		if id.Key == nil || len(id.Peers) == 0 {
			return nil, fieldErr(f, src, raw, "needs a [node] secret_key and a [[peers]] credential", nil)
		}
		c.warnings = append(c.warnings, id.Warnings...) // a key file others can read
		cred, err := id.Credential("")
		if err != nil {
			return nil, fieldErr(f, src, raw, "cannot be used: "+err.Error(), err)
		}
		return []aster.ClientOption{aster.WithSecretKey(id.Key), aster.WithCredential(cred)}, nil
	case c.SecretKey == nil && c.IdentityFile != "":
		f := fieldByKey["identity.identity_file"]
		src, raw := c.origin(f)
		id, err := loadIdentity(c.IdentityFile)
		if err == nil && id.Key == nil {
			err = errors.New("has no [node] secret_key")
		}
		if err != nil && src == SourceDefault {
			// Found in the working directory, not asked for: a client
			// goes on without it.
			c.warnings = append(c.warnings, fmt.Sprintf("ignoring %s in the working directory: %v", c.IdentityFile, err))
			return nil, nil
		}
		if err != nil {
			return nil, fieldErr(f, src, raw, "cannot be used: "+err.Error(), err)
		}
		c.warnings = append(c.warnings, id.Warnings...)
		cred, err := id.Credential("")
		if len(id.Peers) == 0 || err != nil {
			return []aster.ClientOption{aster.WithSecretKey(id.Key)}, nil
		}
		return []aster.ClientOption{aster.WithSecretKey(id.Key), aster.WithCredential(cred)}, nil
	}
	return nil, nil
}

// loadIdentity is identity.Load, except that a file holding binary data
// (a NUL byte or invalid UTF-8 in its first KiB) is refused with a short
// error instead of the parser's, which would quote the bytes.
func loadIdentity(path string) (*identity.Identity, error) {
	if err := CheckTextFile(path); err != nil {
		return nil, err
	}
	return identity.Load(path)
}

// CheckTextFile returns an error when the file at path ("~" expanded)
// starts with binary data (a NUL byte or invalid UTF-8 in its first KiB),
// so that callers can refuse it without printing its bytes. A file that
// cannot be read is left to the caller's own reading.
func CheckTextFile(path string) error {
	p, err := trust.ExpandHome(path)
	if err != nil {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	buf := make([]byte, 1024)
	n, _ := io.ReadFull(f, buf)
	buf = buf[:n]
	if n == len(buf) { // the last rune may be cut
		for i := 0; i < utf8.UTFMax && len(buf) > 0 && !utf8.Valid(buf); i++ {
			buf = buf[:len(buf)-1]
		}
	}
	if bytes.IndexByte(buf, 0) >= 0 || !utf8.Valid(buf) {
		return errors.New("is not a text file (it holds binary data, not an .aster-identity TOML file)")
	}
	return nil
}
