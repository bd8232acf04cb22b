package middleware

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// Limit is a token bucket: Rate calls per second on average, bursts of up to
// Burst calls. A zero Rate means no limit; a negative or NaN Rate, or a
// negative Burst, is a mistake RateLimit refuses (it would otherwise mean
// no limit).
type Limit struct {
	// Rate is the sustained rate in calls per second.
	Rate float64
	// Burst is the bucket size. Default: Rate rounded up, at least 1.
	Burst int
}

// check panics for a Limit that is a mistake (see Limit).
func (l Limit) check(where string) {
	if l.Rate < 0 || math.IsNaN(l.Rate) || l.Burst < 0 {
		panic(fmt.Sprintf("middleware: RateLimit: %s: rate %v, burst %d: want a rate >= 0 (0: no limit) and a burst >= 0", where, l.Rate, l.Burst))
	}
}

func (l Limit) limiter() *rate.Limiter {
	if l.Rate <= 0 {
		return nil
	}
	b := l.Burst
	if b <= 0 {
		b = max(1, int(math.Ceil(l.Rate)))
	}
	return rate.NewLimiter(rate.Limit(l.Rate), b)
}

// RateLimitOptions configure RateLimit. Every limit that applies to a call
// must have a token for it; the zero value limits nothing.
type RateLimitOptions struct {
	// Global limits all calls through the middleware together.
	Global Limit
	// PerService limits the calls to each named service together.
	PerService map[string]Limit
	// PerMethod limits the calls to each method, by "Service.method".
	PerMethod map[string]Limit
	// PerPeer limits the calls of each peer endpoint id separately (one
	// bucket per peer, created on its first call).
	PerPeer Limit
	// MaxPeers bounds the per-peer buckets kept: beyond it, the least
	// recently active peer's bucket is dropped. Default 10000.
	MaxPeers int
	// PeerIdle drops the bucket of a peer idle that long (it would be full
	// again by then anyway, if PeerIdle >= Burst/Rate). Default 10 minutes.
	PeerIdle time.Duration
}

// RateLimit is server middleware enforcing token-bucket limits globally, per
// service, per method and per peer. A call over a limit fails with
// RESOURCE_EXHAUSTED before its handler runs; the trailer carries
// RetryAfterKey, the milliseconds until a token is available, which Retry
// honours, and is marked not processed (status.Error.WithNotProcessed), so
// Retry may retry it even for a method that is not idempotent. Memory for per-peer buckets is bounded by MaxPeers and PeerIdle.
//
// It panics on a negative or NaN rate or a negative burst, which would
// otherwise limit nothing, as http.Handle panics on a bad pattern: limits
// are part of the program (or checked by whatever reads them from a file).
func RateLimit(opts RateLimitOptions) Server {
	opts.Global.check("Global")
	opts.PerPeer.check("PerPeer")
	for k, l := range opts.PerService {
		l.check("PerService[" + strconv.Quote(k) + "]")
	}
	for k, l := range opts.PerMethod {
		l.check("PerMethod[" + strconv.Quote(k) + "]")
	}
	if opts.MaxPeers <= 0 {
		opts.MaxPeers = 10000
	}
	if opts.PeerIdle <= 0 {
		opts.PeerIdle = 10 * time.Minute
	}
	rl := &rateLimiter{
		global:  opts.Global.limiter(),
		service: map[string]*rate.Limiter{},
		method:  map[string]*rate.Limiter{},
		peer:    opts.PerPeer,
		peers:   map[trust.EndpointID]*list.Element{},
		lru:     list.New(),
		max:     opts.MaxPeers,
		idle:    opts.PeerIdle,
	}
	for k, l := range opts.PerService {
		if lim := l.limiter(); lim != nil {
			rl.service[k] = lim
		}
	}
	for k, l := range opts.PerMethod {
		if lim := l.limiter(); lim != nil {
			rl.method[k] = lim
		}
	}
	return func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			if err := rl.admit(s); err != nil {
				return err
			}
			return next.ServeRPC(ctx, s)
		})
	}
}

type rateLimiter struct {
	global  *rate.Limiter
	service map[string]*rate.Limiter
	method  map[string]*rate.Limiter
	peer    Limit

	mu    sync.Mutex
	peers map[trust.EndpointID]*list.Element // of *peerBucket
	lru   *list.List                         // front: most recently used
	max   int
	idle  time.Duration
}

type peerBucket struct {
	id   trust.EndpointID
	lim  *rate.Limiter
	seen time.Time
}

// peerLimiter returns the bucket of peer id, creating it and evicting idle
// or least recently used buckets as needed.
func (rl *rateLimiter) peerLimiter(id trust.EndpointID, now time.Time) *rate.Limiter {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for e := rl.lru.Back(); e != nil; e = rl.lru.Back() {
		pb := e.Value.(*peerBucket)
		if now.Sub(pb.seen) < rl.idle {
			break
		}
		rl.lru.Remove(e)
		delete(rl.peers, pb.id)
	}
	if e := rl.peers[id]; e != nil {
		pb := e.Value.(*peerBucket)
		pb.seen = now
		rl.lru.MoveToFront(e)
		return pb.lim
	}
	if rl.lru.Len() >= rl.max {
		old := rl.lru.Remove(rl.lru.Back()).(*peerBucket)
		delete(rl.peers, old.id)
	}
	pb := &peerBucket{id: id, lim: rl.peer.limiter(), seen: now}
	rl.peers[id] = rl.lru.PushFront(pb)
	return pb.lim
}

// peerCount returns how many per-peer buckets are kept.
func (rl *rateLimiter) peerCount() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.lru.Len()
}

// admit takes a token from every limit that applies, or none of them.
func (rl *rateLimiter) admit(s handler.Stream) error {
	info := s.Method()
	now := time.Now()
	var lims [4]*rate.Limiter
	var names [4]string
	n := 0
	add := func(l *rate.Limiter, name string) {
		if l != nil {
			lims[n], names[n] = l, name
			n++
		}
	}
	add(rl.global, "global")
	if len(rl.service) > 0 {
		add(rl.service[info.Service], "service")
	}
	if len(rl.method) > 0 {
		add(rl.method[info.FullName()], "method")
	}
	if rl.peer.Rate > 0 {
		add(rl.peerLimiter(s.Peer().ID, now), "peer")
	}
	switch n {
	case 0:
		return nil
	case 1:
		if lims[0].AllowN(now, 1) {
			return nil
		}
	}
	var res [4]*rate.Reservation
	var wait time.Duration
	which := ""
	for i := range n {
		res[i] = lims[i].ReserveN(now, 1)
		d := time.Duration(math.MaxInt64)
		if res[i].OK() {
			d = res[i].DelayFrom(now)
		}
		if d > wait {
			wait, which = d, names[i]
		}
	}
	if wait == 0 {
		return nil
	}
	for i := range n {
		res[i].CancelAt(now)
	}
	if which == "" {
		which = names[0]
	}
	if wait == time.Duration(math.MaxInt64) {
		wait = time.Second
	}
	ms := max(1, (wait+time.Millisecond-1)/time.Millisecond)
	return status.Errorf(status.ResourceExhausted, "rate limit exceeded (%s limit on %s)", which, info.FullName()).
		WithMetadata(RetryAfterKey, strconv.FormatInt(int64(ms), 10)).
		WithNotProcessed() // refused before the handler: nothing ran
}
