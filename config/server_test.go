package config_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// freePorts returns a TCP port and a UDP address on loopback that were
// free a moment ago.
func freePorts(t *testing.T) (int, string) {
	t.Helper()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close() // free again for the health server; no other user expected on loopback
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bind := udp.LocalAddr().String()
	udp.Close()
	return port, bind
}

// TestNewServer checks that a loaded Config reaches a running server: its
// key is the server's identity, bind_addr is where ListenAndServe("")
// listens, the health server runs on health_host:health_port with the
// metrics endpoints, /readyz turns 503 as soon as Shutdown begins, and
// Shutdown stops the health server.
func TestNewServer(t *testing.T) {
	isolate(t)
	key := testutil.Key(t, 6)
	healthPort, bind := freePorts(t)
	t.Setenv("ASTER_SECRET_KEY", base64.StdEncoding.EncodeToString(key.Seed()))
	t.Setenv("ASTER_BIND_ADDR", bind)
	t.Setenv("ASTER_HEALTH_PORT", fmt.Sprint(healthPort))
	t.Setenv("ASTER_ENABLE_MONITORING", "true")
	t.Setenv("ASTER_LOG_LEVEL", "error")
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := cfg.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}, 1), make(chan struct{})
	srv.MustRegister(opsService(started, release))
	if srv.ID() != trust.IDOf(key) {
		t.Fatalf("server id %s, want the configured key's", srv.ID())
	}
	if srv.HealthAddr() != nil {
		t.Error("health server runs before ListenAndServe")
	}
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }()
	var addr aster.Address
	select {
	case addr = <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	if len(addr.Direct) != 1 || addr.Direct[0].String() != bind {
		t.Errorf("listening on %v, want bind_addr %s", addr.Direct, bind)
	}
	want := fmt.Sprintf("127.0.0.1:%d", healthPort)
	if got := srv.HealthAddr(); got == nil || got.String() != want {
		t.Fatalf("health server on %v, want %s", got, want)
	}
	base := "http://" + want
	if code, body, err := httpGet(t, base+"/readyz"); err != nil || code != 200 {
		t.Errorf("/readyz while serving = %d %q %v", code, body, err)
	}
	for _, path := range []string{"/metrics", "/metrics/prometheus"} {
		if code, _, err := httpGet(t, base+path); err != nil || code != 200 {
			t.Errorf("%s with enable_monitoring = %d %v", path, code, err)
		}
	}

	c, err := aster.DialAddress(ctxT(t), addr, must(cfg.ClientOptions())...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	callDone := make(chan error, 1)
	go func() {
		_, err := aster.CallUnary[Msg](context.Background(), c, "Ops.wait", &Msg{})
		callDone <- err
	}()
	<-started
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- srv.Shutdown(context.Background()) }()
	// ListenAndServe returns once Shutdown has closed the listener, before
	// the call in flight ends: the health server must say "not ready" while
	// the call drains.
	if err := <-errc; !errors.Is(err, aster.ErrServerClosed) {
		t.Errorf("ListenAndServe = %v", err)
	}
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned (%v) with a call in flight", err)
	default:
	}
	if code, body, err := httpGet(t, base+"/readyz"); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while Shutdown drains = %d %q %v, want 503", code, body, err)
	}
	if code, _, err := httpGet(t, base+"/healthz"); err != nil || code != 200 {
		t.Errorf("/healthz while Shutdown drains = %d %v, want 200", code, err)
	}
	close(release)
	if err := <-callDone; err != nil {
		t.Errorf("call in flight during Shutdown: %v", err)
	}
	if err := <-shutdownDone; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, _, err := httpGet(t, base+"/healthz"); err == nil {
		t.Error("health server still answers after Shutdown")
	}
	if got := srv.HealthAddr(); got == nil || got.String() != want {
		t.Errorf("HealthAddr after Shutdown = %v, want the address it had (%s)", got, want)
	}
	// A server shut down does not start its health server again.
	if err := srv.ListenAndServe("127.0.0.1:0", nil); !errors.Is(err, aster.ErrServerClosed) {
		t.Errorf("ListenAndServe after Shutdown = %v", err)
	}

	// An invalid Config: NewServer fails with the validation error before
	// anything is created.
	_, err = (&config.Config{HookTimeoutMS: -1}).NewServer()
	checkConfigErr(t, err, nil, "network.hook_timeout_ms", "Config", "must not be negative")
}

