package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

// Watch follows the producers of name: the valid entries under
// "<Prefix><name>/". It reads the current entries (failing, with status
// Unavailable and the cause wrapped, if etcd does not answer within
// Config.DialTimeout or ctx), then follows changes from that revision on.
//
// Entries that do not parse (bad JSON, a bad aster1 address, a key whose id
// is not the address's, a value over MaxValueSize) are ignored and logged
// once per revision; so are entries beyond MaxEntries. When etcd goes away
// the watch keeps the last set it knew and resumes when etcd is back,
// reading everything again if the revisions it missed were compacted.
func (r *Registry) Watch(ctx context.Context, name string) (discovery.Watch, error) {
	prefix, err := r.nameKey(name)
	if err != nil {
		return nil, err
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	w := &watch{
		r:       r,
		prefix:  prefix,
		log:     r.log.With("name", name),
		cancel:  cancel,
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
		changed: make(chan struct{}),
		set:     map[string]discovery.Producer{},
		bad:     map[string]int64{},
	}
	end, err := r.begin()
	if err != nil {
		cancel()
		return nil, err
	}
	defer end()
	gctx, gcancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	rev, err := w.load(gctx)
	gcancel()
	if err != nil {
		cancel()
		if r.isClosed() { // Close began during the request
			return nil, errRegistryClosed()
		}
		if ctx.Err() != nil {
			return nil, status.FromError(fmt.Errorf("discovery/etcd: watching %s: %w", name, ctx.Err()))
		}
		return nil, r.unreachable(err)
	}
	// Start following only if the registry is still open, so that Close
	// stops every watch it did not refuse.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		cancel()
		return nil, errRegistryClosed()
	}
	r.watches[w] = struct{}{}
	go w.run(loopCtx, rev)
	return w, nil
}

// watch is one name's producer set, kept by a goroutine (run) that follows
// etcd.
type watch struct {
	r      *Registry
	prefix string
	log    *slog.Logger

	cancel    context.CancelFunc // stops run
	done      chan struct{}      // closed when run returns
	closeOnce sync.Once
	closed    chan struct{}

	mu      sync.Mutex
	set     map[string]discovery.Producer // key → producer, the valid entries
	bad     map[string]int64              // key → mod revision logged as ignored
	version uint64                        // bumped when set changes
	changed chan struct{}                 // closed and replaced when set changes

	started bool                 // Next has returned a set
	seen    uint64               // version of the set Next last looked at
	last    []discovery.Producer // the set Next last returned
}

