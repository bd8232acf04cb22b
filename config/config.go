package config

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// Config is the resolved configuration of an aster endpoint: trust,
// connection, storage, health, network, identity and logging settings.
//
// Build it with Load (built-in defaults, then ASTER_* environment
// variables), LoadFile (defaults, then a TOML file, then the environment,
// which always wins), Default, or as a literal in tests and scripts. A loaded Config remembers where each value came from (see
// Source and Print).
//
// Every field corresponds to a TOML key and an ASTER_* variable; run
// "aster config print" to see them all with their values and sources. The
// table below gives the TOML key, the variable and the default:
//
//	[trust]    root_pubkey                ASTER_ROOT_PUBKEY               (hex)   unset
//	           root_pubkey_file           ASTER_ROOT_PUBKEY_FILE                  unset
//	           enrollment_credential_file ASTER_ENROLLMENT_CREDENTIAL             unset
//	           enrollment_credential_iid  ASTER_ENROLLMENT_CREDENTIAL_IID         unset
//	           allow_all_consumers        ASTER_ALLOW_ALL_CONSUMERS               false
//	           allow_all_producers        ASTER_ALLOW_ALL_PRODUCERS               true
//	[connect]  endpoint_addr              ASTER_ENDPOINT_ADDR                     unset
//	[storage]  path                       ASTER_STORAGE_PATH                      unset (in-memory)
//	[health]   health_port                ASTER_HEALTH_PORT                       0 (disabled)
//	           health_host                ASTER_HEALTH_HOST                       127.0.0.1
//	[network]  secret_key                 ASTER_SECRET_KEY                (base64) unset (fresh key)
//	           relay_mode                 ASTER_RELAY_MODE                        unset
//	           bind_addr                  ASTER_BIND_ADDR                         unset (any)
//	           enable_monitoring          ASTER_ENABLE_MONITORING                 false
//	           enable_hooks               ASTER_ENABLE_HOOKS                      false
//	           hook_timeout_ms            ASTER_HOOK_TIMEOUT_MS                   5000
//	           max_conns                  ASTER_MAX_CONNS                         10000
//	           max_conns_per_peer         ASTER_MAX_CONNS_PER_PEER                100
//	           max_conns_per_addr         ASTER_MAX_CONNS_PER_ADDR                256
//	           max_concurrent_streams     ASTER_MAX_CONCURRENT_STREAMS            1000
//	           clear_ip_transports        ASTER_CLEAR_IP_TRANSPORTS               false
//	           clear_relay_transports     ASTER_CLEAR_RELAY_TRANSPORTS            false
//	           portmapper_config          ASTER_PORTMAPPER_CONFIG                 unset (port mapping on)
//	           proxy_url                  ASTER_PROXY_URL                         unset
//	           proxy_from_env             ASTER_PROXY_FROM_ENV                    false
//	[identity] identity_file              ASTER_IDENTITY_FILE                     ./.aster-identity if it exists
//	[logging]  format                     ASTER_LOG_FORMAT                        text
//	           level                      ASTER_LOG_LEVEL                         info
//	           mask                       ASTER_LOG_MASK                          true
//	[discovery] backend                   ASTER_DISCOVERY                         unset (etcd, dns or static)
//	           endpoints                  ASTER_DISCOVERY_ENDPOINTS       (list)  unset
//	           prefix                     ASTER_DISCOVERY_PREFIX                  unset (do not register)
//	           ttl                        ASTER_DISCOVERY_TTL             (dur.)  5s
//	           dns_min_interval           ASTER_DISCOVERY_DNS_MIN_INTERVAL (dur.) 1s
//	           dns_max_interval           ASTER_DISCOVERY_DNS_MAX_INTERVAL (dur.) 30s
//	           username                   ASTER_DISCOVERY_USERNAME                unset
//	           password                   ASTER_DISCOVERY_PASSWORD                unset
//	           tls_ca                     ASTER_DISCOVERY_TLS_CA                  unset (system roots for https://)
//	           tls_cert                   ASTER_DISCOVERY_TLS_CERT                unset
//	           tls_key                    ASTER_DISCOVERY_TLS_KEY                 unset
//	           tls_server_name            ASTER_DISCOVERY_TLS_SERVER_NAME         unset (the endpoint's host)
//
// Booleans accept true/false, 1/0, yes/no and on/off in any case;
// durations are Go durations such as "500ms" or "5s" (a TOML string). An empty
// ASTER_* variable counts as unset (but an empty root key setting keeps a
// server out of dev mode: see Admission below). "~" at the start of a path
// is the home directory.
//
// Relays (transport/relay, "aster relay"): relay_mode is "default" (or
// unset), "disabled", or the URL of a relay, "https://host[:port]",
// optionally pinning a self-signed relay certificate with
// "#sha256=<hex>". With a URL a server registers at that home relay and its
// address carries it; aster for Go runs no public relay, so "default" means
// no home relay. Clients dial a server's direct addresses and fall back to
// the relay in its address unless relay_mode is "disabled" or
// clear_relay_transports is set. clear_ip_transports disables direct QUIC:
// a server is then reachable through its relay only (it needs a relay URL)
// and a client dials through relays only.
//
// Every setting of the configuration reference does something in aster
// for Go; a setting whose feature did not exist would fail with an *Error
// wrapping ErrNotSupported rather than be silently ignored.
//
// Port mapping (transport/portmap): portmapper_config is unset, "",
// "default" or "enabled" (a server listening with direct QUIC asks its
// gateway to forward its UDP port through PCP, NAT-PMP or UPnP IGD, and
// advertises the mapped external address as one more direct address),
// "disabled" (no port mapping), or "pcp", "natpmp" or "upnp" (that
// protocol only). Values are case-insensitive; any other fails. Clients
// ignore it.
//
// Proxies (transport/relay): proxy_url sends every relay connection, the
// server's to its home relay and the client's relay fallback, through
// that HTTP CONNECT proxy; proxy_from_env takes the proxy from
// HTTPS_PROXY and NO_PROXY as Go's net/http does. proxy_url wins when
// both are set. The relay's TLS runs end to end through the tunnel.
//
// Connection hooks ("Gate 0"): enable_hooks and hook_timeout_ms configure
// the connection gates of package aster (aster.WithConnGate), which a
// server runs on each incoming connection with the peer's endpoint id and
// address before it serves anything on it. The gates themselves are code:
// pass them to NewServer (cfg.NewServer(aster.WithConnGate(...))). A
// server built by NewServer gives its gates hook_timeout_ms (1 to 60000,
// default 5000) to decide, after which the connection is refused.
// enable_hooks = true promises that connections are gated: NewServer then
// fails, naming the field, when no gate was given and admission is not
// active. Admission (a root key configured) is itself a gate of the same
// chain, which every connection passes after the connection gates, so with
// admission active hooks are enabled whatever enable_hooks says (the
// reference's "auto-set when admission is active"; see HooksEnabled).
// enable_hooks = false does not switch off gates given in code: they run
// (a setting never silently removes a check the program installed).
//
// Admission (see TrustPolicy): without a root key the server runs in dev
// mode (ephemeral root, every consumer admitted, a warning logged), but
// only when nothing asks for admission. allow_all_consumers or
// allow_all_producers set to false in the file or the environment,
// root_pubkey or root_pubkey_file given as empty text (ASTER_ROOT_PUBKEY=
// from an unset shell variable), or an unknown setting that looks like a
// trust setting (a misspelt variable or key, a trust key outside [trust],
// ASTER_TRUST_ROOT_PUBKEY and the like), without a root key to verify
// credentials with, makes NewServer fail naming the setting: an explicit
// false, or a root key that went missing, never turns into "admit
// everyone". With allow_all_consumers = true and a root key, NewServer logs
// a warning: every consumer is admitted, and capability requirements are
// not enforced.
//
// A literal Config is validated when it is used (NewServer, ClientOptions,
// Validate). Its zero value differs from Default in AllowAllProducers and
// LogMask (false rather than true); empty HealthHost, LogFormat and
// LogLevel and a zero HookTimeoutMS mean their defaults. In a literal
// Config a false AllowAllConsumers or AllowAllProducers cannot be told from
// an unset one: set RootPubkey or RootPubkeyFile to require admission.
type Config struct {
	// RootPubkey is the deployment's 32-byte ed25519 root public key, the
	// trust anchor. It takes priority over RootPubkeyFile.
	RootPubkey ed25519.PublicKey
	// RootPubkeyFile is a file holding the root public key, as hex or as
	// JSON {"public_key": "<hex>"} (the .pub file "aster trust keygen"
	// writes; the root private key file is refused). It is read and checked
	// at load.
	RootPubkeyFile string
	// EnrollmentCredentialFile is the path of the enrollment credential
	// signed by the root key. It must exist when set.
	EnrollmentCredentialFile string
	// EnrollmentCredentialIID is a cloud instance identity document token.
	EnrollmentCredentialIID string
	// AllowAllConsumers skips the consumer admission gate (development).
	AllowAllConsumers bool
	// AllowAllProducers skips the producer admission gate (default true).
	AllowAllProducers bool

	// EndpointAddr is the producer's address for a client: an "aster1…"
	// address or a hex endpoint id.
	EndpointAddr string

	// The [discovery] settings (see discovery.go and DiscoverySource):
	// where a client finds the producers of a service name, and where a
	// server registers.

	// Discovery is the discovery backend: "" (none), "etcd", "dns" or
	// "static". A server registers in etcd when it is "etcd" and
	// DiscoveryPrefix is set.
	Discovery string
	// DiscoveryEndpoints is the backend's servers as a comma-separated
	// list: etcd endpoints ("host:port" or "http(s)://host:port"), or the
	// DNS server to ask ("host:port"; unset: the system's resolver).
	DiscoveryEndpoints string
	// DiscoveryPrefix is where a server registers each service it hosts,
	// as DiscoveryPrefix/Service (e.g. "fleet" → "fleet/MissionControl",
	// which clients call as "etcd:///fleet/MissionControl"). Unset: the
	// server does not register.
	DiscoveryPrefix string
	// DiscoveryTTL is the lease of a server's registration (default 5s,
	// whole seconds): a producer that dies unannounced is dropped by
	// clients within it.
	DiscoveryTTL time.Duration
	// DiscoveryDNSMinInterval and DiscoveryDNSMaxInterval bound how often
	// DNS targets are re-resolved: the record TTL, raised to the floor
	// (default 1s) and cut to the ceiling (default 30s). A failing
	// producer triggers an early re-resolution, no sooner than the floor.
	DiscoveryDNSMinInterval time.Duration
	DiscoveryDNSMaxInterval time.Duration
	// DiscoveryUsername and DiscoveryPassword authenticate to etcd. The
	// password is masked in Print and in logs. Without TLS to a non-loopback
	// endpoint, loading adds a warning (see Warnings): the password would
	// cross the network in plain text.
	DiscoveryUsername string
	DiscoveryPassword string
	// DiscoveryTLSCA is a PEM file of the CA certificates that verify
	// etcd's server certificate. Setting any DiscoveryTLS* field, or
	// listing an https:// endpoint, makes the connection to etcd TLS; with
	// https:// endpoints and no CA file the system's roots verify etcd.
	// A file that cannot be read or parsed is an error, never a fallback
	// to plain text.
	DiscoveryTLSCA string
	// DiscoveryTLSCert and DiscoveryTLSKey are the PEM files of the client
	// certificate and key presented to etcd (mutual TLS): both or neither.
	DiscoveryTLSCert string
	DiscoveryTLSKey  string
	// DiscoveryTLSServerName is the name etcd's certificate must carry,
	// when it is not the endpoint's host (e.g. endpoints given as IP
	// addresses).
	DiscoveryTLSServerName string

	// StoragePath is the persistent storage directory (created 0700 by
	// NewServer). aster keeps the used one-time-token nonces there
	// (file "ott-nonces"), so a restart does not reopen them. Unset: kept
	// in memory only.
	StoragePath string

	// HealthPort is the port of the health HTTP server (package health);
	// 0 disables it.
	HealthPort int
	// HealthHost is the health server's bind address (default 127.0.0.1).
	HealthHost string

	// SecretKey is the endpoint's identity key; nil means a fresh key each
	// run. ASTER_SECRET_KEY and the TOML file hold it as base64 of the
	// 32-byte seed.
	SecretKey trust.SecretKey
	// RelayMode is "default" (or empty: no home relay, clients use the
	// relay in a server's address), "disabled" (no relays at all), or the
	// home relay's URL "https://host[:port][#sha256=<hex>]".
	RelayMode string
	// BindAddr is the local UDP address to listen on ("host:port"); empty
	// means a free port on all interfaces, or on 127.0.0.1 for a server in
	// dev mode (no root key).
	BindAddr string
	// EnableMonitoring serves /metrics and /metrics/prometheus on the
	// health server (which needs HealthPort > 0).
	EnableMonitoring bool
	// EnableHooks requires connection hooks (aster.WithConnGate): NewServer
	// fails when it is set, no gate is given and admission is not active.
	// Admission being active implies it (see HooksEnabled).
	EnableHooks bool
	// HookTimeoutMS is how long connection gates may take to decide on a
	// connection, in milliseconds, 1 to MaxHookTimeoutMS (default 5000;
	// 0 in a literal Config means the default). A connection not decided
	// by then is refused.
	HookTimeoutMS int
	// MaxConns, MaxConnsPerPeer, MaxConnsPerAddr and MaxConcurrentStreams
	// are a server's caps on the connections it serves, those of one peer
	// (endpoint id) and of one IP address, and the calls of one connection
	// (aster.WithMaxConns, WithMaxConnsPerPeer, WithMaxConnsPerAddr,
	// WithMaxConcurrentStreams). 0 in a literal Config means aster's
	// default; a value given in a file or variable must be at least 1:
	// configuration raises or lowers a cap, it never removes one.
	MaxConns, MaxConnsPerPeer, MaxConnsPerAddr, MaxConcurrentStreams int
	// ClearIPTransports disables direct QUIC: servers are reachable through
	// their relay only, clients dial through relays only.
	ClearIPTransports bool
	// ClearRelayTransports disables relays (as RelayMode "disabled" does).
	ClearRelayTransports bool
	// PortmapperConfig configures port mapping on the gateway of a server
	// listening with direct QUIC: "" (unset), "default" or "enabled" try
	// PCP, NAT-PMP and UPnP IGD; "pcp", "natpmp" or "upnp" only that one;
	// "disabled" turns it off. See transport/portmap.
	PortmapperConfig string
	// ProxyURL is an HTTP CONNECT proxy for relay connections,
	// "http://[user:password@]host[:port]" or "https://…" (TLS to the
	// proxy); user and password go to the proxy as Basic
	// Proxy-Authorization. The password is masked in Print, errors and
	// logs. It wins over ProxyFromEnv. Default: unset, relays are reached
	// directly.
	ProxyURL string
	// ProxyFromEnv takes the proxy for relay connections from HTTPS_PROXY
	// and NO_PROXY as Go's net/http does (a relay is an https target, so
	// HTTP_PROXY does not apply; localhost and loopback relays are reached
	// directly). Ignored when ProxyURL is set. Default false.
	ProxyFromEnv bool

	// IdentityFile is the .aster-identity file. Default: .aster-identity
	// in the working directory if it exists. It must exist when set.
	IdentityFile string

	// LogFormat is "text" (default) or "json".
	LogFormat string
	// LogLevel is "debug", "info" (default), "warning" (or "warn") or
	// "error".
	LogLevel string
	// LogMask masks keys and credentials in log lines (default true).
	LogMask bool

	rootKeyFromFile ed25519.PublicKey  // read from RootPubkeyFile at load
	sources         map[string]*origin // by field key; nil for a literal Config
	warnings        []string
	unknown         []unknownSetting // unknown variables and file keys seen at load
	emptyRoot       []emptySetting   // root key settings given as empty text at load
}

