package aster

// Registration: a server with WithRegistry announces each service it
// serves when it starts serving (announce, from Serve), keeps the entries
// following its address while it serves (follow, a goroutine announce
// starts), and withdraws the announcements when it stops (withdraw, from
// Shutdown before it drains and from Close; it stops follow first).

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

// Bounds of the registry calls a server makes.
const (
	// registerTimeout bounds the registrations Serve makes before it
	// accepts connections.
	registerTimeout = 10 * time.Second
	// closeDeregisterTimeout bounds Close's best-effort deregistration.
	closeDeregisterTimeout = time.Second
)

// DefaultRegistryRefresh is how often a server with WithRegistry checks
// whether its Address changed, when WithRegistryRefresh does not say.
const DefaultRegistryRefresh = 2 * time.Second

// WithRegistry makes the server announce itself in reg as a producer of
// every service registered before Serve: when Serve (or ListenAndServe)
// starts, each service is registered under path.Join(prefix, service name)
// with the server's Address and, if set, its credential (WithCredential),
// encoded; Serve fails (and does not serve) if a registration fails. Shutdown
// deregisters them before it starts draining, so that clients following
// the registry stop sending new calls while the calls in flight finish;
// Close deregisters them best-effort within 1 s. A nil registry is
// rejected. Default: no registry.
//
// The entries follow the server's Address while it serves: every
// WithRegistryRefresh interval (default DefaultRegistryRefresh, 2 s), and
// at once when another listener starts being served, the server compares
// its Address with the one it announced and, if it changed (a port mapping
// granted after start, an advertised address, a listener added or gone,
// a network interface's address changed), updates every entry: in place
// where the registration is a discovery.RegistrationUpdater (StaticSource,
// the etcd registry), else by deregistering and registering again. A
// failed update is logged and tried again at the next check.
func WithRegistry(reg discovery.Registry, prefix string) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if reg == nil {
			keep(&o.err, optionError("WithRegistry", "nil registry"))
			return
		}
		o.registry, o.regPrefix = reg, prefix
	})
}

// WithRegistryRefresh sets how often a server with WithRegistry checks
// whether its Address changed since it registered, and updates its
// registry entries if so (see WithRegistry). Zero selects
// DefaultRegistryRefresh (2 s); a negative interval turns the periodic
// check off, leaving only the check when a listener starts being served.
// The check itself is cheap (the listeners' addresses, which for a
// listener on all interfaces means listing them); the registry hears from
// the server only on a change.
func WithRegistryRefresh(interval time.Duration) ServerOption {
	return serverOptionFunc(func(o *serverOptions) { o.regCheck = interval })
}

// registrations is the server's state in its registry.
type registrations struct {
	mu        sync.Mutex
	regs      []discovery.Registration // nil where re-registering failed
	names     []string                 // the registered name of each of regs
	producer  discovery.Producer       // the entry as last announced
	announced bool                     // announce ran (and succeeded)
	withdrawn bool                     // withdraw ran: no announcement any more

	kick chan struct{} // wakes follow at once (capacity 1)

	// fmu guards follow's lifetime apart from mu, which follow holds
	// while it updates entries: withdraw stops follow (cutting short an
	// update under way) without waiting for mu.
	fmu        sync.Mutex
	stopping   bool               // withdraw began: follow must not start
	stopFollow context.CancelFunc // ends follow; nil when it is not running
	followDone chan struct{}      // closed when follow returns
}

