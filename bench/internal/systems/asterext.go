package systems

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"

	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/transport/webtransport"
	"github.com/aster-go/aster/trust"
)

// newAsterWT is aster over WebTransport: the server listens with
// transport/webtransport and its address carries the WebTransport URL and
// certificate hashes (and no direct QUIC address), which the client's
// WebTransport dialer uses.
func newAsterWT() *asterSystem {
	return &asterSystem{
		name: "aster-wt",
		listen: func(key trust.SecretKey) (transport.Listener, func(), error) {
			ln, err := webtransport.Listen(ListenHost+":0", key, &webtransport.Config{UnvalidatedHandshakes: benchHandshakes})
			return ln, nil, err
		},
		dialer: func(key trust.SecretKey) (transport.Dialer, func()) {
			d := webtransport.NewDialer(key, nil)
			return d, func() { d.Close() }
		},
	}
}

// benchRelayConfig is the relay of aster-relay: no bandwidth limit (the
// default 16 MiB/s per endpoint would measure the limit, not the relay
// path) and room for the peak-RSS run's idle connections from one IP.
func benchRelayConfig(cert tls.Certificate) relay.ServerConfig {
	return relay.ServerConfig{
		Certificate:    cert,
		BytesPerSecond: -1,
		MaxConnsPerIP:  8192,
		Logger:         slog.New(slog.DiscardHandler),
	}
}

// newAsterRelay is aster through a relay: Serve starts a relay.Server on
// loopback TCP+TLS (self-signed, pinned in the URL) and registers the
// aster server there with no direct listener, so the server's address
// names only the relay; the client dials with a relay.Dialer, so every
// packet of every connection goes client → relay → server over TCP+TLS
// (both sides disable the upgrade to a direct path, PROTOCOL.md §24, which
// would otherwise move the connections off the relay on loopback).
// The relay runs in the server's process and is closed with it.
func newAsterRelay() *asterSystem {
	quiet := slog.New(slog.DiscardHandler)
	return &asterSystem{
		name:    "aster-relay",
		rssNote: "server process includes the relay",
		listen: func(key trust.SecretKey) (transport.Listener, func(), error) {
			cert, err := relay.SelfSignedCertificate(ListenHost)
			if err != nil {
				return nil, nil, err
			}
			rs, err := relay.NewServer(benchRelayConfig(cert))
			if err != nil {
				return nil, nil, err
			}
			tl, err := net.Listen("tcp", net.JoinHostPort(ListenHost, "0"))
			if err != nil {
				return nil, nil, err
			}
			done := make(chan error, 1)
			go func() { done <- rs.Serve(tl) }()
			stop := func() { rs.Close(); <-done }
			url := relay.PinnedURL(tl.Addr().String(), cert.Certificate[0])
			ctx, cancel := context.WithTimeout(context.Background(), relay.DefaultConnectTimeout)
			defer cancel()
			ln, err := relay.Listen(ctx, url, key, &relay.Config{Logger: quiet, Direct: relay.DirectConfig{Disable: true}})
			if err != nil {
				stop()
				return nil, nil, fmt.Errorf("register at the relay: %w", err)
			}
			return ln, stop, nil
		},
		dialer: func(key trust.SecretKey) (transport.Dialer, func()) {
			d := relay.NewDialer(key, &relay.Config{Logger: quiet, Direct: relay.DirectConfig{Disable: true}})
			return d, func() { d.Close() }
		},
	}
}
