package aster

// The balancer: the innermost Caller of a Fleet. Per call (per attempt
// under Retry) it picks a producer (pick), starts the call on that
// producer's Client and wraps the stream to count the call's outcome
// (fleetStream).

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// balancer is the Caller the fleet's middleware wraps.
type balancer struct{ f *Fleet }

// NewStream picks a producer and starts the call there. A retry attempt
// (middleware.Attempt > 1) avoids call.Peer, the producer of the previous
// attempt, when another is available.
//
// A call whose stream could not even be opened on the picked producer
// (UNAVAILABLE from NewStream: its connection was lost or could not be
// made, so nothing was sent) is started on another producer, up to
// maxRepicks times, whether or not it is idempotent: the server never saw
// it. Failures after that are for Retry to judge.
//
// Per-producer guards of the fleet's middleware (middleware.PeerGuards: a
// CircuitBreaker) take part in the pick: a producer a guard refuses (its
// breaker is open) is left out, and the call starts through the guards on
// the producer chosen, so each producer's outcomes go to its own breaker.
func (b balancer) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	var avoid trust.EndpointID
	if middleware.Attempt(ctx) > 1 {
		avoid = call.Peer
	}
	guards := middleware.PeerGuards(ctx)
	for i := 0; ; i++ {
		p, err := b.f.pickGuarded(ctx, avoid, call, guards)
		if err != nil {
			return nil, err
		}
		cs, err := p.startGuarded(ctx, call, guards)
		if err == nil || i == maxRepicks || status.CodeOf(err) != status.Unavailable || ctx.Err() != nil {
			return cs, err
		}
		avoid = p.entry.Addr.ID
	}
}

// startGuarded starts call on p through guards (outermost first; none:
// p.start).
func (p *producer) startGuarded(ctx context.Context, call *middleware.Call, guards []middleware.PeerGuard) (middleware.ClientStream, error) {
	if len(guards) == 0 {
		return p.start(ctx, call)
	}
	call.Peer = p.entry.Addr.ID
	return middleware.NewGuardedStream(ctx, call, guards, producerCaller{p})
}

// producerCaller starts calls on one producer (below the guards).
type producerCaller struct{ p *producer }

func (c producerCaller) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	return c.p.start(ctx, call)
}

// pickGuarded is pick among the producers no guard refuses (without
// guards, pick). If the guards
// refuse every producer that could take the call, it fails at once with
// UNAVAILABLE naming the refusals (the breakers' names in the metadata
// key middleware.BreakerOpenKey, so that Retry does not retry it).
func (f *Fleet) pickGuarded(ctx context.Context, avoid trust.EndpointID, call *middleware.Call, guards []middleware.PeerGuard) (*producer, error) {
	if len(guards) == 0 {
		return f.pick(ctx, avoid)
	}
	p, err := f.pickFiltered(ctx, avoid, &guardCheck{call: call, guards: guards})
	if err == errAllRefused {
		// Ask again for the reasons (a breaker may have moved on; those
		// still refusing are named).
		s := f.snap.Load()
		var refusals []error
		for _, p := range append(slices.Clip(s.ready), s.fallback...) {
			if err := (&guardCheck{call: call, guards: guards}).refusal(p); err != nil {
				refusals = append(refusals, err)
			}
		}
		if len(refusals) == 0 {
			return nil, status.Errorf(status.Unavailable, "aster: every producer of %s was refused by a circuit breaker", f.name)
		}
		return nil, f.refusedError(refusals)
	}
	return p, err
}

// guardCheck asks a call's guards about producers.
type guardCheck struct {
	call   *middleware.Call
	guards []middleware.PeerGuard
}

// refusal returns the first guard's refusal of p, or nil.
func (a *guardCheck) refusal(p *producer) error {
	for _, g := range a.guards {
		if err := g.Refusal(a.call, p.entry.Addr.ID); err != nil {
			return err
		}
	}
	return nil
}

// errAllRefused: every candidate was filtered out.
var errAllRefused = errors.New("every producer refused")

// maxRefusalsNamed is how many refusals the error of a fleet whose
// producers are all refused names.
const maxRefusalsNamed = 8

