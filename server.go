package aster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/codec"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/codec/json"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("aster: server closed")

// Server serves registered services on one or more listeners. Create it with
// NewServer, Register services, then Serve (or ListenAndServe). A Server is
// safe for concurrent use.
type Server struct {
	opts serverOptions
	key  trust.SecretKey
	id   trust.EndpointID

	mu sync.Mutex
	// services is an immutable snapshot, replaced as a whole by Register,
	// so the per-call lookup takes no lock.
	services  atomic.Pointer[map[string]*serviceEntry]
	list      []*handler.Service
	contract  []byte // canonical CBOR, built lazily
	listeners map[transport.Listener]struct{}
	conns     map[*serverConn]struct{}
	closed    bool
	counts    connCounts // connections by peer (limits.go)

	// During Shutdown the listeners keep accepting so that new
	// connections are refused at once with SHUTDOWN rather than left to
	// time out: acceptStop ends Serve's Accept, refusing holds the
	// listeners handed to refuse goroutines, closed at the end.
	acceptCtx  context.Context
	acceptStop context.CancelFunc
	refusing   map[transport.Listener]struct{}
	refusers   sync.WaitGroup

	// Stream workers: a goroutine serves a call and then waits a while for
	// the next one, so its stack (grown by decoding) is reused.
	work    chan workItem
	quit    chan struct{} // closed by Close/Shutdown: idle workers exit
	workers sync.WaitGroup

	draining atomic.Bool
	calls    callTracker    // calls being served
	connWG   sync.WaitGroup // connection goroutines

	stats callStats // finished calls by status code (metrics.go)

	registry registrations // WithRegistry (server_register.go)
}

// callTracker counts in-flight calls and lets Shutdown wait for zero. The
// count is atomic so that calls on different connections do not contend
// for a lock; the mutex orders a waiter against the last done.
type callTracker struct {
	n    atomic.Int64
	mu   sync.Mutex
	zero chan struct{} // closed when n drops to 0 while someone waits
}

func (t *callTracker) add() { t.n.Add(1) }

func (t *callTracker) done() {
	if t.n.Add(-1) != 0 {
		return
	}
	t.mu.Lock()
	// Recheck under the lock: a call may have started since, and wait
	// creates zero only under it.
	if t.zero != nil && t.n.Load() == 0 {
		close(t.zero)
		t.zero = nil
	}
	t.mu.Unlock()
}

// wait returns a channel closed once no call is in flight.
func (t *callTracker) wait() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n.Load() == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	return t.zero
}

type serviceEntry struct {
	versions map[uint32]*serviceVersion
	highest  *serviceVersion
}

type serviceVersion struct {
	svc     *handler.Service
	methods map[string]*methodEntry
}

type methodEntry struct {
	sv   *serviceVersion
	m    *handler.Method
	info *handler.MethodInfo
	h    handler.Handler // full chain (shared services)
	wrap handler.Middleware
}

// NewServer returns a Server with the given options.
func NewServer(opts ...ServerOption) *Server {
	o := serverOptions{
		codecs:      map[string]codec.Codec{cbor.Name: cbor.Codec{}, json.Name: json.Codec{}},
		maxFrame:    wire.DefaultMaxFrameSize,
		maxSessions: 1024,
		linger:      250 * time.Millisecond,
		gateTimeout: DefaultConnGateTimeout,
		logger:      slog.Default(),
		limits:      defaultLimits(),
	}
	for _, opt := range opts {
		opt.applyServer(&o)
	}
	if o.key == nil {
		o.key = trust.GenerateKey()
	}
	acceptCtx, acceptStop := context.WithCancel(context.Background())
	return &Server{
		opts: o, key: o.key, id: trust.IDOf(o.key),
		listeners:  map[transport.Listener]struct{}{},
		conns:      map[*serverConn]struct{}{},
		refusing:   map[transport.Listener]struct{}{},
		acceptCtx:  acceptCtx,
		acceptStop: acceptStop,
		work:       make(chan workItem),
		quit:       make(chan struct{}),
	}
}

// ID returns the server's endpoint id.
func (s *Server) ID() trust.EndpointID { return s.id }

