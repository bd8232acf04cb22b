package config_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// TestDiscoveryDefaults checks the [discovery] defaults as Print shows them.
func TestDiscoveryDefaults(t *testing.T) {
	isolate(t)
	c := must(config.Load())
	var buf bytes.Buffer
	if err := c.Print(&buf, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ name, value string }{
		{"backend", "<not set>"}, {"endpoints", "<not set>"}, {"prefix", "<not set>"},
		{"ttl", "5s"}, {"dns_min_interval", "1s"}, {"dns_max_interval", "30s"},
		{"username", "<not set>"}, {"password", "<not set>"},
	} {
		if !hasPrintLine(buf.String(), want.name, want.value, "default") {
			t.Errorf("print lacks %s : %s (default):\n%s", want.name, want.value, buf.String())
		}
	}
	if c.DiscoveryTTL != config.DefaultDiscoveryTTL || c.DiscoveryDNSMinInterval != time.Second || c.DiscoveryDNSMaxInterval != 30*time.Second {
		t.Errorf("defaults %v %v %v", c.DiscoveryTTL, c.DiscoveryDNSMinInterval, c.DiscoveryDNSMaxInterval)
	}
	// A literal Config's zero durations mean the defaults.
	lit := config.Config{}
	m := printMap(t, &lit)
	if v := m["discovery.ttl"]; v.Value != "5s" || v.Source != "default" {
		t.Errorf("literal ttl = %+v, want 5s default", v)
	}
}

// TestDiscoveryFromEnvAndFile checks that each [discovery] setting is read
// from the environment and from the file, with its source.
func TestDiscoveryFromEnvAndFile(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		key, env, val, toml string
		check               func(*config.Config) any
		want                any
	}{
		{"discovery.backend", "ASTER_DISCOVERY", "dns", `"dns"`, func(c *config.Config) any { return c.Discovery }, "dns"},
		{"discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "127.0.0.1:2379, http://10.0.0.2:2379", `"127.0.0.1:2379, http://10.0.0.2:2379"`,
			func(c *config.Config) any { return strings.Join(c.DiscoveryEndpointList(), "|") }, "127.0.0.1:2379|http://10.0.0.2:2379"},
		{"discovery.ttl", "ASTER_DISCOVERY_TTL", "10s", `"10s"`, func(c *config.Config) any { return c.DiscoveryTTL }, 10 * time.Second},
		{"discovery.dns_min_interval", "ASTER_DISCOVERY_DNS_MIN_INTERVAL", "250ms", `"250ms"`, func(c *config.Config) any { return c.DiscoveryDNSMinInterval }, 250 * time.Millisecond},
		{"discovery.dns_max_interval", "ASTER_DISCOVERY_DNS_MAX_INTERVAL", "2m", `"2m"`, func(c *config.Config) any { return c.DiscoveryDNSMaxInterval }, 2 * time.Minute},
	} {
		t.Run(tc.key, func(t *testing.T) {
			t.Setenv(tc.env, tc.val)
			c, err := config.Load()
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.check(&c); got != tc.want {
				t.Errorf("env: got %v, want %v", got, tc.want)
			}
			if src := c.Source(tc.key); src != tc.env {
				t.Errorf("env: source %q", src)
			}
			t.Setenv(tc.env, "")
			path := writeFile(t, t.TempDir(), "aster.toml", tomlFor(tc.key, tc.toml)+"\n")
			c, err = config.LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.check(&c); got != tc.want {
				t.Errorf("file: got %v, want %v", got, tc.want)
			}
			if src := c.Source(tc.key); src != path {
				t.Errorf("file: source %q, want %q", src, path)
			}
		})
	}

	// A registering server's settings together, from a file.
	path := writeFile(t, t.TempDir(), "aster.toml", `[discovery]
backend = "etcd"
endpoints = "127.0.0.1:2379"
prefix = "/prod/eu/"
ttl = "3s"
username = "mc"
password = "hunter2-long-password"
`)
	c := must(config.LoadFile(path))
	if got := c.RegistryPrefix(); got != "prod/eu" {
		t.Errorf("RegistryPrefix = %q, want prod/eu", got)
	}
	var buf bytes.Buffer
	c.Print(&buf, false)
	if !hasPrintLine(buf.String(), "password", "****", path) || !hasPrintLine(buf.String(), "prefix", "/prod/eu/", path) {
		t.Errorf("print:\n%s", buf.String())
	}
	buf.Reset()
	c.Print(&buf, true)
	if strings.Contains(buf.String(), "hunter2") || strings.Contains(buf.String(), "password") && !strings.Contains(buf.String(), `"****"`) {
		t.Errorf("JSON print shows the password:\n%s", buf.String())
	}
	// Logs mask it too.
	var logs bytes.Buffer
	c.NewLogger(&logs).Info("connecting", "url", "http://mc:hunter2-long-password@127.0.0.1:2379")
	if strings.Contains(logs.String(), "hunter2") {
		t.Errorf("log shows the password: %s", logs.String())
	}
}

