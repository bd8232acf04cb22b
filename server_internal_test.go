package aster

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// The tracker's channel closes when the count reaches zero after wait was
// called, and not before, under concurrent adds and dones.
func TestCallTracker(t *testing.T) {
	var ct callTracker
	select {
	case <-ct.wait():
	default:
		t.Fatal("wait with no calls in flight did not return a closed channel")
	}
	for round := range 200 {
		const n = 8
		for range n {
			ct.add()
		}
		zero := ct.wait()
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				if i%2 == 0 {
					ct.add() // a call that starts and ends meanwhile
					ct.done()
				}
				ct.done()
			})
		}
		wg.Wait()
		select {
		case <-zero:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: wait channel not closed at zero", round)
		}
		ct.add()
		zero = ct.wait()
		select {
		case <-zero:
			t.Fatalf("round %d: wait channel closed with a call in flight", round)
		default:
		}
		ct.done()
		<-zero
	}
}

// Stream workers exit once idle (the server stays open), so a burst of
// calls does not leave its goroutines parked for good.
func TestIdleWorkersExit(t *testing.T) {
	type msg struct {
		N int `cbor:"n"`
	}
	key := trust.GenerateKey()
	srv := NewServer(WithSecretKey(key))
	release := make(chan struct{})
	srv.MustRegister(handler.NewService("T", 1).
		Handle("echo", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) { return m, nil })).
		Handle("wait", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) { <-release; return m, nil })))
	nw := mem.NewNetwork()
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c, err := DialAddress(context.Background(), ln.Addr(), WithDialer(nw.Dialer(trust.GenerateKey())))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close(); srv.Close(); <-served }()
	var wg sync.WaitGroup
	wg.Go(func() {
		if _, err := CallUnary[msg](context.Background(), c, "T.wait", &msg{N: 1}); err != nil {
			t.Error(err)
		}
	})
	// The waiting call's worker shows that the test counts the right
	// function.
	for start := time.Now(); workerGoroutines() == 0; time.Sleep(time.Millisecond) {
		if time.Since(start) > 20*time.Second {
			t.Fatal("no stream worker while a call is being served")
		}
	}
	close(release)
	for range 8 {
		wg.Go(func() {
			if _, err := CallUnary[msg](context.Background(), c, "T.echo", &msg{N: 1}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for workerGoroutines() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d stream workers still running after 20 s idle", workerGoroutines())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "aster.(*Server).worker(")
}
