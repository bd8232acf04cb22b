package etcd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// Register announces p as a producer of name: it grants a lease of
// Config.TTL, puts the entry "<Prefix><name>/<id hex>" with it and keeps
// the lease alive until the Registration is deregistered or the Registry
// closed. If the lease is lost (etcd restarted without it, or could not be
// reached for longer than the TTL) it grants a new one and puts the entry
// again, retrying with backoff, and logs it. If this process dies the entry
// goes when the lease expires, about TTL later.
//
// An endpoint has one entry per name: registering it again (a second
// instance with the same identity, say) replaces the entry, and
// deregistering the earlier registration then leaves the later one's entry
// in place. An entry deleted by someone else (an operator evicting the
// producer) is not put back while the lease lives.
func (r *Registry) Register(ctx context.Context, name string, p discovery.Producer) (discovery.Registration, error) {
	prefix, err := r.nameKey(name)
	if err != nil {
		return nil, err
	}
	val, err := encodeValue(p)
	if err != nil {
		return nil, err
	}
	reg := &registration{
		r:    r,
		key:  prefix + p.Addr.ID.String(),
		id:   p.Addr.ID,
		val:  string(val),
		done: make(chan struct{}),
	}
	end, err := r.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	lease, err := reg.put(ctx)
	if err != nil {
		if r.isClosed() { // Close began during the request
			return nil, errRegistryClosed()
		}
		return nil, status.Wrap(status.Unavailable, fmt.Errorf("discovery/etcd: registering %s: %w", reg.key, err))
	}
	reg.lease = lease
	var loopCtx context.Context
	loopCtx, reg.cancel = context.WithCancel(context.Background())

	// Start keeping it alive only if the registry is still open, so that
	// Close stops every registration it did not refuse.
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		reg.cancel()
		rctx, cancel := context.WithTimeout(context.Background(), r.cfg.DialTimeout)
		defer cancel()
		rctx, cancelReq := r.requestCtx(rctx)
		defer cancelReq()
		r.client.Revoke(rctx, lease)
		return nil, errRegistryClosed()
	}
	r.regs[reg] = struct{}{}
	go reg.keepAlive(loopCtx, lease)
	r.mu.Unlock()
	return reg, nil
}

// forget drops reg from the registry's set.
func (r *Registry) forget(reg *registration) {
	r.mu.Lock()
	delete(r.regs, reg)
	r.mu.Unlock()
}

// registration is one entry kept alive by a goroutine (keepAlive) that
// Deregister stops.
type registration struct {
	r   *Registry
	key string
	id  trust.EndpointID

	cancel context.CancelFunc // stops keepAlive
	done   chan struct{}      // closed when keepAlive returns

	mu      sync.Mutex
	val     string           // the entry's value; written by Update
	lease   clientv3.LeaseID // current lease; written by keepAlive
	stopped bool             // keepAlive stopped
	removed bool             // entry deleted and lease revoked
}

// put grants a lease and puts the entry with it. On failure it revokes the
// lease it granted (best effort). Register calls it before keepAlive runs;
// keepAlive calls it when the lease is lost.
func (reg *registration) put(ctx context.Context) (clientv3.LeaseID, error) {
	c := reg.r.client
	ctx, cancelReq := reg.r.opCtx(ctx)
	defer cancelReq()
	g, err := c.Grant(ctx, reg.r.cfg.ttlSeconds())
	if err != nil {
		return 0, fmt.Errorf("granting a lease: %w", err)
	}
	reg.mu.Lock()
	val := reg.val
	reg.mu.Unlock()
	if _, err := c.Put(ctx, reg.key, val, clientv3.WithLease(g.ID)); err != nil {
		rctx, cancel := context.WithTimeout(context.Background(), reg.r.cfg.DialTimeout)
		rctx, cancelReq := reg.r.requestCtx(rctx)
		c.Revoke(rctx, g.ID)
		cancelReq()
		cancel()
		return 0, fmt.Errorf("putting the entry: %w", err)
	}
	return g.ID, nil
}

