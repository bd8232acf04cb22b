package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

// Defaults and limits.
const (
	// DefaultPrefix is the key root when Config.Prefix is empty.
	DefaultPrefix = "/aster/"
	// DefaultTTL is the lease TTL of a registration when Config.TTL is 0.
	DefaultTTL = 5 * time.Second
	// MinTTL is the shortest Config.TTL accepted. etcd counts leases in
	// whole seconds and may raise a short TTL to its own minimum (about 2 s
	// with etcd's default timing); Grant's answer is what applies.
	MinTTL = time.Second
	// DefaultDialTimeout is how long New and Watch wait for etcd to answer
	// when Config.DialTimeout is 0.
	DefaultDialTimeout = 3 * time.Second
	// MaxNameLen is the longest service name, in bytes.
	MaxNameLen = 512
	// MaxValueSize is the largest entry value, in bytes: Register refuses
	// a producer whose value would be larger, and a watch ignores larger
	// values.
	MaxValueSize = 16 << 10
	// MaxEntries is the most producers one watch holds; entries beyond it
	// (the last in key order when the watch starts, new keys once it is
	// full) are ignored and logged.
	MaxEntries = 10000
)

// Config configures a Registry. Only Endpoints is required.
type Config struct {
	// Endpoints are the etcd client URLs ("http://127.0.0.1:2379") or
	// host:port pairs. Required.
	Endpoints []string
	// Prefix is the key root under which every name lives. Default
	// DefaultPrefix ("/aster/"); a missing trailing "/" is added.
	Prefix string
	// TTL is the lease TTL of a registration: how long a producer stays
	// listed after its process stops renewing it. Default DefaultTTL (5 s);
	// it is rounded up to whole seconds; less than MinTTL is invalid.
	TTL time.Duration
	// DialTimeout bounds how long New (and Watch's first read) wait for etcd
	// at start, and each request the registry makes on its own (re-granting
	// a lost lease, revoking on Close). Default DefaultDialTimeout (3 s).
	DialTimeout time.Duration
	// Username and Password authenticate to etcd when Username is set.
	Username, Password string
	// TLS, if set, is used to connect to etcd (with https:// and host:port
	// endpoints; the etcd client connects to http:// endpoints in plain
	// text, whatever TLS says, so do not list them with it). When New
	// cannot reach etcd over TLS its error gives the handshake's failure
	// (an unknown authority, a refused client certificate).
	TLS *tls.Config
	// Logger receives the registry's warnings (lost leases, ignored
	// entries, reconnections). Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns c with defaults filled in, or an error wrapping
// status InvalidArgument for an invalid value.
func (c Config) withDefaults(needEndpoints bool) (Config, error) {
	if needEndpoints && len(c.Endpoints) == 0 {
		return c, status.New(status.InvalidArgument, "discovery/etcd: Config.Endpoints is empty")
	}
	for _, e := range c.Endpoints {
		if strings.TrimSpace(e) == "" {
			return c, status.New(status.InvalidArgument, "discovery/etcd: Config.Endpoints has an empty entry")
		}
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if !utf8.ValidString(c.Prefix) || len(c.Prefix) > MaxNameLen {
		return c, status.Errorf(status.InvalidArgument, "discovery/etcd: Config.Prefix %.64q: want valid UTF-8 of at most %d bytes", c.Prefix, MaxNameLen)
	}
	switch {
	case c.TTL == 0:
		c.TTL = DefaultTTL
	case c.TTL < MinTTL:
		return c, status.Errorf(status.InvalidArgument, "discovery/etcd: Config.TTL %v is shorter than the minimum %v", c.TTL, MinTTL)
	}
	switch {
	case c.DialTimeout == 0:
		c.DialTimeout = DefaultDialTimeout
	case c.DialTimeout < 0:
		return c, status.Errorf(status.InvalidArgument, "discovery/etcd: Config.DialTimeout %v is negative", c.DialTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// ttlSeconds is the TTL in whole seconds, rounded up.
func (c Config) ttlSeconds() int64 {
	return int64((c.TTL + time.Second - 1) / time.Second)
}

// Registry is a discovery.Source and discovery.Registry backed by etcd. It
// is safe for concurrent use. Close it when done: it stops every watch and
// registration it made.
type Registry struct {
	cfg    Config
	client *clientv3.Client
	owned  bool // Close closes client
	log    *slog.Logger

	stopMonitor context.CancelFunc
	monitorDone chan struct{}

	closing       context.Context // canceled when Close begins
	cancelClosing context.CancelFunc
	inflight      sync.WaitGroup // Register and Watch calls under way

	mu      sync.Mutex
	closed  bool
	regs    map[*registration]struct{}
	watches map[*watch]struct{}
}

var (
	_ discovery.Source   = (*Registry)(nil)
	_ discovery.Registry = (*Registry)(nil)
)

// New connects to the etcd cluster cfg names and returns a Registry that
// owns the connection (Close closes it). It fails, with an error carrying
// status Unavailable, if etcd does not answer within cfg.DialTimeout.
func New(cfg Config) (*Registry, error) {
	cfg, err := cfg.withDefaults(true)
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		Username:    cfg.Username,
		Password:    cfg.Password,
		TLS:         cfg.TLS,
		// The client's own zap log would go to stderr; the registry logs
		// what matters to cfg.Logger.
		Logger: zap.NewNop(),
		// Detect a dead connection to etcd in seconds, not minutes.
		// (gRPC does not ping more often than every 10 s.)
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: cfg.DialTimeout,
		// Bound what one read may bring back: a full watch of MaxEntries
		// values at the size limit, plus slack.
		MaxCallRecvMsgSize: MaxEntries*(MaxValueSize+MaxNameLen+128) + 1<<20,
		// Reconnect within a couple of seconds of etcd coming back, rather
		// than after gRPC's default backoff (up to 2 minutes).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   2 * time.Second,
			},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, status.Wrap(status.InvalidArgument, fmt.Errorf("discovery/etcd: %w", err))
	}
	r := newRegistry(c, cfg, true)
	if err := r.ping(context.Background()); err != nil {
		c.Close()
		if terr := probeTLS(cfg); terr != nil {
			// The gRPC client only says that etcd did not answer; say why.
			return nil, status.Wrap(status.Unavailable, fmt.Errorf("discovery/etcd: etcd %v: %w", cfg.Endpoints, terr))
		}
		return nil, err
	}
	return r, nil
}

// probeTLS, after a failed start over TLS, makes one TLS handshake with
// each endpoint the way the etcd client does (cfg.TLS, the endpoint's host
// as the server name unless cfg.TLS names one) and returns the first
// failure, such as an unknown certificate authority or a client
// certificate the server refused, or nil. It is a diagnosis only: the
// etcd client makes the connections that are used.
func probeTLS(cfg Config) error {
	timeout := min(cfg.DialTimeout, 2*time.Second)
	for _, e := range cfg.Endpoints {
		host := e
		secure := cfg.TLS != nil
		if scheme, rest, ok := strings.Cut(e, "://"); ok {
			host = rest
			switch strings.ToLower(scheme) {
			case "https":
				secure = true
			case "http":
				secure = false
			}
		}
		if !secure {
			continue
		}
		tc := &tls.Config{}
		if cfg.TLS != nil {
			tc = cfg.TLS.Clone()
		}
		if tc.ServerName == "" {
			tc.ServerName = host
			if h, _, err := net.SplitHostPort(host); err == nil {
				tc.ServerName = h
			}
		}
		tc.NextProtos = []string{"h2"}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", host, tc)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // not a TLS failure
			}
			return fmt.Errorf("TLS handshake with %s failed: %w", host, err)
		}
		// A server that requires a client certificate says so after the
		// handshake (TLS 1.3): wait briefly for its alert.
		conn.SetReadDeadline(time.Now().Add(min(timeout, 300*time.Millisecond)))
		_, rerr := conn.Read(make([]byte, 1))
		conn.Close()
		var ne net.Error
		if rerr != nil && !(errors.As(rerr, &ne) && ne.Timeout()) && rerr != io.EOF && strings.Contains(rerr.Error(), "tls:") {
			return fmt.Errorf("TLS with %s refused: %w", host, rerr)
		}
	}
	return nil
}

// NewFromClient returns a Registry that uses c, an etcd client the caller
// made and keeps owning: Close does not close it. cfg.Endpoints, Username,
// Password and TLS are not used. It does not contact etcd.
func NewFromClient(c *clientv3.Client, cfg Config) (*Registry, error) {
	if c == nil {
		return nil, status.New(status.InvalidArgument, "discovery/etcd: NewFromClient: nil client")
	}
	cfg, err := cfg.withDefaults(false)
	if err != nil {
		return nil, err
	}
	return newRegistry(c, cfg, false), nil
}

func newRegistry(c *clientv3.Client, cfg Config, owned bool) *Registry {
	ctx, cancel := context.WithCancel(context.Background())
	closing, cancelClosing := context.WithCancel(context.Background())
	r := &Registry{
		closing:       closing,
		cancelClosing: cancelClosing,
		cfg:           cfg,
		client:        c,
		owned:         owned,
		log:           cfg.Logger.With("component", "discovery/etcd"),
		regs:          map[*registration]struct{}{},
		watches:       map[*watch]struct{}{},
		stopMonitor:   cancel,
		monitorDone:   make(chan struct{}),
	}
	go r.monitor(ctx)
	return r
}

// monitor logs when the connection to etcd is lost and when it is back,
// since the client reconnects (and watches resume) without a word.
func (r *Registry) monitor(ctx context.Context) {
	defer close(r.monitorDone)
	conn := r.client.ActiveConnection()
	state := conn.GetState()
	down := false
	for conn.WaitForStateChange(ctx, state) {
		state = conn.GetState()
		switch {
		case state == connectivity.TransientFailure && !down:
			down = true
			r.log.Warn("etcd unreachable; watches keep their last sets, registrations retry",
				"endpoints", r.client.Endpoints())
		case state == connectivity.Ready && down:
			down = false
			r.log.Info("etcd reachable again", "endpoints", r.client.Endpoints())
		case state == connectivity.Shutdown:
			return
		}
	}
}

// ping reads one key under the prefix to check that etcd answers.
func (r *Registry) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	ctx, cancelReq := r.opCtx(ctx)
	defer cancelReq()
	_, err := r.client.Get(ctx, r.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		return r.unreachable(err)
	}
	return nil
}

