package aster

// Registration: a server with WithRegistry announces each service it
// serves when it starts serving (announce, from Serve) and withdraws the
// announcements when it stops (withdraw, from Shutdown before it drains
// and from Close).

import (
	"context"
	"errors"
	"fmt"
	"path"
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

// WithRegistry makes the server announce itself in reg as a producer of
// every service registered before Serve: when Serve (or ListenAndServe)
// starts, each service is registered under path.Join(prefix, service name)
// with the server's Address and, if set, its credential (WithCredential),
// encoded; Serve fails (and does not serve) if a registration fails. Shutdown
// deregisters them before it starts draining, so that clients following
// the registry stop sending new calls while the calls in flight finish;
// Close deregisters them best-effort within 1 s. A nil registry is
// rejected. Default: no registry.
func WithRegistry(reg discovery.Registry, prefix string) ServerOption {
	return serverOptionFunc(func(o *serverOptions) {
		if reg == nil {
			keep(&o.err, optionError("WithRegistry", "nil registry"))
			return
		}
		o.registry, o.regPrefix = reg, prefix
	})
}

// registrations is the server's state in its registry.
type registrations struct {
	mu        sync.Mutex
	regs      []discovery.Registration
	announced bool // announce ran (and succeeded)
	withdrawn bool // withdraw ran: no announcement any more
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
	if r.announced || r.withdrawn {
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
		s.opts.logger.Info("aster: registered", "name", name, "addr", p.Addr.String())
	}
	r.announced = true
	return nil
}

// withdraw deregisters the server's services (once), within ctx and at
// most bound (0: no bound of its own).
func (s *Server) withdraw(ctx context.Context, bound time.Duration) error {
	if s.opts.registry == nil {
		return nil
	}
	r := &s.registry
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
		if err := rg.Deregister(ctx); err != nil {
			errs = append(errs, err)
			s.opts.logger.Warn("aster: deregistration failed", "err", err)
		}
	}
	r.regs = nil
	return errors.Join(errs...)
}