// TestNewServerHealthListenError: a health port in use makes
// ListenAndServe fail rather than run without health checks.
func TestNewServerHealthListenError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := config.Config{HealthPort: busy.Addr().(*net.TCPAddr).Port, AllowAllProducers: true, LogLevel: "error"}
	srv, err := cfg.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.ListenAndServe("127.0.0.1:0", nil); err == nil || errors.Is(err, aster.ErrServerClosed) || !strings.Contains(err.Error(), "health") {
		t.Errorf("ListenAndServe with the health port taken = %v, want a health listen error", err)
	}
}

// TestNewServerNoSideEffectsUntilBuilt checks that loading, validating,
// TrustPolicy and ClientOptions create nothing, and that NewServer creates
// storage.path (0700); a path that cannot be a directory is an error
// naming the field.
func TestConfigStoragePath(t *testing.T) {
	isolate(t)
	dir := filepath.Join(t.TempDir(), "state", "aster")
	t.Setenv("ASTER_STORAGE_PATH", dir)
	t.Setenv("ASTER_LOG_LEVEL", "error")
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	p, err := cfg.TrustPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, config.OTTNonceFile); p.NonceFile != want {
		t.Errorf("NonceFile = %q, want %q", p.NonceFile, want)
	}
	if _, err := cfg.ClientOptions(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("storage dir exists before NewServer: %v", err)
	}
	srv, err := cfg.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("storage dir after NewServer: %v %v", fi, err)
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	cfg.StoragePath = file
	_, err = cfg.NewServer()
	checkConfigErr(t, err, nil, "storage.path", "ASTER_STORAGE_PATH", "cannot be created")
}

// TestClientOptions checks that ClientOptions give the client the
// configured key, and that an invalid Config fails.
func TestClientOptions(t *testing.T) {
	isolate(t)
	key := trust.GenerateKey()
	cfg := config.Default()
	cfg.SecretKey = key
	srv := aster.NewServer(aster.WithLogger(quiet))
	ln, err := quic.Listen("127.0.0.1:0", trust.GenerateKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	peers := make(chan trust.EndpointID, 1)
	seePeer := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, st handler.Stream) error {
			peers <- st.Peer().ID
			return next.ServeRPC(ctx, st)
		})
	}
	srv.MustRegister(handler.NewService("Who", 1).Handle("ami", handler.Unary(func(ctx context.Context, _ *struct{}) (*struct{}, error) {
		return &struct{}{}, nil
	}), handler.Use(seePeer)))
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-serveErr }()
	c, err := aster.DialAddress(t.Context(), ln.Addr(), must(cfg.ClientOptions())...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := aster.CallUnary[struct{}](t.Context(), c, "Who.ami", &struct{}{}); err != nil {
		t.Fatal(err)
	}
	if got := <-peers; got != trust.IDOf(key) {
		t.Errorf("server saw client %s, want the configured key's %s", got.Short(), trust.IDOf(key).Short())
	}
	bad := config.Config{ProxyURL: "ftp://proxy:3128"}
	var ce *config.Error
	if _, err := bad.ClientOptions(); !errors.As(err, &ce) || ce.Field != "network.proxy_url" {
		t.Errorf("invalid config: %v, want the validation error", err)
	}
}

// TestAddress checks connect.endpoint_addr as a dial address.
func TestAddress(t *testing.T) {
	isolate(t)
	c := config.Default()
	_, err := c.Address()
	checkConfigErr(t, err, nil, "connect.endpoint_addr", "default", "is not set")
	want := aster.Address{ID: testutil.ID(t, 2)}
	t.Setenv("ASTER_ENDPOINT_ADDR", want.String())
	c, err = config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Address(); err != nil || got.ID != want.ID {
		t.Errorf("Address = %v, %v; want %v", got, err, want)
	}
}

