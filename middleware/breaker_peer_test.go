package middleware_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// failStream is a ClientStream whose call ends with err (io.EOF: success).
type failStream struct{ err error }

func (s failStream) Send(any) error            { return nil }
func (s failStream) CloseSend() error          { return nil }
func (s failStream) Header() handler.Metadata  { return nil }
func (s failStream) Trailer() handler.Metadata { return nil }
func (s failStream) Close()                    {}
func (s failStream) Recv(any) error            { return s.err }

// picker is a Caller that picks the peer of each call among peers like a
// fleet's balancer: it leaves out those a guard refuses and starts the
// call through the guards. fail says which peers fail their calls.
type picker struct {
	peers []trust.EndpointID
	fail  map[trust.EndpointID]bool
	got   map[trust.EndpointID]int
}

func (p *picker) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	guards := middleware.PeerGuards(ctx)
	var refusal error
	for _, id := range p.peers {
		ok := true
		for _, g := range guards {
			if err := g.Refusal(call, id); err != nil {
				refusal, ok = err, false
			}
		}
		if !ok {
			continue
		}
		call.Peer = id
		return middleware.NewGuardedStream(ctx, call, guards, middleware.CallerFunc(func(context.Context, *middleware.Call) (middleware.ClientStream, error) {
			p.got[id]++
			if p.fail[id] {
				return failStream{status.New(status.Unavailable, "down")}, nil
			}
			return failStream{io.EOF}, nil
		}))
	}
	return nil, refusal
}

func peerID(b byte) trust.EndpointID {
	var id trust.EndpointID
	id[0] = b
	return id
}

// Over a picking Caller the breakers are per peer: the failing peer's
// breaker opens and the picker goes to the next one.
func TestBreakerGuardsPickingCaller(t *testing.T) {
	a, b := peerID(1), peerID(2)
	p := &picker{peers: []trust.EndpointID{a, b}, fail: map[trust.EndpointID]bool{a: true}, got: map[trust.EndpointID]int{}}
	br := middleware.NewBreakers(middleware.BreakerOptions{ConsecutiveFailures: 2, OpenTimeout: time.Hour})
	c := br.Middleware()(p)
	ctx := context.Background()
	for i := range 10 {
		cs, err := c.NewStream(ctx, &middleware.Call{Service: "S", Method: "m"})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		cs.Recv(nil)
	}
	if p.got[a] != 2 || p.got[b] != 8 {
		t.Fatalf("calls per peer %v; want 2 to the failing one, 8 to the other", p.got)
	}
	if s := br.State(&middleware.Call{Peer: a}); s != middleware.BreakerOpen {
		t.Fatalf("failing peer's breaker %v", s)
	}
	if s := br.State(&middleware.Call{Peer: b}); s != middleware.BreakerClosed {
		t.Fatalf("healthy peer's breaker %v", s)
	}
	if s := br.State(&middleware.Call{}); s != middleware.BreakerClosed {
		t.Fatalf("a breaker of the zero peer exists (%v): the picker was consulted", s)
	}
	// Both peers failing: the picker finds every peer refused.
	p.fail[b] = true
	for range 2 {
		cs, _ := c.NewStream(ctx, &middleware.Call{Service: "S", Method: "m"})
		cs.Recv(nil)
	}
	_, err := c.NewStream(ctx, &middleware.Call{Service: "S", Method: "m"})
	if status.CodeOf(err) != status.Unavailable || status.FromError(err).Metadata()[middleware.BreakerOpenKey] == "" {
		t.Fatalf("call with every breaker open: %v", err)
	}
}

// A Caller that leaves call.Peer unset and does not consult the guards
// gets one breaker for the whole target, which trips and fails fast.
func TestBreakerUnguidedCaller(t *testing.T) {
	n := 0
	dead := middleware.CallerFunc(func(context.Context, *middleware.Call) (middleware.ClientStream, error) {
		n++
		return failStream{status.New(status.Unavailable, "down")}, nil
	})
	br := middleware.NewBreakers(middleware.BreakerOptions{ConsecutiveFailures: 3, OpenTimeout: time.Hour})
	c := br.Middleware()(dead)
	ctx := context.Background()
	for i := range 3 {
		cs, err := c.NewStream(ctx, &middleware.Call{Service: "S", Method: "m"})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		cs.Recv(nil)
	}
	_, err := c.NewStream(ctx, &middleware.Call{Service: "S", Method: "m"})
	if status.CodeOf(err) != status.Unavailable || !strings.Contains(err.Error(), "breaker 0000000000000000") {
		t.Fatalf("4th call: %v; want the target's breaker open", err)
	}
	if n != 3 {
		t.Fatalf("%d calls reached the Caller; want 3", n)
	}
}

// PeerGuards lists guards outermost first, and NewGuardedStream runs them
// in that order.
func TestPeerGuardsOrder(t *testing.T) {
	var order []string
	ctx := middleware.WithPeerGuard(context.Background(), namedGuard{"outer", &order})
	ctx = middleware.WithPeerGuard(ctx, namedGuard{"inner", &order})
	gs := middleware.PeerGuards(ctx)
	if len(gs) != 2 {
		t.Fatalf("%d guards", len(gs))
	}
	if middleware.PeerGuards(context.Background()) != nil {
		t.Fatal("guards in an empty context")
	}
	_, err := middleware.NewGuardedStream(ctx, &middleware.Call{}, gs, middleware.CallerFunc(func(context.Context, *middleware.Call) (middleware.ClientStream, error) {
		order = append(order, "call")
		return failStream{io.EOF}, nil
	}))
	if err != nil || strings.Join(order, ",") != "outer,inner,call" {
		t.Fatalf("order %v, err %v", order, err)
	}
}

type namedGuard struct {
	name  string
	order *[]string
}

func (g namedGuard) Refusal(*middleware.Call, trust.EndpointID) error { return nil }
func (g namedGuard) NewPeerStream(ctx context.Context, call *middleware.Call, next middleware.Caller) (middleware.ClientStream, error) {
	*g.order = append(*g.order, g.name)
	return next.NewStream(ctx, call)
}