// refusedError is the error of a call every producer's guard refused.
func (f *Fleet) refusedError(refusals []error) error {
	if len(refusals) == 1 {
		return refusals[0]
	}
	var msg, names strings.Builder
	fmt.Fprintf(&msg, "aster: every producer of %s is refused (%d): ", f.name, len(refusals))
	for i, err := range refusals {
		if i == maxRefusalsNamed {
			fmt.Fprintf(&msg, "; and %d more", len(refusals)-i)
			break
		}
		se := status.FromError(err)
		if i > 0 {
			msg.WriteString("; ")
		}
		msg.WriteString(se.Message())
		if n := se.Metadata()[middleware.BreakerOpenKey]; n != "" {
			if names.Len() > 0 {
				names.WriteString(", ")
			}
			names.WriteString(n)
		}
	}
	e := status.New(status.Unavailable, msg.String())
	if names.Len() > 0 {
		e = e.WithMetadata(middleware.BreakerOpenKey, names.String())
	}
	return e
}

// maxRepicks is how many other producers a call that could not be started
// tries before it fails.
const maxRepicks = 2

// DescribeMethod implements middleware.MethodDescriber: what the
// producers' contract says of call's method. Answers are cached for the
// fleet until the producer set changes, so that Retry's question costs a
// map lookup; a miss asks a connected producer (its Client fetches the
// contract once per connection), and one that fails with UNAVAILABLE (it
// is shutting down, its connection broke) is counted and another asked.
func (b balancer) DescribeMethod(ctx context.Context, call *middleware.Call) (middleware.MethodSpec, error) {
	f := b.f
	k := methodKey{call.Service, call.Method, call.Version}
	if v, ok := f.methods.Load(k); ok {
		return v.(middleware.MethodSpec), nil
	}
	var avoid trust.EndpointID
	for i := 0; ; i++ {
		p, err := f.pick(ctx, avoid)
		if err != nil {
			return middleware.MethodSpec{}, err
		}
		if !p.connected() {
			err = status.Errorf(status.Unavailable, "aster: producer %s of %s is not connected", p.entry.Addr.ID.Short(), f.name)
		} else if spec, err2 := p.client.DescribeMethod(ctx, call); err2 == nil {
			f.methods.Store(k, spec)
			return spec, nil
		} else {
			err = err2
			if status.CodeOf(err) == status.Unavailable && ctx.Err() == nil {
				p.failure(err)
			}
		}
		if i == maxRepicks || status.CodeOf(err) != status.Unavailable || ctx.Err() != nil {
			return middleware.MethodSpec{}, err
		}
		avoid = p.entry.Addr.ID
	}
}

// connected reports whether p has a live connection.
func (p *producer) connected() bool {
	c := p.live.Load()
	return c != nil && !isDone((*c).Done())
}

// start starts call on p, counting it. call.Peer is set to p.
func (p *producer) start(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	if p.attested && call.Service != p.f.service && call.Service != wire.ControlService && !servesService(p.services, call.Service) {
		// The credential checked at listing names the watched service;
		// another one this producer is not vouched for is not sent to it.
		return nil, status.Errorf(status.PermissionDenied, "aster: producer %s of %s is not enrolled for service %s (its credential's %s: %q)",
			p.entry.Addr.ID.Short(), p.f.name, call.Service, ProducerServicesAttr, p.services)
	}
	call.Peer = p.entry.Addr.ID
	if call.Conn == nil {
		// Never dial inside a call: the keeper does. A connection lost
		// since the pick fails the start, and the balancer picks again.
		if !p.connected() {
			return nil, status.Errorf(status.Unavailable, "aster: producer %s of %s is not connected", p.entry.Addr.ID.Short(), p.f.name)
		}
	}
	p.outstanding.Add(1)
	p.calls.Add(1)
	cs, err := p.client.NewStream(ctx, call)
	if err != nil {
		p.outstanding.Add(-1)
		if p.removed.Load() && p.outstanding.Load() == 0 {
			p.idleOnce.Do(func() { close(p.idle) })
		}
		if status.CodeOf(err) == status.Unavailable {
			p.failure(err)
		}
		return nil, err
	}
	return &fleetStream{ClientStream: cs, p: p}, nil
}

// sessionCaller starts the calls of a session placed on p (they carry
// p's connection); the fleet's middleware wraps it.
type sessionCaller struct{ p *producer }

