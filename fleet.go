package aster

// A Fleet calls a service across the producers a discovery.Source lists.
// Its life, top to bottom: NewFleet starts the watch goroutine (watchLoop),
// which turns each producer set into producers (apply): a verified entry
// gets a *Client and a keeper goroutine (keep) that holds a connection
// warm, redials with backoff and ends ejections; a call runs the fleet's
// middleware around the balancer (fleet_balance.go), which picks a ready
// producer per attempt and counts the call's outcome (fleetStream).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Balancer is how a Fleet picks the producer of each call.
type Balancer int

const (
	// PowerOfTwoChoices picks two ready producers at random and sends the
	// call to the one with fewer calls outstanding (from this Fleet). It
	// routes around a slow producer without any configuration: the default.
	PowerOfTwoChoices Balancer = iota
	// RoundRobin sends calls to the ready producers in turn.
	RoundRobin
)

// String returns "p2c" or "round_robin".
func (b Balancer) String() string {
	switch b {
	case PowerOfTwoChoices:
		return "p2c"
	case RoundRobin:
		return "round_robin"
	}
	return fmt.Sprintf("Balancer(%d)", int(b))
}

// OutlierDetection configures how a Fleet ejects producers that fail. The
// zero value gives the documented defaults.
type OutlierDetection struct {
	// ConsecutiveFailures is how many calls in a row may fail with
	// UNAVAILABLE (an answer, a reset stream or a lost connection) before
	// the producer is ejected. A failed dial ejects at once. Default 3.
	ConsecutiveFailures int
	// BaseEjection is how long the first ejection lasts; the n-th in a row
	// lasts BaseEjection×2^(n-1), up to MaxEjection. After it the producer
	// is probed: it takes calls (and its connection is redialled if it was
	// lost); a success ends the series, a failure ejects it for longer.
	// Default 1 s.
	BaseEjection time.Duration
	// MaxEjection caps an ejection. Default 30 s.
	MaxEjection time.Duration
	// DialTimeout bounds a producer's connection attempt (handshake and
	// admission); a registered producer that does not answer within it is
	// ejected. Default 5 s.
	DialTimeout time.Duration
}

// Defaults of OutlierDetection.
const (
	DefaultConsecutiveFailures = 3
	DefaultBaseEjection        = time.Second
	DefaultMaxEjection         = 30 * time.Second
	DefaultFleetDialTimeout    = 5 * time.Second
)

func (o *OutlierDetection) setDefaults() {
	if o.ConsecutiveFailures <= 0 {
		o.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if o.BaseEjection <= 0 {
		o.BaseEjection = DefaultBaseEjection
	}
	if o.MaxEjection <= 0 {
		o.MaxEjection = DefaultMaxEjection
	}
	if o.MaxEjection < o.BaseEjection {
		o.MaxEjection = o.BaseEjection
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = DefaultFleetDialTimeout
	}
}

// ejection returns how long the n-th ejection in a row (n >= 1) lasts.
func (o *OutlierDetection) ejection(n int) time.Duration {
	d := o.BaseEjection
	for i := 1; i < n && d < o.MaxEjection; i++ {
		d *= 2
	}
	return min(d, o.MaxEjection)
}

// fleetOptions are the client options only a Fleet reads.
type fleetOptions struct {
	balancer Balancer
	root     *trust.PublicKey // WithProducerRoot; nil: allow all producers
	outlier  OutlierDetection
	retry    *middleware.RetryOptions // the default Retry; nil with noRetry
	noRetry  bool
}

// WithBalancer sets how a Fleet picks producers. An unknown value is
// rejected. Default PowerOfTwoChoices. A Client ignores it.
func WithBalancer(b Balancer) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if b != PowerOfTwoChoices && b != RoundRobin {
			keep(&o.err, optionError("WithBalancer", "unknown balancer %d", int(b)))
			return
		}
		o.fleet.balancer = b
	})
}

// WithProducerRoot makes a Fleet dial only producers whose registry entry
// carries a valid producer credential (allow_all_producers=false): signed
// by root, of role producer, issued to the entry's endpoint id, valid now
// (± enroll.DefaultClockSkew), and naming the service (the last path
// segment of the watched name) in its "aster.services" attribute, a
// comma-separated list of service names or "*". Other entries are never
// dialled; Producers shows them as ProducerRejected with the reason, and
// each is logged once. The transport still verifies every producer's key on
// every connection. Calls through the fleet (and its sessions) to a
// service the producer's credential does not name fail with
// PERMISSION_DENIED: the credential vouches for the producer only as a
// producer of the services it names. Default: every listed producer is
// dialled (allow all). A Client ignores it.
func WithProducerRoot(root trust.PublicKey) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if root == (trust.PublicKey{}) {
			keep(&o.err, optionError("WithProducerRoot", "zero root key"))
			return
		}
		o.fleet.root = &root
	})
}

