package etcd_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/discovery/etcd"
)

// A server announces itself as a producer of "fleet/MissionControl"; a
// client follows the name's producers.
func Example() {
	ctx := context.Background()
	reg, err := etcd.New(etcd.Config{
		Endpoints: []string{"http://127.0.0.1:2379"},
		TTL:       5 * time.Second, // the entry goes 5 s after this process dies
	})
	if err != nil {
		log.Fatal(err) // etcd did not answer within the DialTimeout (3 s)
	}
	defer reg.Close()

	// Server side: announce, and deregister before draining.
	var me discovery.EndpointAddr // the server's address (its id, relay, direct addresses)
	r, err := reg.Register(ctx, "fleet/MissionControl", discovery.Producer{Addr: me})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Deregister(ctx)

	// Client side: the set of producers, each time it changes.
	w, err := reg.Watch(ctx, "fleet/MissionControl")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	for {
		ps, err := w.Next(ctx)
		if err != nil {
			return // ctx ended or the watch was closed
		}
		for _, p := range ps {
			fmt.Println(p.Addr) // an aster1 address; the client verifies p.Addr.ID
		}
	}
}