// unknownSetting is an ASTER_* variable or a file key that Config does not
// know, kept to refuse dev mode when it looks like a trust setting.
type unknownSetting struct {
	name   string // the variable, or the file key
	source string // the variable name, or the file path
	near   string // the key of the field it looks like a misspelling of, or ""
	trust  bool   // it looks like a trust setting (see trustLike)
}

// emptySetting is a root key setting that a file or the environment gave
// as empty (or blank) text: it counts as unset, but it shows that a root
// key was meant to be there, so it must not leave a server in dev mode.
type emptySetting struct {
	key    string // the field's key, "trust.root_pubkey" or "trust.root_pubkey_file"
	source string // the variable name, or the file path
}

// rootKeyFields are the settings that give the root key.
var rootKeyFields = []string{"trust.root_pubkey", "trust.root_pubkey_file"}

// trustWords are the parts of a name that make an unknown setting look
// like a trust setting (see trustLike).
var trustWords = []string{"ROOT", "PUBKEY", "PUBLIC_KEY", "PUB_KEY", "TRUST", "ALLOW_ALL", "ALLOWALL", "ADMISSION", "ADMIT", "ENROLL"}

// trustLike reports whether an unknown variable or file key looks like a
// trust setting written another way: in another section
// (network.root_pubkey), outside any section (root_pubkey_file at the top
// of the file), or named after the TOML key (ASTER_TRUST_ROOT_PUBKEY) or
// in other words (ASTER_ROOT_PUBLIC_KEY). near is the field it is within
// two edits of, if any.
func trustLike(name, near string) bool {
	if strings.HasPrefix(near, "trust.") || strings.HasPrefix(name, "trust.") {
		return true
	}
	n := strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(name))
	for _, w := range trustWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// origin is where a loaded value came from and how it was written there.