// WithOutlierDetection sets how a Fleet ejects failing producers; zero
// fields take their defaults (see OutlierDetection), negative ones are
// rejected. A Client ignores it.
func WithOutlierDetection(od OutlierDetection) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if od.ConsecutiveFailures < 0 || od.BaseEjection < 0 || od.MaxEjection < 0 || od.DialTimeout < 0 {
			keep(&o.err, optionError("WithOutlierDetection", "negative value in %+v", od))
			return
		}
		o.fleet.outlier = od
	})
}

// WithFleetRetry sets the Retry a Fleet puts around its balancer, inside
// the middleware of WithClientMiddleware, so that an idempotent call that
// fails with UNAVAILABLE before any response (a producer that died or
// began shutting down), or any call the producer refused unprocessed
// (status.IsNotProcessed, such as one refused while it shuts down), is
// retried on another producer: each attempt is a
// fresh pick that avoids the producer of the previous one. nil turns it off
// — do so when WithClientMiddleware already holds a middleware.Retry, or
// attempts multiply. Default: middleware.Retry with MaxAttempts 3,
// InitialBackoff 10 ms, MaxBackoff 1 s and a budget of 20% extra calls
// with a burst of 100 (NewRetryBudget(0.2, 100)). A Client ignores it.
func WithFleetRetry(opts *middleware.RetryOptions) ClientOption {
	return clientOptionFunc(func(o *clientOptions) {
		if opts == nil {
			o.fleet.retry, o.fleet.noRetry = nil, true
			return
		}
		c := *opts
		o.fleet.retry, o.fleet.noRetry = &c, false
	})
}

// defaultFleetRetry returns the options of the default Retry.
func defaultFleetRetry() middleware.RetryOptions {
	return middleware.RetryOptions{
		MaxAttempts:    3,
		InitialBackoff: 10 * time.Millisecond,
		MaxBackoff:     time.Second,
		Budget:         middleware.NewRetryBudget(0.2, 100),
	}
}

// ProducerState is a producer's state in a Fleet.
type ProducerState int

const (
	// ProducerConnecting: no live connection yet (or it was lost and is
	// being redialled); no calls are sent.
	ProducerConnecting ProducerState = iota
	// ProducerReady: connected; it takes calls.
	ProducerReady
	// ProducerEjected: its connection failed or it answered UNAVAILABLE
	// too often; no calls until the ejection ends (unless every other
	// producer is unusable too).
	ProducerEjected
	// ProducerDraining: it is shutting down (it answered a call with a
	// TRAILER marked draining, or closed a connection with SHUTDOWN and
	// the reason "server shutting down", PROTOCOL.md §22.1); no new calls,
	// until a redial succeeds or it is listed anew.
	ProducerDraining
	// ProducerRejected: its registry entry has no valid producer
	// credential (WithProducerRoot); it is never dialled.
	ProducerRejected
)

// String returns the state in lower case: "connecting", "ready", ...
func (s ProducerState) String() string {
	switch s {
	case ProducerConnecting:
		return "connecting"
	case ProducerReady:
		return "ready"
	case ProducerEjected:
		return "ejected"
	case ProducerDraining:
		return "draining"
	case ProducerRejected:
		return "rejected"
	}
	return fmt.Sprintf("ProducerState(%d)", int(s))
}

// ProducerStatus is a snapshot of one producer of a Fleet.
type ProducerStatus struct {
	// ID is the producer's endpoint id.
	ID trust.EndpointID
	// Addr is its address as the registry lists it.
	Addr Address
	// State is its state.
	State ProducerState
	// Outstanding is the number of calls in flight to it from this Fleet.
	Outstanding int
	// Calls and Failures count the calls this Fleet sent it and those
	// that failed with UNAVAILABLE (or could not start).
	Calls, Failures uint64
	// LastError is the last failure seen ("" for none).
	LastError string
	// Credential is "valid" (checked against the producer root), "none"
	// (no root configured and no credential listed), "unchecked" (no root
	// configured), or why the entry was rejected.
	Credential string
}