// load reads every entry under the prefix, replaces the set with them and
// returns the revision they were read at.
func (w *watch) load(ctx context.Context) (int64, error) {
	ctx, cancel := w.r.opCtx(ctx)
	defer cancel()
	resp, err := w.r.client.Get(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithLimit(MaxEntries))
	if err != nil {
		return 0, err
	}
	if resp.More {
		w.log.Warn("too many entries; the watch holds the first ones only",
			"entries", resp.Count, "max", MaxEntries)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.set
	w.set = make(map[string]discovery.Producer, len(resp.Kvs))
	seen := make(map[string]struct{}, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		seen[string(kv.Key)] = struct{}{}
		w.putLocked(kv)
	}
	for k := range w.bad {
		if _, ok := seen[k]; !ok {
			delete(w.bad, k)
		}
	}
	if !sameSet(old, w.set) {
		w.bumpLocked()
	}
	return resp.Header.Revision, nil
}

// putLocked adds or replaces the entry kv, or drops (and logs) it if it is
// not valid. It reports whether the set changed.
func (w *watch) putLocked(kv *mvccpb.KeyValue) bool {
	key := string(kv.Key)
	p, err := decodeEntry(w.prefix, kv.Key, kv.Value)
	if err == nil {
		if _, ok := w.set[key]; !ok && len(w.set) >= MaxEntries {
			err = fmt.Errorf("the watch already holds %d entries", MaxEntries)
		}
	}
	if err != nil {
		_, had := w.set[key]
		delete(w.set, key)
		if !errors.Is(err, errNested) && w.bad[key] != kv.ModRevision {
			if len(w.bad) >= MaxEntries {
				clear(w.bad) // bound the memory; some may be logged again
			}
			w.bad[key] = kv.ModRevision
			w.log.Warn("ignoring an invalid entry", "key", printable(key), "revision", kv.ModRevision, "err", err)
		}
		return had
	}
	delete(w.bad, key)
	old, had := w.set[key]
	w.set[key] = p
	return !had || !old.Equal(p)
}

// printable shortens and quotes a key taken from etcd for a log line.
func printable(key string) string {
	if len(key) > 200 {
		key = key[:200] + "…"
	}
	return strings.ToValidUTF8(key, "�")
}

func (w *watch) bumpLocked() {
	w.version++
	close(w.changed)
	w.changed = make(chan struct{})
}

func sameSet(a, b map[string]discovery.Producer) bool {
	if len(a) != len(b) {
		return false
	}
	for k, p := range a {
		q, ok := b[k]
		if !ok || !p.Equal(q) {
			return false
		}
	}
	return true
}

// run follows etcd from revision rev+1 until the watch is closed.
func (w *watch) run(ctx context.Context, rev int64) {
	defer close(w.done)
	c := w.r.client
	for ctx.Err() == nil {
		wch := c.Watch(clientv3.WithRequireLeader(ctx), w.prefix,
			clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
		var err error
		for resp := range wch {
			if resp.CompactRevision != 0 {
				err = fmt.Errorf("revision %d was compacted (now %d)", rev+1, resp.CompactRevision)
				break
			}
			if err = resp.Err(); err != nil {
				break
			}
			w.apply(resp.Events)
			if resp.Header.Revision > rev {
				rev = resp.Header.Revision
			}
		}
		if ctx.Err() != nil || c.Ctx().Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("watch channel closed")
		}
		w.log.Warn("etcd watch interrupted; reading the entries again", "err", err)
		var ok bool
		if rev, ok = w.reload(ctx); !ok {
			return
		}
	}
}

// reload reads the entries again, retrying with backoff while etcd is
// unreachable (the set stays as it was meanwhile). It returns false if ctx
// ended or the client was closed first.
func (w *watch) reload(ctx context.Context) (int64, bool) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		gctx, cancel := context.WithTimeout(ctx, w.r.cfg.DialTimeout)
		rev, err := w.load(gctx)
		cancel()
		if err == nil {
			if attempt > 1 {
				w.log.Info("etcd watch resumed", "attempts", attempt)
			}
			return rev, true
		}
		if ctx.Err() != nil || w.r.client.Ctx().Err() != nil {
			return 0, false
		}
		if attempt == 1 || attempt%10 == 0 {
			w.log.Warn("reading the entries failed; keeping the last set and retrying", "attempt", attempt, "err", err)
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return 0, false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// apply applies one batch of events and wakes Next if the set changed.
func (w *watch) apply(evs []*clientv3.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := false
	for _, ev := range evs {
		switch ev.Type {
		case clientv3.EventTypePut:
			changed = w.putLocked(ev.Kv) || changed
		case clientv3.EventTypeDelete:
			key := string(ev.Kv.Key)
			delete(w.bad, key)
			if _, ok := w.set[key]; ok {
				delete(w.set, key)
				changed = true
			}
		}
	}
	if changed {
		w.bumpLocked()
	}
}

// Next returns the producer set: the first call the current one (possibly
// empty), each later call the next different one, sorted by endpoint id.
// It blocks until the set changes, ctx ends or the watch is closed
// (discovery.ErrClosed). While etcd is unreachable the set does not change.
func (w *watch) Next(ctx context.Context) ([]discovery.Producer, error) {
	for {
		select {
		case <-w.closed:
			return nil, fmt.Errorf("discovery/etcd: %w", discovery.ErrClosed)
		default:
		}
		if ps, ok := w.poll(); ok {
			return ps, nil
		}
		w.mu.Lock()
		ch := w.changed
		stale := w.version != w.seen
		w.mu.Unlock()
		if stale {
			continue
		}
		select {
		case <-ch:
		case <-w.closed:
			return nil, fmt.Errorf("discovery/etcd: %w", discovery.ErrClosed)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// poll returns a copy of the set if Next has not returned it yet: on the
// first call, or when it differs from the one last returned.
func (w *watch) poll() ([]discovery.Producer, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started && w.version == w.seen {
		return nil, false
	}
	w.seen = w.version
	ps := make([]discovery.Producer, 0, len(w.set))
	for _, p := range w.set {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b discovery.Producer) int { return bytes.Compare(a.Addr.ID[:], b.Addr.ID[:]) })
	if w.started && slices.EqualFunc(ps, w.last, discovery.Producer.Equal) {
		return nil, false // changed and changed back
	}
	w.started, w.last = true, ps
	return slices.Clone(ps), true
}

// ResolveNow does nothing: etcd tells the watch of every change.
func (w *watch) ResolveNow() {}

// Close stops the watch: Next returns discovery.ErrClosed. It waits for the
// watch's goroutine to end and is safe to call more than once.
func (w *watch) Close() error {
	w.closeOnce.Do(func() {
		close(w.closed)
		w.cancel()
		<-w.done
		w.r.mu.Lock()
		delete(w.r.watches, w)
		w.r.mu.Unlock()
	})
	return nil
}