type origin struct {
	source string // "default", the file path, or the env var name
	raw    string // the text as written (for printing unexpanded paths)
}

// Defaults that are not zero values.
const (
	DefaultHealthHost    = "127.0.0.1"
	DefaultHookTimeoutMS = 5000
	// MaxHookTimeoutMS is the largest hook_timeout_ms
	// (aster.MaxConnGateTimeout).
	MaxHookTimeoutMS = 60000
	DefaultLogFormat = "text"
	DefaultLogLevel  = "info"
	// DefaultIdentityFile is looked for in the working directory.
	DefaultIdentityFile = ".aster-identity"
)

// SourceDefault is the Source of a value no file or variable set.
const SourceDefault = "default"

// kind is how a field's text is decoded.
type kind int

const (
	kString kind = iota
	kPath
	kBool
	kInt
	kHexKey    // 32-byte key as hex
	kSecretB64 // 32-byte ed25519 seed as base64
	kDuration  // Go duration text ("5s")
)

// field describes one configuration field.
type field struct {
	key       string // "section.name", the koanf/TOML key
	env       string
	kind      kind
	def       any
	sensitive bool   // masked in print output and logs
	limit     bool   // a server cap: 0 means def, a value given must be at least 1
	unset     string // shown when unset
	get       func(*Config) any
	set       func(*Config, any)
}