// Fleet calls a service across the producers a discovery.Source lists. It
// implements Caller and middleware.MethodDescriber, so the typed call
// functions (CallUnary, ...) take it as they take a Client.
//
// A Fleet keeps one Client (so one connection) per producer, dialled in
// the background when the producer is listed and redialled with backoff.
// Each call (each attempt, under Retry) goes to a ready producer picked by
// the Balancer; a call finds none: with zero producers listed (or all
// draining, rejected or ejected without a connection) it fails at once with
// UNAVAILABLE; while producers are still connecting it waits for one, up
// to the dial timeout. Producers that fail are ejected (OutlierDetection);
// one that says it is shutting down (PROTOCOL.md §22.1) is drained at
// once; one
// that leaves the set takes no new calls and its connection is closed
// once its calls end (within 30 s), which ends the sessions it held.
//
// The middleware of WithClientMiddleware runs once per call around the
// balancer, with the default Retry (WithFleetRetry) innermost, so Retry's
// attempts each make a fresh pick. A middleware.CircuitBreaker there keeps
// one breaker per producer, which the balancer consults
// (middleware.PeerGuard): a producer whose breaker is open is left out of
// the pick, its calls go to the others, and when every producer's breaker
// is open a call fails at once with UNAVAILABLE naming the breakers. The
// breakers and the outlier detection count failures independently; a
// producer is left out while either rules it out.
//
// The producers' Clients are built with the Fleet's options (key, codec,
// credential, dialer, ...) but not its middleware. A name that lists the
// caller itself (its own key) works: the Fleet dials its own server like
// any other. A Fleet is safe for concurrent use.
type Fleet struct {
	name    string
	service string // last path segment of name, for credentials
	src     discovery.Source
	opts    clientOptions // the producers' client options (no middleware)
	od      OutlierDetection
	bal     Balancer
	root    *trust.PublicKey
	chain   middleware.Client // the fleet's middleware, around the balancer
	caller  Caller
	logger  *slog.Logger
	shared  transport.Dialer // one QUIC socket for the producers reached directly (nil with a dialer option)

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the watch goroutine, keepers and closers

	methods sync.Map // methodKey → middleware.MethodSpec, cleared when producers join
	watch   atomic.Pointer[watchHolder]
	snap    atomic.Pointer[pickSet]
	rr      atomic.Uint64

	mu        sync.Mutex
	producers map[string]*producer // by entry key
	order     []*producer          // in listing order
	gotSet    bool                 // a set was applied
	watchErr  error                // the watch failed to start (nil once it works)
	changed   chan struct{}        // closed and replaced when a state changes
	closed    bool
}

type watchHolder struct{ w discovery.Watch }

// pickSet is the balancer's view, rebuilt on every state change; a call
// reads it without a lock.
type pickSet struct {
	ready    []*producer // ProducerReady
	fallback []*producer // ejected but connected: used when none is ready
	waiting  bool        // producers are connecting, or no set yet
	none     error       // why no producer can take a call, when ready, fallback and waiting are empty
	changed  <-chan struct{}
}

// producer is one entry of the set.
type producer struct {
	f      *Fleet
	key    string
	entry  discovery.Producer
	client *Client // nil when rejected
	cred   string
	expiry time.Time // of a verified credential; zero without a root
	// services is the aster.services attribute of a verified credential
	// (attested set): calls of other services are refused (start).
	services string
	attested bool

	outstanding atomic.Int64
	calls       atomic.Uint64
	failures    atomic.Uint64
	consec      atomic.Int32

	kick         chan struct{}   // wakes the keeper (cap 1)
	ctx          context.Context // done when the producer leaves the set or the fleet closes
	cancel       context.CancelFunc
	removed      atomic.Bool
	hadEjections atomic.Bool                    // ejections > 0, for a lock-free check
	live         atomic.Pointer[transport.Conn] // conn, for the call path
	idleOnce     sync.Once
	idle         chan struct{} // closed when removed and no call is outstanding

	// guarded by f.mu
	state        ProducerState
	conn         transport.Conn // live connection, nil while connecting
	draining     bool
	ejections    int
	ejectedUntil time.Time
	lastErr      string
	rejected     bool
}