func (s sessionCaller) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	// A session cannot move: an open breaker of its producer fails the call.
	return s.p.startGuarded(ctx, call, middleware.PeerGuards(ctx))
}

// DescribeMethod implements middleware.MethodDescriber.
func (s sessionCaller) DescribeMethod(ctx context.Context, call *middleware.Call) (middleware.MethodSpec, error) {
	return s.p.client.DescribeMethod(ctx, call)
}

// pick returns a producer for a call: among the ready ones (P2C or round
// robin), avoiding avoid when another is available; if none is ready,
// among the ejected ones still connected; if producers are connecting (or
// no set arrived yet), it waits for one, up to the dial timeout; otherwise
// it fails at once with UNAVAILABLE naming the service.
func (f *Fleet) pick(ctx context.Context, avoid trust.EndpointID) (*producer, error) {
	return f.pickFiltered(ctx, avoid, nil)
}

// pickFiltered is pick among the producers admit (if not nil) does not
// refuse. When producers could take the call but admit refuses them all,
// it returns errAllRefused at once.
func (f *Fleet) pickFiltered(ctx context.Context, avoid trust.EndpointID, admit *guardCheck) (*producer, error) {
	var deadline <-chan time.Time
	var buf [16]*producer
	for {
		s := f.snap.Load()
		cands := s.ready
		refused := false
		if admit != nil {
			cands, refused = filterProducers(buf[:0], s.ready, admit)
		}
		if len(cands) == 0 {
			cands = s.fallback
			if admit != nil {
				var r bool
				cands, r = filterProducers(buf[:0], s.fallback, admit)
				refused = refused || r
			}
		}
		if len(cands) > 0 {
			return f.choose(cands, avoid), nil
		}
		if refused {
			return nil, errAllRefused
		}
		if !s.waiting {
			return nil, s.none
		}
		if deadline == nil {
			t := time.NewTimer(f.od.DialTimeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-s.changed:
		case <-deadline:
			return nil, status.Errorf(status.Unavailable, "aster: no producer of %s connected within %v", f.name, f.od.DialTimeout)
		case <-ctx.Done():
			return nil, status.FromError(ctx.Err())
		}
	}
}

// filterProducers appends to dst the producers of ps that admit does not
// refuse, and reports whether it left any out.
func filterProducers(dst, ps []*producer, admit *guardCheck) ([]*producer, bool) {
	refused := false
	for _, p := range ps {
		if admit.refusal(p) == nil {
			dst = append(dst, p)
		} else {
			refused = true
		}
	}
	return dst, refused
}

// choose picks among cands (not empty).
func (f *Fleet) choose(cands []*producer, avoid trust.EndpointID) *producer {
	n := len(cands)
	if n == 1 {
		return cands[0]
	}
	avoided := func(p *producer) bool { return !avoid.IsZero() && p.entry.Addr.ID == avoid }
	if f.bal == RoundRobin {
		i := int(f.rr.Add(1) % uint64(n))
		if avoided(cands[i]) {
			i = (i + 1) % n
		}
		return cands[i]
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	switch {
	case avoided(a):
		return b
	case avoided(b):
		return a
	case b.outstanding.Load() < a.outstanding.Load():
		return b
	}
	return a
}

// fleetStream counts one call's outcome for its producer: exactly once, at
// the first Recv error (io.EOF included) or at Close.
type fleetStream struct {
	middleware.ClientStream
	p     *producer
	ended atomic.Bool // Recv and Close may race
}

func (s *fleetStream) Recv(msg any) error {
	err := s.ClientStream.Recv(msg)
	if err != nil {
		s.finish(err)
		if de, ok := err.(*wire.DrainingError); ok {
			// The fleet acted on the mark; the caller sees the status.
			return de.Status
		}
	}
	return err
}

func (s *fleetStream) Close() {
	s.ClientStream.Close()
	s.finish(nil)
}

func (s *fleetStream) finish(err error) {
	if s.ended.CompareAndSwap(false, true) {
		s.p.answered(err)
	}
}

// Unwrap returns the producer's stream (for middleware.StatsReporter).
func (s *fleetStream) Unwrap() middleware.ClientStream { return s.ClientStream }