// unreachable wraps err, an etcd request failing at start.
func (r *Registry) unreachable(err error) error {
	return status.Wrap(status.Unavailable, fmt.Errorf("discovery/etcd: etcd %v did not answer within %v: %w",
		r.client.Endpoints(), r.cfg.DialTimeout, err))
}

// requestCtx returns ctx, also canceled when the etcd client is closed: a
// request on a closed client would otherwise retry until ctx's deadline.
// Cleanups (revoking a lease) use it.
func (r *Registry) requestCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(r.client.Ctx(), func() { cancel(errClientClosed) })
	return ctx, func() { stop(); cancel(nil) }
}

// opCtx is requestCtx also canceled when Close begins: what Register and
// Watch do (reading, granting, putting) stops at once.
func (r *Registry) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := r.requestCtx(ctx)
	ctx, cancelClosing := context.WithCancelCause(ctx)
	stop := context.AfterFunc(r.closing, func() { cancelClosing(discovery.ErrClosed) })
	return ctx, func() { stop(); cancelClosing(nil); cancel() }
}

// begin marks a Register or Watch call under way, so that Close waits for
// it (and the cleanup it does when it finds the registry closed) before
// closing the client. It fails after Close.
func (r *Registry) begin() (end func(), err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errRegistryClosed()
	}
	r.inflight.Add(1)
	return r.inflight.Done, nil
}