// NewFleet returns a Fleet for the producers src lists under name,
// without waiting: it starts following the set in the background, and
// calls fail with UNAVAILABLE until producers exist (or wait while the
// first ones connect). A bad option value, or a WithConn option (a fleet
// dials its producers itself), makes every call fail with
// INVALID_ARGUMENT. Close it when done.
func NewFleet(src discovery.Source, name string, opts ...ClientOption) *Fleet {
	o := defaultClientOptions()
	for _, opt := range opts {
		opt.applyClient(&o)
	}
	if o.key == nil {
		o.key = trust.GenerateKey() // one key for every producer's client
	}
	if o.conn != nil {
		keep(&o.err, optionError("WithConn", "a Fleet dials its producers itself"))
	}
	if src == nil {
		keep(&o.err, status.New(status.InvalidArgument, "aster: NewFleet: nil discovery.Source"))
	}
	if strings.TrimSpace(name) == "" {
		keep(&o.err, status.New(status.InvalidArgument, "aster: NewFleet: empty service name"))
	}
	od := o.fleet.outlier
	od.setDefaults()
	mw := slices.Clone(o.mw)
	if !o.fleet.noRetry {
		ro := defaultFleetRetry()
		if o.fleet.retry != nil {
			ro = *o.fleet.retry
		}
		mw = append(mw, middleware.Retry(ro))
	}
	po := o
	po.mw = nil
	po.fleet = fleetOptions{}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{
		name: name, service: path.Base(strings.Trim(name, "/")), src: src,
		opts: po, od: od, bal: o.fleet.balancer, root: o.fleet.root,
		chain: middleware.ChainClient(mw...), logger: o.logger,
		ctx: ctx, cancel: cancel,
		producers: map[string]*producer{},
		changed:   make(chan struct{}),
	}
	if o.dialer == nil && o.dialerFor == nil && o.conn == nil && !o.noIP {
		f.shared = quic.NewDialer(o.key, o.quic)
	}
	f.caller = f.chain(balancer{f})
	f.mu.Lock()
	f.rebuildLocked()
	f.mu.Unlock()
	if o.err == nil {
		f.wg.Add(1)
		go f.watchLoop()
	}
	return f
}

// DialFleet is NewFleet that waits (until ctx ends) for the first producer
// set and, if it lists producers, for one of them to connect. It fails when
// the Source cannot watch name (the Source's error, as UNAVAILABLE unless
// it carries a status code) or when no listed producer could be
// connected (UNAVAILABLE with the last failure). A set without producers is
// not an error: the Fleet's calls fail with UNAVAILABLE until producers are
// listed.
func DialFleet(ctx context.Context, src discovery.Source, name string, opts ...ClientOption) (*Fleet, error) {
	f := NewFleet(src, name, opts...)
	if err := f.opts.err; err != nil {
		f.Close()
		return nil, asStatus(status.InvalidArgument, err)
	}
	for {
		f.mu.Lock()
		watchErr, got, ch := f.watchErr, f.gotSet, f.changed
		usable, pending, last := 0, 0, ""
		for _, p := range f.order {
			switch p.state {
			case ProducerReady:
				usable++
			case ProducerConnecting:
				pending++
			}
			if p.lastErr != "" {
				last = p.lastErr
			}
		}
		n := len(f.order)
		f.mu.Unlock()
		switch {
		case watchErr != nil:
			f.Close()
			return nil, asStatus(status.Unavailable, watchErr)
		case got && (n == 0 || usable > 0):
			return f, nil
		case got && pending == 0:
			f.Close()
			if last == "" {
				last = "every producer is draining, ejected or rejected"
			}
			return nil, status.Errorf(status.Unavailable, "aster: no producer of %s could be connected: %s", name, last)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			f.Close()
			return nil, status.FromError(ctx.Err())
		}
	}
}

// asStatus returns err if it carries a status code, else err wrapped with
// code.
func asStatus(code status.Code, err error) error {
	var se *status.Error
	if errors.As(err, &se) {
		return err
	}
	return status.Wrap(code, err)
}

// Name returns the watched service name.
func (f *Fleet) Name() string { return f.name }

// NewStream implements Caller: it starts a call on a producer through the
// fleet's middleware. It marks the call idempotent for methods declared
// with WithIdempotent; the producers' contracts mark the rest (Retry asks
// through DescribeMethod).
func (f *Fleet) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	if f.opts.idempotent != nil && f.opts.idempotent[methodName{call.Service, call.Method}] {
		call.Idempotent = true
	}
	return f.caller.NewStream(ctx, call)
}

// DescribeMethod implements middleware.MethodDescriber: what a ready
// producer's contract says of call's method.
func (f *Fleet) DescribeMethod(ctx context.Context, call *middleware.Call) (middleware.MethodSpec, error) {
	return balancer{f}.DescribeMethod(ctx, call)
}

// Contract returns a ready producer's contract and its id (producers of
// one service are expected to serve the same contract; during a rolling
// upgrade two may differ).
func (f *Fleet) Contract(ctx context.Context) (*contract.Contract, string, error) {
	p, err := f.pick(ctx, trust.EndpointID{})
	if err != nil {
		return nil, "", err
	}
	return p.client.Contract(ctx)
}