// TestAdmissionFailClosed: a setting that asks for admission without a
// root key to verify credentials with makes NewServer fail naming the
// setting, instead of running in dev mode and admitting everyone (an
// explicit allow_all_consumers=false used to become true). A misspelt
// trust setting is still warned about and does not open the gate either.
func TestAdmissionFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		toml   string
		field  string
		source string // "" means the TOML file
		reason string
		warn   string
	}{
		{name: "consumers false", env: map[string]string{"ASTER_ALLOW_ALL_CONSUMERS": "false"},
			field: "trust.allow_all_consumers", source: "ASTER_ALLOW_ALL_CONSUMERS", reason: "asks for admission"},
		{name: "consumers false, root key file misspelt",
			env:   map[string]string{"ASTER_ALLOW_ALL_CONSUMERS": "false", "ASTER_ROOT_PUBKEY_FLE": "/etc/aster/root.pub"},
			field: "trust.allow_all_consumers", source: "ASTER_ALLOW_ALL_CONSUMERS", reason: "ASTER_ROOT_PUBKEY_FLE",
			warn: "unknown variable ASTER_ROOT_PUBKEY_FLE ignored; did you mean ASTER_ROOT_PUBKEY_FILE?"},
		{name: "producers false", env: map[string]string{"ASTER_ALLOW_ALL_PRODUCERS": "0"},
			field: "trust.allow_all_producers", source: "ASTER_ALLOW_ALL_PRODUCERS", reason: "asks for admission"},
		{name: "consumers false in the file", toml: "[trust]\nallow_all_consumers = false\n",
			field: "trust.allow_all_consumers", reason: "no root key"},
		{name: "root key file misspelt", env: map[string]string{"ASTER_ROOT_PUBKEY_FLE": "/etc/aster/root.pub"},
			field: "trust.root_pubkey_file", source: "ASTER_ROOT_PUBKEY_FLE", reason: "did you mean ASTER_ROOT_PUBKEY_FILE?",
			warn: "did you mean ASTER_ROOT_PUBKEY_FILE?"},
		{name: "consumers misspelt", env: map[string]string{"ASTER_ALLOW_ALL_CONSUMER": "false"},
			field: "trust.allow_all_consumers", source: "ASTER_ALLOW_ALL_CONSUMER", reason: "must not leave admission off"},
		{name: "root key misspelt in the file", toml: "[trust]\nroot_pubkey_fil = \"/etc/aster/root.pub\"\n",
			field: "trust.root_pubkey_file", reason: "did you mean trust.root_pubkey_file?", warn: "unknown key trust.root_pubkey_fil ignored"},
		// A root key that went missing on the way: an unset shell
		// variable expanded to "", a blank value, an empty file key.
		{name: "root key variable empty", env: map[string]string{"ASTER_ROOT_PUBKEY": ""},
			field: "trust.root_pubkey", source: "ASTER_ROOT_PUBKEY", reason: "is set but empty"},
		{name: "root key file variable blank", env: map[string]string{"ASTER_ROOT_PUBKEY_FILE": "  "},
			field: "trust.root_pubkey_file", source: "ASTER_ROOT_PUBKEY_FILE", reason: "is set but empty"},
		{name: "root key file empty in the file", toml: "[trust]\nroot_pubkey_file = \"\"\n",
			field: "trust.root_pubkey_file", reason: "is set but empty"},
		// A trust setting written another way than the reference's.
		{name: "root key outside [trust]", toml: "root_pubkey_file = \"/etc/aster/root.pub\"\n",
			field: "root_pubkey_file", reason: "a trust setting that is not understood", warn: "unknown key root_pubkey_file ignored"},
		{name: "root key in [network]", toml: "[network]\nroot_pubkey = \"00\"\n",
			field: "network.root_pubkey", reason: "a trust setting that is not understood", warn: "unknown key network.root_pubkey ignored"},
		{name: "root key variable named after the key", env: map[string]string{"ASTER_TRUST_ROOT_PUBKEY": "00"},
			field: "ASTER_TRUST_ROOT_PUBKEY", source: "ASTER_TRUST_ROOT_PUBKEY", reason: "a trust setting that is not understood",
			warn: "unknown variable ASTER_TRUST_ROOT_PUBKEY ignored"},
		{name: "root key variable in other words", env: map[string]string{"ASTER_ROOT_PUBLIC_KEY": "00"},
			field: "ASTER_ROOT_PUBLIC_KEY", source: "ASTER_ROOT_PUBLIC_KEY", reason: "a trust setting that is not understood",
			warn: "unknown variable ASTER_ROOT_PUBLIC_KEY ignored"},
		{name: "allow-all variable in other words", env: map[string]string{"ASTER_TRUST_ALLOW_ALL_CONSUMERS": "false"},
			field: "ASTER_TRUST_ALLOW_ALL_CONSUMERS", source: "ASTER_TRUST_ALLOW_ALL_CONSUMERS", reason: "a trust setting that is not understood"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := isolate(t)
			t.Setenv("ASTER_LOG_LEVEL", "error")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var cfg config.Config
			var err error
			source := tc.source
			if tc.toml != "" {
				path := writeFile(t, dir, "aster.toml", tc.toml)
				cfg, err = config.LoadFile(path)
				if source == "" {
					source = path
				}
			} else {
				cfg, err = config.Load()
			}
			if err != nil {
				t.Fatalf("load: %v (the check belongs to the server, a client may share the settings)", err)
			}
			if tc.warn != "" && !strings.Contains(strings.Join(cfg.Warnings(), "\n"), tc.warn) {
				t.Errorf("warnings %q lack %q", cfg.Warnings(), tc.warn)
			}
			_, err = cfg.TrustPolicy()
			checkConfigErr(t, err, nil, tc.field, source, tc.reason)
			srv, err := cfg.NewServer()
			if err == nil {
				srv.Close()
			}
			checkConfigErr(t, err, nil, tc.field, source, tc.reason)
		})
	}

	// Nothing asks for admission: dev mode, and a client without a
	// credential is admitted; with explicit true, too.
	for _, env := range []map[string]string{{}, {"ASTER_ALLOW_ALL_CONSUMERS": "true"}, {"ASTER_BIND_ADR": "x"}, {"ASTER_CACHE_DIR": "/tmp/x"}} {
		isolate(t)
		t.Setenv("ASTER_LOG_LEVEL", "error")
		for k, v := range env {
			t.Setenv(k, v)
		}
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		srv, err := cfg.NewServer()
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		srv.MustRegister(opsService(nil, nil))
		addr := listen(t, srv, "127.0.0.1:0")
		c, err := aster.DialAddress(ctxT(t), addr)
		if err != nil {
			t.Fatalf("%v: dev mode refused a client: %v", env, err)
		}
		_, err = aster.CallUnary[Msg](ctxT(t), c, "Ops.open", &Msg{})
		c.Close()
		if err != nil {
			t.Errorf("%v: dev mode call: %v", env, err)
		}
	}

	// The same explicit false with a root key: admission on, a client
	// without a credential refused.
	isolate(t)
	root := trust.GenerateKey()
	t.Setenv("ASTER_LOG_LEVEL", "error")
	t.Setenv("ASTER_ALLOW_ALL_CONSUMERS", "false")
	t.Setenv("ASTER_ROOT_PUBKEY", trust.IDOf(root).String())
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := cfg.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.MustRegister(opsService(nil, nil))
	addr := listen(t, srv, "127.0.0.1:0")
	_, err = aster.DialAddress(ctxT(t), addr)
	wantCode(t, err, status.Unauthenticated)
}

