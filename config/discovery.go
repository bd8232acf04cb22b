package config

// The [discovery] section: where clients find the producers of a service
// name (etcd, DNS SRV/TXT records, or a static list) and where servers
// register the services they host.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/discovery/dns"
	"github.com/aster-go/aster/discovery/etcd"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// Defaults of the [discovery] section.
const (
	// DefaultDiscoveryTTL is the lease of a server's etcd registration.
	DefaultDiscoveryTTL = 5 * time.Second
	// DefaultDNSMinInterval is the floor of DNS re-resolution: neither a
	// short record TTL nor a failing producer makes a client ask more
	// often.
	DefaultDNSMinInterval = time.Second
	// DefaultDNSMaxInterval is the ceiling of DNS re-resolution: a client
	// looks again at least this often, whatever the record TTL says.
	DefaultDNSMaxInterval = 30 * time.Second
	// MaxDiscoveryEndpoints caps discovery.endpoints.
	MaxDiscoveryEndpoints = 64
)

// Limits checked by Validate.
const (
	maxDiscoveryTTL      = time.Hour
	maxDNSInterval       = time.Hour
	maxDiscoveryEndpoint = 512 // bytes of one endpoint
)

// The discovery backends discovery.backend accepts.
const (
	BackendEtcd   = "etcd"
	BackendDNS    = "dns"
	BackendStatic = "static"
)

func durField(key, env string, def time.Duration, p func(*Config) *time.Duration) field {
	return field{key: key, env: env, kind: kDuration, def: def,
		get: func(c *Config) any { return *p(c) }, set: func(c *Config, v any) { *p(c) = v.(time.Duration) }}
}

// decodeDuration reads a Go duration ("5s", "500ms") from the environment
// or a TOML string.
func decodeDuration(raw any) (any, error) {
	if d, ok := raw.(time.Duration); ok { // the built-in default
		return d, nil
	}
	s, ok := raw.(string)
	if !ok {
		return nil, errors.New(`is not a duration (write it as a string with a unit, such as "5s")`)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New(`is not a duration (such as "500ms", "5s" or "1m")`)
	}
	return d, nil
}

// discoveryBackend returns discovery.backend in lower case.
func (c *Config) discoveryBackend() string { return strings.ToLower(strings.TrimSpace(c.Discovery)) }