// NewSession returns a session of the fleet: its first call picks a
// producer, and all its calls stay on that producer's connection (through
// the fleet's middleware). Another session may go to another producer.
func (f *Fleet) NewSession() *Session {
	return &Session{place: func(ctx context.Context) (*Client, Caller, error) {
		p, err := f.pick(ctx, trust.EndpointID{})
		if err != nil {
			return nil, nil, err
		}
		return p.client, f.chain(sessionCaller{p}), nil
	}}
}

// Producers returns a snapshot of the producers, in listing order.
func (f *Fleet) Producers() []ProducerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]ProducerStatus, 0, len(f.order))
	for _, p := range f.order {
		out = append(out, ProducerStatus{
			ID: p.entry.Addr.ID, Addr: p.entry.Addr, State: p.state,
			Outstanding: int(p.outstanding.Load()),
			Calls:       p.calls.Load(), Failures: p.failures.Load(),
			LastError: p.lastErr, Credential: p.cred,
		})
	}
	return out
}

// Close stops following the set and closes every producer's connection;
// calls in flight fail with UNAVAILABLE. It waits for the fleet's
// goroutines.
func (f *Fleet) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	ps := f.order
	f.order, f.producers = nil, map[string]*producer{}
	f.rebuildLocked()
	f.mu.Unlock()
	f.cancel()
	if h := f.watch.Load(); h != nil {
		h.w.Close()
	}
	for _, p := range ps {
		p.remove()
	}
	f.wg.Wait()
	for _, p := range ps {
		if p.client != nil {
			p.client.Close()
		}
	}
	if c, ok := f.shared.(io.Closer); ok {
		c.Close()
	}
	return nil
}

// ---- following the set ----

// watchLoop starts the watch (retrying while the Source fails) and applies
// each set.
func (f *Fleet) watchLoop() {
	defer f.wg.Done()
	backoff := 100 * time.Millisecond
	var w discovery.Watch
	for {
		var err error
		w, err = f.src.Watch(f.ctx, f.name)
		if err == nil {
			break
		}
		if f.ctx.Err() != nil {
			return // Close cancelled the watch it was starting: not a failure
		}
		f.logger.Warn("aster: fleet: watch failed", "name", f.name, "err", err)
		f.mu.Lock()
		f.watchErr = err
		f.notifyLocked()
		f.rebuildLocked()
		f.mu.Unlock()
		if !f.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	f.watch.Store(&watchHolder{w})
	if f.ctx.Err() != nil { // Close ran before the watch was stored
		w.Close()
		return
	}
	defer w.Close()
	backoff = 100 * time.Millisecond
	for {
		ps, err := w.Next(f.ctx)
		if err != nil {
			if f.ctx.Err() != nil || errors.Is(err, discovery.ErrClosed) {
				return
			}
			// The backend keeps the last set; ask again after a while.
			f.logger.Warn("aster: fleet: watch", "name", f.name, "err", err)
			if !f.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		f.apply(ps)
	}
}

// sleep waits d, or reports false when the fleet closes first.
func (f *Fleet) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.ctx.Done():
		return false
	}
}

// resolveNow tells the watch a producer failed.
func (f *Fleet) resolveNow() {
	if h := f.watch.Load(); h != nil {
		h.w.ResolveNow()
	}
}

// entryKey identifies an entry: a producer listed anew at another address
// or with another credential is a new producer.
func entryKey(p discovery.Producer) string {
	return p.Addr.String() + "\x00" + string(p.Credential)
}

// apply makes the producers match the set ps.
func (f *Fleet) apply(ps []discovery.Producer) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.watchErr = nil
	f.gotSet = true
	seen := make(map[string]bool, len(ps))
	order := make([]*producer, 0, len(ps))
	var started, gone []*producer
	for i, e := range ps {
		if len(order) == MaxFleetProducers {
			f.logger.Warn("aster: fleet: the set lists too many producers; the rest are ignored",
				"name", f.name, "listed", len(ps), "used", MaxFleetProducers, "first_ignored", i)
			break
		}
		k := entryKey(e)
		if seen[k] {
			continue
		}
		seen[k] = true
		p := f.producers[k]
		if p == nil {
			p = f.newProducer(k, e)
			f.producers[k] = p
			if !p.rejected {
				started = append(started, p)
			}
		}
		order = append(order, p)
	}
	for k, p := range f.producers {
		if !seen[k] {
			delete(f.producers, k)
			gone = append(gone, p)
		}
	}
	f.order = order
	f.notifyLocked()
	f.rebuildLocked()
	if len(started) > 0 {
		f.methods.Clear() // a new producer may serve another contract
	}
	for _, p := range started {
		f.wg.Add(1)
		go p.keep()
	}
	f.mu.Unlock()
	for _, p := range gone {
		p.remove()
		if p.client != nil {
			f.wg.Add(1)
			go p.closeWhenIdle()
		}
	}
}

