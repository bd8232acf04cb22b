package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildConfigCLI builds the aster command into a temporary directory.
func buildConfigCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aster")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runConfigCLI runs the built binary in dir with only the given environment
// (plus HOME) and returns stdout, stderr and the exit status.
func runConfigCLI(t *testing.T, bin, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"HOME=" + dir}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// configPrintLine finds "name<spaces> : value (source)" in the output of
// "aster config print".
func configPrintLine(out, name string) (value, source string, ok bool) {
	for line := range strings.SplitSeq(out, "\n") {
		k, rest, found := strings.Cut(line, " : ")
		if !found || strings.TrimRight(k, " ") != name {
			continue
		}
		i := strings.LastIndex(rest, " (")
		if i < 0 || !strings.HasSuffix(rest, ")") {
			return "", "", false
		}
		return rest[:i], rest[i+2 : len(rest)-1], true
	}
	return "", "", false
}

func TestConfigPrintCLI(t *testing.T) {
	bin := buildConfigCLI(t)
	dir := t.TempDir()
	seed := bytes.Repeat([]byte{7}, 32)
	seed[31] = 0xab
	keyB64 := base64.StdEncoding.EncodeToString(seed)
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)).Public().(ed25519.PublicKey)
	if err := os.MkdirAll(filepath.Join(dir, ".aster"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".aster", "root_pub.key"), []byte(hex.EncodeToString(pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	toml := filepath.Join(dir, "aster.toml")
	if err := os.WriteFile(toml, []byte(`
[trust]
root_pubkey_file = "~/.aster/root_pub.key"
allow_all_consumers = false
[network]
bind_addr = "0.0.0.0:9000"
relay_mode = "disabled"
[health]
health_port = 8088
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ASTER_SECRET_KEY=" + keyB64, "ASTER_ALLOW_ALL_CONSUMERS=on"}
	out, stderr, code := runConfigCLI(t, bin, dir, env, "config", "print", "--file", toml)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	seedHex := hex.EncodeToString(seed)
	for _, want := range []struct{ name, value, source string }{
		{"root_pubkey_file", "~/.aster/root_pub.key", toml},
		{"allow_all_consumers", "true", "ASTER_ALLOW_ALL_CONSUMERS"},
		{"allow_all_producers", "true", "default"},
		{"secret_key", "****..." + seedHex[56:], "ASTER_SECRET_KEY"},
		{"bind_addr", "0.0.0.0:9000", toml},
		{"relay_mode", "disabled", toml},
		{"health_port", "8088", toml},
		{"health_host", "127.0.0.1", "default"},
		{"path", "<in-memory>", "default"},
		{"root_pubkey", "<not set>", "default"},
	} {
		v, src, ok := configPrintLine(out, want.name)
		if !ok || v != want.value || src != want.source {
			t.Errorf("%s: got %q (%s) found=%v, want %q (%s)\n%s", want.name, v, src, ok, want.value, want.source, out)
		}
	}
	if strings.Contains(out, keyB64) || strings.Contains(out, seedHex) {
		t.Errorf("output shows the secret key:\n%s", out)
	}

	// The global --config flag names the file too.
	out, _, code = runConfigCLI(t, bin, dir, env, "--config", toml, "config", "print")
	if v, src, _ := configPrintLine(out, "bind_addr"); code != 0 || v != "0.0.0.0:9000" || src != toml {
		t.Errorf("bind_addr with --config = %q (%s), exit %d", v, src, code)
	}

	// The env var beats the file.
	out, _, code = runConfigCLI(t, bin, dir, append(env, "ASTER_BIND_ADDR=127.0.0.1:7777"), "config", "print", "--file", toml)
	if v, src, _ := configPrintLine(out, "bind_addr"); code != 0 || v != "127.0.0.1:7777" || src != "ASTER_BIND_ADDR" {
		t.Errorf("bind_addr with env override = %q (%s), exit %d", v, src, code)
	}

	// JSON.
	out, stderr, code = runConfigCLI(t, bin, dir, env, "config", "print", "--file", toml, "--json")
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, stderr)
	}
	var doc map[string]map[string]struct {
		Value  any    `json:"value"`
		Source string `json:"source"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if v := doc["network"]["secret_key"]; v.Value != "****..."+seedHex[56:] || v.Source != "ASTER_SECRET_KEY" {
		t.Errorf("JSON secret_key = %+v", v)
	}
	if v := doc["trust"]["allow_all_consumers"]; v.Value != true || v.Source != "ASTER_ALLOW_ALL_CONSUMERS" {
		t.Errorf("JSON allow_all_consumers = %+v", v)
	}

	// A bad value: exit 2, naming variable, value and field.
	_, stderr, code = runConfigCLI(t, bin, dir, []string{"ASTER_HOOK_TIMEOUT_MS=abc"}, "config", "print")
	if code != ExitUsage || !strings.Contains(stderr, `ASTER_HOOK_TIMEOUT_MS: "abc" is not an integer`) || !strings.Contains(stderr, "network.hook_timeout_ms") {
		t.Errorf("bad value: exit %d, stderr %q", code, stderr)
	}
	// An out-of-range value with --json-errors: exit 2, INVALID_ARGUMENT.
	_, stderr, code = runConfigCLI(t, bin, dir, []string{"ASTER_HOOK_TIMEOUT_MS=999999"}, "config", "print", "--json-errors")
	var je jsonError
	if err := json.Unmarshal([]byte(stderr), &je); err != nil || code != ExitUsage || je.Code != "INVALID_ARGUMENT" || !strings.Contains(je.Message, "network.hook_timeout_ms") {
		t.Errorf("hook_timeout_ms out of range: exit %d, stderr %q (%v)", code, stderr, err)
	}
	// Connection hooks are a supported setting now.
	out, stderr, code = runConfigCLI(t, bin, dir, []string{"ASTER_ENABLE_HOOKS=on"}, "config", "print")
	if v, src, _ := configPrintLine(out, "enable_hooks"); code != 0 || v != "true" || src != "ASTER_ENABLE_HOOKS" || strings.Contains(out, "not supported") {
		t.Errorf("enable_hooks: %q (%s), exit %d, stderr %q", v, src, code, stderr)
	}
	// Unknown key in the file.
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[network]\nbindaddr = \"x\"\n"), 0o600)
	_, stderr, code = runConfigCLI(t, bin, dir, nil, "config", "print", "--strict", "--file", bad)
	if code != ExitUsage || !strings.Contains(stderr, "network.bindaddr") {
		t.Errorf("unknown key with --strict: exit %d, stderr %q", code, stderr)
	}
	// Without --strict it is a warning.
	_, stderr, code = runConfigCLI(t, bin, dir, nil, "config", "print", "--file", bad)
	if code != 0 || !strings.Contains(stderr, "warning:") || !strings.Contains(stderr, "network.bindaddr") {
		t.Errorf("unknown key: exit %d, stderr %q; want a warning and exit 0", code, stderr)
	}
	// A misspelt variable is a warning, not an error.
	_, stderr, code = runConfigCLI(t, bin, dir, []string{"ASTER_HEALTH_PROT=1"}, "config", "print")
	if code != 0 || !strings.Contains(stderr, "ASTER_HEALTH_PROT") || !strings.Contains(stderr, "ASTER_HEALTH_PORT") {
		t.Errorf("typo: exit %d, stderr %q", code, stderr)
	}
	// The root private key file where the public key belongs: exit 2,
	// saying it is the private key.
	rootKey := filepath.Join(dir, "root.key")
	os.WriteFile(rootKey, []byte(`{"private_key": "`+strings.Repeat("ab", 32)+`", "public_key": "`+strings.Repeat("cd", 32)+`"}`), 0o600)
	_, stderr, code = runConfigCLI(t, bin, dir, []string{"ASTER_ROOT_PUBKEY_FILE=" + rootKey}, "config", "print")
	if code != ExitUsage || !strings.Contains(stderr, "private key") || !strings.Contains(stderr, "trust.root_pubkey_file") {
		t.Errorf("root private key as root_pubkey_file: exit %d, stderr %q", code, stderr)
	}
	// Usage errors.
	if _, _, code = runConfigCLI(t, bin, dir, nil, "config", "print", "extra"); code != ExitUsage {
		t.Errorf("extra argument: exit %d, want %d", code, ExitUsage)
	}
	if _, _, code = runConfigCLI(t, bin, dir, nil, "config"); code != ExitUsage {
		t.Errorf("no subcommand: exit %d, want %d", code, ExitUsage)
	}
}
