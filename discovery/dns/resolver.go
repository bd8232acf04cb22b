package dns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

// Defaults and limits. Every limit is enforced before the data it bounds is
// kept.
const (
	// DefaultMinInterval is Config.MinInterval's default: the shortest time
	// between two resolutions of one name, whatever the TTLs or ResolveNow
	// say.
	DefaultMinInterval = time.Second
	// DefaultMaxInterval is Config.MaxInterval's default: the longest time
	// a watch trusts a set before looking again, whatever the TTLs say.
	DefaultMaxInterval = 30 * time.Second
	// DefaultTimeout is Config.Timeout's default, per DNS query.
	DefaultTimeout = 2 * time.Second

	// MaxProducers is the most producers one name yields; SRV records
	// beyond it (in priority, target, port order) are dropped and logged.
	MaxProducers = 256
	// MaxTXTLen is the longest TXT record accepted, in bytes, its
	// character-strings concatenated; a longer record is ignored and
	// logged. It leaves room for a base64 credential of 6 KiB.
	MaxTXTLen = 8 << 10
	// MaxTXTRecords is the most TXT records read at one target name.
	MaxTXTRecords = 16
	// MaxNameLen is the longest name (SRV name or target), in bytes,
	// without the final dot, as RFC 1035 allows.
	MaxNameLen = 253

	// maxConfigDuration bounds the configurable intervals and timeout, so
	// that a typo (30h for 30s) is caught.
	maxConfigDuration = 24 * time.Hour
	// udpSize is the EDNS0 buffer size advertised: the DNS flag day 2020
	// value, which avoids IP fragmentation; larger answers come back
	// truncated and are asked again over TCP.
	udpSize = 1232
	// udpReadSize is the UDP read buffer: room for servers that send more
	// than was advertised, up to the common 4096-byte EDNS0 default,
	// without a 64 KiB buffer per query.
	udpReadSize = 4096
	// maxCNAMEHops bounds the CNAME chain followed inside one answer.
	maxCNAMEHops = 8
	// parallelism is the number of per-target queries in flight at once
	// during one resolution.
	parallelism = 16
	// resolvConf is where the default server comes from.
	resolvConf = "/etc/resolv.conf"
)

// Config configures a Resolver. The zero value uses the first nameserver of
// /etc/resolv.conf and the defaults below.
type Config struct {
	// Server is the "host:port" of the DNS server to ask (a recursive
	// resolver, or the authoritative server of the zone). A bare host or
	// IP address gets port 53. Default: the first nameserver of
	// /etc/resolv.conf.
	Server string
	// MinInterval is the floor of the re-resolution interval: a watch never
	// asks again sooner than this after its previous resolution, even when
	// the TTLs are shorter or ResolveNow is called. Default
	// DefaultMinInterval (1s).
	MinInterval time.Duration
	// MaxInterval is the ceiling of the re-resolution interval: a watch
	// asks again at least this often, even when the TTLs are longer.
	// Default DefaultMaxInterval (30s). It must not be below MinInterval.
	MaxInterval time.Duration
	// Timeout bounds each DNS query (UDP, then TCP if the answer was
	// truncated). Default DefaultTimeout (2s).
	Timeout time.Duration
	// Logger receives what the watches drop or keep (ignored records,
	// failed re-resolutions). Default slog.Default().
	Logger *slog.Logger
}

// Resolver is the DNS discovery.Source: it follows the producers of SRV
// names (see the package documentation for the records). It is safe for
// concurrent use; it holds no resources itself, each Watch does.
type Resolver struct {
	server      string
	minInterval time.Duration
	maxInterval time.Duration
	timeout     time.Duration
	log         *slog.Logger
}

var _ discovery.Source = (*Resolver)(nil)

// New returns a Resolver for cfg, with the defaults filled in. It fails,
// naming the field, on a negative or out-of-range duration, MaxInterval
// below MinInterval, a Server that is not host:port, or (when Server is
// empty) no nameserver in /etc/resolv.conf.
func New(cfg Config) (*Resolver, error) {
	r := &Resolver{
		minInterval: cfg.MinInterval,
		maxInterval: cfg.MaxInterval,
		timeout:     cfg.Timeout,
		log:         cfg.Logger,
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"MinInterval", &r.minInterval, DefaultMinInterval},
		{"MaxInterval", &r.maxInterval, DefaultMaxInterval},
		{"Timeout", &r.timeout, DefaultTimeout},
	} {
		switch {
		case *f.v < 0:
			return nil, status.Errorf(status.InvalidArgument, "discovery/dns: Config.%s is negative (%v)", f.name, *f.v)
		case *f.v > maxConfigDuration:
			return nil, status.Errorf(status.InvalidArgument, "discovery/dns: Config.%s is %v, above the limit of %v", f.name, *f.v, maxConfigDuration)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	if r.maxInterval < r.minInterval {
		return nil, status.Errorf(status.InvalidArgument, "discovery/dns: Config.MaxInterval (%v) is below Config.MinInterval (%v)", r.maxInterval, r.minInterval)
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	server := cfg.Server
	if server == "" {
		s, err := systemServer(resolvConf)
		if err != nil {
			return nil, status.Errorf(status.InvalidArgument, "discovery/dns: Config.Server is empty and %w", err)
		}
		server = s
	}
	s, err := normalizeServer(server)
	if err != nil {
		return nil, status.Errorf(status.InvalidArgument, "discovery/dns: Config.Server: %w", err)
	}
	r.server = s
	return r, nil
}

// Server returns the "host:port" of the DNS server r asks.
func (r *Resolver) Server() string { return r.server }

// Watch resolves name (an SRV name such as "_mc._udp.example.internal") and
// returns a watch that follows its producers. ctx bounds this first
// resolution only; the watch lives until Close. Watch fails with
// InvalidArgument for a bad name, NotFound when the name does not exist
// (NXDOMAIN), and Unavailable when the server cannot be reached or does not
// answer within Timeout.
func (r *Resolver) Watch(ctx context.Context, name string) (discovery.Watch, error) {
	fqdn, err := checkName(name)
	if err != nil {
		return nil, status.Errorf(status.InvalidArgument, "discovery/dns: watch %q: %w", name, err)
	}
	w, err := r.startWatch(ctx, name, fqdn)
	if err != nil {
		return nil, err
	}
	return w, nil
}

// normalizeServer checks s is host:port (or a bare host or IP, given port
// 53) and returns its host:port form.
func normalizeServer(s string) (string, error) {
	if s == "" {
		return "", fmt.Errorf("empty")
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("%q: port 0", s)
		}
		return ap.String(), nil
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// A bare host name.
		if _, herr := checkName(s); herr != nil {
			return "", fmt.Errorf("%q: want host:port: %w", s, err)
		}
		return net.JoinHostPort(s, "53"), nil
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Errorf("%q: bad port %q", s, port)
	}
	if _, err := checkName(host); err != nil {
		return "", fmt.Errorf("%q: bad host: %w", s, err)
	}
	return net.JoinHostPort(host, port), nil
}

// systemServer returns the first nameserver listed in the resolv.conf file
// at path, as host:port.
func systemServer(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > 1<<20 {
		return "", fmt.Errorf("%s is over 1 MiB", path)
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			a, err := netip.ParseAddr(f[1])
			if err != nil {
				continue
			}
			return netip.AddrPortFrom(a, 53).String(), nil
		}
	}
	return "", fmt.Errorf("%s lists no nameserver", path)
}
