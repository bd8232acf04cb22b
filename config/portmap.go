package config

import (
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/aster-go/aster/transport/portmap"
)

// portmapProtocols interprets network.portmapper_config: the protocols to
// try, whether port mapping is on, and whether the value is valid.
func portmapProtocols(v string) (protos []portmap.Protocol, on, ok bool) {
	switch strings.ToLower(v) {
	case "", "default", "enabled":
		return portmap.AllProtocols, true, true
	case "disabled":
		return nil, false, true
	case "pcp":
		return []portmap.Protocol{portmap.PCP}, true, true
	case "natpmp":
		return []portmap.Protocol{portmap.NATPMP}, true, true
	case "upnp":
		return []portmap.Protocol{portmap.UPnP}, true, true
	}
	return nil, false, false
}

// PortMapping reports whether a server built from c maps its UDP port on
// the gateway (network.portmapper_config is not "disabled" and direct QUIC
// is not cleared), and with which protocols, in order of preference. A
// server in dev mode (no root key: every consumer admitted) maps only when
// portmapper_config names "enabled" or a protocol; unset or "default" then
// means off, so that a development server is not opened to the outside by
// default.
func (c *Config) PortMapping() ([]portmap.Protocol, bool) {
	protos, on, ok := portmapProtocols(c.PortmapperConfig)
	if !ok || !on || c.ClearIPTransports {
		return nil, false
	}
	return protos, true
}

// serverPortMap runs a portmap.Mapper for the server's direct QUIC port
// once it listens; its Candidates feed aster.WithAdvertisedAddrs.
type serverPortMap struct {
	opts portmap.Options

	mu     sync.Mutex
	m      *portmap.Mapper
	port   uint16
	closed bool
}

func newServerPortMap(protos []portmap.Protocol, logger *slog.Logger) *serverPortMap {
	return &serverPortMap{opts: portmap.Options{Protocols: protos, Logger: logger}}
}

// start starts the mapper for the port of the first of direct, unless one
// runs already or the server stopped.
func (p *serverPortMap) start(direct []netip.AddrPort) {
	if p == nil || len(direct) == 0 || direct[0].Port() == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.m != nil {
		return
	}
	p.port = direct[0].Port()
	p.m = portmap.New(p.port, &p.opts)
}

// candidates returns the mapped external address, if any.
func (p *serverPortMap) candidates() []netip.AddrPort {
	p.mu.Lock()
	m := p.m
	p.mu.Unlock()
	if m == nil {
		return nil
	}
	return m.Candidates()
}

// stop deletes the mapping (bounded by portmap.DefaultCloseTimeout) and
// keeps the mapper from starting again.
func (p *serverPortMap) stop() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	m := p.m
	p.closed = true
	p.mu.Unlock()
	if m == nil {
		return nil
	}
	return m.Close()
}

func (p *serverPortMap) status() (portmap.Status, bool) {
	if p == nil {
		return portmap.Status{}, false
	}
	p.mu.Lock()
	m := p.m
	p.mu.Unlock()
	if m == nil {
		return portmap.Status{}, false
	}
	return m.Status(), true
}

// PortMapCandidates returns the external address the gateway forwards to
// the server's direct QUIC port (empty while there is no mapping, or when
// port mapping is off). s.PortMapCandidates is a func() []netip.AddrPort
// that other address advertisement and path selection can read
// candidates from; the server's Address already includes them.
func (s *Server) PortMapCandidates() []netip.AddrPort {
	if s.portmap == nil {
		return nil
	}
	return s.portmap.candidates()
}

// PortMapStatus returns the port mapper's status (protocol, external
// address, gateway, counters, last error), and false when no mapper runs
// (port mapping off, or the server not listening on direct QUIC yet).
func (s *Server) PortMapStatus() (portmap.Status, bool) { return s.portmap.status() }
