package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aster-go/aster/config"
)

// FuzzLoadFile feeds arbitrary bytes to the TOML loader, as a hand-edited
// or corrupted aster.toml would: loading either fails with an error that
// says it is the configuration's, or yields a Config that validates, prints
// (text and JSON) and maps to client options without a panic. Loading has
// no side effects, so nothing but the file is touched.
func FuzzLoadFile(f *testing.F) {
	for _, name := range []string{"aster.toml"} {
		if b, err := os.ReadFile(filepath.Join("testdata", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("[trust]\nallow_all_consumers = false\n"))
	f.Add([]byte("[network]\nbind_addr = \"127.0.0.1:0\"\nhook_timeout_ms = 5000\nsecret_key = \"AAAA\"\n"))
	f.Add([]byte("[logging]\nformat = \"json\"\nlevel = \"debug\"\nmask = \"yes\"\n"))
	f.Add([]byte("[health]\nhealth_port = 70000\n"))
	f.Add([]byte("[trust]\nroot_pubkey = \"zz\"\n[[peers]]\nx = 1\n"))
	f.Add([]byte("a = [1, {b = 2}]\n[trust.extra]\nq = 'x'\n"))
	f.Add([]byte("[discovery]\nbackend = \"etcd\"\nendpoints = \"127.0.0.1:2379,http://h:1\"\nprefix = \"/fleet/\"\nttl = \"5s\"\n"))
	f.Add([]byte("[discovery]\nbackend = \"dns\"\nendpoints = \"[::1]:53\"\ndns_min_interval = \"500ms\"\ndns_max_interval = 30\npassword = \"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		path := filepath.Join(t.TempDir(), "aster.toml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, load := range []func(string) (config.Config, error){config.LoadFile, config.LoadFileStrict} {
			cfg, err := load(path)
			if err != nil {
				if !strings.Contains(err.Error(), "config") && !strings.Contains(err.Error(), "aster.toml") {
					var ce *config.Error
					if !errors.As(err, &ce) {
						t.Fatalf("error does not say it is the configuration's: %v", err)
					}
				}
				continue
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("a loaded config does not validate: %v", err)
			}
			var out bytes.Buffer
			if err := cfg.Print(&out, false); err != nil {
				t.Fatalf("print: %v", err)
			}
			if err := cfg.Print(&out, true); err != nil {
				t.Fatalf("print json: %v", err)
			}
			_, _ = cfg.ClientOptions()
			_, _ = cfg.TrustPolicy()
		}
	})
}