// newProducer makes the producer of entry e, checking its credential.
func (f *Fleet) newProducer(key string, e discovery.Producer) *producer {
	p := &producer{f: f, key: key, entry: e, kick: make(chan struct{}, 1), idle: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(f.ctx)
	switch {
	case f.root != nil:
		cr, err := checkProducerCredential(*f.root, f.service, e, time.Now())
		if err != nil {
			p.rejected, p.state, p.cred = true, ProducerRejected, err.Error()
			f.logger.Warn("aster: fleet: producer entry rejected, not dialled", "name", f.name, "producer", e.Addr.ID.Short(), "reason", err)
			return p
		}
		p.cred, p.expiry = "valid", cr.ExpiresAt.Add(enroll.DefaultClockSkew)
		p.services, p.attested = cr.Attributes[ProducerServicesAttr], true
	case len(e.Credential) == 0:
		p.cred = "none"
	default:
		p.cred = "unchecked"
	}
	direct := len(e.Addr.Direct) > 0 && (e.Addr.Relay == "" || f.opts.noRelay)
	p.client = NewClient(e.Addr, clientOptionFunc(func(o *clientOptions) {
		*o = f.opts
		if f.shared != nil && direct {
			o.dialer = f.shared
		}
	}))
	return p
}

// checkProducerCredential checks the credential of entry e against root
// for service (see WithProducerRoot).
func checkProducerCredential(root trust.PublicKey, service string, e discovery.Producer, now time.Time) (*enroll.Credential, error) {
	if len(e.Credential) == 0 {
		return nil, errors.New("no producer credential")
	}
	cr, err := enroll.Decode(e.Credential)
	if err != nil {
		return nil, fmt.Errorf("bad producer credential: %w", err)
	}
	if err := cr.Verify(root, e.Addr.ID, now, enroll.DefaultClockSkew); err != nil {
		return nil, fmt.Errorf("producer credential: %w", err)
	}
	if cr.Role != enroll.RoleProducer {
		return nil, fmt.Errorf("credential is a %s's, not a producer's", cr.Role)
	}
	if !servesService(cr.Attributes[ProducerServicesAttr], service) {
		return nil, fmt.Errorf("credential's %s attribute %q does not name %s", ProducerServicesAttr, cr.Attributes[ProducerServicesAttr], service)
	}
	return cr, nil
}

// ProducerServicesAttr is the producer credential attribute naming the
// services the producer may serve: comma-separated service names, or "*"
// for any (see WithProducerRoot).
const ProducerServicesAttr = "aster.services"

func servesService(attr, service string) bool {
	for s := range strings.SplitSeq(attr, ",") {
		s = strings.TrimSpace(s)
		if s == "*" || (s != "" && s == service) {
			return true
		}
	}
	return false
}

// notifyLocked wakes everyone waiting for a change. f.mu is held.
func (f *Fleet) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// rebuildLocked publishes the balancer's view. f.mu is held.
func (f *Fleet) rebuildLocked() {
	s := &pickSet{changed: f.changed}
	var draining, ejected, rejected int
	for _, p := range f.order {
		switch p.state {
		case ProducerReady:
			s.ready = append(s.ready, p)
		case ProducerEjected:
			ejected++
			if p.conn != nil && !isDone(p.conn.Done()) {
				s.fallback = append(s.fallback, p)
			}
		case ProducerConnecting:
			s.waiting = true
		case ProducerDraining:
			draining++
		case ProducerRejected:
			rejected++
		}
	}
	switch {
	case f.closed:
		s.waiting = false
		s.none = status.Errorf(status.Unavailable, "aster: fleet %s closed", f.name)
	case f.opts.err != nil:
		s.waiting = false
		s.none = asStatus(status.InvalidArgument, f.opts.err)
	case f.watchErr != nil && !f.gotSet:
		s.waiting = false
		s.none = status.Errorf(status.Unavailable, "aster: no producers of %s: discovery failed: %v", f.name, f.watchErr)
	case !f.gotSet:
		s.waiting = true
	case len(f.order) == 0:
		s.none = status.Errorf(status.Unavailable, "aster: no producers of %s are listed", f.name)
	default:
		s.none = status.Errorf(status.Unavailable, "aster: no producer of %s is available (%d listed: %d draining, %d ejected, %d rejected)",
			f.name, len(f.order), draining, ejected, rejected)
	}
	f.snap.Store(s)
}

// ---- one producer ----

// setLocked recomputes p's state from its fields and republishes the
// view if it changed. f.mu is held.
func (p *producer) setLocked(now time.Time) {
	st := ProducerConnecting
	switch {
	case p.rejected:
		st = ProducerRejected
	case p.draining:
		st = ProducerDraining
	case now.Before(p.ejectedUntil):
		st = ProducerEjected
	case p.conn != nil && !isDone(p.conn.Done()):
		st = ProducerReady
	}
	if st != p.state {
		p.state = st
		p.f.notifyLocked()
	}
	if p.f.producers[p.key] == p {
		p.f.rebuildLocked()
	}
}

// wake kicks the keeper.
func (p *producer) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// remove takes p out of service: no new calls, keeper stopped.
func (p *producer) remove() {
	if p.removed.Swap(true) {
		return
	}
	p.cancel()
	if p.outstanding.Load() == 0 {
		p.idleOnce.Do(func() { close(p.idle) })
	}
}

// MaxFleetProducers is the most producers a Fleet follows: entries of a
// set beyond it are ignored (and logged), so that a registry listing
// absurdly many cannot make the client dial them all.
const MaxFleetProducers = 1024

// drainBound is how long a producer that left the set keeps its
// connection for calls in flight.
const drainBound = 30 * time.Second

// closeWhenIdle closes the client of a removed producer once its calls
// ended (or drainBound passed, or the fleet closed).
func (p *producer) closeWhenIdle() {
	defer p.f.wg.Done()
	t := time.NewTimer(drainBound)
	defer t.Stop()
	select {
	case <-p.idle:
	case <-t.C:
	case <-p.f.ctx.Done():
	}
	p.client.Close()
}

// keep holds a connection to p: it dials when p is listed, redials when
// the connection is lost, ends ejections and expires the credential.
func (p *producer) keep() {
	f := p.f
	defer f.wg.Done()
	var expire <-chan time.Time
	if !p.expiry.IsZero() {
		t := time.NewTimer(time.Until(p.expiry))
		defer t.Stop()
		expire = t.C
	}
	redials := 0
	for {
		// Wait out an ejection or a backoff before dialling.
		f.mu.Lock()
		until := p.ejectedUntil
		f.mu.Unlock()
		if d := time.Until(until); d > 0 {
			if !p.wait(d, expire) {
				return
			}
		}
		f.mu.Lock()
		p.setLocked(time.Now())
		f.mu.Unlock()

		dctx, cancel := context.WithTimeout(p.ctx, f.od.DialTimeout)
		conn, err := p.client.getAdmittedConn(dctx) // a refused producer is a failed dial
		cancel()
		if p.removed.Load() || f.ctx.Err() != nil {
			return
		}
		if err != nil {
			p.failures.Add(1)
			f.mu.Lock()
			p.lastErr = err.Error()
			if isShutdownErr(err) {
				p.draining = true
				redials++
				p.ejectedUntil = time.Now().Add(f.od.ejection(redials))
			} else {
				p.ejections++
				p.hadEjections.Store(true)
				p.ejectedUntil = time.Now().Add(f.od.ejection(p.ejections))
			}
			p.conn = nil
			p.live.Store(nil)
			p.setLocked(time.Now())
			f.mu.Unlock()
			f.logger.Debug("aster: fleet: producer dial failed", "name", f.name, "producer", p.entry.Addr.ID.Short(), "err", err)
			f.resolveNow()
			continue
		}
		redials = 0
		connectedAt := time.Now()
		f.mu.Lock()
		p.conn, p.draining = conn, false
		p.live.Store(&conn)
		p.setLocked(time.Now())
		f.mu.Unlock()

		// Connected: follow the connection and the ejections.
		for lost := false; !lost; {
			f.mu.Lock()
			until := p.ejectedUntil
			f.mu.Unlock()
			var endEject <-chan time.Time
			var t *time.Timer
			if d := time.Until(until); d > 0 {
				t = time.NewTimer(d)
				endEject = t.C
			}
			quit := false
			select {
			case <-conn.Done():
				lost = true
			case <-p.kick:
			case <-endEject:
			case <-expire:
				p.expire()
				quit = true
			case <-p.ctx.Done():
				quit = true
			}
			if t != nil {
				t.Stop()
			}
			if quit {
				return
			}
			f.mu.Lock()
			if lost {
				p.conn = nil
				p.live.Store(nil)
				cerr := connCloseError(conn)
				switch {
				case isShutdownErr(cerr):
					p.draining = true
				case time.Since(connectedAt) < f.od.BaseEjection:
					// A producer whose connections do not last
					// (flapping) is ejected, so that redials back off.
					p.ejections++
					p.hadEjections.Store(true)
					p.ejectedUntil = time.Now().Add(f.od.ejection(p.ejections))
					if cerr != nil {
						p.lastErr = cerr.Error()
					}
				}
			}
			p.setLocked(time.Now())
			f.mu.Unlock()
		}
		f.resolveNow()
	}
}

// wait sleeps d; false when p is removed, the fleet closed or the
// credential expired (p is then rejected).
func (p *producer) wait(d time.Duration, expire <-chan time.Time) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-expire:
		p.expire()
	case <-p.ctx.Done():
	}
	return false
}

