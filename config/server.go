package config

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/health"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// AllowAllConsumersWarning is logged by NewServer when
// trust.allow_all_consumers is true on a server with a root key.
const AllowAllConsumersWarning = "aster: allow_all_consumers is true: every consumer is admitted, with or without a credential, and capability requirements are NOT enforced for anyone"

// Server is an aster server built from a Config by NewServer, with the
// health server the Config asks for. It embeds *aster.Server (Register,
// Address, Metrics, ...); its own ListenAndServe and Serve start the health
// server first, and its Shutdown and Close stop it after the aster server.
type Server struct {
	*aster.Server

	logger     *slog.Logger
	registry   io.Closer      // the etcd registry of [discovery], or nil
	portmap    *serverPortMap // network.portmapper_config, or nil (portmap.go)
	healthAddr string         // "" when health.health_port is 0
	healthOpts health.Options // endpoints and logger of the health server

	mu     sync.Mutex
	health *health.Server // running health server, or nil
	closed bool           // Shutdown or Close was called
}

// NewServer validates c and builds the server it describes. This is the
// one step with side effects; in order:
//
//  1. Validate c, read identity.identity_file (its [node] key, when
//     network.secret_key is not set) and resolve the admission policy
//     (TrustPolicy: it fails when a setting asks for admission but no root
//     key is configured).
//  2. Create the logger: NewLogger(os.Stderr), from logging.*.
//  3. Create storage.path (0700) and open the nonce store in it.
//  4. Build the admission gate (enroll.NewGate; without a root key it runs
//     in dev mode and logs enroll.DevModeWarning).
//
// The server gets these options, then opts (which override them):
//
//   - network.secret_key, else the identity file's key → aster.WithSecretKey
//     (neither: a fresh key each run)
//   - network.bind_addr → aster.WithBindAddr (ListenAndServe("")); in dev
//     mode (no root key: every consumer admitted, no capability checked) an
//     empty bind_addr means devBindAddr, loopback only, and a bind_addr
//     beyond loopback is logged as a warning
//   - network.relay_mode URL (unless clear_relay_transports) → aster.WithRelay
//   - network.proxy_url, else network.proxy_from_env → aster.WithRelayProxy
//     (the connection to the home relay goes through the HTTP proxy)
//   - network.clear_ip_transports → aster.WithIPTransports(false); it needs
//     a relay URL
//   - network.portmapper_config (unless "disabled" or clear_ip_transports)
//     → aster.WithAdvertisedAddrs: once the server listens with direct
//     QUIC (ListenAndServe, or Serve of a listener with direct addresses),
//     a portmap.Mapper asks the default gateway to forward its UDP port and
//     the mapped external address joins the server's Address; the mapping
//     is deleted when serving ends, by Shutdown or by Close (each waits at
//     most portmap.DefaultCloseTimeout for the gateway). No gateway, or one
//     that refuses, changes nothing but a log line.
//   - logging.* → aster.WithLogger
//   - trust.*, storage.path → aster.WithGate
//   - network.max_conns, max_conns_per_peer, max_conns_per_addr and
//     max_concurrent_streams → aster.WithMaxConns, WithMaxConnsPerPeer,
//     WithMaxConnsPerAddr, WithMaxConcurrentStreams (when set)
//   - network.hook_timeout_ms → aster.WithConnGateTimeout, for the
//     connection gates given in opts (aster.WithConnGate); with
//     network.enable_hooks set, NewServer fails unless opts give a gate or
//     admission is active (a root key is configured); see Config
//   - discovery.backend "etcd" with discovery.prefix set →
//     aster.WithRegistry: each service is registered in etcd as
//     prefix/Service (a lease of discovery.ttl) when serving starts, and
//     deregistered by Shutdown before it drains; and aster.WithCredential
//     with the producer credential issued to the server's key in the
//     enrollment credential or identity file, if there is one (clients with
//     allow_all_producers=false call only producers that carry one). NewServer
//     connects to etcd and fails with status Unavailable if it does not
//     answer within 3 s; Shutdown or Close releases the connection (after
//     withdrawing the registrations), so call one even if the server never
//     served.
//
// health.health_port > 0 adds the health server (package health) on
// health_host:health_port, with /metrics and /metrics/prometheus when
// network.enable_monitoring is true; it starts with the first
// ListenAndServe or Serve and stops with Shutdown or Close.
//
// Errors about a field are *Error values.
func (c *Config) NewServer(opts ...aster.ServerOption) (*Server, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.ClearIPTransports && c.HomeRelay() == "" {
		f := fieldByKey["network.clear_ip_transports"]
		src, raw := c.origin(f)
		return nil, fieldErr(f, src, raw, "a server without IP transports needs a home relay: set network.relay_mode (ASTER_RELAY_MODE) to the relay's URL", nil)
	}
	ts, err := c.trustServerSettings()
	if err != nil {
		return nil, err
	}

	// Side effects from here on.
	logger := c.NewLogger(os.Stderr)
	for _, w := range ts.warnings {
		logger.Warn(w)
	}
	if c.StoragePath != "" {
		if err := os.MkdirAll(c.StoragePath, 0o700); err != nil {
			f := fieldByKey["storage.path"]
			src, raw := c.origin(f)
			return nil, fieldErr(f, src, raw, "cannot be created: "+err.Error(), err)
		}
	}
	gate, err := enroll.NewGate(ts.policy, logger)
	if err != nil {
		f := fieldByKey["storage.path"]
		src, raw := c.origin(f)
		return nil, fieldErr(f, src, raw, "cannot hold the nonce store: "+err.Error(), err)
	}
	if !gate.DevMode() {
		logger.Info("aster: admission on", "root", gate.Root().Short(),
			"allow_all_consumers", ts.policy.AllowAllConsumers, "allow_all_producers", ts.policy.AllowAllProducers)
		if ts.policy.AllowAllConsumers {
			// The root key suggests a locked-down server; this setting
			// opens it to everyone, credential or not.
			src, _ := c.origin(fieldByKey["trust.allow_all_consumers"])
			logger.Warn(AllowAllConsumersWarning, "source", src)
		}
	}

	base := []aster.ServerOption{aster.WithLogger(logger), aster.WithGate(gate), aster.WithConnGateTimeout(c.HookTimeout())}
	for _, l := range []struct {
		n   int
		opt func(int) aster.ServerOption
	}{
		{c.MaxConns, aster.WithMaxConns},
		{c.MaxConnsPerPeer, aster.WithMaxConnsPerPeer},
		{c.MaxConnsPerAddr, aster.WithMaxConnsPerAddr},
		{c.MaxConcurrentStreams, aster.WithMaxConcurrentStreams},
	} {
		if l.n > 0 { // 0: aster's default (Validate refused the rest)
			base = append(base, l.opt(l.n))
		}
	}
	switch {
	case c.SecretKey != nil:
		base = append(base, aster.WithSecretKey(c.SecretKey))
	case ts.key != nil:
		base = append(base, aster.WithSecretKey(ts.key))
	}
	switch {
	case c.BindAddr != "":
		base = append(base, aster.WithBindAddr(c.BindAddr))
		if gate.DevMode() && !loopbackBind(c.BindAddr) {
			logger.Warn("aster: dev mode admits every consumer, unrestricted, and network.bind_addr listens beyond loopback: anyone who can reach "+c.BindAddr+" may call every method; configure a root key (trust.root_pubkey_file) before exposing this server", "bind_addr", c.BindAddr)
		}
	case gate.DevMode():
		// Dev mode admits everyone and skips every capability check: by
		// default such a server is reachable from this host only.
		base = append(base, aster.WithBindAddr(devBindAddr))
		logger.Info("aster: dev mode listens on loopback only; set network.bind_addr (ASTER_BIND_ADDR), e.g. 0.0.0.0:0, to listen on other interfaces", "bind_addr", devBindAddr)
	}
	if u := c.HomeRelay(); u != "" {
		base = append(base, aster.WithHomeRelay(u))
		if gate.DevMode() {
			logger.Warn("aster: dev mode admits every consumer, unrestricted, and the home relay makes this server reachable by anyone who learns its address; configure a root key (trust.root_pubkey_file) before exposing it", "relay", u)
		}
	}
	if p, err := c.relayProxyOption(); err != nil || p != nil {
		if err != nil {
			return nil, err
		}
		base = append(base, p) // network.proxy_url, proxy_from_env
	}
	if c.ClearIPTransports {
		base = append(base, aster.WithIPTransports(false))
	}
	var pm *serverPortMap
	protos, on := c.PortMapping()
	if on && gate.DevMode() {
		// Dev mode admits everyone: do not open a port on the gateway to
		// the outside for such a server unless the setting asks for it by
		// name ("enabled" or a protocol).
		if v := strings.ToLower(c.PortmapperConfig); v == "" || v == "default" {
			on = false
			logger.Info("aster: port mapping off in dev mode (every consumer is admitted); set network.portmapper_config = \"enabled\" to map anyway")
		} else {
			logger.Warn("aster: port mapping on in dev mode: every consumer is admitted, and the gateway forwards outside traffic to this server", "portmapper_config", c.PortmapperConfig)
		}
	}
	if on {
		pm = newServerPortMap(protos, logger)
		base = append(base, aster.WithAdvertisedAddrs(pm.candidates))
	}
	key := c.SecretKey
	if key == nil {
		key = ts.key
	}
	if key == nil && c.Registers() {
		// The producer credential and the registry entry name the key:
		// pick it now (aster.NewServer would pick one anyway).
		key = trust.GenerateKey()
		base = append(base, aster.WithSecretKey(key))
	}
	ropts, reg, err := c.serverRegistry(key, logger)
	if err != nil {
		return nil, err
	}
	base = append(base, ropts...)
	srv := &Server{
		Server:     aster.NewServer(append(base, opts...)...),
		logger:     logger,
		healthAddr: c.HealthAddr(),
		healthOpts: health.Options{Metrics: c.EnableMonitoring, Prometheus: c.EnableMonitoring, Logger: logger},
		portmap:    pm,
	}
	if reg != nil {
		srv.registry = reg
	}
	if c.EnableHooks && gate.DevMode() && !srv.ConnGated() {
		// enable_hooks promises gated connections: there is no gate and
		// admission admits everyone.
		srv.closeRegistry()
		f := fieldByKey["network.enable_hooks"]
		src, raw := c.origin(f)
		return nil, fieldErr(f, src, raw, "is set but connections would not be gated: pass a gate to NewServer (aster.WithConnGate) or configure a root key (trust.root_pubkey) for admission", nil)
	}
	return srv, nil
}