func strField(key, env string, k kind, unset string, p func(*Config) *string) field {
	return field{key: key, env: env, kind: k, def: "", unset: unset,
		get: func(c *Config) any { return *p(c) }, set: func(c *Config, v any) { *p(c) = v.(string) }}
}

func boolField(key, env string, def bool, p func(*Config) *bool) field {
	return field{key: key, env: env, kind: kBool, def: def,
		get: func(c *Config) any { return *p(c) }, set: func(c *Config, v any) { *p(c) = v.(bool) }}
}

func intField(key, env string, def int, p func(*Config) *int) field {
	return field{key: key, env: env, kind: kInt, def: def,
		get: func(c *Config) any { return *p(c) }, set: func(c *Config, v any) { *p(c) = v.(int) }}
}

// fields lists every configuration field in print order.
var fields = []field{
	{key: "trust.root_pubkey", env: "ASTER_ROOT_PUBKEY", kind: kHexKey, def: "", unset: "<not set>",
		get: func(c *Config) any { return c.RootPubkey },
		set: func(c *Config, v any) { c.RootPubkey, _ = v.(ed25519.PublicKey) }},
	strField("trust.root_pubkey_file", "ASTER_ROOT_PUBKEY_FILE", kPath, "<not set>", func(c *Config) *string { return &c.RootPubkeyFile }),
	withSensitive(strField("trust.enrollment_credential_file", "ASTER_ENROLLMENT_CREDENTIAL", kPath, "<not set>", func(c *Config) *string { return &c.EnrollmentCredentialFile })),
	withSensitive(strField("trust.enrollment_credential_iid", "ASTER_ENROLLMENT_CREDENTIAL_IID", kString, "<not set>", func(c *Config) *string { return &c.EnrollmentCredentialIID })),
	boolField("trust.allow_all_consumers", "ASTER_ALLOW_ALL_CONSUMERS", false, func(c *Config) *bool { return &c.AllowAllConsumers }),
	boolField("trust.allow_all_producers", "ASTER_ALLOW_ALL_PRODUCERS", true, func(c *Config) *bool { return &c.AllowAllProducers }),

	strField("connect.endpoint_addr", "ASTER_ENDPOINT_ADDR", kString, "<not set>", func(c *Config) *string { return &c.EndpointAddr }),

	strField("discovery.backend", "ASTER_DISCOVERY", kString, "<not set>", func(c *Config) *string { return &c.Discovery }),
	strField("discovery.endpoints", "ASTER_DISCOVERY_ENDPOINTS", kString, "<not set>", func(c *Config) *string { return &c.DiscoveryEndpoints }),
	strField("discovery.prefix", "ASTER_DISCOVERY_PREFIX", kString, "<not set>", func(c *Config) *string { return &c.DiscoveryPrefix }),
	durField("discovery.ttl", "ASTER_DISCOVERY_TTL", DefaultDiscoveryTTL, func(c *Config) *time.Duration { return &c.DiscoveryTTL }),
	durField("discovery.dns_min_interval", "ASTER_DISCOVERY_DNS_MIN_INTERVAL", DefaultDNSMinInterval, func(c *Config) *time.Duration { return &c.DiscoveryDNSMinInterval }),
	durField("discovery.dns_max_interval", "ASTER_DISCOVERY_DNS_MAX_INTERVAL", DefaultDNSMaxInterval, func(c *Config) *time.Duration { return &c.DiscoveryDNSMaxInterval }),
	strField("discovery.username", "ASTER_DISCOVERY_USERNAME", kString, "<not set>", func(c *Config) *string { return &c.DiscoveryUsername }),
	withSensitive(strField("discovery.password", "ASTER_DISCOVERY_PASSWORD", kString, "<not set>", func(c *Config) *string { return &c.DiscoveryPassword })),
	strField("discovery.tls_ca", "ASTER_DISCOVERY_TLS_CA", kPath, "<not set>", func(c *Config) *string { return &c.DiscoveryTLSCA }),
	strField("discovery.tls_cert", "ASTER_DISCOVERY_TLS_CERT", kPath, "<not set>", func(c *Config) *string { return &c.DiscoveryTLSCert }),
	strField("discovery.tls_key", "ASTER_DISCOVERY_TLS_KEY", kPath, "<not set>", func(c *Config) *string { return &c.DiscoveryTLSKey }),
	strField("discovery.tls_server_name", "ASTER_DISCOVERY_TLS_SERVER_NAME", kString, "<not set>", func(c *Config) *string { return &c.DiscoveryTLSServerName }),

	{key: "network.secret_key", env: "ASTER_SECRET_KEY", kind: kSecretB64, def: "", unset: "<not set>", sensitive: true,
		get: func(c *Config) any { return c.SecretKey },
		set: func(c *Config, v any) { c.SecretKey, _ = v.(trust.SecretKey) }},
	strField("network.relay_mode", "ASTER_RELAY_MODE", kString, "<default>", func(c *Config) *string { return &c.RelayMode }),
	strField("network.bind_addr", "ASTER_BIND_ADDR", kString, "<any>", func(c *Config) *string { return &c.BindAddr }),
	boolField("network.enable_monitoring", "ASTER_ENABLE_MONITORING", false, func(c *Config) *bool { return &c.EnableMonitoring }),
	boolField("network.enable_hooks", "ASTER_ENABLE_HOOKS", false, func(c *Config) *bool { return &c.EnableHooks }),
	intField("network.hook_timeout_ms", "ASTER_HOOK_TIMEOUT_MS", DefaultHookTimeoutMS, func(c *Config) *int { return &c.HookTimeoutMS }),
	limitField("network.max_conns", "ASTER_MAX_CONNS", aster.DefaultMaxConns, func(c *Config) *int { return &c.MaxConns }),
	limitField("network.max_conns_per_peer", "ASTER_MAX_CONNS_PER_PEER", aster.DefaultMaxConnsPerPeer, func(c *Config) *int { return &c.MaxConnsPerPeer }),
	limitField("network.max_conns_per_addr", "ASTER_MAX_CONNS_PER_ADDR", aster.DefaultMaxConnsPerAddr, func(c *Config) *int { return &c.MaxConnsPerAddr }),
	limitField("network.max_concurrent_streams", "ASTER_MAX_CONCURRENT_STREAMS", aster.DefaultMaxConcurrentStreams, func(c *Config) *int { return &c.MaxConcurrentStreams }),
	boolField("network.clear_ip_transports", "ASTER_CLEAR_IP_TRANSPORTS", false, func(c *Config) *bool { return &c.ClearIPTransports }),
	boolField("network.clear_relay_transports", "ASTER_CLEAR_RELAY_TRANSPORTS", false, func(c *Config) *bool { return &c.ClearRelayTransports }),
	strField("network.portmapper_config", "ASTER_PORTMAPPER_CONFIG", kString, "<default>", func(c *Config) *string { return &c.PortmapperConfig }),
	strField("network.proxy_url", "ASTER_PROXY_URL", kString, "<not set>", func(c *Config) *string { return &c.ProxyURL }),
	boolField("network.proxy_from_env", "ASTER_PROXY_FROM_ENV", false, func(c *Config) *bool { return &c.ProxyFromEnv }),

	strField("storage.path", "ASTER_STORAGE_PATH", kPath, "<in-memory>", func(c *Config) *string { return &c.StoragePath }),

	intField("health.health_port", "ASTER_HEALTH_PORT", 0, func(c *Config) *int { return &c.HealthPort }),
	withDefault(strField("health.health_host", "ASTER_HEALTH_HOST", kString, "<not set>", func(c *Config) *string { return &c.HealthHost }), DefaultHealthHost),

	strField("identity.identity_file", "ASTER_IDENTITY_FILE", kPath, "<not set>", func(c *Config) *string { return &c.IdentityFile }),

	withDefault(strField("logging.format", "ASTER_LOG_FORMAT", kString, "<not set>", func(c *Config) *string { return &c.LogFormat }), DefaultLogFormat),
	withDefault(strField("logging.level", "ASTER_LOG_LEVEL", kString, "<not set>", func(c *Config) *string { return &c.LogLevel }), DefaultLogLevel),
	boolField("logging.mask", "ASTER_LOG_MASK", true, func(c *Config) *bool { return &c.LogMask }),
}

