package main

import (
	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/webtransport"
	"github.com/aster-go/aster/trust"
)

// withTransport prepends to opts the dialer an address needs beyond the
// aster package's default (direct QUIC with a relay fallback): a
// WebTransport dialer for an address reachable only over WebTransport.
func withTransport(addr aster.Address, opts []aster.ClientOption) []aster.ClientOption {
	if len(addr.Direct) == 0 && addr.Relay == "" && addr.WebTransport != "" {
		wt := aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer { return webtransport.NewDialer(k, nil) })
		return append([]aster.ClientOption{wt}, opts...)
	}
	return opts
}
