package config_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// TestConfigHooks: enable_hooks and hook_timeout_ms load, print and
// validate like every field, and reach the server built from them.
func TestConfigHooks(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		isolate(t)
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.EnableHooks || cfg.HookTimeoutMS != 5000 || cfg.HookTimeout() != 5*time.Second || cfg.HooksEnabled() {
			t.Errorf("defaults: enable_hooks %v, hook_timeout_ms %d (%v), enabled %v", cfg.EnableHooks, cfg.HookTimeoutMS, cfg.HookTimeout(), cfg.HooksEnabled())
		}
		if (&config.Config{}).HookTimeout() != 5*time.Second {
			t.Error("a literal Config's zero timeout is not the default")
		}
	})

	t.Run("print", func(t *testing.T) {
		isolate(t)
		t.Setenv("ASTER_ENABLE_HOOKS", "yes")
		t.Setenv("ASTER_HOOK_TIMEOUT_MS", "250")
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.EnableHooks || cfg.HookTimeout() != 250*time.Millisecond || !cfg.HooksEnabled() {
			t.Errorf("loaded enable_hooks %v, timeout %v", cfg.EnableHooks, cfg.HookTimeout())
		}
		var b bytes.Buffer
		if err := cfg.Print(&b, false); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, want := range []string{"enable_hooks", "true (ASTER_ENABLE_HOOKS)", "hook_timeout_ms", "250 (ASTER_HOOK_TIMEOUT_MS)"} {
			if !strings.Contains(out, want) {
				t.Errorf("config print lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "not supported") {
			t.Errorf("config print says not supported:\n%s", out)
		}
	})

	t.Run("bad values", func(t *testing.T) {
		for _, v := range []string{"0", "60001", "999999999"} {
			isolate(t)
			t.Setenv("ASTER_HOOK_TIMEOUT_MS", v)
			_, err := config.Load()
			checkConfigErr(t, err, nil, "network.hook_timeout_ms", "ASTER_HOOK_TIMEOUT_MS", "must be 1 to 60000 milliseconds")
			if !strings.Contains(err.Error(), `"`+v+`"`) {
				t.Errorf("%v does not show the value %s", err, v)
			}
		}
		dir := isolate(t)
		path := writeFile(t, dir, "aster.toml", "[network]\nhook_timeout_ms = 0\n")
		_, err := config.LoadFile(path)
		checkConfigErr(t, err, nil, "network.hook_timeout_ms", path, "must be 1 to 60000")
		lit := config.Config{HookTimeoutMS: 120000}
		checkConfigErr(t, lit.Validate(), nil, "network.hook_timeout_ms", "Config", "must be 1 to 60000")
		// A server setting: a client does not check it.
		isolate(t)
		t.Setenv("ASTER_HOOK_TIMEOUT_MS", "0")
		if _, err := config.LoadClient("", false); err != nil {
			t.Errorf("LoadClient with a bad hook_timeout_ms: %v", err)
		}
		if _, err := lit.ClientOptions(); err != nil {
			t.Errorf("ClientOptions with a bad hook_timeout_ms: %v", err)
		}
	})

	t.Run("enabled without a gate", func(t *testing.T) {
		isolate(t)
		t.Setenv("ASTER_LOG_LEVEL", "error")
		t.Setenv("ASTER_ENABLE_HOOKS", "true")
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		_, err = cfg.NewServer()
		checkConfigErr(t, err, nil, "network.enable_hooks", "ASTER_ENABLE_HOOKS", "aster.WithConnGate")
		lit := config.Config{EnableHooks: true, LogLevel: "error"}
		_, err = lit.NewServer()
		checkConfigErr(t, err, nil, "network.enable_hooks", "Config", "would not be gated")
	})

	t.Run("enabled by admission", func(t *testing.T) {
		isolate(t)
		root := trust.GenerateKey()
		t.Setenv("ASTER_LOG_LEVEL", "error")
		t.Setenv("ASTER_ENABLE_HOOKS", "true")
		t.Setenv("ASTER_ROOT_PUBKEY", trust.IDOf(root).String())
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.HooksEnabled() {
			t.Error("admission does not enable hooks")
		}
		t.Setenv("ASTER_ENABLE_HOOKS", "false")
		if cfg, _ = config.Load(); !cfg.HooksEnabled() {
			t.Error("admission does not enable hooks when enable_hooks is false")
		}
		t.Setenv("ASTER_ENABLE_HOOKS", "true")
		cfg, _ = config.Load()
		srv, err := cfg.NewServer()
		if err != nil {
			t.Fatalf("enable_hooks with admission and no gate: %v", err)
		}
		srv.Close()
	})

	// The gate given in code runs with hook_timeout_ms, and decides.
	for _, enable := range []string{"true", "false"} {
		t.Run("gate with enable_hooks="+enable, func(t *testing.T) {
			isolate(t)
			t.Setenv("ASTER_LOG_LEVEL", "error")
			t.Setenv("ASTER_ENABLE_HOOKS", enable)
			t.Setenv("ASTER_HOOK_TIMEOUT_MS", "200")
			cfg, err := config.Load()
			if err != nil {
				t.Fatal(err)
			}
			allowed := trust.GenerateKey()
			stalled := trust.GenerateKey()
			gate := func(ctx context.Context, info aster.ConnInfo) error {
				switch info.ID {
				case trust.IDOf(allowed):
					return nil
				case trust.IDOf(stalled):
					<-ctx.Done() // until hook_timeout_ms
					return ctx.Err()
				}
				return status.New(status.PermissionDenied, "not on the list")
			}
			srv, err := cfg.NewServer(aster.WithConnGate(gate))
			if err != nil {
				t.Fatal(err)
			}
			srv.MustRegister(opsService(nil, nil))
			addr := listen(t, srv, "127.0.0.1:0")
			call := func(k trust.SecretKey) error {
				c, err := aster.DialAddress(ctxT(t), addr, aster.WithSecretKey(k), aster.WithLogger(quiet))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = aster.CallUnary[Msg](ctxT(t), c, "Ops.open", &Msg{Text: "hi"})
				return err
			}
			if err := call(allowed); err != nil {
				t.Fatalf("allowed peer: %v", err)
			}
			wantCode(t, call(trust.GenerateKey()), status.PermissionDenied)
			start := time.Now()
			err = call(stalled)
			wantCode(t, err, status.Unavailable)
			if d := time.Since(start); d < 200*time.Millisecond || d > 4*time.Second {
				t.Errorf("a stalled gate was cut after %v, want hook_timeout_ms 200 ms", d)
			}
			if m := srv.Metrics(); m.ConnsGateRefused != 2 {
				t.Errorf("ConnsGateRefused = %d, want 2", m.ConnsGateRefused)
			}
			if errors.Is(err, config.ErrNotSupported) {
				t.Error("hooks reported as not supported")
			}
		})
	}
}