func withSensitive(f field) field { f.sensitive = true; return f }

func withDefault(f field, def string) field { f.def = def; return f }

// limitField is an int field holding a server cap (see Config.MaxConns).
func limitField(key, env string, def int, p func(*Config) *int) field {
	f := intField(key, env, def, p)
	f.limit = true
	return f
}

var fieldByKey, fieldByEnv = func() (map[string]*field, map[string]*field) {
	byKey, byEnv := map[string]*field{}, map[string]*field{}
	for i := range fields {
		byKey[fields[i].key] = &fields[i]
		byEnv[fields[i].env] = &fields[i]
	}
	return byKey, byEnv
}()

// sectionOrder is the order sections are printed in.
var sectionOrder = []string{"trust", "connect", "network", "storage", "health", "identity", "logging", "discovery"}

// Error reports a configuration value that cannot be used. Every error
// about one field that Load, LoadFile, Validate, TrustPolicy, NewServer and
// ClientOptions return is an *Error (find it with errors.As).
type Error struct {
	// Field is the TOML key, e.g. "network.hook_timeout_ms".
	Field string
	// Source is where the value came from: the ASTER_* variable, the file
	// path, "default", or "Config" for a literal Config.
	Source string
	// Value is the offending text, quoted, or a note if it is secret.
	Value string
	// Reason says what is wrong, e.g. "is not an integer".
	Reason string
	// Err is the underlying cause (ErrNotSupported, a file error, ...), or
	// nil.
	Err error
}

// Error formats the error as `SOURCE: "VALUE" REASON (FIELD)`.
func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s %s (%s)", e.Source, e.Value, e.Reason, e.Field)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrNotSupported is the cause of an *Error for a setting whose feature
// does not exist yet in aster for Go.
var ErrNotSupported = errors.New("not supported yet")

// fieldErr builds the error for a bad value of f from src.
func fieldErr(f *field, src string, raw any, reason string, cause error) error {
	val := fmt.Sprintf("%q", fmt.Sprint(raw))
	if f.sensitive {
		val = fmt.Sprintf("<%d characters, hidden>", len(fmt.Sprint(raw)))
	}
	if s, ok := raw.(string); ok && s == "" {
		val = `""`
	}
	return &Error{Field: f.key, Source: src, Value: val, Reason: reason, Err: cause}
}

// Default returns the built-in defaults (the configuration when no file
// and no ASTER_* variable sets anything, except that the identity file is
// not looked up).
func Default() Config {
	var c Config
	for i := range fields {
		f := &fields[i]
		switch f.kind {
		case kHexKey, kSecretB64:
			f.set(&c, nil)
		default:
			f.set(&c, f.def)
		}
	}
	return c
}

// Load resolves the configuration from the built-in defaults and the
// ASTER_* environment variables, and validates it. A bad value fails with
// an *Error naming the field, the variable and the value; a setting that
// does nothing yet fails with an *Error wrapping ErrNotSupported. An
// unknown ASTER_* variable close to a known name is ignored with a warning
// (see Warnings).
func Load() (Config, error) { return load("", os.Environ(), false) }