// DiscoveryEndpointList returns discovery.endpoints split at commas, each
// trimmed, empty entries dropped.
func (c *Config) DiscoveryEndpointList() []string {
	var out []string
	for e := range strings.SplitSeq(c.DiscoveryEndpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// RegistryPrefix returns discovery.prefix without leading and trailing
// slashes: a server registers service S as RegistryPrefix()+"/"+S. It is
// "" when the server does not register.
func (c *Config) RegistryPrefix() string {
	return strings.Trim(strings.TrimSpace(c.DiscoveryPrefix), "/")
}

// discoveryTTL, dnsMinInterval and dnsMaxInterval return the settings with
// zero meaning the default (a literal Config).
func (c *Config) discoveryTTL() time.Duration { return orDefault(c.DiscoveryTTL, DefaultDiscoveryTTL) }
func (c *Config) dnsMinInterval() time.Duration {
	return orDefault(c.DiscoveryDNSMinInterval, DefaultDNSMinInterval)
}
func (c *Config) dnsMaxInterval() time.Duration {
	return orDefault(c.DiscoveryDNSMaxInterval, DefaultDNSMaxInterval)
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// validateDiscovery checks the [discovery] settings.
func (c *Config) validateDiscovery() error {
	bad := func(key string, reason string) error {
		f := fieldByKey[key]
		src, raw := c.origin(f)
		if key == "discovery.endpoints" {
			raw = maskEndpoints(raw) // a password written into an endpoint stays out of the error
		}
		return fieldErr(f, src, raw, reason, nil)
	}
	backend := c.discoveryBackend()
	switch backend {
	case "", BackendEtcd, BackendDNS, BackendStatic:
	default:
		return bad("discovery.backend", `is not "etcd", "dns" or "static" (or unset: none)`)
	}
	eps := c.DiscoveryEndpointList()
	if len(eps) > MaxDiscoveryEndpoints {
		return bad("discovery.endpoints", fmt.Sprintf("lists %d endpoints, more than %d", len(eps), MaxDiscoveryEndpoints))
	}
	for _, e := range eps {
		if len(e) > maxDiscoveryEndpoint {
			return bad("discovery.endpoints", fmt.Sprintf("has an endpoint longer than %d bytes", maxDiscoveryEndpoint))
		}
		var err error
		switch backend {
		case BackendDNS:
			err = checkDNSServer(e)
			if err == nil && len(eps) > 1 {
				return bad("discovery.endpoints", "lists more than one DNS server; give one host:port")
			}
		case BackendStatic:
			return bad("discovery.endpoints", "is not used by the static backend: a static target carries its addresses (static:///aster1…,aster1…)")
		default: // etcd, or unset (a target's scheme picks the backend)
			err = checkEtcdEndpoint(e)
		}
		if err != nil {
			return bad("discovery.endpoints", fmt.Sprintf("has a bad endpoint %q: %v", maskEndpoints(e), err))
		}
	}
	if backend == BackendEtcd && len(eps) == 0 {
		return bad("discovery.endpoints", "is not set: the etcd backend needs its servers (host:port,… or http(s)://host:port,…)")
	}
	if c.DiscoveryPrefix != "" {
		if backend != BackendEtcd {
			what := "no backend is set"
			if backend != "" {
				what = "the " + backend + " backend has no registry (its records are published by the operator)"
			}
			return bad("discovery.prefix", "makes the server register, but "+what+"; set discovery.backend to etcd (ASTER_DISCOVERY=etcd)")
		}
		if err := checkPrefix(c.DiscoveryPrefix); err != nil {
			return bad("discovery.prefix", err.Error())
		}
	}
	// Zero means the default in a literal Config; written in a file or a
	// variable it is a mistake, not a request for the default.
	for _, key := range []string{"discovery.ttl", "discovery.dns_min_interval", "discovery.dns_max_interval"} {
		if o := c.sources[key]; o != nil && o.source != SourceDefault && fieldByKey[key].get(c).(time.Duration) == 0 {
			return bad(key, "must be above 0")
		}
	}
	if ttl := c.discoveryTTL(); ttl < time.Second || ttl > maxDiscoveryTTL || ttl%time.Second != 0 {
		return bad("discovery.ttl", fmt.Sprintf("must be whole seconds from 1s to %v (etcd leases count seconds)", maxDiscoveryTTL))
	}
	lo, hi := c.dnsMinInterval(), c.dnsMaxInterval()
	if lo <= 0 || lo > maxDNSInterval {
		return bad("discovery.dns_min_interval", fmt.Sprintf("must be above 0 and at most %v (the floor keeps failing producers from making clients flood the DNS server)", maxDNSInterval))
	}
	if hi <= 0 || hi > maxDNSInterval {
		return bad("discovery.dns_max_interval", fmt.Sprintf("must be above 0 and at most %v", maxDNSInterval))
	}
	if lo > hi {
		return bad("discovery.dns_min_interval", fmt.Sprintf("is above discovery.dns_max_interval (%v)", hi))
	}
	if c.DiscoveryUsername != "" || c.DiscoveryPassword != "" {
		if backend != BackendEtcd && backend != "" {
			return bad("discovery.username", "is for etcd, but discovery.backend is "+backend)
		}
		if c.DiscoveryUsername == "" {
			return bad("discovery.username", "is not set, but discovery.password is: etcd needs both")
		}
		if c.DiscoveryPassword == "" {
			return bad("discovery.password", "is not set, but discovery.username is: etcd needs both")
		}
	}
	if _, err := c.etcdTLS(); err != nil {
		return err
	}
	return nil
}

// checkHostPort checks "host:port" with a port from 1 to 65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("no host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return errors.New("bad port")
	}
	return nil
}

// checkDNSServer checks a DNS server: "host:port", or a host (port 53).
func checkDNSServer(s string) error {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return checkHostPort(net.JoinHostPort(strings.Trim(s, "[]"), "53"))
	}
	return checkHostPort(s)
}

// maskEndpoints replaces the password of every endpoint in a
// comma-separated list written with user information
// ("http://user:password@host:port", "user:password@host:port") by
// "xxxxx", as Print does for proxy_url.
func maskEndpoints(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = maskProxyURL(p)
	}
	return strings.Join(parts, ",")
}