// SecretKey returns the server's identity key (for transports that need it).
func (s *Server) SecretKey() trust.SecretKey { return s.key }

// Register adds services. It fails if a service name and version is already
// registered or the services' message types cannot be described in a
// contract.
func (s *Server) Register(svcs ...*handler.Service) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := append(append([]*handler.Service(nil), s.list...), svcs...)
	if _, err := contract.Build(list); err != nil {
		return err
	}
	services := map[string]*serviceEntry{}
	if old := s.services.Load(); old != nil {
		for name, e := range *old {
			services[name] = e
		}
	}
	for _, svc := range svcs {
		e := services[svc.Name()]
		if e == nil {
			e = &serviceEntry{versions: map[uint32]*serviceVersion{}}
		} else {
			// Entries in the published snapshot are never modified.
			e = &serviceEntry{versions: maps.Clone(e.versions), highest: e.highest}
		}
		services[svc.Name()] = e
		if _, dup := e.versions[svc.Version()]; dup {
			return fmt.Errorf("aster: service %s version %d registered twice", svc.Name(), svc.Version())
		}
		sv := &serviceVersion{svc: svc, methods: map[string]*methodEntry{}}
		for _, m := range svc.Methods() {
			mw := make([]handler.Middleware, 0, len(s.opts.mw)+len(svc.Middleware())+len(m.Middleware()))
			mw = append(append(append(mw, s.opts.mw...), svc.Middleware()...), m.Middleware()...)
			me := &methodEntry{sv: sv, m: m, info: &m.Info, wrap: middleware.ChainServer(mw...)}
			if m.Handler != nil {
				me.h = me.wrap(m.Handler)
			}
			sv.methods[m.Info.Name] = me
		}
		e.versions[svc.Version()] = sv
		if e.highest == nil || svc.Version() > e.highest.svc.Version() {
			e.highest = sv
		}
	}
	s.services.Store(&services)
	s.list = list
	s.contract = nil
	return nil
}

// MustRegister is Register that panics on error, for program setup.
func (s *Server) MustRegister(svcs ...*handler.Service) *Server {
	if err := s.Register(svcs...); err != nil {
		panic(err)
	}
	return s
}

// Contract returns the server's contract and its canonical encoding.
func (s *Server) Contract() (*contract.Contract, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := contract.Build(s.list)
	if err != nil {
		return nil, nil, err
	}
	if s.contract == nil {
		if s.contract, err = c.Encode(); err != nil {
			return nil, nil, err
		}
	}
	return c, s.contract, nil
}

// contractBytes returns the contract's canonical encoding, as _aster.contract
// serves it: built once per set of services, so that a peer calling it in
// a loop costs a copy, not a build of the contract under the server's lock.
func (s *Server) contractBytes() ([]byte, error) {
	s.mu.Lock()
	b := s.contract
	s.mu.Unlock()
	if b != nil {
		return b, nil
	}
	_, b, err := s.Contract()
	return b, err
}

func (s *Server) lookup(h *wire.Header) (*methodEntry, error) {
	var e *serviceEntry
	if services := s.services.Load(); services != nil {
		e = (*services)[h.Service]
	}
	if e == nil {
		return nil, status.Errorf(status.NotFound, "unknown service %s", h.Service)
	}
	sv := e.highest
	if h.Version != 0 {
		if sv = e.versions[h.Version]; sv == nil {
			return nil, status.Errorf(status.NotFound, "unknown version %d of service %s", h.Version, h.Service)
		}
	}
	me := sv.methods[h.Method]
	if me == nil {
		return nil, status.Errorf(status.NotFound, "unknown method %s.%s", h.Service, h.Method)
	}
	return me, nil
}

