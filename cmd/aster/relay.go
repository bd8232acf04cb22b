package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster/transport/relay"
)

func init() { addCommand(newRelayCmd) }

type relayFlags struct {
	listen, httpListen   string
	certFile, keyFile    string
	hostname             string
	bandwidth, burst     int
	maxConns, maxConnsIP int
	maxPeers             int
	statsInterval, drain time.Duration
	logFormat, logLevel  string
}

func newRelayCmd() *cobra.Command {
	var f relayFlags
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run a relay that forwards QUIC between endpoints that cannot reach each other",
		Long: `aster relay runs a relay over TCP+TLS (so it passes networks that block UDP).
Endpoints register with proof of their endpoint key; the relay forwards their
QUIC packets by endpoint id. It never terminates the endpoints' TLS: calls
stay end-to-end encrypted and the relay can neither read nor alter them.
On the same port number over UDP it tells endpoints their public address,
so that two endpoints behind NATs can move a connection to a direct path.

Without --tls-cert/--tls-key the relay makes a self-signed certificate; it
prints the URL that pins it, for ASTER_RELAY_MODE:

    aster relay --listen 0.0.0.0:3340 --hostname relay.example
    ASTER_RELAY_MODE='https://relay.example:3340#sha256=…' missioncontrol

With --tls-cert and --tls-key naming files that do not exist yet, the
self-signed certificate is written there, so its pin survives restarts.
With a certificate from a CA, clients need no pin.

GET /healthz and /metrics (Prometheus text) are served on --http.
SIGINT or SIGTERM shut the relay down gracefully.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRelay(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "0.0.0.0:3340", "TCP address to accept endpoints on")
	fl.StringVar(&f.httpListen, "http", "127.0.0.1:3341", `address of the HTTP server for /healthz and /metrics ("" disables it)`)
	fl.StringVar(&f.certFile, "tls-cert", "", "PEM certificate file (created, self-signed, if it and --tls-key do not exist)")
	fl.StringVar(&f.keyFile, "tls-key", "", "PEM private key file")
	fl.StringVar(&f.hostname, "hostname", "", "host name or IP endpoints use to reach the relay: put in the self-signed certificate and the printed URL (default: the --listen host, or this machine's name)")
	fl.IntVar(&f.bandwidth, "bandwidth", relay.DefaultBytesPerSecond, "bytes per second each endpoint may send through the relay (negative: unlimited)")
	fl.IntVar(&f.burst, "burst", 0, "burst of the bandwidth limit in bytes (default a quarter of --bandwidth, at least 64 KiB)")
	fl.IntVar(&f.maxConns, "max-conns", relay.DefaultMaxConns, "most TCP connections in total")
	fl.IntVar(&f.maxConnsIP, "max-conns-per-ip", relay.DefaultMaxConnsPerIP, "most TCP connections from one IP address")
	fl.IntVar(&f.maxPeers, "max-peers", relay.DefaultMaxPeersPerEndpoint, "most distinct endpoints one endpoint may send to (within 2 minutes)")
	fl.DurationVar(&f.statsInterval, "stats-interval", time.Minute, "how often to log traffic counts (0 disables)")
	fl.DurationVar(&f.drain, "shutdown-timeout", 5*time.Second, "how long a graceful shutdown waits for endpoints to disconnect")
	fl.StringVar(&f.logFormat, "log-format", "text", `log format on stderr: "text" or "json"`)
	fl.StringVar(&f.logLevel, "log-level", "info", `log level: "debug", "info", "warn" or "error"`)
	return cmd
}

// selfSigned reports whether the DER certificate is signed by its own key
// (so no system root vouches for it and clients must pin it).
func selfSigned(der []byte) bool {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return false
	}
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func runRelay(cmd *cobra.Command, f relayFlags) error {
	ctx := cmd.Context()
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return usageErrorf("--log-level %q: %v", f.logLevel, err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var logger *slog.Logger
	switch f.logFormat {
	case "text":
		logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), hopts))
	case "json":
		logger = slog.New(slog.NewJSONHandler(cmd.ErrOrStderr(), hopts))
	default:
		return usageErrorf(`--log-format %q: want "text" or "json"`, f.logFormat)
	}
	if (f.certFile == "") != (f.keyFile == "") {
		return usageErrorf("--tls-cert and --tls-key go together")
	}
	host, port, err := net.SplitHostPort(f.listen)
	if err != nil {
		return usageErrorf("--listen %q: %v", f.listen, err)
	}
	hostname := f.hostname
	if hostname == "" {
		hostname = host
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			hostname, _ = os.Hostname()
		}
	}

	var cert struct {
		tls     tls.Certificate
		created bool // self-signed by us: print the pinned URL
	}
	if f.certFile != "" {
		c, created, err := relay.LoadOrCreateCertificate(f.certFile, f.keyFile, hostname)
		if err != nil {
			return err
		}
		cert.tls, cert.created = c, created
	} else {
		c, err := relay.SelfSignedCertificate(hostname)
		if err != nil {
			return err
		}
		cert.tls, cert.created = c, true
	}

	srv, err := relay.NewServer(relay.ServerConfig{
		Certificate:         cert.tls,
		MaxConns:            f.maxConns,
		MaxConnsPerIP:       f.maxConnsIP,
		BytesPerSecond:      f.bandwidth,
		Burst:               f.burst,
		MaxPeersPerEndpoint: f.maxPeers,
		Logger:              logger,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("relay: listen: %w", err)
	}
	if p, err := strconv.Atoi(port); err == nil && p == 0 {
		_, port, _ = net.SplitHostPort(ln.Addr().String())
	}
	// Endpoints learn their public UDP address from the relay over UDP on
	// the TLS listener's port number (PROTOCOL.md §24.3).
	// Without it relayed connections still work, and endpoints still
	// announce their interface addresses; only those behind NATs lose
	// their way to a direct path.
	udp, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		logger.Warn("relay: no UDP address observation", "err", err)
	}
	// Bind everything before printing anything: a supervisor that waits
	// for the URL must not see one from a relay about to exit.
	var hl net.Listener
	if f.httpListen != "" {
		if hl, err = net.Listen("tcp", f.httpListen); err != nil {
			ln.Close()
			if udp != nil {
				udp.Close()
			}
			return fmt.Errorf("relay: listen for HTTP: %w", err)
		}
	}
	der := cert.tls.Certificate[0]
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "aster relay listening on %s\n", ln.Addr())
	fmt.Fprintf(out, "certificate sha256: %s\n", relay.Fingerprint(der))
	if cert.created || selfSigned(der) {
		// Only the pinned URL works with a self-signed certificate, also
		// when it was loaded from --tls-cert on a restart.
		fmt.Fprintf(out, "relay URL: %s\n", relay.PinnedURL(net.JoinHostPort(hostname, port), der))
	} else {
		fmt.Fprintf(out, "relay URL: https://%s (or %s to pin the certificate)\n",
			net.JoinHostPort(hostname, port), relay.PinnedURL(net.JoinHostPort(hostname, port), der))
	}

	var hs *http.Server
	httpDone := make(chan struct{})
	if hl != nil {
		fmt.Fprintf(out, "health and metrics on http://%s/healthz and /metrics\n", hl.Addr())
		hs = &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			defer close(httpDone)
			if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("relay: HTTP server failed", "err", err)
			}
		}()
	} else {
		close(httpDone)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if udp != nil {
		go func() {
			if err := srv.ServeUDP(udp); err != nil && !errors.Is(err, relay.ErrServerClosed) {
				logger.Warn("relay: UDP address observation stopped", "err", err)
			}
		}()
	}
	var tick <-chan time.Time
	if f.statsInterval > 0 {
		t := time.NewTicker(f.statsInterval)
		defer t.Stop()
		tick = t.C
	}
	var runErr error
loop:
	for {
		select {
		case <-tick:
			st := srv.Stats()
			logger.Info("relay: traffic", "endpoints", st.Endpoints, "connections", st.Conns,
				"packets_forwarded", st.PacketsForwarded, "bytes_forwarded", st.BytesForwarded,
				"dropped_unknown_peer", st.Dropped[relay.DropUnknownPeer], "dropped_rate_limit", st.Dropped[relay.DropRateLimit],
				"dropped_peer_limit", st.Dropped[relay.DropPeerLimit], "dropped_queue_full", st.Dropped[relay.DropQueueFull])
		case <-ctx.Done():
			logger.Info("relay: shutting down")
			break loop
		case err := <-serveErr:
			runErr = err
			serveErr = nil
			break loop
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), f.drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("relay: endpoints still connected at the shutdown timeout were closed", "err", err)
	}
	if serveErr != nil {
		<-serveErr
	}
	if hs != nil {
		_ = hs.Shutdown(sctx)
	}
	<-httpDone
	st := srv.Stats()
	logger.Info("relay: stopped", "packets_forwarded", st.PacketsForwarded, "bytes_forwarded", st.BytesForwarded)
	return runErr
}