// closeRegistry closes the etcd registry, if any, after the server stopped
// (its registrations are withdrawn by then).
func (s *Server) closeRegistry() error {
	if s.registry == nil {
		return nil
	}
	return s.registry.Close()
}

// Logger returns the logger built from the Config's logging.* settings
// (the server's, unless an option passed to NewServer replaced it).
func (s *Server) Logger() *slog.Logger { return s.logger }

// startHealth starts the health server if the Config asks for one and it is
// not running yet.
func (s *Server) startHealth() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.healthAddr == "" || s.health != nil || s.closed {
		return nil
	}
	hs, err := health.Listen(s.healthAddr, s.Server, s.healthOpts)
	if err != nil {
		return fmt.Errorf("aster: %w", err)
	}
	s.health = hs
	return nil
}

// stopHealth marks s closed and stops the health server, if it runs.
func (s *Server) stopHealth(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	hs := s.health
	s.mu.Unlock()
	if hs == nil {
		return nil
	}
	return hs.Shutdown(ctx)
}

// ListenAndServe starts the health server (a listen error is returned at
// once), then runs aster.Server.ListenAndServe: an empty addr means
// network.bind_addr.
func (s *Server) ListenAndServe(addr string, ready func(aster.Address)) error {
	if err := s.startHealth(); err != nil {
		return err
	}
	if s.portmap == nil {
		return s.Server.ListenAndServe(addr, ready)
	}
	err := s.Server.ListenAndServe(addr, func(a aster.Address) {
		s.portmap.start(a.Direct)
		if ready != nil {
			ready(a)
		}
	})
	s.portmap.stop()
	return err
}