// errClientClosed is the cause of a request's end when the etcd client was
// closed under it.
var errClientClosed = errors.New("discovery/etcd: etcd client closed")

func (r *Registry) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// errRegistryClosed is returned by Watch and Register after Close.
func errRegistryClosed() error {
	return status.Wrap(status.FailedPrecondition, fmt.Errorf("discovery/etcd: registry closed: %w", discovery.ErrClosed))
}

// Close stops every watch (their Next returns discovery.ErrClosed) and
// every registration the registry made, revoking their leases so the
// entries go at once (best effort, within DialTimeout), and closes the etcd
// client if New made it. It is safe to call more than once.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	// Stop the Register and Watch calls under way, and wait for them: a
	// call that finds the registry closed undoes what it did.
	r.cancelClosing()
	r.inflight.Wait()
	r.mu.Lock()
	regs, watches := r.regs, r.watches
	r.regs, r.watches = nil, nil
	r.mu.Unlock()

	for w := range watches {
		w.Close()
	}
	var wg sync.WaitGroup
	for reg := range regs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), r.cfg.DialTimeout)
			defer cancel()
			if err := reg.Deregister(ctx); err != nil {
				r.log.Warn("deregistering on close failed; the entry stays until its lease expires",
					"key", reg.key, "err", err)
			}
		})
	}
	wg.Wait()
	r.stopMonitor()
	<-r.monitorDone
	if r.owned {
		if err := r.client.Close(); err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("discovery/etcd: closing the etcd client: %w", err)
		}
	}
	return nil
}

// nameKey returns the key prefix of name, "<Prefix><name>/", or an error
// carrying status InvalidArgument if name is not valid.
func (r *Registry) nameKey(name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", err
	}
	return r.cfg.Prefix + name + "/", nil
}

// ValidateName reports whether name can be a service name: non-empty, at
// most MaxNameLen bytes of printable UTF-8 without spaces, "/"-separated
// segments that are neither empty nor "." or "..". The error carries
// status InvalidArgument.
func ValidateName(name string) error {
	bad := func(why string) error {
		return status.Errorf(status.InvalidArgument, "discovery/etcd: service name %.64q: %s", name, why)
	}
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxNameLen:
		return bad(fmt.Sprintf("%d bytes, at most %d allowed", len(name), MaxNameLen))
	case !utf8.ValidString(name):
		return bad("not valid UTF-8")
	}
	for _, c := range name {
		if c <= ' ' || c == 0x7f || c == '\\' || (c >= 0x80 && c <= 0x9f) || c == utf8.RuneError {
			return bad(fmt.Sprintf("character %q not allowed", c))
		}
	}
	for seg := range strings.SplitSeq(name, "/") {
		switch seg {
		case "":
			return bad(`empty segment (leading, trailing or double "/")`)
		case ".", "..":
			return bad(fmt.Sprintf("segment %q not allowed", seg))
		}
	}
	return nil
}