// LoadFile resolves the configuration from the built-in defaults, the TOML
// file at path, and the ASTER_* environment variables, which always win.
// Keys the file has but Config does not know are ignored with a warning
// (see Warnings); LoadFileStrict makes them an error.
func LoadFile(path string) (Config, error) {
	if path == "" {
		return Config{}, errors.New("config: empty file path")
	}
	return load(path, os.Environ(), false)
}

// LoadFileStrict is LoadFile with unknown keys in the file an error
// ("aster --strict").
func LoadFileStrict(path string) (Config, error) {
	if path == "" {
		return Config{}, errors.New("config: empty file path")
	}
	return load(path, os.Environ(), true)
}

// maxConfigFile caps the TOML file read at load.
const maxConfigFile = 1 << 20

func load(path string, environ []string, strict bool) (Config, error) {
	c, err := resolve(path, environ, strict)
	if err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// resolve is load without the validation of the resolved values.
func resolve(path string, environ []string, strict bool) (Config, error) {
	var warnings []string
	var unknownSettings []unknownSetting
	var emptyRoot []emptySetting
	defaults := map[string]any{}
	for _, f := range fields {
		if f.kind != kHexKey && f.kind != kSecretB64 {
			defaults[f.key] = f.def
		}
	}
	k := koanf.New(".")
	if err := k.Load(confmap.Provider(defaults, "."), nil); err != nil {
		return Config{}, fmt.Errorf("config: defaults: %w", err)
	}

	fileK := koanf.New(".")
	if path != "" {
		b, err := readCapped(path, maxConfigFile)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		if err := fileK.Load(rawbytes.Provider(b), toml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config: %s: %w", path, err)
		}
		var unknown []string
		for _, key := range fileK.Keys() {
			if fieldByKey[key] == nil {
				unknown = append(unknown, key)
			}
		}
		if len(unknown) > 0 {
			if strict {
				return Config{}, fmt.Errorf("config: %s: unknown keys %s (see \"aster config print\" for the known ones)",
					path, strings.Join(unknown, ", "))
			}
			for _, key := range unknown {
				fileK.Delete(key)
				warnings = append(warnings, fmt.Sprintf("%s: unknown key %s ignored", path, key))
				near := closestKey(key)
				unknownSettings = append(unknownSettings, unknownSetting{name: key, source: path, near: near, trust: trustLike(key, near)})
			}
		}
		if err := k.Merge(fileK); err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
	}

	envK := koanf.New(".")
	err := envK.Load(env.Provider(".", env.Opt{
		Prefix:      "ASTER_",
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, val string) (string, any) {
			f := fieldByEnv[name]
			if f == nil {
				near := closestEnv(name)
				nearKey := ""
				if near != "" {
					nearKey = fieldByEnv[near].key
				}
				switch tl := trustLike(strings.TrimPrefix(name, "ASTER_"), nearKey); {
				case near != "":
					warnings = append(warnings, fmt.Sprintf("unknown variable %s ignored; did you mean %s?", name, near))
					unknownSettings = append(unknownSettings, unknownSetting{name: name, source: name, near: nearKey, trust: tl})
				case tl:
					warnings = append(warnings, fmt.Sprintf("unknown variable %s ignored; it is not a trust setting (those are ASTER_ROOT_PUBKEY, ASTER_ROOT_PUBKEY_FILE, ASTER_ALLOW_ALL_CONSUMERS, ASTER_ALLOW_ALL_PRODUCERS, ASTER_ENROLLMENT_CREDENTIAL, ASTER_ENROLLMENT_CREDENTIAL_IID)", name))
					unknownSettings = append(unknownSettings, unknownSetting{name: name, source: name, trust: true})
				}
				return "", nil
			}
			if strings.TrimSpace(val) == "" {
				if slices.Contains(rootKeyFields, f.key) {
					emptyRoot = append(emptyRoot, emptySetting{key: f.key, source: name})
				}
				return "", nil // empty counts as unset
			}
			return f.key, val
		},
	}), nil)
	if err != nil {
		return Config{}, fmt.Errorf("config: environment: %w", err)
	}
	if err := k.Merge(envK); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}

	c := Config{sources: map[string]*origin{}, warnings: warnings, unknown: unknownSettings, emptyRoot: emptyRoot}
	for i := range fields {
		f := &fields[i]
		src := SourceDefault
		switch {
		case envK.Exists(f.key):
			src = f.env
		case fileK.Exists(f.key):
			src = path
		}
		raw := k.Get(f.key)
		o := &origin{source: src, raw: fmt.Sprint(raw)}
		if raw == nil {
			o.raw = ""
		}
		c.sources[f.key] = o
		v, err := decode(f, raw)
		if err != nil {
			return Config{}, fieldErr(f, src, raw, err.Error(), nil)
		}
		f.set(&c, v)
		if src == path && slices.Contains(rootKeyFields, f.key) && v == "" {
			c.emptyRoot = append(c.emptyRoot, emptySetting{key: f.key, source: path})
		}
	}
	if c.sources["identity.identity_file"].source == SourceDefault {
		if st, err := os.Stat(DefaultIdentityFile); err == nil && st.Mode().IsRegular() {
			c.IdentityFile = DefaultIdentityFile
			c.sources["identity.identity_file"].raw = DefaultIdentityFile
		}
	}
	c.warnings = append(c.warnings, c.plainCredentialWarnings()...)
	return c, nil
}

func readCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, nil
}