// TestDiscoveryBadValues checks that each bad [discovery] value fails with
// an *Error naming the field and the reason.
func TestDiscoveryBadValues(t *testing.T) {
	for _, tc := range []struct {
		env          []string
		field, src   string
		reason       string
		hidesPassord bool
	}{
		{[]string{"ASTER_DISCOVERY=consul"}, "discovery.backend", "ASTER_DISCOVERY", `is not "etcd", "dns" or "static"`, false},
		{[]string{"ASTER_DISCOVERY=etcd"}, "discovery.endpoints", "default", "the etcd backend needs its servers", false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=localhost"}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "want host:port", false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=ftp://h:1"}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "want host:port or http(s)://host:port", false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=http://u:p@h:1"}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "credentials in the URL", false},
		{[]string{"ASTER_DISCOVERY_ENDPOINTS=" + strings.Repeat("h:1,", config.MaxDiscoveryEndpoints+1)}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "more than 64", false},
		{[]string{"ASTER_DISCOVERY=dns", "ASTER_DISCOVERY_ENDPOINTS=10.0.0.1:53,10.0.0.2:53"}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "more than one DNS server", false},
		{[]string{"ASTER_DISCOVERY=dns", "ASTER_DISCOVERY_ENDPOINTS=10.0.0.1:99999"}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "bad port", false},
		{[]string{"ASTER_DISCOVERY=static", "ASTER_DISCOVERY_ENDPOINTS=h:1"}, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "not used by the static backend", false},
		{[]string{"ASTER_DISCOVERY_PREFIX=fleet"}, "discovery.prefix", "ASTER_DISCOVERY_PREFIX", "no backend is set", false},
		{[]string{"ASTER_DISCOVERY=dns", "ASTER_DISCOVERY_PREFIX=fleet"}, "discovery.prefix", "ASTER_DISCOVERY_PREFIX", "the dns backend has no registry", false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=h:1", "ASTER_DISCOVERY_PREFIX=a/../b"}, "discovery.prefix", "ASTER_DISCOVERY_PREFIX", `segment ".." not allowed`, false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=h:1", "ASTER_DISCOVERY_PREFIX=a//b"}, "discovery.prefix", "ASTER_DISCOVERY_PREFIX", "empty segment", false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=h:1", "ASTER_DISCOVERY_PREFIX=a b"}, "discovery.prefix", "ASTER_DISCOVERY_PREFIX", "not allowed", false},
		{[]string{"ASTER_DISCOVERY=etcd", "ASTER_DISCOVERY_ENDPOINTS=h:1", "ASTER_DISCOVERY_PREFIX=/"}, "discovery.prefix", "ASTER_DISCOVERY_PREFIX", "names no path", false},
		{[]string{"ASTER_DISCOVERY_TTL=5"}, "discovery.ttl", "ASTER_DISCOVERY_TTL", "is not a duration", false},
		{[]string{"ASTER_DISCOVERY_TTL=500ms"}, "discovery.ttl", "ASTER_DISCOVERY_TTL", "whole seconds from 1s", false},
		{[]string{"ASTER_DISCOVERY_TTL=1500ms"}, "discovery.ttl", "ASTER_DISCOVERY_TTL", "whole seconds", false},
		{[]string{"ASTER_DISCOVERY_TTL=2h"}, "discovery.ttl", "ASTER_DISCOVERY_TTL", "to 1h0m0s", false},
		{[]string{"ASTER_DISCOVERY_DNS_MIN_INTERVAL=-1s"}, "discovery.dns_min_interval", "ASTER_DISCOVERY_DNS_MIN_INTERVAL", "must be above 0", false},
		{[]string{"ASTER_DISCOVERY_DNS_MIN_INTERVAL=0s"}, "discovery.dns_min_interval", "ASTER_DISCOVERY_DNS_MIN_INTERVAL", "must be above 0", false},
		{[]string{"ASTER_DISCOVERY_DNS_MIN_INTERVAL=1m", "ASTER_DISCOVERY_DNS_MAX_INTERVAL=10s"}, "discovery.dns_min_interval", "ASTER_DISCOVERY_DNS_MIN_INTERVAL", "is above discovery.dns_max_interval", false},
		{[]string{"ASTER_DISCOVERY_TTL=0s"}, "discovery.ttl", "ASTER_DISCOVERY_TTL", "must be above 0", false},
		{[]string{"ASTER_DISCOVERY_DNS_MAX_INTERVAL=0"}, "discovery.dns_max_interval", "ASTER_DISCOVERY_DNS_MAX_INTERVAL", "must be above 0", false},
		{[]string{"ASTER_DISCOVERY_DNS_MAX_INTERVAL=30h"}, "discovery.dns_max_interval", "ASTER_DISCOVERY_DNS_MAX_INTERVAL", "at most 1h0m0s", false},
		{[]string{"ASTER_DISCOVERY_PASSWORD=sekrit-pass"}, "discovery.username", "default", "is not set, but discovery.password is", true},
		{[]string{"ASTER_DISCOVERY_USERNAME=mc"}, "discovery.password", "default", "is not set, but discovery.username is", false},
		{[]string{"ASTER_DISCOVERY=dns", "ASTER_DISCOVERY_USERNAME=mc", "ASTER_DISCOVERY_PASSWORD=sekrit-pass"}, "discovery.username", "ASTER_DISCOVERY_USERNAME", "is for etcd", true},
	} {
		t.Run(strings.Join(tc.env, ","), func(t *testing.T) {
			isolate(t)
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			_, err := config.Load()
			checkConfigErr(t, err, nil, tc.field, tc.src, tc.reason)
			if tc.hidesPassord && err != nil && strings.Contains(err.Error(), "sekrit") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	// A TOML number is not a duration.
	isolate(t)
	path := writeFile(t, t.TempDir(), "aster.toml", "[discovery]\nttl = 5\n")
	_, err := config.LoadFile(path)
	checkConfigErr(t, err, nil, "discovery.ttl", path, `write it as a string with a unit, such as "5s"`)
	// An unknown key in the section is caught like any other.
	path = writeFile(t, t.TempDir(), "aster.toml", "[discovery]\nbackends = \"etcd\"\n")
	if _, err := config.LoadFileStrict(path); err == nil || !strings.Contains(err.Error(), "discovery.backends") {
		t.Errorf("strict load with discovery.backends: %v", err)
	}
	// A literal Config is validated when used.
	lit := config.Config{Discovery: "zookeeper"}
	checkConfigErr(t, lit.Validate(), nil, "discovery.backend", "Config", "is not")
}

// TestDiscoverySourceTargets checks how DiscoverySource maps targets to
// backends, without a registry: static targets, bad targets, and targets
// whose backend the settings cannot serve.
func TestDiscoverySourceTargets(t *testing.T) {
	isolate(t)
	ctx := ctxT(t)
	c := must(config.Load())
	// A static target lists its producers.
	addr1 := staticAddr(t, 1, "127.0.0.1:4001")
	addr2 := staticAddr(t, 2, "127.0.0.1:4002")
	d, err := c.DiscoverySource(ctx, "static:///"+addr1+","+addr2, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	w, err := d.Source.Watch(ctx, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := w.Next(ctx)
	w.Close()
	if err != nil || len(ps) != 2 || ps[0].Addr.String() != addr1 || ps[1].Addr.String() != addr2 {
		t.Fatalf("static watch: %v %v", ps, err)
	}

	// Server-only settings do not stop a client from resolving targets.
	srvOnly := c
	srvOnly.EnableMonitoring = true // without a health port: NewServer would refuse
	if d, err := srvOnly.DiscoverySource(ctx, "static:///"+addr1, quiet); err != nil {
		t.Errorf("DiscoverySource with a server-only setting that NewServer refuses: %v", err)
	} else {
		d.Close()
	}

	for _, tc := range []struct{ target, want string }{
		{"aster1abc", "want scheme:///name"},
		{"consul:///x", "unknown scheme"},
		{"etcd:///", "empty name"},
		{"static:///aster1nope", "static target"},
		{"static://host/" + addr1, "no authority"},
		{"etcd://10.0.0.1:2379/fleet/MissionControl", "from discovery.endpoints, not the authority"},
		{"etcd:///fleet/../MissionControl", `segment ".." not allowed`},
		{"dns://10.0.0.1:99999/_mc._udp.example.internal", "bad port"},
	} {
		_, err := c.DiscoverySource(ctx, tc.target, quiet)
		if status.CodeOf(err) != status.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT with %q", tc.target, err, tc.want)
		}
	}

	// etcd targets need the etcd servers.
	_, err = c.DiscoverySource(ctx, "etcd:///fleet/MissionControl", quiet)
	checkConfigErr(t, err, nil, "discovery.endpoints", "default", "needs the etcd servers")
	t.Setenv("ASTER_DISCOVERY", "dns")
	t.Setenv("ASTER_DISCOVERY_ENDPOINTS", "127.0.0.1:53")
	c = must(config.Load())
	_, err = c.DiscoverySource(ctx, "etcd:///fleet/MissionControl", quiet)
	checkConfigErr(t, err, nil, "discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", "not etcd's")

	// An etcd that does not answer: UNAVAILABLE within the context's
	// deadline, naming the endpoint.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	t.Setenv("ASTER_DISCOVERY", "")
	t.Setenv("ASTER_DISCOVERY_ENDPOINTS", dead)
	c = must(config.Load())
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	_, err = c.DiscoverySource(sctx, "etcd:///fleet/MissionControl", quiet)
	if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), dead) {
		t.Errorf("unreachable etcd: %v, want UNAVAILABLE naming %s", err, dead)
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		t.Errorf("unreachable etcd is a config error: %v", err)
	}
}

func staticAddr(t *testing.T, seed int, hostport string) string {
	t.Helper()
	a := discovery.EndpointAddr{ID: trust.IDOf(testutil.Key(t, seed)), Direct: []netip.AddrPort{netip.MustParseAddrPort(hostport)}}
	return a.String()
}

// A password written into an etcd endpoint is refused (it belongs in
// discovery.password), and the error does not repeat it: it ends up in
// terminals and service logs.
func TestDiscoveryEndpointPasswordNotEchoed(t *testing.T) {
	for _, eps := range []string{
		"http://root:hunter2-secret@etcd-1:2379",
		"etcd-0:2379,https://root:hunter2-secret@etcd-1:2379",
		"root:hunter2-secret@etcd-1:2379",
	} {
		isolate(t)
		t.Setenv("ASTER_DISCOVERY", "etcd")
		t.Setenv("ASTER_DISCOVERY_ENDPOINTS", eps)
		_, err := config.Load()
		if err == nil {
			t.Fatalf("%s: loaded", eps)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", eps, err)
		}
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Field != "discovery.endpoints" || strings.Contains(ce.Value, "hunter2") {
			t.Errorf("%s: error %#v", eps, ce)
		}
	}
}
