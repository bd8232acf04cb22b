package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// LoadClient checks only client settings: server-only settings that Load
// refuses do not stop a client, client settings still do.
func TestLoadClientIgnoresServerSettings(t *testing.T) {
	isolate(t)
	t.Setenv("ASTER_ENABLE_MONITORING", "true") // no health port
	t.Setenv("ASTER_ENABLE_HOOKS", "1")
	if _, err := config.Load(); err == nil {
		t.Fatal("Load accepted monitoring without a health port and hooks")
	}
	cfg, err := config.LoadClient("", false)
	if err != nil {
		t.Fatalf("LoadClient: %v", err)
	}
	if _, err := cfg.ClientOptions(); err != nil {
		t.Fatalf("ClientOptions: %v", err)
	}
	t.Setenv("ASTER_PROXY_URL", "ftp://proxy:3128")
	var ce *config.Error
	if _, err := config.LoadClient("", false); !errors.As(err, &ce) || ce.Field != "network.proxy_url" {
		t.Fatalf("LoadClient with a bad proxy URL: %v, want an error naming network.proxy_url", err)
	}
}

// An .aster-identity found in the working directory that cannot be used
// is skipped with a warning; one named explicitly is an error.
func TestClientOptionsBrokenDefaultIdentity(t *testing.T) {
	dir := isolate(t)
	writeFile(t, dir, config.DefaultIdentityFile, "[node]\nsecret_key = 'not base64!'\n")
	cfg, err := config.LoadClient("", false)
	if err != nil {
		t.Fatalf("LoadClient: %v", err)
	}
	if _, err := cfg.ClientOptions(); err != nil {
		t.Fatalf("ClientOptions with a broken default identity: %v, want a warning", err)
	}
	if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "ignoring .aster-identity") {
		t.Fatalf("warnings %q lack the broken identity", w)
	}
	t.Setenv("ASTER_IDENTITY_FILE", config.DefaultIdentityFile)
	cfg, err = config.LoadClient("", false)
	if err != nil {
		t.Fatalf("LoadClient: %v", err)
	}
	var ce *config.Error
	if _, err := cfg.ClientOptions(); !errors.As(err, &ce) || ce.Field != "identity.identity_file" {
		t.Fatalf("ClientOptions with a broken named identity: %v, want an error naming identity.identity_file", err)
	}
}

// A client's credential file (or identity file) that holds a secret key
// and is readable by others is used, with a warning, as a server's is:
// the warning used to be dropped on the client side.
func TestClientOptionsWarnsOnReadableKeyFile(t *testing.T) {
	for _, env := range []string{"ASTER_ENROLLMENT_CREDENTIAL", "ASTER_IDENTITY_FILE"} {
		dir := isolate(t)
		key := trust.GenerateKey()
		cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "n", EndpointID: trust.IDOf(key),
			IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if err := enroll.Sign(trust.GenerateKey(), cred); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "node.cred")
		if err := identity.Save(path, &identity.Identity{Key: key, Peers: []*enroll.Credential{cred}}); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv(env, path)
		cfg, err := config.LoadClient("", false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cfg.ClientOptions(); err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(cfg.Warnings(), "\n"); !strings.Contains(w, "readable by others") {
			t.Errorf("%s: warnings %q do not mention the file's mode", env, w)
		}
	}
}
