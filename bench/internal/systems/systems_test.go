package systems

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestSystems runs every workload once against every system over real
// loopback sockets and checks the results the clients verify (response
// fields, counts, payload sizes).
func TestSystems(t *testing.T) {
	for _, sys := range All() {
		t.Run(sys.Name(), func(t *testing.T) {
			if ByName(sys.Name()) == nil {
				t.Fatalf("ByName(%q) = nil", sys.Name())
			}
			if ByName(sys.Floor()) == nil {
				t.Fatalf("floor %q of %s is not a system", sys.Floor(), sys.Name())
			}
			for _, w := range []Workload{WorkloadTail, WorkloadIngest, WorkloadEcho} {
				if n := sys.MessageSize(w); n <= 0 || n > 200 {
					t.Errorf("MessageSize(%d) = %d", w, n)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srv, err := sys.Serve()
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			c, err := sys.Dial(ctx, srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Unary(ctx); err != nil {
				t.Fatalf("Unary: %v", err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 32)
			for range 32 {
				wg.Go(func() {
					for range 20 {
						if err := c.Unary(ctx); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("concurrent Unary: %v", err)
			}
			for _, n := range []int{0, 1, 1000} {
				if err := c.Tail(ctx, n); err != nil {
					t.Fatalf("Tail(%d): %v", n, err)
				}
				if err := c.Ingest(ctx, n); err != nil {
					t.Fatalf("Ingest(%d): %v", n, err)
				}
				if err := c.Echo(ctx, n); err != nil {
					t.Fatalf("Echo(%d): %v", n, err)
				}
			}
			var open []io.Closer
			for range 10 {
				st, err := c.OpenStream(ctx)
				if errors.Is(err, ErrNotSupported) {
					break
				}
				if err != nil {
					t.Fatalf("OpenStream: %v", err)
				}
				open = append(open, st)
			}
			// Calls still work while streams are open.
			if err := c.Unary(ctx); err != nil {
				t.Fatalf("Unary with open streams: %v", err)
			}
			for _, st := range open {
				if err := st.Close(); err != nil {
					t.Errorf("closing an open stream: %v", err)
				}
			}
		})
	}
}

// TestAsterAddresses checks that aster-wt's and aster-relay's servers are
// reachable only by their transport: the address has no direct QUIC
// address, and carries the WebTransport URL or the relay URL.
func TestAsterAddresses(t *testing.T) {
	for _, name := range []string{"aster-wt", "aster-relay"} {
		t.Run(name, func(t *testing.T) {
			srv, err := ByName(name).Serve()
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			a, err := aster.ParseAddress(srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if len(a.Direct) != 0 {
				t.Errorf("direct addresses %v", a.Direct)
			}
			switch name {
			case "aster-wt":
				if a.WebTransport == "" || len(a.CertHashes) == 0 || a.Relay != "" {
					t.Errorf("address %+v: want a WebTransport URL with certificate hashes and no relay", a)
				}
			case "aster-relay":
				if a.Relay == "" || a.WebTransport != "" {
					t.Errorf("address %+v: want a relay and no WebTransport URL", a)
				}
			}
		})
	}
}