// decode converts a raw value (a string from the environment, or a TOML
// value) to the field's Go type.
func decode(f *field, raw any) (any, error) {
	switch f.kind {
	case kString, kPath:
		s, ok := raw.(string)
		if !ok {
			return nil, errors.New("is not a string")
		}
		s = strings.TrimSpace(s)
		if f.kind == kPath {
			p, err := expandHome(s)
			if err != nil {
				return nil, err
			}
			s = p
		}
		return s, nil
	case kBool:
		return parseBool(raw)
	case kInt:
		switch v := raw.(type) {
		case int:
			return v, nil
		case int64:
			if int64(int(v)) != v {
				return nil, errors.New("is out of range")
			}
			return int(v), nil
		case string:
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return nil, errors.New("is not an integer")
			}
			return n, nil
		}
		return nil, errors.New("is not an integer")
	case kHexKey:
		if raw == nil {
			return ed25519.PublicKey(nil), nil
		}
		s, ok := raw.(string)
		if !ok {
			return nil, errors.New("is not a hex string")
		}
		k, err := parseHexKey(s)
		if err != nil {
			return nil, err
		}
		return k, nil
	case kDuration:
		return decodeDuration(raw)
	case kSecretB64:
		if raw == nil {
			return trust.SecretKey(nil), nil
		}
		s, ok := raw.(string)
		if !ok {
			return nil, errors.New("is not a base64 string")
		}
		k, err := trust.ParseSecretKeyBase64(s)
		if err != nil {
			return nil, errors.New("is not a base64-encoded 32-byte key")
		}
		return k, nil
	}
	return nil, fmt.Errorf("unknown field kind %d", f.kind)
}

// parseBool accepts true/false, 1/0, yes/no and on/off in any case.
func parseBool(raw any) (bool, error) {
	switch v := raw.(type) {
	case bool:
		return v, nil
	case int64:
		if v == 0 || v == 1 {
			return v == 1, nil
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "yes", "on":
			return true, nil
		case "false", "0", "no", "off":
			return false, nil
		}
	}
	return false, errors.New("is not a boolean (true/false, 1/0, yes/no, on/off)")
}

// parseHexKey decodes a 32-byte ed25519 public key from 64 hex characters.
func parseHexKey(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, errors.New("is not hex")
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("is %d bytes, want a %d-byte key (%d hex characters)", len(b), ed25519.PublicKeySize, 2*ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// expandHome replaces a leading "~" or "~/" with the home directory.
func expandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot expand ~: %v", err)
	}
	return filepath.Join(home, p[1:]), nil
}

// closestEnv returns the known variable name closest to name if it is near
// enough to be a typo, else "".
func closestEnv(name string) string { return closest(name, func(f *field) string { return f.env }) }

// closestKey returns the key of the field whose TOML key is nearest to key
// if it is near enough to be a typo, else "".
func closestKey(key string) string { return closest(key, func(f *field) string { return f.key }) }

