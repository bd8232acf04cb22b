package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/webtransport"
)

// serveWebTransport also serves srv over WebTransport when
// ASTER_WEBTRANSPORT_ADDR is set (a UDP "host:port"; port 0 picks a free
// one), so browsers can call it (see web/). It returns the server's address,
// which then carries the WebTransport URL and certificate hashes next to the
// direct QUIC addresses, and a channel that yields Serve's result (nil when
// WebTransport is off).
func serveWebTransport(srv *aster.Server, logger *slog.Logger, addr aster.Address) (aster.Address, <-chan error, error) {
	bind := os.Getenv("ASTER_WEBTRANSPORT_ADDR")
	if bind == "" {
		return addr, nil, nil
	}
	ln, err := webtransport.Listen(bind, srv.SecretKey(), nil)
	if err != nil {
		return addr, nil, fmt.Errorf("ASTER_WEBTRANSPORT_ADDR: %w", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	hashes := make([]string, 0, 2)
	for _, h := range ln.CertHashes() {
		hashes = append(hashes, h.String())
	}
	logger.Info("serving WebTransport", "url", ln.URL(), "cert_sha256", strings.Join(hashes, ","))
	addr.WebTransport, addr.CertHashes = ln.URL(), ln.CertHashes()
	return addr, errc, nil
}