// keepAlive keeps lease alive; when it is lost, it registers again with
// backoff. It returns when ctx ends or the client is closed.
func (reg *registration) keepAlive(ctx context.Context, lease clientv3.LeaseID) {
	defer close(reg.done)
	log := reg.r.log.With("key", reg.key)
	c := reg.r.client
	for {
		ch, err := c.KeepAlive(ctx, lease)
		if err == nil {
			for range ch {
				// Each response is one renewal; the channel closes when the
				// lease is gone or could not be renewed within its TTL.
			}
		}
		if ctx.Err() != nil || c.Ctx().Err() != nil {
			return
		}
		if err != nil {
			log.Warn("keeping the etcd lease alive failed; registering again", "lease", fmt.Sprintf("%x", int64(lease)), "err", err)
		} else {
			log.Warn("etcd lease lost (expired, or not renewed within its TTL); registering again", "lease", fmt.Sprintf("%x", int64(lease)))
		}
		backoff := 100 * time.Millisecond
		for attempt := 1; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, reg.r.cfg.DialTimeout)
			lease, err = reg.put(actx)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || c.Ctx().Err() != nil {
				return
			}
			if attempt == 1 || attempt%10 == 0 {
				log.Warn("registering again failed; retrying", "attempt", attempt, "err", err)
			}
			t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			backoff = min(2*backoff, reg.r.cfg.TTL)
		}
		reg.mu.Lock()
		reg.lease = lease
		// An Update that ran while put was under way compared against the
		// lost lease and changed nothing in etcd: write its value now.
		err = reg.putCurrentLocked(ctx)
		reg.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			log.Warn("writing the updated entry failed", "err", err)
		}
		log.Info("registered again", "lease", fmt.Sprintf("%x", int64(lease)))
	}
}

// putCurrentLocked writes reg.val under the current lease, if the entry
// is still ours (its key exists with our lease): an entry someone deleted
// or another registration replaced is left alone. reg.mu is held.
func (reg *registration) putCurrentLocked(ctx context.Context) error {
	ctx, cancelReq := reg.r.opCtx(ctx)
	defer cancelReq()
	_, err := reg.r.client.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(reg.key), "=", int64(reg.lease)),
			clientv3.Compare(clientv3.Value(reg.key), "!=", reg.val)).
		Then(clientv3.OpPut(reg.key, reg.val, clientv3.WithLease(reg.lease))).
		Commit()
	return err
}

var _ discovery.RegistrationUpdater = (*registration)(nil)

// Update replaces the entry's value with p's (a put on the same key under
// the same lease, so watchers see one change and never a gap), if the
// entry is still this registration's; the new value is also what is put
// again if the lease is lost. p.Addr.ID must be the registered endpoint's.
// It fails with status InvalidArgument for another id or a value over
// MaxValueSize, FailedPrecondition after Deregister or Close, and
// Unavailable when etcd cannot be reached (the value is still kept for
// the next re-registration).
func (reg *registration) Update(ctx context.Context, p discovery.Producer) error {
	if p.Addr.ID != reg.id {
		return status.Errorf(status.InvalidArgument, "discovery/etcd: update of %s with an entry for %s", reg.key, p.Addr.ID.Short())
	}
	val, err := encodeValue(p)
	if err != nil {
		return err
	}
	end, err := reg.r.begin()
	if err != nil {
		return err
	}
	defer end()
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.stopped || reg.removed {
		return status.Errorf(status.FailedPrecondition, "discovery/etcd: update of %s after Deregister", reg.key)
	}
	reg.val = string(val)
	if err := reg.putCurrentLocked(ctx); err != nil {
		if reg.r.isClosed() {
			return errRegistryClosed()
		}
		return status.Wrap(status.Unavailable, fmt.Errorf("discovery/etcd: updating %s: %w", reg.key, err))
	}
	return nil
}

// Deregister stops keeping the entry alive, deletes it (unless a later
// registration of the same endpoint has replaced it) and revokes its
// lease, so watchers drop the producer at once. Calling it again after it
// succeeded does nothing; after a failure (etcd unreachable) it tries the
// delete again. If it cannot reach etcd the entry still goes when its
// lease expires.
func (reg *registration) Deregister(ctx context.Context) error {
	reg.mu.Lock()
	if reg.removed {
		reg.mu.Unlock()
		return nil
	}
	stop := !reg.stopped
	reg.stopped = true
	reg.mu.Unlock()
	if stop {
		reg.cancel()
		<-reg.done
		reg.r.forget(reg)
	}

	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.removed {
		return nil
	}
	// Delete the entry only while it is still ours: another registration
	// (a new instance with the same identity) may have put it since.
	c := reg.r.client
	ctx, cancelReq := reg.r.requestCtx(ctx)
	defer cancelReq()
	_, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(reg.key), "=", int64(reg.lease))).
		Then(clientv3.OpDelete(reg.key)).
		Commit()
	if err != nil {
		return status.Wrap(status.Unavailable, fmt.Errorf("discovery/etcd: deregistering %s: %w", reg.key, err))
	}
	if _, err := c.Revoke(ctx, reg.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// The entry is gone; the lease expires on its own.
		reg.r.log.Debug("revoking the lease failed", "key", reg.key, "err", err)
	}
	reg.removed = true
	return nil
}