// TestRootPubkeyFilePrivateKey: root_pubkey_file naming the root private
// key file (which also holds the public key) is refused, saying so; the
// .pub file written next to it is accepted.
func TestRootPubkeyFilePrivateKey(t *testing.T) {
	dir := isolate(t)
	root := trust.GenerateKey()
	keyPath := filepath.Join(dir, "root.key")
	pubPath, err := trust.WriteRootKey(keyPath, root, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ASTER_ROOT_PUBKEY_FILE", keyPath)
	_, err = config.Load()
	checkConfigErr(t, err, trust.ErrPrivateKeyFile, "trust.root_pubkey_file", "ASTER_ROOT_PUBKEY_FILE", "private key")
	// A literal Config is checked the same way.
	_, err = (&config.Config{RootPubkeyFile: keyPath}).NewServer()
	checkConfigErr(t, err, trust.ErrPrivateKeyFile, "trust.root_pubkey_file", "Config", "private key")

	t.Setenv("ASTER_ROOT_PUBKEY_FILE", pubPath)
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if k, err := cfg.RootPublicKey(); err != nil || hex.EncodeToString(k) != trust.IDOf(root).String() {
		t.Errorf("RootPublicKey from the .pub file = %x, %v", k, err)
	}
}

// stderrOf runs fn with os.Stderr sent to a file and returns what was
// written there.
func stderrOf(t *testing.T, fn func()) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := os.Stderr
	os.Stderr = f
	defer func() { os.Stderr = old }()
	fn()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAllowAllConsumersWarns: allow_all_consumers = true next to a root
// key switches capability checks off for everyone; NewServer says so at
// warning level, not only in the info line. Without it, nothing is said.
func TestAllowAllConsumersWarns(t *testing.T) {
	for _, open := range []bool{true, false} {
		isolate(t)
		t.Setenv("ASTER_ROOT_PUBKEY", trust.IDOf(trust.GenerateKey()).String())
		t.Setenv("ASTER_ALLOW_ALL_CONSUMERS", fmt.Sprint(open))
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		out := stderrOf(t, func() {
			srv, err := cfg.NewServer()
			if err != nil {
				t.Fatal(err)
			}
			srv.Close()
		})
		warned := strings.Contains(out, "level=WARN") && strings.Contains(out, "capability requirements are NOT enforced") &&
			strings.Contains(out, "ASTER_ALLOW_ALL_CONSUMERS")
		if warned != open {
			t.Errorf("allow_all_consumers=%v: warned %v; log:\n%s", open, warned, out)
		}
	}
}

// TestDevModeListensOnLoopback: a server without a root key admits every
// consumer and checks no capability, so with bind_addr empty it listens on
// loopback only, and an explicit bind_addr beyond loopback is warned about.
func TestDevModeListensOnLoopback(t *testing.T) {
	isolate(t)
	t.Setenv("ASTER_LOG_LEVEL", "info")
	serve := func() (addr aster.Address, log string) {
		t.Helper()
		cfg, err := config.Load()
		if err != nil {
			t.Fatal(err)
		}
		log = stderrOf(t, func() {
			srv, err := cfg.NewServer()
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ready, errc := make(chan aster.Address, 1), make(chan error, 1)
			go func() { errc <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }()
			select {
			case addr = <-ready:
				srv.Close()
				<-errc
			case err := <-errc:
				t.Fatal(err)
			}
		})
		return addr, log
	}

	addr, log := serve()
	if len(addr.Direct) == 0 {
		t.Fatal("no direct address")
	}
	for _, ap := range addr.Direct {
		if !ap.Addr().IsLoopback() {
			t.Errorf("dev mode without bind_addr listens on %v, want loopback only", addr.Direct)
		}
	}
	if !strings.Contains(log, "dev mode listens on loopback only") || !strings.Contains(log, "ASTER_BIND_ADDR") {
		t.Errorf("log does not say where a dev-mode server listens and how to change it:\n%s", log)
	}

	t.Setenv("ASTER_BIND_ADDR", "0.0.0.0:0")
	if _, log := serve(); !strings.Contains(log, "level=WARN") || !strings.Contains(log, "listens beyond loopback") {
		t.Errorf("dev mode with bind_addr 0.0.0.0:0 logged no warning:\n%s", log)
	}
}

// TestLimitSettings: network.max_conns and its siblings reach the server
// (a second connection beyond max_conns = 1 is closed with the reason),
// and a value that would remove or zero a cap is refused, naming it.
func TestLimitSettings(t *testing.T) {
	for _, tc := range []struct{ env, val string }{
		{"ASTER_MAX_CONNS", "0"},
		{"ASTER_MAX_CONNS_PER_PEER", "-1"},
		{"ASTER_MAX_CONNS_PER_ADDR", "0"},
		{"ASTER_MAX_CONCURRENT_STREAMS", "-5"},
	} {
		isolate(t)
		t.Setenv(tc.env, tc.val)
		_, err := config.Load()
		key := "network." + strings.ToLower(strings.TrimPrefix(tc.env, "ASTER_"))
		checkConfigErr(t, err, nil, key, tc.env, "must be at least 1")
	}

	isolate(t)
	t.Setenv("ASTER_BIND_ADDR", "127.0.0.1:0")
	t.Setenv("ASTER_LOG_LEVEL", "error")
	t.Setenv("ASTER_MAX_CONNS", "1")
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxConns != 1 || cfg.Source("network.max_conns") != "ASTER_MAX_CONNS" || cfg.Source("network.max_conns_per_addr") != config.SourceDefault {
		t.Fatalf("MaxConns %d from %s, per_addr from %s", cfg.MaxConns, cfg.Source("network.max_conns"), cfg.Source("network.max_conns_per_addr"))
	}
	srv, err := cfg.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	ready, errc := make(chan aster.Address, 1), make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }()
	defer func() { srv.Close(); <-errc }()
	addr := <-ready
	c1, err := aster.DialAddress(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if _, _, err := c1.Contract(ctxT(t)); err != nil {
		t.Fatalf("first connection: %v", err)
	}
	c2, err := aster.DialAddress(ctxT(t), addr)
	if err == nil {
		defer c2.Close()
		_, _, err = c2.Contract(ctxT(t))
	}
	if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), "too many connections") {
		t.Fatalf("second connection with max_conns = 1: %v, want UNAVAILABLE naming the cap", err)
	}
}