// checkEtcdEndpoint checks an etcd endpoint: "host:port" or
// "http(s)://host:port".
func checkEtcdEndpoint(s string) error {
	if !strings.Contains(s, "://") {
		return checkHostPort(s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("want host:port or http(s)://host:port")
	}
	if u.User != nil {
		return errors.New("credentials in the URL; use discovery.username and discovery.password")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("want no path, query or fragment")
	}
	return checkHostPort(u.Host)
}

// checkPrefix checks a registration prefix: after trimming slashes, a
// name the etcd backend accepts (etcd.ValidateName).
func checkPrefix(p string) error {
	t := strings.Trim(strings.TrimSpace(p), "/")
	if t == "" {
		return errors.New(`names no path (write it as "fleet" or "prod/eu")`)
	}
	if err := etcd.ValidateName(t); err != nil {
		return errors.New("is not a usable name: " + strings.TrimPrefix(status.FromError(err).Message(), "discovery/etcd: "))
	}
	return nil
}

// Discovery is what a service target resolves through: the Source that
// follows its producers and the name to watch. Close it when done: it
// closes the etcd connection or DNS resolver DiscoverySource made.
type Discovery struct {
	// Target is the parsed target.
	Target discovery.Target
	// Source follows the producers; give it Name.
	Source discovery.Source
	// Name is the name to watch: Target.Name.
	Name string

	close func() error
}

// Close releases what the Source holds. It is safe to call more than once.
func (d *Discovery) Close() error {
	if d == nil || d.close == nil {
		return nil
	}
	f := d.close
	d.close = nil
	return f()
}

// DiscoverySource returns the Source for a service target
// ("etcd:///fleet/MissionControl", "dns:///_mc._udp.example.internal",
// "dns://127.0.0.1:5353/_mc._udp.example.internal", "static:///aster1…,aster1…").
// The target's scheme picks the backend, whatever discovery.backend says;
// the backend's servers come from discovery.endpoints when discovery.backend
// is that scheme or unset:
//
//   - etcd: discovery.endpoints (required), discovery.username and
//     password, and TLS with discovery.tls_ca, tls_cert, tls_key and
//     tls_server_name (or https:// endpoints: the system's roots); it
//     fails with status Unavailable if etcd does not answer (within ctx's
//     deadline, at most 3 s), also when etcd's certificate does not verify.
//   - dns: the target's authority if it has one, else discovery.endpoints,
//     else the system's resolver; discovery.dns_min_interval and
//     dns_max_interval bound re-resolution.
//   - static: the addresses in the target.
//
// logger receives the backend's warnings (entries ignored, etcd lost);
// nil means the Config's logger on stderr. A bad target is an error with
// status InvalidArgument; a setting that does not fit it an *Error.
func (c *Config) DiscoverySource(ctx context.Context, target string, logger *slog.Logger) (*Discovery, error) {
	// Only the [discovery] settings: a client's configuration may hold
	// server settings it does not use.
	if err := c.validateDiscovery(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, status.Wrap(status.Canceled, err)
	}
	t, err := discovery.ParseTarget(target)
	if err != nil {
		return nil, status.Wrap(status.InvalidArgument, err)
	}
	if logger == nil {
		logger = c.NewLogger(os.Stderr)
	}
	d := &Discovery{Target: t, Name: t.Name}
	backend := c.discoveryBackend()
	eps := c.DiscoveryEndpointList()
	if backend != "" && backend != t.Scheme {
		eps = nil // they are the other backend's servers
	}
	switch t.Scheme {
	case BackendStatic:
		if t.Authority != "" {
			return nil, status.Errorf(status.InvalidArgument, "target %s: a static target has no authority (static:///aster1…,aster1…)", t)
		}
		s, err := discovery.StaticTarget(t)
		if err != nil {
			return nil, status.Wrap(status.InvalidArgument, err)
		}
		d.Source = s
	case BackendEtcd:
		if t.Authority != "" {
			return nil, status.Errorf(status.InvalidArgument, "target %s: etcd targets take their servers from discovery.endpoints, not the authority (write etcd:///%s)", t, t.Name)
		}
		if err := etcd.ValidateName(t.Name); err != nil {
			return nil, err
		}
		if len(eps) == 0 {
			f := fieldByKey["discovery.endpoints"]
			src, raw := c.origin(f)
			reason := "is not set: " + t.String() + " needs the etcd servers (ASTER_DISCOVERY_ENDPOINTS=host:port,…)"
			if backend != "" && backend != BackendEtcd {
				reason = "lists the " + backend + " backend's servers (discovery.backend), not etcd's: " + t.String() + " needs the etcd servers"
			}
			return nil, fieldErr(f, src, raw, reason, nil)
		}
		reg, err := c.newEtcd(ctx, eps, logger)
		if err != nil {
			return nil, err
		}
		d.Source, d.close = reg, reg.Close
	case BackendDNS:
		server := t.Authority
		if server == "" && len(eps) > 0 {
			server = eps[0]
		}
		if server != "" {
			if err := checkDNSServer(server); err != nil {
				return nil, status.Errorf(status.InvalidArgument, "target %s: DNS server %q: %v", t, server, err)
			}
		}
		r, err := c.newDNS(server, logger)
		if err != nil {
			return nil, err
		}
		d.Source = r // a Resolver holds nothing; each watch closes its own
	}
	return d, nil
}

// newEtcd connects to the etcd servers eps with the [discovery] settings.
func (c *Config) newEtcd(ctx context.Context, eps []string, logger *slog.Logger) (*etcd.Registry, error) {
	timeout := etcd.DefaultDialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)), time.Millisecond)
	}
	tlsCfg, err := c.etcdTLS()
	if err != nil {
		return nil, err
	}
	reg, err := etcd.New(etcd.Config{
		Endpoints:   eps,
		TTL:         c.discoveryTTL(),
		DialTimeout: timeout,
		Username:    c.DiscoveryUsername,
		Password:    c.DiscoveryPassword,
		TLS:         tlsCfg,
		Logger:      logger,
	})
	if err != nil {
		return nil, fmt.Errorf("config: discovery: %w", err)
	}
	return reg, nil
}

