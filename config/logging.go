package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
)

// parseLevel maps a logging.level value to a slog level ("" is info).
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, errors.New(`is not a log level ("debug", "info", "warning" or "error")`)
}

// masked replaces a secret in log output.
const masked = "****"

// sensitiveLogKeys are attribute keys whose values are always masked when
// LogMask is on (compared in lower case, also as a suffix after "_" or ".").
var sensitiveLogKeys = []string{"secret_key", "secret", "private_key", "password", "token",
	"credential", "enrollment_credential", "enrollment_credential_file", "enrollment_credential_iid", "iid"}

// NewLogger returns a log/slog logger writing to w as c says: LogFormat
// "text" (default) or "json", LogLevel (default info) and, when LogMask is
// true, secrets masked as "****" in every line: attributes named like
// secret_key, token, credential or iid; values that are ed25519 private
// keys; and any occurrence of c's secret key (base64 or hex), enrollment
// credential path or IID token in messages and string values.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	lvl, err := parseLevel(c.LogLevel)
	if err != nil {
		lvl = slog.LevelInfo // Validate reports it; keep logging usable
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogMask {
		opts.ReplaceAttr = newMasker(c).replace
	}
	if strings.EqualFold(c.LogFormat, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// masker scrubs secrets from log attributes.
type masker struct {
	secrets []string // literal secret texts to replace wherever they appear
}

func newMasker(c *Config) *masker {
	m := &masker{}
	if c.SecretKey != nil {
		seed := c.SecretKey.Seed()
		m.secrets = append(m.secrets,
			base64.StdEncoding.EncodeToString(seed), base64.RawStdEncoding.EncodeToString(seed),
			base64.URLEncoding.EncodeToString(seed), base64.RawURLEncoding.EncodeToString(seed),
			hex.EncodeToString(seed), hex.EncodeToString(c.SecretKey))
	}
	for _, s := range append([]string{c.EnrollmentCredentialFile, c.EnrollmentCredentialIID, c.DiscoveryPassword}, c.proxyPasswords()...) {
		if len(s) >= 4 { // too short a string would mask ordinary words
			m.secrets = append(m.secrets, s)
		}
	}
	if o := c.sources["trust.enrollment_credential_file"]; o != nil && len(o.raw) >= 4 {
		m.secrets = append(m.secrets, o.raw) // as written, e.g. with ~
	}
	return m
}

func (m *masker) replace(_ []string, a slog.Attr) slog.Attr {
	if a.Key != slog.MessageKey && isSensitiveKey(a.Key) {
		return slog.String(a.Key, masked)
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := m.scrub(v.String()); s != v.String() {
			return slog.String(a.Key, s)
		}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case ed25519.PrivateKey:
			return slog.String(a.Key, masked)
		case error:
			if s := m.scrub(x.Error()); s != x.Error() {
				return slog.String(a.Key, s)
			}
		case []byte:
			if s := m.scrub(string(x)); s != string(x) {
				return slog.String(a.Key, s)
			}
		}
	}
	return a
}

func (m *masker) scrub(s string) string {
	for _, sec := range m.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, masked)
		}
	}
	return s
}

func isSensitiveKey(k string) bool {
	k = strings.ToLower(k)
	for _, s := range sensitiveLogKeys {
		if k == s || strings.HasSuffix(k, "_"+s) || strings.HasSuffix(k, "."+s) {
			return true
		}
	}
	return false
}