// expire rejects p when its credential expired.
func (p *producer) expire() {
	f := p.f
	f.mu.Lock()
	p.rejected, p.cred, p.conn = true, "producer credential expired", nil
	p.live.Store(nil)
	p.setLocked(time.Now())
	f.mu.Unlock()
	f.logger.Warn("aster: fleet: producer credential expired", "name", f.name, "producer", p.entry.Addr.ID.Short())
	p.client.Close()
}

// connCloseError returns why a closed connection closed.
func connCloseError(c transport.Conn) error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	st, err := c.OpenStream(ctx)
	if err == nil {
		st.Reset(transport.CodeCancel)
		return nil
	}
	return err
}

// isShutdownErr reports whether err says the producer is shutting down,
// by the protocol's structured signals only (PROTOCOL.md §22.1): a call
// answered with a TRAILER marked draining (wire.IsDraining), or a
// connection the server closed with code SHUTDOWN and the reason "server
// shutting down" (a transport close reason, which no handler sets). The
// text of a call's error message never counts: a handler may answer
// UNAVAILABLE with any message.
func isShutdownErr(err error) bool {
	if err == nil {
		return false
	}
	var ce *transport.ConnError
	if errors.As(err, &ce) {
		return ce.Code == transport.ConnShutdown && ce.Remote && ce.Reason == reasonShutdown
	}
	return wire.IsDraining(err)
}