// newDNS returns a resolver asking server ("" for the system's resolver).
func (c *Config) newDNS(server string, logger *slog.Logger) (*dns.Resolver, error) {
	r, err := dns.New(dns.Config{
		Server:      server,
		MinInterval: c.dnsMinInterval(),
		MaxInterval: c.dnsMaxInterval(),
		Logger:      logger,
	})
	if err != nil {
		return nil, fmt.Errorf("config: discovery: %w", err)
	}
	return r, nil
}

// Registers reports whether a server built from c registers its services:
// discovery.backend is etcd and discovery.prefix is set.
func (c *Config) Registers() bool {
	return c.discoveryBackend() == BackendEtcd && c.RegistryPrefix() != ""
}

// serverRegistry returns the server options of the [discovery] settings
// when the server registers (Registers): aster.WithRegistry with an etcd
// registry under discovery.prefix, and aster.WithCredential with the
// producer credential issued to key, if the identity files hold one. The
// registry must be closed after the server shut down. It connects to etcd:
// an unreachable etcd fails with status Unavailable.
func (c *Config) serverRegistry(key trust.SecretKey, logger *slog.Logger) ([]aster.ServerOption, *etcd.Registry, error) {
	if !c.Registers() {
		return nil, nil, nil
	}
	var opts []aster.ServerOption
	if key != nil {
		cred, err := c.producerCredential(trust.IDOf(key))
		if err != nil {
			return nil, nil, err
		}
		if cred != nil {
			opts = append(opts, aster.WithCredential(cred))
		}
	}
	reg, err := c.newEtcd(context.Background(), c.DiscoveryEndpointList(), logger)
	if err != nil {
		return nil, nil, err
	}
	return append(opts, aster.WithRegistry(reg, c.RegistryPrefix())), reg, nil
}

// producerCredential returns the first producer credential issued to id in
// trust.enrollment_credential_file or identity.identity_file, or nil.
func (c *Config) producerCredential(id trust.EndpointID) (*enroll.Credential, error) {
	for _, key := range []string{"trust.enrollment_credential_file", "identity.identity_file"} {
		path := fieldByKey[key].get(c).(string)
		if path == "" {
			continue
		}
		ident, err := identity.Load(path)
		if err != nil {
			f := fieldByKey[key]
			src, raw := c.origin(f)
			msg := strings.ReplaceAll(err.Error(), path, "<the file>")
			return nil, fieldErr(f, src, raw, "cannot be used: "+msg, err)
		}
		for _, cr := range ident.Peers {
			if cr.Role == enroll.RoleProducer && cr.EndpointID == id {
				return cr, nil
			}
		}
	}
	return nil, nil
}

