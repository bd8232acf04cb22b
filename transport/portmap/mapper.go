package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Protocol is a port mapping protocol.
type Protocol string

// The protocols, in the order a Mapper prefers them when the gateway
// speaks several.
const (
	PCP    Protocol = "pcp"    // RFC 6887, MAP opcode
	NATPMP Protocol = "natpmp" // RFC 6886
	UPnP   Protocol = "upnp"   // UPnP IGD: WANIPConnection:2/:1, WANPPPConnection:1
)

// AllProtocols is the default Options.Protocols.
var AllProtocols = []Protocol{PCP, NATPMP, UPnP}

// Defaults of Options.
const (
	// DefaultLifetime is the mapping lifetime requested; the mapping is
	// renewed when half of the granted lifetime has passed.
	DefaultLifetime = 2 * time.Hour
	// DefaultProbeTimeout bounds the probe of all protocols (run
	// concurrently) and, separately, the mapping request that follows.
	DefaultProbeTimeout = 2 * time.Second
	// DefaultCloseTimeout bounds the deletion of the mapping in Close.
	DefaultCloseTimeout = 2 * time.Second
	// DefaultRetryInterval is the wait after a failed attempt; it doubles
	// after each failure up to DefaultMaxRetryInterval.
	DefaultRetryInterval = 30 * time.Second
	// DefaultMaxRetryInterval caps the wait between failed attempts.
	DefaultMaxRetryInterval = 10 * time.Minute
	// minRenew is the shortest time between renewals, whatever lifetime
	// the gateway grants.
	minRenew = 5 * time.Second
)

// Options configure a Mapper. The zero value (or nil) means: every
// protocol, the default route's gateway, the defaults above, no callback,
// slog.Default.
type Options struct {
	// Protocols to try, in order of preference. Default AllProtocols.
	Protocols []Protocol
	// Gateway to ask. Default: the default route's gateway
	// (DefaultGateway), looked up on each attempt.
	Gateway netip.Addr
	// LocalAddr is the address whose port is mapped (the internal client).
	// Default: the address the system routes to the gateway from.
	LocalAddr netip.Addr
	// Lifetime requested for the mapping. Default DefaultLifetime.
	Lifetime time.Duration
	// ProbeTimeout bounds each step of an attempt. Default
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// CloseTimeout bounds the deletion in Close. Default
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// RetryInterval and MaxRetryInterval pace attempts after failures.
	// Defaults DefaultRetryInterval and DefaultMaxRetryInterval.
	RetryInterval, MaxRetryInterval time.Duration
	// OnChange, if set, is called whenever the external address changes:
	// (addr, true) when a mapping is made or its address changes, (zero,
	// false) when it is lost or deleted. It is called from the Mapper's
	// goroutine, and from Close for the deletion; it must not block or call
	// Close.
	OnChange func(external netip.AddrPort, ok bool)
	// Logger receives one line per change and per failed attempt (at
	// debug level while no gateway answers). Default slog.Default().
	Logger *slog.Logger

	// Test hooks: the gateway's ports, and no multicast SSDP.
	pcpPort, ssdpPort uint16
	noMulticast       bool
	clients           []client // replaces the protocol clients
}

// Status is a snapshot of a Mapper for logs and metrics.
type Status struct {
	// Mapped reports whether a mapping is in place; then Protocol,
	// External and Lifetime describe it.
	Mapped   bool
	Protocol Protocol
	External netip.AddrPort
	// Lifetime granted by the gateway (0 for a UPnP lease without expiry).
	Lifetime time.Duration
	// Gateway asked on the last attempt (invalid if none was found).
	Gateway netip.Addr
	// Available lists the protocols the gateway answered on the last
	// probe.
	Available []Protocol
	// Attempts counts mapping attempts, Renewals successful renewals.
	Attempts, Renewals uint64
	// Err is the last error (nil after a success).
	Err error
}

// client is one protocol's conversation with one gateway.
type client interface {
	name() Protocol
	// probe reports whether the gateway speaks the protocol, with its
	// external address when the protocol tells it.
	probe(ctx context.Context) (netip.Addr, error)
	// mapPort asks for a mapping of the internal UDP port, suggesting an
	// external port (0: any).
	mapPort(ctx context.Context, internal, suggested uint16, lifetime time.Duration) (mapping, error)
	unmap(ctx context.Context, m mapping) error
}