// ---- outcomes ----

// success records a call the producer answered.
func (p *producer) success() {
	if p.consec.Load() != 0 {
		p.consec.Store(0)
	}
}

// failure records a call that failed with UNAVAILABLE (or could not start).
func (p *producer) failure(err error) {
	p.failures.Add(1)
	f := p.f
	if isShutdownErr(err) {
		f.mu.Lock()
		p.lastErr = err.Error()
		if !p.draining {
			p.draining = true
			p.setLocked(time.Now())
		}
		f.mu.Unlock()
		p.wake()
		f.resolveNow()
		return
	}
	n := p.consec.Add(1)
	if int(n) < f.od.ConsecutiveFailures {
		f.mu.Lock()
		p.lastErr = err.Error()
		f.mu.Unlock()
		return
	}
	p.consec.Store(0)
	f.mu.Lock()
	p.lastErr = err.Error()
	now := time.Now()
	if !now.Before(p.ejectedUntil) { // not already ejected
		p.ejections++
		p.hadEjections.Store(true)
		p.ejectedUntil = now.Add(f.od.ejection(p.ejections))
		p.setLocked(now)
		f.logger.Debug("aster: fleet: producer ejected", "name", f.name, "producer", p.entry.Addr.ID.Short(), "for", f.od.ejection(p.ejections), "err", err)
	}
	f.mu.Unlock()
	p.wake()
	f.resolveNow()
}

// answered records the end of a call: err is what its Recv returned
// (io.EOF for success), or nil when it was closed before its end.
func (p *producer) answered(err error) {
	if p.outstanding.Add(-1) == 0 && p.removed.Load() {
		p.idleOnce.Do(func() { close(p.idle) })
	}
	switch {
	case err == nil:
	case err == io.EOF:
		p.success()
		p.endSeries()
	case status.CodeOf(err) == status.Unavailable:
		p.failure(err)
	case status.CodeOf(err) == status.Canceled, status.CodeOf(err) == status.DeadlineExceeded:
	default:
		p.success() // the producer answered
		p.endSeries()
	}
}

// endSeries ends a series of ejections after a success.
func (p *producer) endSeries() {
	f := p.f
	// Cheap check first: the hot path takes no lock.
	if p.hadEjections.Load() {
		f.mu.Lock()
		p.ejections = 0
		p.hadEjections.Store(false)
		f.mu.Unlock()
	}
}