// announce registers the server's services, once. It is called by Serve
// with ln already counted in the server's Address.
func (s *Server) announce() error {
	reg := s.opts.registry
	if reg == nil {
		return nil
	}
	r := &s.registry
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.withdrawn {
		return nil
	}
	if r.announced {
		// Another listener: its addresses belong in the entries now.
		select {
		case r.kick <- struct{}{}:
		default:
		}
		return nil
	}
	p := discovery.Producer{Addr: s.Address()}
	if cr := s.opts.cred; cr != nil {
		b, err := cr.Encode()
		if err != nil {
			return status.Errorf(status.InvalidArgument, "aster: WithCredential: %w", err)
		}
		if cr.EndpointID != s.id {
			s.opts.logger.Warn("aster: the server's credential is issued to another endpoint; clients checking producer credentials will not call it",
				"server", s.id.Short(), "credential_endpoint", cr.EndpointID.Short())
		}
		p.Credential = b
	}
	s.mu.Lock()
	var names []string
	seen := map[string]bool{}
	for _, svc := range s.list {
		if !seen[svc.Name()] {
			seen[svc.Name()] = true
			names = append(names, svc.Name())
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.acceptCtx, registerTimeout)
	defer cancel()
	for _, n := range names {
		name := path.Join(s.opts.regPrefix, n)
		rg, err := reg.Register(ctx, name, p)
		if err != nil {
			s.deregisterLocked(context.Background(), closeDeregisterTimeout)
			return asStatus(status.Unavailable, fmt.Errorf("aster: register %s: %w", name, err))
		}
		r.regs = append(r.regs, rg)
		r.names = append(r.names, name)
		s.opts.logger.Info("aster: registered", "name", name, "addr", p.Addr.String())
	}
	r.announced = true
	r.producer = p
	r.kick = make(chan struct{}, 1)
	r.fmu.Lock()
	defer r.fmu.Unlock()
	if !r.stopping {
		fctx, stop := context.WithCancel(context.Background())
		r.stopFollow, r.followDone = stop, make(chan struct{})
		go s.follow(fctx, r.kick, r.followDone)
	}
	return nil
}

// follow updates the registry entries when the server's Address changes,
// checking every WithRegistryRefresh interval and when kicked, until ctx
// ends (withdraw). It closes done when it returns.
func (s *Server) follow(ctx context.Context, kick <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var tick <-chan time.Time
	if every := cmp.Or(s.opts.regCheck, DefaultRegistryRefresh); every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-kick:
		}
		s.reannounce(ctx)
	}
}

// reannounce brings the registry entries up to date with the server's
// Address, if it changed since they were made.
func (s *Server) reannounce(ctx context.Context) {
	addr := s.Address()
	r := &s.registry
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.producer
	p.Addr = addr
	stale := slices.Contains(r.regs, nil)
	if r.withdrawn || (p.Equal(r.producer) && !stale) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	ok := true
	for i, rg := range r.regs {
		name := r.names[i]
		if u, can := rg.(discovery.RegistrationUpdater); can {
			if err := u.Update(ctx, p); err != nil {
				ok = false
				s.opts.logger.Warn("aster: updating the registry entry failed; trying again later", "name", name, "addr", addr.String(), "err", err)
			}
			continue
		}
		if rg != nil {
			if err := rg.Deregister(ctx); err != nil {
				ok = false
				s.opts.logger.Warn("aster: deregistering to register the new address failed; trying again later", "name", name, "err", err)
				continue
			}
			r.regs[i] = nil
		}
		nrg, err := s.opts.registry.Register(ctx, name, p)
		if err != nil {
			ok = false
			s.opts.logger.Warn("aster: registering the new address failed; trying again later", "name", name, "addr", addr.String(), "err", err)
			continue
		}
		r.regs[i] = nrg
	}
	if ok {
		r.producer = p
		s.opts.logger.Info("aster: registry entries follow the new address", "addr", addr.String())
	}
}

// withdraw deregisters the server's services (once), within ctx and at
// most bound (0: no bound of its own).
func (s *Server) withdraw(ctx context.Context, bound time.Duration) error {
	if s.opts.registry == nil {
		return nil
	}
	r := &s.registry
	r.fmu.Lock()
	r.stopping = true
	stop, done := r.stopFollow, r.followDone
	r.stopFollow = nil
	r.fmu.Unlock()
	if stop != nil {
		stop() // cuts short an update under way
		<-done
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdrawn = true
	return s.deregisterLocked(ctx, bound)
}

// deregisterLocked deregisters what announce registered; registry.mu is
// held.
func (s *Server) deregisterLocked(ctx context.Context, bound time.Duration) error {
	r := &s.registry
	if bound > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, bound)
		defer cancel()
	}
	var errs []error
	for _, rg := range r.regs {
		if rg == nil {
			continue
		}
		if err := rg.Deregister(ctx); err != nil {
			errs = append(errs, err)
			s.opts.logger.Warn("aster: deregistration failed", "err", err)
		}
	}
	r.regs = nil
	return errors.Join(errs...)
}