type mapping struct {
	proto    Protocol
	external netip.AddrPort
	lifetime time.Duration // granted; 0 = no expiry
	internal uint16
}

// Mapper keeps a UDP port mapping on the local gateway for one local port:
// it maps the port when started, renews the mapping before its lifetime
// ends, maps again when a renewal fails, and deletes the mapping on Close.
// Its methods are safe for concurrent use.
type Mapper struct {
	port uint16
	o    Options

	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	st      Status
	cur     *mapping
	current client
	closed  bool
}

// New starts a Mapper for the local UDP port (the port a QUIC listener is
// bound to; 0 makes every attempt fail). It returns at once; the first attempt runs in the Mapper's
// goroutine, which Close stops. opts may be nil.
func New(port uint16, opts *Options) *Mapper {
	var o Options
	if opts != nil {
		o = *opts
	}
	if len(o.Protocols) == 0 {
		o.Protocols = AllProtocols
	}
	if o.Lifetime <= 0 {
		o.Lifetime = DefaultLifetime
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.MaxRetryInterval < o.RetryInterval {
		o.MaxRetryInterval = max(DefaultMaxRetryInterval, o.RetryInterval)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mapper{port: port, o: o, cancel: cancel, done: make(chan struct{})}
	go m.run(ctx)
	return m
}

// External returns the mapped external address, and false while there is
// no mapping.
func (m *Mapper) External() (netip.AddrPort, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil {
		return netip.AddrPort{}, false
	}
	return m.cur.external, true
}

// Candidates returns the mapped external address as a list (empty while
// there is none): a direct address peers can reach this endpoint on.
// m.Candidates is the func() []netip.AddrPort that address advertisement
// and path selection read candidates from.
func (m *Mapper) Candidates() []netip.AddrPort {
	if a, ok := m.External(); ok {
		return []netip.AddrPort{a}
	}
	return nil
}

// Status returns a snapshot of the Mapper's state.
func (m *Mapper) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.st
	st.Available = append([]Protocol(nil), st.Available...)
	return st
}

// Close stops the Mapper and deletes the mapping, waiting at most
// Options.CloseTimeout for the gateway (plus, if an attempt is in flight,
// the end of its current step: at most ProbeTimeout). It returns the
// deletion's error, if any. Closing twice returns nil.
func (m *Mapper) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.done
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	<-m.done
	m.mu.Lock()
	cur, c := m.cur, m.current
	m.cur, m.current = nil, nil
	m.st.Mapped, m.st.External = false, netip.AddrPort{}
	m.mu.Unlock()
	if cur == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.o.CloseTimeout)
	defer cancel()
	err := c.unmap(ctx, *cur)
	if err != nil {
		m.o.Logger.Warn("port mapping: delete failed", "protocol", string(cur.proto), "external", cur.external.String(), "err", err)
	} else {
		m.o.Logger.Info("port mapping deleted", "protocol", string(cur.proto), "external", cur.external.String())
	}
	if m.o.OnChange != nil {
		m.o.OnChange(netip.AddrPort{}, false)
	}
	return err
}