// FleetOptions returns the client options a Fleet needs beyond
// ClientOptions: with trust.allow_all_producers false,
// aster.WithProducerRoot with the configured root key, so that only
// producers whose registry entry carries a producer credential signed by
// that root are dialled. Without a root key that setting fails closed: an
// *Error naming trust.allow_all_producers. So does an unknown setting that
// looks like allow_all_producers (ASTER_ALLOW_ALL_PRODUCER=false) while the
// real one is at its default. (A literal Config's zero
// AllowAllProducers is false: build a literal from Default() to allow all.)
func (c *Config) FleetOptions() ([]aster.ClientOption, error) {
	if c.AllowAllProducers {
		if c.Source("trust.allow_all_producers") == SourceDefault {
			// A misspelt allow_all_producers = false must not leave the
			// client calling any producer listed.
			for _, u := range c.unknown {
				if u.near == "trust.allow_all_producers" || strings.Contains(strings.ToUpper(u.name), "ALLOW_ALL_PRODUCER") {
					return nil, &Error{Field: "trust.allow_all_producers", Source: u.source, Value: `"` + u.name + `"`,
						Reason: "is not a known setting, and looks like trust.allow_all_producers: fix it (or remove it) rather than let clients call every producer listed"}
				}
			}
		}
		return nil, nil
	}
	f := fieldByKey["trust.allow_all_producers"]
	src, raw := c.origin(f)
	root, err := c.RootPublicKey()
	if err != nil {
		rf := fieldByKey["trust.root_pubkey_file"]
		rsrc, rraw := c.origin(rf)
		return nil, fieldErr(rf, rsrc, rraw, "cannot be used: "+err.Error(), err)
	}
	if root == nil {
		return nil, fieldErr(f, src, raw, "asks clients to check producer credentials, but no root key is set to check them with "+
			"(trust.root_pubkey/ASTER_ROOT_PUBKEY or trust.root_pubkey_file/ASTER_ROOT_PUBKEY_FILE)", nil)
	}
	pk, err := trust.EndpointIDFromPublicKey(root)
	if err != nil {
		rf := fieldByKey["trust.root_pubkey"]
		rsrc, rraw := c.origin(rf)
		return nil, fieldErr(rf, rsrc, rraw, err.Error(), err)
	}
	return []aster.ClientOption{aster.WithProducerRoot(pk)}, nil
}

// Fleet is an *aster.Fleet built by Config.DialFleet, with the discovery
// backend it follows; Close closes both.
type Fleet struct {
	*aster.Fleet
	// Discovery is the Source the fleet follows.
	Discovery *Discovery
}

// Close closes the fleet, then its discovery backend.
func (f *Fleet) Close() error {
	err := f.Fleet.Close()
	if derr := f.Discovery.Close(); err == nil {
		err = derr
	}
	return err
}

// DialFleet dials the fleet of producers a target names
// ("etcd:///fleet/MissionControl", "dns:///_mc._udp.example.internal",
// "static:///aster1…,aster1…"): DiscoverySource, then aster.DialFleet with
// ClientOptions, FleetOptions and opts (which override them). It waits as
// aster.DialFleet does: for the first producer set and, if it lists any,
// for one to connect. The backend logs to the Config's logger on stderr.
func (c *Config) DialFleet(ctx context.Context, target string, opts ...aster.ClientOption) (*Fleet, error) {
	copts, err := c.ClientOptions()
	if err != nil {
		return nil, err
	}
	fopts, err := c.FleetOptions()
	if err != nil {
		return nil, err
	}
	d, err := c.DiscoverySource(ctx, target, nil)
	if err != nil {
		return nil, err
	}
	all := append(append(copts, fopts...), opts...)
	f, err := aster.DialFleet(ctx, d.Source, d.Name, all...)
	if err != nil {
		d.Close()
		return nil, err
	}
	return &Fleet{Fleet: f, Discovery: d}, nil
}