// closest returns the name (of each field) nearest to s, within 2 edits,
// else "".
func closest(s string, name func(*field) string) string {
	best, bestD := "", 3 // at most 2 edits
	for i := range fields {
		n := name(&fields[i])
		if d := editDistance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// origin returns the source and written text of f's value.
func (c *Config) origin(f *field) (src, raw string) {
	if o := c.sources[f.key]; o != nil {
		return o.source, o.raw
	}
	v := f.get(c)
	if s, ok := v.(string); ok && s == "" { // empty: unset or the default
		return SourceDefault, ""
	}
	if (f.key == "network.hook_timeout_ms" || f.limit) && v == 0 { // zero: the default
		return SourceDefault, fmt.Sprint(f.def)
	}
	if d, ok := v.(time.Duration); ok && d == 0 { // zero: the default
		return SourceDefault, fmt.Sprint(f.def)
	}
	if isUnset(f, v) || (f.kind != kHexKey && f.kind != kSecretB64 && v == f.def) {
		return SourceDefault, fmt.Sprint(v)
	}
	return "Config", fmt.Sprint(v)
}

// Source returns where the value of the field with TOML key key (e.g.
// "network.bind_addr") came from: "default", the TOML file's path, or the
// ASTER_* variable's name. For a literal Config it is "default" for values
// equal to the default and "Config" otherwise; for an unknown key, "".
func (c *Config) Source(key string) string {
	f := fieldByKey[key]
	if f == nil {
		return ""
	}
	src, _ := c.origin(f)
	return src
}

// Warnings returns the warnings found while loading, such as an unknown
// ASTER_* variable that looks like a misspelt one.
func (c *Config) Warnings() []string { return slices.Clone(c.warnings) }

// RootPublicKey returns the effective root public key: RootPubkey if set,
// else the key read from RootPubkeyFile (at load, or now for a literal
// Config), else nil (dev mode).
func (c *Config) RootPublicKey() (ed25519.PublicKey, error) {
	if c.RootPubkey != nil {
		return c.RootPubkey, nil
	}
	if c.rootKeyFromFile != nil {
		return c.rootKeyFromFile, nil
	}
	if c.RootPubkeyFile == "" {
		return nil, nil
	}
	return readRootKeyFile(c.RootPubkeyFile)
}

// readRootKeyFile reads a root public key file (hex, or JSON with
// "public_key"; trust.ReadRootPublicKey).
func readRootKeyFile(path string) (ed25519.PublicKey, error) {
	k, err := trust.ReadRootPublicKey(path)
	if err != nil {
		return nil, err
	}
	return k.PublicKey(), nil
}

// Validate checks the values of c (a loaded Config has been validated
// already): ranges and formats, files that must exist, and settings that
// are not supported yet. It returns an *Error naming the first bad field.
func (c *Config) Validate() error {
	bad := func(key string, reason string) error {
		f := fieldByKey[key]
		src, raw := c.origin(f)
		return fieldErr(f, src, raw, reason, nil)
	}
	badCause := func(key string, reason string, cause error) error {
		f := fieldByKey[key]
		src, raw := c.origin(f)
		return fieldErr(f, src, raw, reason, cause)
	}
	if c.RootPubkey != nil && len(c.RootPubkey) != ed25519.PublicKeySize {
		return bad("trust.root_pubkey", fmt.Sprintf("is %d bytes, want %d", len(c.RootPubkey), ed25519.PublicKeySize))
	}
	if c.RootPubkeyFile != "" {
		k, err := readRootKeyFile(c.RootPubkeyFile)
		if err != nil {
			return badCause("trust.root_pubkey_file", "cannot be used: "+err.Error(), err)
		}
		c.rootKeyFromFile = k
	}
	if c.EnrollmentCredentialFile != "" {
		if err := regularFile(c.EnrollmentCredentialFile); err != nil {
			return bad("trust.enrollment_credential_file", "cannot be used: "+err.Error())
		}
	}
	if c.EndpointAddr != "" {
		if _, err := aster.ParseAddress(c.EndpointAddr); err != nil {
			return badCause("connect.endpoint_addr", "is not an aster1… address or hex endpoint id: "+err.Error(), err)
		}
	}
	if c.HealthPort < 0 || c.HealthPort > 65535 {
		return bad("health.health_port", "is not a port number (0-65535; 0 disables the health server)")
	}
	if c.HealthHost != "" && strings.ContainsAny(c.HealthHost, " /") {
		return bad("health.health_host", "is not a host name or IP address")
	}
	if c.SecretKey != nil && len(c.SecretKey) != ed25519.PrivateKeySize {
		return bad("network.secret_key", "is not an ed25519 private key")
	}
	if c.BindAddr != "" {
		host, port, err := net.SplitHostPort(c.BindAddr)
		if err != nil {
			return bad("network.bind_addr", "is not host:port")
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return bad("network.bind_addr", "has a bad port")
		}
		_ = host
	}
	if c.HookTimeoutMS < 0 {
		return bad("network.hook_timeout_ms", "must not be negative")
	}
	if c.HookTimeoutMS > MaxHookTimeoutMS || (c.HookTimeoutMS == 0 && c.Source("network.hook_timeout_ms") != SourceDefault) {
		return bad("network.hook_timeout_ms", fmt.Sprintf("must be 1 to %d milliseconds", MaxHookTimeoutMS))
	}
	for i := range fields {
		f := &fields[i]
		if !f.limit {
			continue
		}
		if n := f.get(c).(int); n < 0 || (n == 0 && c.Source(f.key) != SourceDefault) {
			return bad(f.key, fmt.Sprintf("must be at least 1 (default %d); a cap cannot be removed by configuration, only raised", f.def))
		}
	}
	switch strings.ToLower(c.LogFormat) {
	case "", "text", "json":
	default:
		return bad("logging.format", `is not "text" or "json"`)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return bad("logging.level", err.Error())
	}
	if c.IdentityFile != "" {
		if err := regularFile(c.IdentityFile); err != nil {
			return bad("identity.identity_file", "cannot be used: "+err.Error())
		}
	}
	if c.RelayMode != "" && c.RelayMode != "default" && c.RelayMode != "disabled" {
		if _, err := relay.ParseURL(c.RelayMode); err != nil {
			return badCause("network.relay_mode", `is not "default", "disabled" or a relay URL https://host[:port][#sha256=<hex>]: `+err.Error(), err)
		}
	}
	if c.ClearIPTransports && !c.relaysEnabled() {
		return bad("network.clear_ip_transports", "leaves no transport: relays are disabled too (relay_mode or clear_relay_transports)")
	}
	if c.EnableMonitoring && c.HealthPort == 0 {
		return bad("network.enable_monitoring", "needs health.health_port > 0: metrics are served by the health server")
	}
	if err := c.validateDiscovery(); err != nil {
		return err
	}
	if _, _, ok := portmapProtocols(c.PortmapperConfig); !ok {
		return bad("network.portmapper_config", `is not "default", "enabled", "disabled", "pcp", "natpmp" or "upnp"`)
	}
	if err := c.validateProxy(); err != nil {
		return err
	}

	return nil
}

// regularFile checks that path is a regular file. The error does not
// repeat the path (which may be sensitive; the caller names the field).
func regularFile(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("no such file")
	case errors.Is(err, fs.ErrPermission):
		return errors.New("permission denied")
	case err != nil:
		return errors.New("cannot stat the file")
	case !st.Mode().IsRegular():
		return errors.New("is not a regular file")
	}
	return nil
}

// relaysEnabled reports whether relays may be used (relay_mode is not
// "disabled" and clear_relay_transports is not set).
func (c *Config) relaysEnabled() bool {
	return c.RelayMode != "disabled" && !c.ClearRelayTransports
}

// HookTimeout returns hook_timeout_ms as a duration (the default for 0).
func (c *Config) HookTimeout() time.Duration {
	if c.HookTimeoutMS == 0 {
		return DefaultHookTimeoutMS * time.Millisecond
	}
	return time.Duration(c.HookTimeoutMS) * time.Millisecond
}

// HooksEnabled reports whether a server built from c gates its
// connections: enable_hooks is set, or admission is active (a root key is
// configured), which implies it.
func (c *Config) HooksEnabled() bool {
	if c.EnableHooks {
		return true
	}
	k, err := c.RootPublicKey()
	return err == nil && k != nil
}

// HomeRelay returns the server's home relay URL: relay_mode when it is a
// URL and relays are enabled, else "".
func (c *Config) HomeRelay() string {
	if !c.relaysEnabled() || c.RelayMode == "" || c.RelayMode == "default" {
		return ""
	}
	return c.RelayMode
}

// isUnset reports whether v is f's "not set" value.
func isUnset(f *field, v any) bool {
	switch x := v.(type) {
	case string:
		return x == "" && f.def == ""
	case ed25519.PublicKey:
		return x == nil
	case trust.SecretKey:
		return x == nil
	}
	return false
}

// HealthAddr returns the health server's "host:port" (HealthHost, default
// 127.0.0.1, and HealthPort), or "" when HealthPort is 0 (disabled).
func (c *Config) HealthAddr() string {
	if c.HealthPort == 0 {
		return ""
	}
	host := c.HealthHost
	if host == "" {
		host = DefaultHealthHost
	}
	return net.JoinHostPort(host, strconv.Itoa(c.HealthPort))
}

// Address returns connect.endpoint_addr parsed, for Dial. It fails with an
// *Error when no endpoint address is configured or it does not parse.
func (c *Config) Address() (aster.Address, error) {
	f := fieldByKey["connect.endpoint_addr"]
	src, raw := c.origin(f)
	if c.EndpointAddr == "" {
		return aster.Address{}, fieldErr(f, src, "", "is not set: the client needs the producer's address (ASTER_ENDPOINT_ADDR)", nil)
	}
	a, err := aster.ParseAddress(c.EndpointAddr)
	if err != nil {
		return aster.Address{}, fieldErr(f, src, raw, "is not an aster1… address or hex endpoint id: "+err.Error(), err)
	}
	return a, nil
}