// run is the Mapper's goroutine: attempt, then renew or retry, until ctx
// ends.
func (m *Mapper) run(ctx context.Context) {
	defer close(m.done)
	retry := m.o.RetryInterval
	for {
		var wait time.Duration
		m.mu.Lock()
		cur, c := m.cur, m.current
		m.mu.Unlock()
		if cur != nil {
			if err := m.renew(ctx, c, *cur); err != nil {
				if ctx.Err() != nil {
					return
				}
				m.lose(err)
				continue // map again at once, with any protocol
			}
			retry = m.o.RetryInterval
		} else if err := m.attempt(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = retry
			retry = min(2*retry, m.o.MaxRetryInterval)
		} else {
			retry = m.o.RetryInterval
		}
		if wait == 0 {
			m.mu.Lock()
			lt := m.st.Lifetime
			m.mu.Unlock()
			if lt <= 0 {
				lt = m.o.Lifetime
			}
			wait = max(lt/2, minRenew)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// clients returns the protocol clients for this attempt.
func (m *Mapper) clients() ([]client, netip.Addr, error) {
	if m.o.clients != nil {
		return m.o.clients, m.o.Gateway, nil
	}
	gw := m.o.Gateway
	if !gw.IsValid() {
		var err error
		if gw, err = DefaultGateway(); err != nil {
			return nil, netip.Addr{}, err
		}
	}
	local := m.o.LocalAddr
	if !local.IsValid() {
		var err error
		if local, err = localAddrFor(gw); err != nil {
			return nil, gw, err
		}
	}
	var cs []client
	for _, p := range m.o.Protocols {
		switch p {
		case PCP:
			cs = append(cs, newPCPClient(gw, local, m.o.pcpPort))
		case NATPMP:
			cs = append(cs, &natpmpClient{gateway: gw, local: local, timeout: m.o.ProbeTimeout})
		case UPnP:
			cs = append(cs, newUPnPClient(gw, local, m.o.ssdpPort, !m.o.noMulticast, m.o.ProbeTimeout))
		}
	}
	return cs, gw, nil
}

// attempt probes every protocol concurrently (bounded by ProbeTimeout),
// then asks for a mapping with the first protocol, in Options.Protocols
// order, that answered (each request bounded by ProbeTimeout).
func (m *Mapper) attempt(ctx context.Context) error {
	cs, gw, err := m.clients()
	if err == nil && m.port == 0 {
		err = errors.New("portmap: local port 0 cannot be mapped")
	}
	m.mu.Lock()
	m.st.Attempts++
	m.st.Gateway = gw
	m.mu.Unlock()
	if err != nil {
		return m.fail(err, true)
	}
	pctx, cancel := context.WithTimeout(ctx, m.o.ProbeTimeout)
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.probe(pctx)
		}()
	}
	wg.Wait()
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var avail []Protocol
	var failures []string
	for i, c := range cs {
		if errs[i] == nil {
			avail = append(avail, c.name())
		} else {
			failures = append(failures, errs[i].Error())
		}
	}
	m.mu.Lock()
	m.st.Available = avail
	m.mu.Unlock()
	if len(avail) == 0 {
		return m.fail(fmt.Errorf("portmap: gateway %s offers no port mapping: %s", gw, strings.Join(failures, "; ")), true)
	}
	var mapErrs []error
	for i, c := range cs {
		if errs[i] != nil {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, m.o.ProbeTimeout)
		mp, err := c.mapPort(mctx, m.port, m.port, m.o.Lifetime)
		cancel()
		if err == nil {
			m.set(c, mp, false)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mapErrs = append(mapErrs, err)
	}
	return m.fail(errors.Join(mapErrs...), false)
}

// renew asks the same gateway, with the same protocol, to extend the
// mapping, keeping its external port.
func (m *Mapper) renew(ctx context.Context, c client, cur mapping) error {
	rctx, cancel := context.WithTimeout(ctx, m.o.ProbeTimeout)
	defer cancel()
	mp, err := c.mapPort(rctx, m.port, cur.external.Port(), m.o.Lifetime)
	if err != nil {
		return err
	}
	m.set(c, mp, true)
	return nil
}

func (m *Mapper) set(c client, mp mapping, renewal bool) {
	m.mu.Lock()
	old := m.cur
	m.cur, m.current = &mp, c
	m.st.Mapped, m.st.Protocol, m.st.External, m.st.Lifetime, m.st.Err = true, mp.proto, mp.external, mp.lifetime, nil
	if renewal {
		m.st.Renewals++
	}
	m.mu.Unlock()
	changed := old == nil || old.external != mp.external
	if changed {
		m.o.Logger.Info("port mapping", "protocol", string(mp.proto), "external", mp.external.String(), "internal_port", m.port, "lifetime", mp.lifetime)
		if m.o.OnChange != nil {
			m.o.OnChange(mp.external, true)
		}
	}
}

// lose drops the current mapping after a failed renewal.
func (m *Mapper) lose(err error) {
	m.mu.Lock()
	old := m.cur
	m.cur, m.current = nil, nil
	m.st.Mapped, m.st.External, m.st.Err = false, netip.AddrPort{}, err
	m.mu.Unlock()
	m.o.Logger.Warn("port mapping lost: renewal failed", "protocol", string(old.proto), "external", old.external.String(), "err", err)
	if m.o.OnChange != nil {
		m.o.OnChange(netip.AddrPort{}, false)
	}
}

func (m *Mapper) fail(err error, quiet bool) error {
	m.mu.Lock()
	m.st.Err = err
	m.mu.Unlock()
	if quiet {
		m.o.Logger.Debug("port mapping unavailable", "err", err)
	} else {
		m.o.Logger.Warn("port mapping refused", "err", err)
	}
	return err
}
