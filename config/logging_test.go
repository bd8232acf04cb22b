package config_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/internal/testutil"
)

// logSecrets logs the config's secrets in every way a careless line might
// and returns the output and the secret texts to grep for.
func logSecrets(t *testing.T, cfg config.Config) (string, []string) {
	var buf bytes.Buffer
	log := cfg.NewLogger(&buf)
	seed := cfg.SecretKey.Seed()
	b64 := base64.StdEncoding.EncodeToString(seed)
	hexSeed := hex.EncodeToString(seed)
	log.Info("loaded key "+b64, "n", 1)
	log.Info("config", "secret_key", b64, "other", "fine")
	log.Info("config", "key", cfg.SecretKey)
	log.Info("config", "seed_hex", hexSeed)
	log.Warn("enroll", "path", cfg.EnrollmentCredentialFile, "token", cfg.EnrollmentCredentialIID)
	log.Error("failed", "err", fmt.Errorf("reading %s: %w", cfg.EnrollmentCredentialFile, errors.New("boom")))
	log.Info("nested", slog.Group("network", slog.String("secret_key", b64)), "iid_value", cfg.EnrollmentCredentialIID)
	log.With("secret", b64).Info("with attrs")
	return buf.String(), []string{b64, hexSeed, cfg.EnrollmentCredentialIID, cfg.EnrollmentCredentialFile}
}

func TestLoggingMask(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			cfg := config.Default()
			cfg.LogFormat = format
			cfg.SecretKey = testutil.Key(t, 5)
			cfg.EnrollmentCredentialFile = filepath.Join(t.TempDir(), "consumer-credential.json")
			cfg.EnrollmentCredentialIID = "eyJhbGciOiJSUzI1NiJ9.iid-document.sig"
			if !cfg.LogMask {
				t.Fatal("DefaultConfig().LogMask is false; the seed's default is true")
			}
			out, secrets := logSecrets(t, cfg)
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("masked log output contains secret %q:\n%s", s, out)
				}
			}
			if !strings.Contains(out, "fine") || strings.Count(out, "****") < 8 {
				t.Errorf("log lines lost or not masked:\n%s", out)
			}
			if format == "json" {
				for line := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
					var m map[string]any
					if err := json.Unmarshal([]byte(line), &m); err != nil {
						t.Errorf("json format line %q: %v", line, err)
					}
				}
			}

			// Without masking the same lines do show the secrets: the check
			// above can fail.
			cfg.LogMask = false
			out, secrets = logSecrets(t, cfg)
			for _, s := range secrets {
				if !strings.Contains(out, s) {
					t.Errorf("unmasked output lacks %q", s)
				}
			}
		})
	}
}

func TestLoggingLevel(t *testing.T) {
	for _, tc := range []struct {
		level      string
		debug, err bool
	}{
		{"debug", true, true}, {"info", false, true}, {"warning", false, true}, {"WARN", false, true}, {"error", false, true}, {"", false, true},
	} {
		cfg := config.Config{LogLevel: tc.level}
		var buf bytes.Buffer
		log := cfg.NewLogger(&buf)
		log.Debug("dbg-line")
		log.Info("info-line")
		log.Error("err-line")
		out := buf.String()
		if strings.Contains(out, "dbg-line") != tc.debug || strings.Contains(out, "err-line") != tc.err {
			t.Errorf("level %q: output %q", tc.level, out)
		}
		wantInfo := tc.level == "debug" || tc.level == "info" || tc.level == ""
		if strings.Contains(out, "info-line") != wantInfo {
			t.Errorf("level %q: info line present = %v, want %v", tc.level, !wantInfo, wantInfo)
		}
	}
}
