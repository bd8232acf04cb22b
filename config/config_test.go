package config_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// seedFields is the configuration reference (shared/seeds/003): every field
// as TOML key, environment variable and default as Print shows it.
var seedFields = []struct{ key, env, def string }{
	{"trust.root_pubkey", "ASTER_ROOT_PUBKEY", "<not set>"},
	{"trust.root_pubkey_file", "ASTER_ROOT_PUBKEY_FILE", "<not set>"},
	{"trust.enrollment_credential_file", "ASTER_ENROLLMENT_CREDENTIAL", "<not set>"},
	{"trust.enrollment_credential_iid", "ASTER_ENROLLMENT_CREDENTIAL_IID", "<not set>"},
	{"trust.allow_all_consumers", "ASTER_ALLOW_ALL_CONSUMERS", "false"},
	{"trust.allow_all_producers", "ASTER_ALLOW_ALL_PRODUCERS", "true"},
	{"connect.endpoint_addr", "ASTER_ENDPOINT_ADDR", "<not set>"},
	{"network.secret_key", "ASTER_SECRET_KEY", "<not set>"},
	{"network.relay_mode", "ASTER_RELAY_MODE", "<default>"},
	{"network.bind_addr", "ASTER_BIND_ADDR", "<any>"},
	{"network.enable_monitoring", "ASTER_ENABLE_MONITORING", "false"},
	{"network.enable_hooks", "ASTER_ENABLE_HOOKS", "false"},
	{"network.hook_timeout_ms", "ASTER_HOOK_TIMEOUT_MS", "5000"},
	{"network.clear_ip_transports", "ASTER_CLEAR_IP_TRANSPORTS", "false"},
	{"network.clear_relay_transports", "ASTER_CLEAR_RELAY_TRANSPORTS", "false"},
	{"network.portmapper_config", "ASTER_PORTMAPPER_CONFIG", "<default>"},
	{"network.proxy_url", "ASTER_PROXY_URL", "<not set>"},
	{"network.proxy_from_env", "ASTER_PROXY_FROM_ENV", "false"},
	{"storage.path", "ASTER_STORAGE_PATH", "<in-memory>"},
	{"health.health_port", "ASTER_HEALTH_PORT", "0"},
	{"health.health_host", "ASTER_HEALTH_HOST", "127.0.0.1"},
	{"identity.identity_file", "ASTER_IDENTITY_FILE", "<not set>"},
	{"logging.format", "ASTER_LOG_FORMAT", "text"},
	{"logging.level", "ASTER_LOG_LEVEL", "info"},
	{"logging.mask", "ASTER_LOG_MASK", "true"},
}

