package aster_test

import (
	"context"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
)

// A handler's error text cannot make a fleet treat its producer as
// draining: an application answering UNAVAILABLE "server shutting down",
// even marked not processed, is an ordinary failure.
func TestFleetDrainNotFromMessageText(t *testing.T) {
	ps, _, f := startFleet(t, 2, aster.WithFleetRetry(nil),
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}))
	liar := ps[0]
	liar.spoofShutdown.Store(true)
	ctx := ctxT(t)
	lies := 0
	for i := 0; lies < 10; i++ {
		_, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		if err != nil {
			if status.CodeOf(err) != status.Unavailable || !status.IsNotProcessed(err) {
				t.Fatalf("call %d: %v", i, err)
			}
			lies++
		}
		if st, _ := producerState(f, liar.id()); st.State != aster.ProducerReady {
			t.Fatalf("after %d answers \"server shutting down\" from a handler the producer is %v; want ready", lies, st.State)
		}
		if i > 1000 {
			t.Fatalf("only %d calls of %d went to the spoofing producer", lies, i)
		}
	}
	st, _ := producerState(f, liar.id())
	if st.Failures < 10 {
		t.Fatalf("spoofing producer's failures %d; want them counted as failures", st.Failures)
	}
	// The same answer to a plain client: not the draining signal.
	c := aster.NewClient(liar.ln.Addr(), aster.WithLogger(quietLogger()))
	defer c.Close()
	_, err := aster.CallUnary[FleetReply](ctx, c, "Fleet.get", &FleetReq{})
	if status.CodeOf(err) != status.Unavailable || wire.IsDraining(err) {
		t.Fatalf("handler's refusal %v: draining %v", err, wire.IsDraining(err))
	}
}

// holdAndShutdown holds a put call on p through c, starts p's graceful
// shutdown, and returns once a new call on c is refused with the draining
// signal (which it returns). The held call ends within hold.
func holdAndShutdown(t *testing.T, p *testProducer, c *aster.Client, hold time.Duration) (refusal error, shut <-chan struct{}) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := aster.CallUnary[FleetReply](ctx, c, "Fleet.get", &FleetReq{}); err != nil {
		t.Fatalf("first call: %v", err) // c is connected before the shutdown
	}
	held := make(chan error, 1)
	go func() {
		_, err := aster.CallUnary[FleetReply](ctx, c, "Fleet.put", &FleetReq{N: int(hold / time.Millisecond)})
		held <- err
	}()
	fleetWait(t, "the held call", func() bool { return p.inPut.Load() == 1 })
	done := make(chan struct{})
	go func() { p.shutdown(t); close(done) }()
	t.Cleanup(func() {
		if err := <-held; err != nil {
			t.Errorf("held call: %v", err)
		}
		<-done
	})
	for {
		_, err := aster.CallUnary[FleetReply](ctx, c, "Fleet.get", &FleetReq{})
		if err != nil {
			return err, done
		}
		time.Sleep(time.Millisecond)
	}
}

// A server in Shutdown refuses a new call on an existing connection with a
// TRAILER marked draining (PROTOCOL.md §7.1), which the client reports.
func TestShutdownRefusalCarriesDraining(t *testing.T) {
	p := startProducer(t, nil)
	c := aster.NewClient(p.ln.Addr(), aster.WithLogger(quietLogger()))
	t.Cleanup(func() { c.Close() }) // after holdAndShutdown's wait for the held call
	err, _ := holdAndShutdown(t, p, c, time.Second)
	if status.CodeOf(err) != status.Unavailable || !status.IsNotProcessed(err) || !wire.IsDraining(err) {
		t.Fatalf("refusal during Shutdown: %v (not processed %v, draining %v); want UNAVAILABLE, both marks",
			err, status.IsNotProcessed(err), wire.IsDraining(err))
	}
}

// A gateway whose handler passes on a draining server's refusal as is does
// not look draining itself: the mark is the answering server's, and a
// server never forwards one it received.
func TestFleetGatewayDoesNotForwardDraining(t *testing.T) {
	backend := startProducer(t, nil)
	toBackend := aster.NewClient(backend.ln.Addr(), aster.WithLogger(quietLogger()))
	t.Cleanup(func() { toBackend.Close() })
	ps, _, f := startFleet(t, 1, aster.WithFleetRetry(nil),
		aster.WithOutlierDetection(aster.OutlierDetection{ConsecutiveFailures: 1 << 30, DialTimeout: time.Second}))
	gw := ps[0]
	refusal, _ := holdAndShutdown(t, backend, toBackend, 2*time.Second)
	if !wire.IsDraining(refusal) {
		t.Fatalf("backend refusal %v is not marked draining", refusal)
	}
	gw.relay.Store(toBackend)
	ctx, cancel := context.WithTimeout(ctxT(t), time.Second)
	defer cancel()
	for i := range 5 {
		_, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		if status.CodeOf(err) != status.Unavailable || wire.IsDraining(err) {
			t.Fatalf("call %d through the gateway: %v (draining %v); want the backend's UNAVAILABLE, unmarked", i, err, wire.IsDraining(err))
		}
		if st, _ := producerState(f, gw.id()); st.State != aster.ProducerReady {
			t.Fatalf("gateway is %v after passing on a draining backend's refusal; want ready", st.State)
		}
	}
}

// The fleet drains a producer on the TRAILER's draining mark alone, before
// the producer closes its connection.
func TestFleetDrainsOnTrailerMark(t *testing.T) {
	ps, _, f := startFleet(t, 2, aster.WithFleetRetry(nil))
	victim := ps[0]
	direct := aster.NewClient(victim.ln.Addr(), aster.WithLogger(quietLogger()))
	t.Cleanup(func() { direct.Close() })
	_, shut := holdAndShutdown(t, victim, direct, 2*time.Second)
	ctx := ctxT(t)
	for i := 0; ; i++ {
		_, err := aster.CallUnary[FleetReply](ctx, f, "Fleet.get", &FleetReq{})
		st, _ := producerState(f, victim.id())
		if st.State == aster.ProducerDraining {
			if err == nil || !status.IsNotProcessed(err) || wire.IsDraining(err) {
				t.Fatalf("the call that drained the producer: %v; want its refusal, the mark consumed by the fleet", err)
			}
			break
		}
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if i > 1000 {
			t.Fatalf("producer still %v after %d calls", st.State, i)
		}
	}
	select {
	case <-shut:
		t.Fatal("the shutdown ended (and closed the connection) before the producer was drained")
	default:
	}
}
