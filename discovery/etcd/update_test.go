package etcd

import (
	"context"
	"net/netip"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
	"github.com/aster-go/aster/status"
)

// moved returns p with another direct address appended, as a producer
// whose port mapping was granted after it registered.
func moved(p discovery.Producer, port uint16) discovery.Producer {
	p.Addr.Direct = append(append([]netip.AddrPort(nil), p.Addr.Direct...), netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), port))
	return p
}

// TestUpdate: Update rewrites the entry under the same key and lease, so a
// watcher goes from the old entry straight to the new one; the new value
// survives a lost lease; an entry deleted by someone else stays deleted;
// wrong ids and updates after Deregister or Close fail with their codes.
func TestUpdate(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	pub := openRegistry(t, ep, Config{})
	w := startWatch(t, openRegistry(t, ep, Config{}), testName)
	mustNext(t, w, 5*time.Second)
	p := producer(t, 1, true)
	reg := register(t, pub, testName, p)
	waitFor(t, w, 5*time.Second, p)
	u, ok := reg.(discovery.RegistrationUpdater)
	if !ok {
		t.Fatalf("%T is not a discovery.RegistrationUpdater", reg)
	}

	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	key := DefaultPrefix + testName + "/" + p.Addr.ID.String()
	entry := func() (discovery.Producer, clientv3.LeaseID, bool) {
		t.Helper()
		resp, err := raw.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return discovery.Producer{}, 0, false
		}
		got, err := decodeEntry(DefaultPrefix+testName+"/", resp.Kvs[0].Key, resp.Kvs[0].Value)
		if err != nil {
			t.Fatalf("entry: %v", err)
		}
		return got, clientv3.LeaseID(resp.Kvs[0].Lease), true
	}
	_, lease, _ := entry()

	p2 := moved(p, 4443)
	if err := u.Update(ctx, p2); err != nil {
		t.Fatalf("Update: %v", err)
	}
	// The watcher's next set is the new entry: no gap without it.
	if ps := mustNext(t, w, 5*time.Second); !sameProducers(ps, []discovery.Producer{p2}) {
		t.Fatalf("after Update the watcher sees %v, want the new entry", ps)
	}
	if got, l, ok := entry(); !ok || !got.Equal(p2) || l != lease {
		t.Fatalf("entry after Update: %v (lease %x, present %v); want the new entry under lease %x", got.Addr, l, ok, lease)
	}
	// The same entry again changes nothing.
	if err := u.Update(ctx, p2); err != nil {
		t.Fatalf("Update with the same entry: %v", err)
	}
	if ps, err := next(t, w, 300*time.Millisecond); err == nil {
		t.Fatalf("an Update with the same entry produced a new set %v", ps)
	}

	// Lease lost: the entry is put again with the updated value.
	if _, err := raw.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	for {
		got, l, ok := entry()
		if ok && l != lease {
			if !got.Equal(p2) {
				t.Fatalf("put again as %v, want the updated entry", got.Addr)
			}
			lease = l
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the entry was not put again")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}

	// Someone else deletes the entry: Update does not put it back.
	if _, err := raw.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := u.Update(ctx, moved(p, 4444)); err != nil {
		t.Fatalf("Update of a deleted entry: %v", err)
	}
	if got, _, ok := entry(); ok {
		t.Fatalf("Update put a deleted entry back: %v", got.Addr)
	}

	if err := u.Update(ctx, producer(t, 2, false)); status.CodeOf(err) != status.InvalidArgument {
		t.Errorf("Update with another id: %v, want INVALID_ARGUMENT", err)
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Update(ctx, p2); status.CodeOf(err) != status.FailedPrecondition {
		t.Errorf("Update after Deregister: %v, want FAILED_PRECONDITION", err)
	}

	// After Close.
	reg3 := register(t, pub, testName, producer(t, 3, false))
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := reg3.(discovery.RegistrationUpdater).Update(ctx, moved(producer(t, 3, false), 1)); status.CodeOf(err) != status.FailedPrecondition {
		t.Errorf("Update after Close: %v, want FAILED_PRECONDITION", err)
	}
}

// TestUpdateRacesLeaseLoss: updates while the lease is being lost and
// regranted end with the last update's value in etcd.
func TestUpdateRacesLeaseLoss(t *testing.T) {
	ep, _ := etcdtest.Start(t)
	pub := openRegistry(t, ep, Config{})
	raw := rawClient(t, ep)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p := producer(t, 1, false)
	u := register(t, pub, testName, p).(discovery.RegistrationUpdater)
	key := DefaultPrefix + testName + "/" + p.Addr.ID.String()
	var last discovery.Producer
	for i := range 20 {
		resp, err := raw.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 && i%4 == 0 {
			if _, err := raw.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
				t.Fatal(err)
			}
		}
		last = moved(p, uint16(5000+i))
		if err := u.Update(ctx, last); err != nil {
			t.Fatalf("Update %d: %v", i, err)
		}
	}
	for {
		resp, err := raw.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 1 {
			got, err := decodeEntry(DefaultPrefix+testName+"/", resp.Kvs[0].Key, resp.Kvs[0].Value)
			if err == nil && got.Equal(last) {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("etcd does not end with the last update's entry")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
