package aster

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
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
// calls does not leave its goroutines parked for good. The test runs in a
// synctest bubble over the mem transport: the idle period passes in
// virtual time.
func TestIdleWorkersExit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type msg struct {
			N int `cbor:"n"`
		}
		key := trust.GenerateKey()
		srv := NewServer(WithSecretKey(key), WithLogger(slog.New(slog.DiscardHandler)))
		started, release := make(chan struct{}), make(chan struct{})
		srv.MustRegister(handler.NewService("T", 1).
			Handle("echo", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) { return m, nil })).
			Handle("wait", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) {
				close(started)
				<-release
				return m, nil
			})))
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
		<-started
		if workerGoroutines() == 0 {
			t.Fatal("no stream worker while a call is being served")
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
		synctest.Wait()
		if workerGoroutines() == 0 {
			t.Fatal("no idle worker right after the calls: the test would pass vacuously")
		}
		// The calls' streams are kept for reuse: their workers wait for a
		// next call until the server's idle timeout, then exit once idle.
		wait := DefaultStreamIdleTimeout*(idleSweeps+1)/idleSweeps + workerIdle + time.Millisecond
		time.Sleep(wait) // virtual time
		synctest.Wait()
		if n := workerGoroutines(); n > 0 {
			t.Fatalf("%d stream workers still running after %v idle", n, wait)
		}
	})
}

func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "aster.(*Server).worker(")
}

// A Stream kept past its handler's return fails instead of acting on the
// call (until the pooled call is reused, which this test does not do).
func TestStreamUseAfterReturn(t *testing.T) {
	c := &serverCall{peer: &handler.Peer{Capabilities: []string{"x"}}}
	c.hdr.Metadata = map[string]string{"k": "v"}
	var kept handler.Stream
	var keptCtx context.Context
	err := c.run(handler.NewContext(context.Background(), c), handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
		kept, keptCtx = s, ctx
		if s.Header()["k"] != "v" || len(s.Peer().Capabilities) != 1 {
			t.Error("the stream does not show the call while the handler runs")
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := kept.Send(struct{}{}); err != errReturned {
		t.Errorf("Send after return: %v", err)
	}
	if err := kept.Recv(new(struct{})); err != errReturned {
		t.Errorf("Recv after return: %v", err)
	}
	if err := kept.SetHeader("a", "b"); err != errReturned {
		t.Errorf("SetHeader after return: %v", err)
	}
	if err := handler.SetHeader(keptCtx, "a", "b"); err != errReturned {
		t.Errorf("handler.SetHeader after return: %v", err)
	}
	kept.SetTrailer("a", "b")
	if c.trailer != nil {
		t.Error("SetTrailer after return changed the trailer")
	}
	if kept.Header() != nil || handler.IncomingMetadata(keptCtx) != nil {
		t.Error("metadata readable after return")
	}
	if p, _ := handler.PeerFromContext(keptCtx); p.Capabilities != nil {
		t.Error("peer readable after return")
	}
}