// Serve starts the health server (a listen error is returned at once, and
// ln closed), then runs aster.Server.Serve on ln.
func (s *Server) Serve(ln transport.Listener) error {
	if err := s.startHealth(); err != nil {
		ln.Close()
		return err
	}
	if s.portmap == nil {
		return s.Server.Serve(ln)
	}
	s.portmap.start(ln.Addr().Direct)
	err := s.Server.Serve(ln)
	s.portmap.stop()
	return err
}

// HealthAddr returns the address the health server listens on, or nil if it
// has not started (or the Config has none). It keeps the address after
// Shutdown.
func (s *Server) HealthAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.health == nil {
		return nil
	}
	return s.health.Addr()
}

// Shutdown shuts the aster server down gracefully (aster.Server.Shutdown:
// /readyz answers 503 from its start, while calls drain), then stops the
// health server. It returns the first error.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.Server.Shutdown(ctx)
	s.portmap.stop()
	if herr := s.stopHealth(context.WithoutCancel(ctx)); err == nil {
		err = herr
	}
	if rerr := s.closeRegistry(); err == nil {
		err = rerr
	}
	return err
}

// Close closes the aster server at once (aster.Server.Close), then the
// health server.
func (s *Server) Close() error {
	err := s.Server.Close()
	s.portmap.stop()
	s.mu.Lock()
	s.closed = true
	hs := s.health
	s.mu.Unlock()
	if hs != nil {
		hs.Close()
	}
	if rerr := s.closeRegistry(); err == nil {
		err = rerr
	}
	return err
}

// devBindAddr is where a dev-mode server listens when network.bind_addr is
// empty: a free port on IPv4 loopback.
const devBindAddr = "127.0.0.1:0"

// loopbackBind reports whether the bind address addr ("host:port") listens
// on loopback only ("localhost" or a loopback IP).
func loopbackBind(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && loopbackHost(host)
}

// loopbackHost reports whether host is "localhost" or a loopback IP.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