// isolate unsets every ASTER_* variable (restored at the end of the test)
// and moves into a fresh directory (so no .aster-identity is found),
// returning it. (Setting them to "" would not do: an empty root key
// variable keeps a server out of dev mode.)
func isolate(t *testing.T) string {
	t.Helper()
	unset := func(name string) {
		t.Setenv(name, "") // registers the restore
		os.Unsetenv(name)
	}
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "ASTER_") {
			unset(name)
		}
	}
	for _, f := range seedFields {
		unset(f.env)
	}
	dir := t.TempDir()
	t.Chdir(dir)
	return dir
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// printMap returns Print's JSON form as section.name → {value, source}.
func printMap(t *testing.T, c *config.Config) map[string]struct {
	Value  any    `json:"value"`
	Source string `json:"source"`
} {
	t.Helper()
	var buf bytes.Buffer
	if err := c.Print(&buf, true); err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]struct {
		Value  any    `json:"value"`
		Source string `json:"source"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("Print JSON: %v\n%s", err, buf.String())
	}
	out := map[string]struct {
		Value  any    `json:"value"`
		Source string `json:"source"`
	}{}
	for sec, m := range doc {
		for name, v := range m {
			out[sec+"."+name] = v
		}
	}
	return out
}

func TestConfigDefaults(t *testing.T) {
	isolate(t)
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	d := config.Default()
	if !reflect.DeepEqual(exported(c), exported(d)) {
		t.Errorf("Load with no env = %+v, Default = %+v", exported(c), exported(d))
	}
	if !c.AllowAllProducers || c.AllowAllConsumers || c.HookTimeoutMS != 5000 || c.HealthHost != "127.0.0.1" ||
		c.LogFormat != "text" || c.LogLevel != "info" || !c.LogMask || c.SecretKey != nil || c.HealthPort != 0 {
		t.Errorf("defaults differ from the seed: %+v", exported(c))
	}
	for _, f := range seedFields {
		if src := c.Source(f.key); src != config.SourceDefault {
			t.Errorf("Source(%s) = %q, want default", f.key, src)
		}
	}
	var buf bytes.Buffer
	if err := c.Print(&buf, false); err != nil {
		t.Fatal(err)
	}
	for _, f := range seedFields {
		_, name, _ := strings.Cut(f.key, ".")
		if !hasPrintLine(buf.String(), name, f.def, "default") {
			t.Errorf("print output lacks %s : %s (default):\n%s", name, f.def, buf.String())
		}
	}
}

// exported returns c without its unexported provenance, for comparisons.
func exported(c config.Config) config.Config {
	var out config.Config
	ov, cv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(c)
	for i := range cv.NumField() {
		if cv.Type().Field(i).IsExported() {
			ov.Field(i).Set(cv.Field(i))
		}
	}
	return out
}

// hasPrintLine reports whether text has a line "name<spaces> : value (source)".
func hasPrintLine(text, name, value, source string) bool {
	for line := range strings.SplitSeq(text, "\n") {
		k, rest, ok := strings.Cut(line, " : ")
		if ok && strings.TrimRight(k, " ") == name && rest == value+" ("+source+")" {
			return true
		}
	}
	return false
}

// fieldCase is a good value of one field in env and TOML form and what
// it must decode to.
type fieldCase struct {
	key    string
	env    string
	envVal string
	toml   string // TOML value text
	check  func(c *config.Config) any
	want   any
}

func fieldCases(t *testing.T, dir string) []fieldCase {
	rootPub, _, _ := ed25519.GenerateKey(nil)
	rootHex := hex.EncodeToString(rootPub)
	rootFile := writeFile(t, dir, "root_pub.key", rootHex+"\n")
	cred := writeFile(t, dir, "consumer.token", `{"role":"consumer"}`)
	ident := writeFile(t, dir, "node.aster-identity", "[node]\n")
	key := testutil.Key(t, 1)
	keyB64 := base64.StdEncoding.EncodeToString(key.Seed())
	addr := aster.Address{ID: trust.IDOf(testutil.Key(t, 2))}.String()
	return []fieldCase{
		{"trust.root_pubkey", "ASTER_ROOT_PUBKEY", rootHex, fmt.Sprintf("%q", rootHex),
			func(c *config.Config) any { return hex.EncodeToString(c.RootPubkey) }, rootHex},
		{"trust.root_pubkey_file", "ASTER_ROOT_PUBKEY_FILE", rootFile, fmt.Sprintf("%q", rootFile),
			func(c *config.Config) any { return c.RootPubkeyFile }, rootFile},
		{"trust.enrollment_credential_file", "ASTER_ENROLLMENT_CREDENTIAL", cred, fmt.Sprintf("%q", cred),
			func(c *config.Config) any { return c.EnrollmentCredentialFile }, cred},
		{"trust.enrollment_credential_iid", "ASTER_ENROLLMENT_CREDENTIAL_IID", "iid-token-123", `"iid-token-123"`,
			func(c *config.Config) any { return c.EnrollmentCredentialIID }, "iid-token-123"},
		{"trust.allow_all_consumers", "ASTER_ALLOW_ALL_CONSUMERS", "yes", "true",
			func(c *config.Config) any { return c.AllowAllConsumers }, true},
		{"trust.allow_all_producers", "ASTER_ALLOW_ALL_PRODUCERS", "OFF", "false",
			func(c *config.Config) any { return c.AllowAllProducers }, false},
		{"connect.endpoint_addr", "ASTER_ENDPOINT_ADDR", addr, fmt.Sprintf("%q", addr),
			func(c *config.Config) any { return c.EndpointAddr }, addr},
		{"network.secret_key", "ASTER_SECRET_KEY", keyB64, fmt.Sprintf("%q", keyB64),
			func(c *config.Config) any { return hex.EncodeToString(c.SecretKey) }, hex.EncodeToString(key)},
		{"network.relay_mode", "ASTER_RELAY_MODE", "disabled", `"disabled"`,
			func(c *config.Config) any { return c.RelayMode }, "disabled"},
		{"network.bind_addr", "ASTER_BIND_ADDR", "0.0.0.0:9000", `"0.0.0.0:9000"`,
			func(c *config.Config) any { return c.BindAddr }, "0.0.0.0:9000"},
		{"network.enable_hooks", "ASTER_ENABLE_HOOKS", "no", "false",
			func(c *config.Config) any { return c.EnableHooks }, false},
		{"network.hook_timeout_ms", "ASTER_HOOK_TIMEOUT_MS", "5000", "5000",
			func(c *config.Config) any { return c.HookTimeoutMS }, 5000},
		{"network.clear_relay_transports", "ASTER_CLEAR_RELAY_TRANSPORTS", "1", "true",
			func(c *config.Config) any { return c.ClearRelayTransports }, true},
		{"network.portmapper_config", "ASTER_PORTMAPPER_CONFIG", "disabled", `"disabled"`,
			func(c *config.Config) any { return c.PortmapperConfig }, "disabled"},
		{"network.proxy_from_env", "ASTER_PROXY_FROM_ENV", "False", "false",
			func(c *config.Config) any { return c.ProxyFromEnv }, false},
		{"health.health_port", "ASTER_HEALTH_PORT", "8080", "8080",
			func(c *config.Config) any { return c.HealthPort }, 8080},
		{"health.health_host", "ASTER_HEALTH_HOST", "0.0.0.0", `"0.0.0.0"`,
			func(c *config.Config) any { return c.HealthHost }, "0.0.0.0"},
		{"identity.identity_file", "ASTER_IDENTITY_FILE", ident, fmt.Sprintf("%q", ident),
			func(c *config.Config) any { return c.IdentityFile }, ident},
		{"logging.format", "ASTER_LOG_FORMAT", "json", `"json"`,
			func(c *config.Config) any { return c.LogFormat }, "json"},
		{"logging.level", "ASTER_LOG_LEVEL", "debug", `"debug"`,
			func(c *config.Config) any { return c.LogLevel }, "debug"},
		{"logging.mask", "ASTER_LOG_MASK", "no", "false",
			func(c *config.Config) any { return c.LogMask }, false},
	}
}

// tomlFor returns a TOML document setting key to the TOML value text.
func tomlFor(key, val string) string {
	sec, name, _ := strings.Cut(key, ".")
	return fmt.Sprintf("[%s]\n%s = %s\n", sec, name, val)
}

// TestConfigPrecedence checks default < file < env for every field that
// can be set to a working value.
func TestConfigPrecedence(t *testing.T) {
	dir := isolate(t)
	for _, fc := range fieldCases(t, dir) {
		t.Run(fc.key, func(t *testing.T) {
			for _, f := range seedFields {
				t.Setenv(f.env, "")
			}
			def := config.Default()

			// Env only.
			t.Setenv(fc.env, fc.envVal)
			c, err := config.Load()
			if err != nil {
				t.Fatalf("env %s=%s: %v", fc.env, fc.envVal, err)
			}
			if got := fc.check(&c); got != fc.want {
				t.Errorf("env: got %v, want %v", got, fc.want)
			}
			if src := c.Source(fc.key); src != fc.env {
				t.Errorf("env: Source = %q, want %q", src, fc.env)
			}

			// File only.
			t.Setenv(fc.env, "")
			path := writeFile(t, t.TempDir(), "aster.toml", tomlFor(fc.key, fc.toml))
			c, err = config.LoadFile(path)
			if err != nil {
				t.Fatalf("file: %v", err)
			}
			if got := fc.check(&c); got != fc.want {
				t.Errorf("file: got %v, want %v", got, fc.want)
			}
			if src := c.Source(fc.key); src != path {
				t.Errorf("file: Source = %q, want %q", src, path)
			}

			// File says the default, env says the value: env wins.
			defText := printMap(t, &def)[fc.key].Value
			fileVal := fmt.Sprintf("%q", defText)
			switch v := defText.(type) {
			case bool, float64:
				fileVal = fmt.Sprint(v)
			case nil:
				fileVal = "" // no default value to write: file sets nothing
			}
			content := ""
			if fileVal != "" {
				content = tomlFor(fc.key, fileVal)
			}
			path = writeFile(t, t.TempDir(), "aster.toml", content)
			t.Setenv(fc.env, fc.envVal)
			c, err = config.LoadFile(path)
			if err != nil {
				t.Fatalf("file+env: %v", err)
			}
			if got := fc.check(&c); got != fc.want {
				t.Errorf("file+env: got %v, want %v (env must win)", got, fc.want)
			}
			if src := c.Source(fc.key); src != fc.env {
				t.Errorf("file+env: Source = %q, want %q", src, fc.env)
			}
		})
	}
}

// TestConfigFileAndEnv loads the seed's example file with env overrides and
// checks values and provenance field by field.
func TestConfigFileAndEnv(t *testing.T) {
	dir := isolate(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := os.MkdirAll(filepath.Join(home, ".aster"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, ".aster"), "root_pub.key", fmt.Sprintf(`{"public_key": %q}`, hex.EncodeToString(pub)))
	path := writeFile(t, dir, "aster.toml", `
[trust]
root_pubkey_file = "~/.aster/root_pub.key"
allow_all_consumers = false
allow_all_producers = true

[network]
relay_mode = "disabled"
bind_addr = "0.0.0.0:9000"
enable_monitoring = false
enable_hooks = false
hook_timeout_ms = 5000

[logging]
format = "json"
level = "info"
mask = true
`)
	t.Setenv("ASTER_ALLOW_ALL_CONSUMERS", "TRUE")
	t.Setenv("ASTER_BIND_ADDR", "127.0.0.1:7000")
	c, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wantFile := filepath.Join(home, ".aster", "root_pub.key")
	if c.RootPubkeyFile != wantFile {
		t.Errorf("RootPubkeyFile = %q, want ~ expanded to %q", c.RootPubkeyFile, wantFile)
	}
	got, err := c.RootPublicKey()
	if err != nil || !bytes.Equal(got, pub) {
		t.Errorf("RootPublicKey = %x, %v; want %x from the JSON file", got, err, pub)
	}
	if !c.AllowAllConsumers || c.BindAddr != "127.0.0.1:7000" || c.LogFormat != "json" {
		t.Errorf("env did not win over the file: %+v", exported(c))
	}
	for key, want := range map[string]string{
		"trust.root_pubkey_file":    path,
		"trust.allow_all_consumers": "ASTER_ALLOW_ALL_CONSUMERS",
		"trust.allow_all_producers": path,
		"network.bind_addr":         "ASTER_BIND_ADDR",
		"network.relay_mode":        path,
		"logging.format":            path,
		"logging.level":             path,
		"trust.root_pubkey":         "default",
		"storage.path":              "default",
		"health.health_port":        "default",
	} {
		if src := c.Source(key); src != want {
			t.Errorf("Source(%s) = %q, want %q", key, src, want)
		}
	}
	// Print shows the path as written (unexpanded), as the seed does.
	var buf bytes.Buffer
	c.Print(&buf, false)
	if !hasPrintLine(buf.String(), "root_pubkey_file", "~/.aster/root_pub.key", path) {
		t.Errorf("print output lacks the unexpanded path:\n%s", buf.String())
	}
}

func TestConfigBooleans(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"true", true}, {"TRUE", true}, {"True", true}, {"1", true}, {"yes", true}, {"YeS", true}, {"on", true}, {"ON", true},
		{"false", false}, {"False", false}, {"0", false}, {"no", false}, {"NO", false}, {"off", false}, {"Off", false},
	} {
		t.Setenv("ASTER_ALLOW_ALL_CONSUMERS", tc.in)
		t.Setenv("ASTER_ALLOW_ALL_PRODUCERS", tc.in)
		c, err := config.Load()
		if err != nil {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if c.AllowAllConsumers != tc.want || c.AllowAllProducers != tc.want {
			t.Errorf("%q: got %v/%v, want %v", tc.in, c.AllowAllConsumers, c.AllowAllProducers, tc.want)
		}
	}
}

// TestConfigBadValues checks that a bad value of each type fails with
// INVALID_ARGUMENT naming the field, the source and the value.
func TestConfigBadValues(t *testing.T) {
	dir := isolate(t)
	for _, tc := range []struct {
		env, val, field, reason string
		secret                  bool
	}{
		{"ASTER_HOOK_TIMEOUT_MS", "abc", "network.hook_timeout_ms", "is not an integer", false},
		{"ASTER_HOOK_TIMEOUT_MS", "-5", "network.hook_timeout_ms", "must not be negative", false},
		{"ASTER_HEALTH_PORT", "70000", "health.health_port", "is not a port number", false},
		{"ASTER_HEALTH_PORT", "8o", "health.health_port", "is not an integer", false},
		{"ASTER_ALLOW_ALL_CONSUMERS", "maybe", "trust.allow_all_consumers", "is not a boolean", false},
		{"ASTER_LOG_MASK", "2", "logging.mask", "is not a boolean", false},
		{"ASTER_ROOT_PUBKEY", "zz" + strings.Repeat("0", 62), "trust.root_pubkey", "is not hex", false},
		{"ASTER_ROOT_PUBKEY", "abcd", "trust.root_pubkey", "is 2 bytes", false},
		{"ASTER_SECRET_KEY", "not*base64", "network.secret_key", "is not a base64-encoded 32-byte key", true},
		{"ASTER_SECRET_KEY", base64.StdEncoding.EncodeToString(make([]byte, 16)), "network.secret_key", "is not a base64-encoded 32-byte key", true},
		{"ASTER_BIND_ADDR", "localhost", "network.bind_addr", "is not host:port", false},
		{"ASTER_BIND_ADDR", "localhost:http", "network.bind_addr", "has a bad port", false},
		{"ASTER_ENDPOINT_ADDR", "aster1nope", "connect.endpoint_addr", "is not an aster1", false},
		{"ASTER_LOG_FORMAT", "xml", "logging.format", `is not "text" or "json"`, false},
		{"ASTER_LOG_LEVEL", "loud", "logging.level", "is not a log level", false},
		{"ASTER_ROOT_PUBKEY_FILE", filepath.Join(dir, "missing.key"), "trust.root_pubkey_file", "cannot be used", false},
		{"ASTER_ROOT_PUBKEY_FILE", writeFile(t, dir, "bad.key", "hello"), "trust.root_pubkey_file", "cannot be used", false},
		{"ASTER_ENROLLMENT_CREDENTIAL", filepath.Join(dir, "missing.token"), "trust.enrollment_credential_file", "cannot be used", true},
		{"ASTER_IDENTITY_FILE", dir, "identity.identity_file", "is not a regular file", false},
		{"ASTER_ENABLE_MONITORING", "true", "network.enable_monitoring", "needs health.health_port", false},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			_, err := config.Load()
			checkConfigErr(t, err, nil, tc.field, tc.env, tc.reason)
			if err == nil {
				return
			}
			if tc.secret && strings.Contains(err.Error(), tc.val) {
				t.Errorf("error leaks the secret value: %v", err)
			}
			if !tc.secret && !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.val)) {
				t.Errorf("error %q does not quote the bad value %q", err, tc.val)
			}
		})
	}

	// The same checks apply to file values, with the file as source.
	for _, tc := range []struct{ toml, field, reason string }{
		{"[network]\nhook_timeout_ms = \"abc\"\n", "network.hook_timeout_ms", "is not an integer"},
		{"[network]\nbind_addr = 9000\n", "network.bind_addr", "is not a string"},
		{"[trust]\nallow_all_consumers = \"sometimes\"\n", "trust.allow_all_consumers", "is not a boolean"},
		{"[health]\nhealth_port = 3.5\n", "health.health_port", "is not an integer"},
	} {
		path := writeFile(t, t.TempDir(), "aster.toml", tc.toml)
		_, err := config.LoadFile(path)
		checkConfigErr(t, err, nil, tc.field, path, tc.reason)
	}
}

// checkConfigErr checks that err is a *config.Error for field from source
// with reason, wrapping cause if that is not nil, and that it is a plain
// error, not an RPC status.
func checkConfigErr(t *testing.T, err error, cause error, field, source, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s for %s from %s", reason, field, source)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Errorf("%v does not wrap %v", err, cause)
	}
	var se *status.Error
	if errors.As(err, &se) {
		t.Errorf("%v is an RPC status error (%v); config errors are plain", err, se.Code())
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%v is not a *ConfigError", err)
	}
	if ce.Field != field || ce.Source != source || !strings.Contains(ce.Reason, reason) {
		t.Errorf("ConfigError = %+v; want field %s, source %s, reason containing %q", *ce, field, source, reason)
	}
	for _, part := range []string{field, source} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("message %q does not name %q", err, part)
		}
	}
}

// TestConfigSeedNetworkSettings checks that the network settings that once
// failed as not supported yet load now, and that config print shows no
// "not supported" for them.
func TestConfigSeedNetworkSettings(t *testing.T) {
	isolate(t)
	for _, tc := range []struct{ env, val, field string }{
		{"ASTER_ENABLE_HOOKS", "on", "network.enable_hooks"},
		{"ASTER_HOOK_TIMEOUT_MS", "100", "network.hook_timeout_ms"},
		{"ASTER_PORTMAPPER_CONFIG", "upnp", "network.portmapper_config"},
		{"ASTER_PROXY_URL", "http://proxy:3128", "network.proxy_url"},
		{"ASTER_PROXY_FROM_ENV", "yes", "network.proxy_from_env"},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			c, err := config.Load()
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var b strings.Builder
			if err := c.Print(&b, false); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(b.String(), "not supported") {
				t.Errorf("config print says not supported:\n%s", b.String())
			}
		})
	}
	// Hooks are a server setting: a client is not stopped by it (a
	// server is, without a gate: TestConfigHooks).
	c := config.Config{EnableHooks: true}
	if _, err := c.ClientOptions(); err != nil {
		t.Errorf("literal Config with EnableHooks: ClientOptions error = %v, want none (a server setting)", err)
	}
}

// TestConfigRelay checks relay_mode, clear_ip_transports and
// clear_relay_transports as the configuration reference describes them.
func TestConfigRelay(t *testing.T) {
	isolate(t)
	t.Setenv("ASTER_LOG_LEVEL", "error")
	const url = "https://relay.example.test:3340#sha256=" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		env  map[string]string
		home string
	}{
		{map[string]string{}, ""},
		{map[string]string{"ASTER_RELAY_MODE": "default"}, ""},
		{map[string]string{"ASTER_RELAY_MODE": "disabled"}, ""},
		{map[string]string{"ASTER_RELAY_MODE": url}, url},
		{map[string]string{"ASTER_RELAY_MODE": "https://relay.example.test"}, "https://relay.example.test"},
		{map[string]string{"ASTER_RELAY_MODE": url, "ASTER_CLEAR_RELAY_TRANSPORTS": "1"}, ""},
		{map[string]string{"ASTER_RELAY_MODE": url, "ASTER_CLEAR_IP_TRANSPORTS": "1"}, url},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		c, err := config.Load()
		if err != nil {
			t.Fatalf("%v: %v", tc.env, err)
		}
		if got := c.HomeRelay(); got != tc.home {
			t.Errorf("%v: HomeRelay() = %q, want %q", tc.env, got, tc.home)
		}
		if srv, err := c.NewServer(); err != nil {
			t.Errorf("%v: NewServer: %v", tc.env, err)
		} else {
			srv.Close()
		}
		if _, err := c.ClientOptions(); err != nil {
			t.Errorf("%v: ClientOptions: %v", tc.env, err)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}

	for _, bad := range []string{"relay.example:3340", "http://relay.example", "https://relay.example#sha256=12", "auto"} {
		t.Setenv("ASTER_RELAY_MODE", bad)
		_, err := config.Load()
		checkConfigErr(t, err, nil, "network.relay_mode", "ASTER_RELAY_MODE", "relay URL")
	}

	// No transport left.
	t.Setenv("ASTER_RELAY_MODE", "disabled")
	t.Setenv("ASTER_CLEAR_IP_TRANSPORTS", "true")
	_, err := config.Load()
	checkConfigErr(t, err, nil, "network.clear_ip_transports", "ASTER_CLEAR_IP_TRANSPORTS", "no transport")
	t.Setenv("ASTER_RELAY_MODE", "")
	t.Setenv("ASTER_CLEAR_RELAY_TRANSPORTS", "1")
	_, err = config.Load()
	checkConfigErr(t, err, nil, "network.clear_ip_transports", "ASTER_CLEAR_IP_TRANSPORTS", "no transport")

	// A client without IP transports dials relays only; a server needs a
	// home relay for that.
	t.Setenv("ASTER_CLEAR_RELAY_TRANSPORTS", "")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ClientOptions(); err != nil {
		t.Errorf("client without IP transports: %v", err)
	}
	_, err = c.NewServer()
	checkConfigErr(t, err, nil, "network.clear_ip_transports", "ASTER_CLEAR_IP_TRANSPORTS", "needs a home relay")
}

func TestConfigUnknownKeysAndTypos(t *testing.T) {
	isolate(t)
	path := writeFile(t, t.TempDir(), "aster.toml", "[network]\nbind_adr = \"0.0.0.0:1\"\n[tls]\ncert = \"x\"\n")
	_, err := config.LoadFileStrict(path)
	if err == nil ||
		!strings.Contains(err.Error(), "network.bind_adr") || !strings.Contains(err.Error(), "tls.cert") || !strings.Contains(err.Error(), path) {
		t.Errorf("unknown keys, strict: err = %v, want INVALID_ARGUMENT naming network.bind_adr, tls.cert and the file", err)
	}
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatalf("unknown keys, lenient: %v", err)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "network.bind_adr") || !strings.Contains(w, "tls.cert") {
		t.Errorf("unknown keys, lenient: warnings %q, want both keys named", w)
	}
	if cfg.Source("network.bind_addr") != "default" {
		t.Errorf("an unknown key changed bind_addr's source to %q", cfg.Source("network.bind_addr"))
	}
	path = writeFile(t, t.TempDir(), "aster.toml", "[network\n")
	if _, err := config.LoadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("malformed TOML: err = %v, want an error naming the file", err)
	}
	if _, err := config.LoadFile(filepath.Join(t.TempDir(), "none.toml")); err == nil {
		t.Error("missing file: no error")
	}

	t.Setenv("ASTER_BIND_ADR", "0.0.0.0:1")
	t.Setenv("ASTER_UNRELATED_THING", "x")
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	w := c.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "ASTER_BIND_ADR") || !strings.Contains(w[0], "ASTER_BIND_ADDR") {
		t.Errorf("warnings = %q, want one naming ASTER_BIND_ADR and ASTER_BIND_ADDR", w)
	}
}

func TestConfigIdentityFileDefault(t *testing.T) {
	dir := isolate(t)
	c, err := config.Load()
	if err != nil || c.IdentityFile != "" {
		t.Fatalf("no .aster-identity: IdentityFile = %q, %v; want empty", c.IdentityFile, err)
	}
	writeFile(t, dir, ".aster-identity", "[node]\n")
	c, err = config.Load()
	if err != nil || c.IdentityFile != config.DefaultIdentityFile || c.Source("identity.identity_file") != "default" {
		t.Fatalf("with .aster-identity: IdentityFile = %q (%s), %v", c.IdentityFile, c.Source("identity.identity_file"), err)
	}
}

// TestConfigPrint checks the text and JSON forms against the loaded values:
// provenance, masking and the unset markers.
func TestConfigPrint(t *testing.T) {
	dir := isolate(t)
	key := testutil.Key(t, 3)
	keyB64 := base64.StdEncoding.EncodeToString(key.Seed())
	pub, _, _ := ed25519.GenerateKey(nil)
	cred := writeFile(t, dir, "consumer.token", "{}")
	path := writeFile(t, dir, "aster.toml", fmt.Sprintf("[trust]\nroot_pubkey = %q\nenrollment_credential_file = %q\n[health]\nhealth_port = 9191\n",
		hex.EncodeToString(pub), cred))
	t.Setenv("ASTER_SECRET_KEY", keyB64)
	t.Setenv("ASTER_ALLOW_ALL_CONSUMERS", "true")
	c, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.Print(&buf, false); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	seedHex := hex.EncodeToString(key.Seed())
	for _, l := range []struct{ name, value, source string }{
		{"secret_key", "****..." + seedHex[len(seedHex)-8:], "ASTER_SECRET_KEY"},
		{"root_pubkey", hex.EncodeToString(pub), path},
		{"enrollment_credential_file", "****..." + cred[len(cred)-8:], path},
		{"allow_all_consumers", "true", "ASTER_ALLOW_ALL_CONSUMERS"},
		{"allow_all_producers", "true", "default"},
		{"health_port", "9191", path},
		{"bind_addr", "<any>", "default"},
		{"relay_mode", "<default>", "default"},
		{"path", "<in-memory>", "default"},
		{"endpoint_addr", "<not set>", "default"},
	} {
		if !hasPrintLine(text, l.name, l.value, l.source) {
			t.Errorf("print output lacks %q : %q (%s):\n%s", l.name, l.value, l.source, text)
		}
	}
	for _, secret := range []string{keyB64, seedHex, cred} {
		if strings.Contains(text, secret) {
			t.Errorf("print output contains the secret %q:\n%s", secret, text)
		}
	}
	// Sections in the seed's order, then the ones the seed adds elsewhere.
	var sections []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "[") {
			sections = append(sections, line)
		}
	}
	if want := []string{"[trust]", "[connect]", "[network]", "[storage]", "[health]", "[identity]", "[logging]", "[discovery]"}; !reflect.DeepEqual(sections, want) {
		t.Errorf("sections = %v, want %v", sections, want)
	}

	// JSON: same values and sources; every seed field present.
	m := printMap(t, &c)
	for _, f := range seedFields {
		if _, ok := m[f.key]; !ok {
			t.Errorf("JSON lacks %s", f.key)
		}
	}
	if v := m["network.secret_key"]; v.Value != "****..."+seedHex[len(seedHex)-8:] || v.Source != "ASTER_SECRET_KEY" {
		t.Errorf("JSON secret_key = %+v", v)
	}
	if v := m["health.health_port"]; v.Value != float64(9191) || v.Source != path {
		t.Errorf("JSON health_port = %+v", v)
	}
	if v := m["network.bind_addr"]; v.Value != nil || v.Source != "default" {
		t.Errorf("JSON bind_addr = %+v, want null from default", v)
	}
	buf.Reset()
	c.Print(&buf, true)
	if strings.Contains(buf.String(), keyB64) || strings.Contains(buf.String(), seedHex) {
		t.Error("JSON output contains the secret key")
	}
}

// TestConfigLiteral checks that a literal Config works with the defaults
// its zero fields stand for.
func TestConfigLiteral(t *testing.T) {
	key := testutil.Key(t, 4)
	c := config.Config{SecretKey: key, AllowAllConsumers: true, HealthPort: 8081, LogLevel: "error"}
	if got := c.HealthAddr(); got != "127.0.0.1:8081" {
		t.Errorf("HealthAddr = %q", got)
	}
	m := printMap(t, &c)
	if v := m["trust.allow_all_consumers"]; v.Value != true || v.Source != "Config" {
		t.Errorf("allow_all_consumers = %+v, want true from Config", v)
	}
	if v := m["network.hook_timeout_ms"]; v.Value != float64(5000) {
		t.Errorf("hook_timeout_ms = %+v, want the default 5000", v)
	}
	if v := m["health.health_host"]; v.Value != "127.0.0.1" || v.Source != "default" {
		t.Errorf("health_host = %+v, want 127.0.0.1 default", v)
	}
	srv := must(c.NewServer())
	defer srv.Close()
	if srv.ID() != trust.IDOf(key) {
		t.Errorf("server id %s, want the configured key's %s", srv.ID(), trust.IDOf(key))
	}
	copts := must(c.ClientOptions())
	if len(copts) != 1 {
		t.Errorf("ClientOptions = %d options, want WithSecretKey", len(copts))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
