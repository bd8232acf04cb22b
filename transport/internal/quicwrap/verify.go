package quicwrap

import (
	"net"

	"golang.org/x/time/rate"
)

// VerifySourceAddress is a listening quic-go Transport's
// VerifySourceAddress for an UnvalidatedHandshakes setting n (defaults
// applied; both transports' Configs have it): true, that is ask for a
// Retry, once more than n clients per second came from addresses not
// validated yet; always true for a negative n.
func VerifySourceAddress(n int) func(net.Addr) bool {
	if n < 0 {
		return func(net.Addr) bool { return true }
	}
	lim := rate.NewLimiter(rate.Limit(n), n)
	return func(net.Addr) bool { return !lim.Allow() }
}
