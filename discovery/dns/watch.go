package dns

// A watch: the first resolution, then the re-resolution loop and the set it
// publishes to Next.

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

type watch struct {
	r          *Resolver
	name       string        // as given to Watch, for messages
	fqdn       string        // what is asked
	resolveNow chan struct{} // capacity 1: a pending ResolveNow
	cancel     context.CancelFunc
	done       chan struct{} // closed when the loop has returned
	closed     chan struct{} // closed by Close
	closeOnce  sync.Once

	mu      sync.Mutex
	set     []discovery.Producer
	version uint64
	changed chan struct{} // closed and replaced when set changes
	seen    uint64        // the version Next returned last
	started bool          // Next has returned once

	notes map[string]string // what the loop logged as ignored; loop-owned
}

// startWatch makes the first resolution and starts the loop.
func (r *Resolver) startWatch(ctx context.Context, name, fqdn string) (*watch, error) {
	res, err := r.resolve(ctx, fqdn, nil)
	if err != nil {
		return nil, fmt.Errorf("discovery/dns: watch %s: %w", name, err)
	}
	if res.nxdomain {
		return nil, status.Errorf(status.NotFound, "discovery/dns: watch %s: no such name (NXDOMAIN from %s)", name, r.server)
	}
	w := &watch{
		r:          r,
		name:       name,
		fqdn:       fqdn,
		resolveNow: make(chan struct{}, 1),
		done:       make(chan struct{}),
		closed:     make(chan struct{}),
		set:        res.producers,
		changed:    make(chan struct{}),
		notes:      map[string]string{},
	}
	w.logNotes(res)
	loopCtx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go w.run(loopCtx, res, time.Now())
	return w, nil
}

// interval is how long res may be trusted: its smallest TTL clamped to
// [MinInterval, MaxInterval], or MinInterval when some of it is missing.
func (r *Resolver) interval(res *result) time.Duration {
	if res.incomplete {
		return r.minInterval
	}
	d := time.Duration(res.ttl) * time.Second
	return min(max(d, r.minInterval), r.maxInterval)
}

// run re-resolves the name when the last answer expires, or earlier on
// ResolveNow (but never sooner than MinInterval after the last resolution),
// until ctx ends. A failed resolution keeps the last set and is retried
// after MinInterval, doubling up to MaxInterval.
func (w *watch) run(ctx context.Context, last *result, lastAt time.Time) {
	defer close(w.done)
	r := w.r
	due := lastAt.Add(r.interval(last))
	timer := time.NewTimer(time.Until(due))
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.resolveNow:
			if early := lastAt.Add(r.minInterval); early.Before(due) {
				due = early
				timer.Reset(time.Until(due))
			}
			continue
		case <-timer.C:
		}
		res, err := r.resolve(ctx, w.fqdn, last)
		lastAt = time.Now()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			backoff := r.minInterval // doubled per failure, without overflow
			for i := 1; i < failures && backoff < r.maxInterval; i++ {
				backoff *= 2
			}
			backoff = min(backoff, r.maxInterval)
			r.log.Warn("discovery/dns: re-resolution failed, keeping the last set",
				slog.String("name", w.name), slog.Int("producers", len(last.producers)),
				slog.Int("failures", failures), slog.Duration("retry_in", backoff), slog.Any("error", err))
			due = lastAt.Add(backoff)
		} else {
			if failures > 0 {
				r.log.Info("discovery/dns: re-resolution works again", slog.String("name", w.name), slog.Int("failures", failures))
			}
			failures = 0
			if res.nxdomain && len(last.producers) > 0 {
				r.log.Warn("discovery/dns: the name no longer exists (NXDOMAIN): no producers", slog.String("name", w.name))
			}
			w.logNotes(res)
			w.publish(res.producers)
			last = res
			due = lastAt.Add(r.interval(res))
		}
		timer.Reset(time.Until(due))
	}
}

// logNotes logs the targets res ignored, once per target and reason.
func (w *watch) logNotes(res *result) {
	for k, why := range res.notes {
		if w.notes[k] == why {
			continue
		}
		if k == "" {
			w.r.log.Warn("discovery/dns: "+why, slog.String("name", w.name))
		} else {
			w.r.log.Warn("discovery/dns: SRV target ignored", slog.String("name", w.name), slog.String("target", k), slog.String("reason", why))
		}
	}
	w.notes = res.notes
}

// publish makes ps the set, waking Next if it differs from the current one.
func (w *watch) publish(ps []discovery.Producer) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.EqualFunc(w.set, ps, discovery.Producer.Equal) {
		return
	}
	w.set = ps
	w.version++
	close(w.changed)
	w.changed = make(chan struct{})
}

// Next returns the producer set: first the current one, then each
// different one as re-resolution finds it.
func (w *watch) Next(ctx context.Context) ([]discovery.Producer, error) {
	for {
		w.mu.Lock()
		if !w.started || w.version != w.seen {
			w.started, w.seen = true, w.version
			ps := cloneSet(w.set)
			w.mu.Unlock()
			return ps, nil
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-w.closed:
			return nil, fmt.Errorf("discovery/dns: %s: %w", w.name, discovery.ErrClosed)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// cloneSet copies ps deeply enough that the caller may change it.
func cloneSet(ps []discovery.Producer) []discovery.Producer {
	out := make([]discovery.Producer, len(ps))
	for i, p := range ps {
		p.Addr.Direct = slices.Clone(p.Addr.Direct)
		p.Addr.CertHashes = slices.Clone(p.Addr.CertHashes)
		p.Credential = slices.Clone(p.Credential)
		out[i] = p
	}
	return out
}

// ResolveNow asks for a re-resolution at once, or MinInterval after the
// last one if that is later. It never blocks.
func (w *watch) ResolveNow() {
	select {
	case w.resolveNow <- struct{}{}:
	default:
	}
}

// Close stops the loop (interrupting a query in flight) and waits for it to
// return. Next then fails with discovery.ErrClosed.
func (w *watch) Close() error {
	w.closeOnce.Do(func() {
		w.cancel()
		<-w.done
		close(w.closed)
	})
	return nil
}
