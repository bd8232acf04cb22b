package middleware

import (
	"context"

	"github.com/aster-go/aster/trust"
)

// PeerGuard is what client middleware that judges each peer separately
// (Breakers, the CircuitBreaker) offers a Caller below it that picks the
// peer of each call itself, such as the balancer of an aster.Fleet. Such
// middleware runs before the peer is known (call.Peer is zero), so it does
// not act itself: it puts a PeerGuard in the call's context
// (WithPeerGuard), and the picking Caller consults the guards it finds
// there (PeerGuards): it leaves out the peers a guard refuses (Refusal),
// failing the call if it refuses them all, and starts the call on the
// chosen peer through every guard (NewPeerStream), so that the outcome is
// counted for that peer. Picking Callers that do not consult the guards
// are allowed; the middleware then notices and acts on the call itself.
type PeerGuard interface {
	// Refusal returns nil if a call like call may go to peer now, else the
	// error such a call would fail with (UNAVAILABLE, with metadata such
	// as BreakerOpenKey). It counts nothing and must not block.
	Refusal(call *Call, peer trust.EndpointID) error
	// NewPeerStream starts call, whose Peer is set to the chosen peer,
	// through next, if the guard admits it, and follows its outcome.
	NewPeerStream(ctx context.Context, call *Call, next Caller) (ClientStream, error)
}

// peerGuardsKey is the context key of the guards of a call.
type peerGuardsKey struct{}

// guardList is the node WithPeerGuard puts in a context: the call's guards,
// outermost first. A single guard lives in one, so that the common case
// costs no slice.
type guardList struct {
	one [1]PeerGuard
	all []PeerGuard
}

// WithPeerGuard returns ctx carrying g, after the guards ctx already
// carries, for the Caller below that picks the call's peer.
func WithPeerGuard(ctx context.Context, g PeerGuard) context.Context {
	return withGuardList(ctx, new(guardList), g)
}

// withGuardList is WithPeerGuard with the node l (zero) provided.
func withGuardList(ctx context.Context, l *guardList, g PeerGuard) context.Context {
	if outer, _ := ctx.Value(peerGuardsKey{}).(*guardList); outer != nil {
		l.all = append(append(make([]PeerGuard, 0, len(outer.all)+1), outer.all...), g)
	} else {
		l.one[0] = g
		l.all = l.one[:]
	}
	return context.WithValue(ctx, peerGuardsKey{}, l)
}

// PeerGuards returns the guards ctx carries, outermost first (nil if none):
// a picking Caller starts the call through them in that order. The slice
// must not be modified.
func PeerGuards(ctx context.Context) []PeerGuard {
	if l, _ := ctx.Value(peerGuardsKey{}).(*guardList); l != nil {
		return l.all
	}
	return nil
}

// NewGuardedStream starts call (call.Peer set) through guards, outermost
// first, and then next: what a picking Caller does once it chose a peer.
// Without guards it is next.NewStream.
func NewGuardedStream(ctx context.Context, call *Call, guards []PeerGuard, next Caller) (ClientStream, error) {
	switch len(guards) {
	case 0:
		return next.NewStream(ctx, call)
	case 1:
		return guards[0].NewPeerStream(ctx, call, next)
	}
	return guards[0].NewPeerStream(ctx, call, guardedCaller{guards: guards[1:], next: next})
}

type guardedCaller struct {
	guards []PeerGuard
	next   Caller
}

func (c guardedCaller) NewStream(ctx context.Context, call *Call) (ClientStream, error) {
	return NewGuardedStream(ctx, call, c.guards, c.next)
}