// ListenAndServe listens on the UDP address addr with direct QUIC ("" or
// ":0" picks a free port on all interfaces) and, with WithHomeRelay, through
// the home relay, and serves until Shutdown or Close. An empty addr means
// the WithBindAddr address, if set. ready, if non-nil, is called with the
// server's address (direct addresses and relay) once it is listening.
func (s *Server) ListenAndServe(addr string, ready func(Address)) error {
	if err := s.opts.failed(); err != nil {
		return err
	}
	if addr == "" {
		addr = s.opts.bindAddr
	}
	var lns []transport.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	a := Address{ID: s.id}
	if !s.opts.noIP {
		ln, err := quic.Listen(addr, s.key, s.opts.quic)
		if err != nil {
			return fmt.Errorf("aster: listen %s: %w", addr, err)
		}
		lns = append(lns, ln)
		a.Direct = ln.Addr().Direct
	}
	if s.opts.relayURL != "" {
		ctx, cancel := context.WithTimeout(context.Background(), relay.DefaultConnectTimeout)
		// A server that also listens directly starts without its relay
		// when the relay is down, and keeps connecting in the background.
		ln, err := relay.Listen(ctx, s.opts.relayURL, s.key, &relay.Config{QUIC: s.opts.quic, Logger: s.opts.logger, ConnectInBackground: len(lns) > 0, Proxy: s.opts.relayProxy, Direct: relay.DirectConfig{Disable: s.opts.noDirect}})
		cancel()
		if err != nil {
			closeAll()
			return fmt.Errorf("aster: home relay: %w", err)
		}
		s.opts.logger.Info("home relay", "relay", s.opts.relayURL, "endpoint", s.id.String())
		lns = append(lns, ln)
		a.Relay = ln.Addr().Relay
	}
	if len(lns) == 0 {
		return errors.New("aster: nothing to listen on: IP transports are disabled and no relay is configured")
	}
	// Count the listeners as served before ready, so that Ready (and
	// Address) agree with the callback; Serve keeps them registered and the
	// deferred cleanup covers any that Serve refused.
	s.mu.Lock()
	for _, ln := range lns {
		s.listeners[ln] = struct{}{}
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		for _, ln := range lns {
			delete(s.listeners, ln)
		}
		s.mu.Unlock()
	}()
	if ready != nil {
		ready(a)
	}
	errs := make(chan error, len(lns)-1)
	for _, ln := range lns[1:] {
		go func() {
			err := s.Serve(ln)
			if !errors.Is(err, ErrServerClosed) {
				s.opts.logger.Error("listener failed", "addr", ln.Addr().String(), "err", err)
			}
			errs <- err
		}()
	}
	err := s.Serve(lns[0])
	for range lns[1:] {
		if e := <-errs; errors.Is(err, ErrServerClosed) && !errors.Is(e, ErrServerClosed) {
			err = e
		}
	}
	return err
}

// Address returns the server's address: the endpoint id with what every
// listener being served contributes (direct QUIC addresses, up to
// discovery.MaxDirectAddrs; a relay; a WebTransport URL and its certificate
// hashes), or only the endpoint id when none is.
func (s *Server) Address() Address {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := Address{ID: s.id}
	for ln := range s.listeners {
		la := ln.Addr()
		for _, d := range la.Direct {
			if len(a.Direct) < discovery.MaxDirectAddrs {
				a.Direct = append(a.Direct, d)
			}
		}
		if a.Relay == "" {
			a.Relay = la.Relay
		}
		if a.WebTransport == "" && la.WebTransport != "" {
			a.WebTransport, a.CertHashes = la.WebTransport, la.CertHashes
		}
	}
	a.Direct = s.opts.appendAdvertised(a.Direct)
	return a
}

// Serve accepts connections on ln and serves them until Shutdown or Close,
// then returns ErrServerClosed. Serve takes ownership of ln and closes it;
// after Shutdown began, ln keeps refusing new connections with close code
// SHUTDOWN (PROTOCOL.md 3.3) until Shutdown returns, so that clients learn
// at once to go elsewhere. A connection beyond WithMaxConns,
// WithMaxConnsPerPeer or WithMaxConnsPerAddr is closed with the same code.
func (s *Server) Serve(ln transport.Listener) error {
	if err := s.checkManifest(); err != nil {
		ln.Close()
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	if err := s.opts.failed(); err != nil {
		s.mu.Unlock()
		ln.Close()
		return err
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	handedOff := false
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		if !handedOff {
			ln.Close()
		}
	}()
	if err := s.announce(); err != nil {
		if s.isClosed() {
			return ErrServerClosed
		}
		return err
	}
	for {
		c, err := ln.Accept(s.acceptCtx)
		if err != nil {
			if s.isClosed() || errors.Is(err, transport.ErrListenerClosed) {
				handedOff = !errors.Is(err, transport.ErrListenerClosed) && s.handOff(ln)
				return ErrServerClosed
			}
			return fmt.Errorf("aster: accept: %w", err)
		}
		if reason := s.trackConn(c); reason != "" {
			c.Close(transport.ConnShutdown, reason)
		}
	}
}

// handOff gives ln to a goroutine that refuses its connections until
// Shutdown ends. It reports false (the caller closes ln) when the server
// is already closing its listeners.
func (s *Server) handOff(ln transport.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refusing == nil {
		return false
	}
	s.refusing[ln] = struct{}{}
	s.refusers.Add(1)
	go func() {
		defer s.refusers.Done()
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			c.Close(transport.ConnShutdown, reasonShutdown)
		}
	}()
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// trackConn starts serving c, or returns why it may not (the close reason).
func (s *Server) trackConn(c transport.Conn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return reasonShutdown
	}
	id, addr := c.RemoteID(), connAddrKey(c)
	if reason := s.counts.admit(&s.opts.limits, id, addr, len(s.conns)); reason != "" {
		s.counts.logRefusal(s, id, reason)
		return reason
	}
	sc := newServerConn(s, c)
	s.conns[sc] = struct{}{}
	s.connWG.Add(1)
	go func() {
		defer s.connWG.Done()
		sc.serve()
		s.mu.Lock()
		delete(s.conns, sc)
		s.counts.release(id, addr)
		s.mu.Unlock()
	}()
	return ""
}

// Shutdown stops the server gracefully: it refuses new calls with
// UNAVAILABLE and new connections with close code SHUTDOWN (which clients
// report as UNAVAILABLE at once, so retries go elsewhere), waits for
// in-flight calls to finish (or ctx to be done), then closes the listeners
// and every connection. It returns ctx's error if the wait was cut short.
// Serve returns ErrServerClosed as soon as Shutdown begins. Ready reports
// false from the moment Shutdown begins. With WithRegistry, Shutdown first
// deregisters the server's services (within ctx), before it refuses
// anything.
func (s *Server) Shutdown(ctx context.Context) error {
	// Leave the registry first (WithRegistry), so that clients stop
	// sending new calls while this server still serves them.
	s.withdraw(ctx, 0)
	if !s.beginClose(true) {
		return nil
	}
	done := s.calls.wait()
	var err error
	select {
	case <-done:
		// QUIC's connection close discards data not yet acknowledged, so
		// linger briefly for the last responses to reach their callers.
		t := time.NewTimer(s.opts.linger)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.closeConns()
	if err != nil {
		// Like net/http: do not wait for handlers that ignore cancellation.
		return err
	}
	s.connWG.Wait()
	s.workers.Wait()
	return nil
}

// Close closes the listeners and all connections immediately; in-flight
// calls fail with UNAVAILABLE. It waits for handlers to return. With
// WithRegistry, it first deregisters the server's services, best-effort
// within 1 s.
func (s *Server) Close() error {
	s.withdraw(context.Background(), closeDeregisterTimeout)
	s.beginClose(false)
	s.closeConns()
	s.connWG.Wait()
	<-s.calls.wait()
	s.workers.Wait()
	return nil
}

// beginClose marks the server closed. Close (graceful false) closes the
// listeners at once; Shutdown stops Serve's accept loops, whose listeners
// then refuse new connections until closeConns.
func (s *Server) beginClose(graceful bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.closed = true
	s.draining.Store(true)
	close(s.quit)
	if !graceful {
		s.refusing = nil // Serve closes its listener itself
		for ln := range s.listeners {
			ln.Close()
		}
	}
	s.acceptStop()
	return true
}

// closeListeners closes the listeners that were refusing connections
// during Shutdown and waits for their goroutines.
func (s *Server) closeListeners() {
	s.mu.Lock()
	refusing := s.refusing
	s.refusing = nil
	s.mu.Unlock()
	for ln := range refusing {
		ln.Close()
	}
	s.refusers.Wait()
}

func (s *Server) closeConns() {
	s.closeListeners()
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.conn.Close(transport.ConnShutdown, "server shutting down")
	}
}
