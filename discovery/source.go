package discovery

// Producers of a service name: the watch a balancing client follows
// (Source, Watch), the announcement a server makes (Registry), the static
// backend, and the "scheme:///name" targets that name them.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// Producer is one endpoint serving a service, as a registry lists it. The
// registry says where to look; the key in Addr.ID says whom to trust: a
// client verifies it on every connection.
type Producer struct {
	// Addr is how to reach the producer; Addr.ID is the key it must prove.
	Addr EndpointAddr
	// Credential is the producer's enrollment credential as
	// enroll.Credential.Encode produces it, or nil. A client that does not
	// allow all producers ignores an entry whose credential is missing, not
	// signed by its root, not a producer's, not issued to Addr.ID, expired,
	// or not naming the service (see PROTOCOL.md, "Discovery records").
	Credential []byte
}

// Equal reports whether p and o are the same entry.
func (p Producer) Equal(o Producer) bool {
	return p.Addr.ID == o.Addr.ID && p.Addr.String() == o.Addr.String() && string(p.Credential) == string(o.Credential)
}

// ErrClosed is returned (wrapped) by Watch.Next after Close.
var ErrClosed = errors.New("discovery: watch closed")

// Source follows the producers of service names: a registry (etcd), DNS
// records, or a static list.
type Source interface {
	// Watch starts following the producers of name (its form is the
	// backend's: an etcd key prefix such as "fleet/MissionControl", a DNS
	// SRV name such as "_mc._udp.example.internal"). It fails when the
	// backend cannot be used at all (a bad name, a registry unreachable at
	// start); a backend that goes away later keeps reporting the last set
	// it knew.
	Watch(ctx context.Context, name string) (Watch, error)
}

// Watch is one name's producer set as it changes. Its owner calls Next in a
// loop and Close when done; implementations are safe for Close concurrent
// with Next.
type Watch interface {
	// Next returns the producer set: the first call the current one
	// (possibly empty), each later call the next different one, blocking
	// until the set changes, ctx ends or the watch is closed (ErrClosed).
	// The returned slice belongs to the caller.
	Next(ctx context.Context) ([]Producer, error)
	// ResolveNow asks the backend to look again at once, because a
	// producer failed. Backends that are told of changes (etcd) may ignore
	// it; polling backends (DNS) re-resolve early, within their floor.
	ResolveNow()
	// Close stops the watch and releases what it holds.
	Close() error
}

// Registry is where producers announce the services they serve.
type Registry interface {
	// Register announces p as a producer of name until the returned
	// Registration is deregistered, or until the registry stops hearing
	// from this process (an etcd lease running out).
	Register(ctx context.Context, name string, p Producer) (Registration, error)
}

// Registration is one announcement made with Registry.Register.
type Registration interface {
	// Deregister removes the announcement, so clients stop sending new
	// calls; a server calls it before it drains.
	Deregister(ctx context.Context) error
}

// RegistrationUpdater is a Registration whose entry can be changed in
// place, without a moment in which the producer is not listed: a server
// whose address changed after it registered (a port mapping granted later,
// a listener added) calls Update with its new entry. StaticSource's and
// the etcd registry's registrations implement it. DNS is not a Registry at
// all: its records are published outside the process, so keeping them
// current is the DNS operator's part. A server given a Registration
// without Update deregisters and registers again instead.
type RegistrationUpdater interface {
	Registration
	// Update replaces the announced entry with p, whose Addr.ID must be
	// the registered one (the entry is keyed by it); it fails with a
	// status InvalidArgument error otherwise, and with a status
	// FailedPrecondition error after Deregister. An entry that someone
	// else removed or replaced (another registration of the same endpoint)
	// is left alone, as Register's entries are; the new p is still what
	// the registration announces if it puts its entry back.
	Update(ctx context.Context, p Producer) error
}

// StaticSource is a Source and Registry over producer lists held in
// memory, for tests and small fixed fleets. Set (or Register) replaces a
// name's list and every watch of the name sees the change. The zero value
// is ready to use; it is safe for concurrent use.
type StaticSource struct {
	mu      sync.Mutex
	sets    map[string][]Producer
	version map[string]uint64
	changed chan struct{} // closed and replaced on every change
}

// NewStaticSource returns a StaticSource where name has producers ps.
func NewStaticSource(name string, ps ...Producer) *StaticSource {
	s := &StaticSource{}
	s.Set(name, ps...)
	return s
}

func (s *StaticSource) initLocked() {
	if s.sets == nil {
		s.sets = map[string][]Producer{}
		s.version = map[string]uint64{}
		s.changed = make(chan struct{})
	}
}

// Set replaces the producers of name.
func (s *StaticSource) Set(name string, ps ...Producer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	s.setLocked(name, slices.Clone(ps))
}

// setLocked installs ps (owned by the set from now on) as name's producers
// and wakes the watches; s.mu is held.
func (s *StaticSource) setLocked(name string, ps []Producer) {
	s.sets[name] = ps
	s.version[name]++
	close(s.changed)
	s.changed = make(chan struct{})
}

// Producers returns the producers of name.
func (s *StaticSource) Producers(name string) []Producer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sets[name])
}

// Register adds p to name's producers (replacing an entry with the same
// endpoint id); Deregister removes it. The Registration is a
// RegistrationUpdater: Update replaces the entry with the same endpoint id,
// if name still lists one, keeping its place in the list.
func (s *StaticSource) Register(_ context.Context, name string, p Producer) (Registration, error) {
	s.Set(name, append(s.without(name, p.Addr.ID), p)...)
	return &staticRegistration{s: s, name: name, id: p.Addr.ID}, nil
}

// without returns name's producers except the one with id.
func (s *StaticSource) without(name string, id trust.EndpointID) []Producer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.sets[name]), func(q Producer) bool { return q.Addr.ID == id })
}

type staticRegistration struct {
	s    *StaticSource
	name string
	id   trust.EndpointID

	mu   sync.Mutex
	gone bool // Deregister ran
}

var _ RegistrationUpdater = (*staticRegistration)(nil)

func (r *staticRegistration) Deregister(context.Context) error {
	r.mu.Lock()
	r.gone = true
	r.mu.Unlock()
	r.s.Set(r.name, r.s.without(r.name, r.id)...)
	return nil
}

func (r *staticRegistration) Update(_ context.Context, p Producer) error {
	if p.Addr.ID != r.id {
		return status.Errorf(status.InvalidArgument, "discovery: update of %s's registration with an entry for %s", r.id.Short(), p.Addr.ID.Short())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone {
		return status.Errorf(status.FailedPrecondition, "discovery: update of %s's registration of %s after Deregister", r.id.Short(), r.name)
	}
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initLocked()
	i := slices.IndexFunc(s.sets[r.name], func(q Producer) bool { return q.Addr.ID == r.id })
	if i < 0 || s.sets[r.name][i].Equal(p) {
		return nil
	}
	ps := slices.Clone(s.sets[r.name])
	ps[i] = p
	s.setLocked(r.name, ps)
	return nil
}

// Watch follows name's list; it never fails.
func (s *StaticSource) Watch(_ context.Context, name string) (Watch, error) {
	return &staticWatch{s: s, name: name, closed: make(chan struct{})}, nil
}

type staticWatch struct {
	s         *StaticSource
	name      string
	seen      uint64
	started   bool
	closeOnce sync.Once
	closed    chan struct{}
}

func (w *staticWatch) Next(ctx context.Context) ([]Producer, error) {
	for {
		w.s.mu.Lock()
		w.s.initLocked()
		v, ch := w.s.version[w.name], w.s.changed
		if !w.started || v != w.seen {
			w.started, w.seen = true, v
			ps := slices.Clone(w.s.sets[w.name])
			w.s.mu.Unlock()
			return ps, nil
		}
		w.s.mu.Unlock()
		select {
		case <-ch:
		case <-w.closed:
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (w *staticWatch) ResolveNow() {}

func (w *staticWatch) Close() error {
	w.closeOnce.Do(func() { close(w.closed) })
	return nil
}

// Target names a service to call through a Source, in the URI form gRPC
// users know: "etcd:///fleet/MissionControl",
// "dns:///_mc._udp.example.internal", "dns://127.0.0.1:5353/_mc._udp.example.internal"
// (an explicit DNS server), or "static:///aster1…,aster1…".
type Target struct {
	// Scheme picks the backend: "etcd", "dns" or "static".
	Scheme string
	// Authority is the part between "//" and the next "/": for dns the
	// server to ask (host:port), otherwise normally empty.
	Authority string
	// Name is the rest: the name given to Source.Watch.
	Name string
}

// String returns the target in its URI form.
func (t Target) String() string { return t.Scheme + "://" + t.Authority + "/" + t.Name }

// IsTarget reports whether s starts with the scheme of a Target
// ("etcd://", "dns://" or "static://"), rather than being an "aster1…"
// address or an endpoint id.
func IsTarget(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	switch strings.ToLower(s[:i]) {
	case "etcd", "dns", "static":
		return true
	}
	return false
}

// ParseTarget parses "scheme://[authority]/name". The scheme must be one of
// etcd, dns and static, and the name must not be empty.
func ParseTarget(s string) (Target, error) {
	i := strings.Index(s, "://")
	if i <= 0 {
		return Target{}, fmt.Errorf("discovery: target %q: want scheme:///name (etcd:///fleet/Service, dns:///_svc._udp.example.internal, static:///aster1…)", s)
	}
	t := Target{Scheme: strings.ToLower(s[:i])}
	rest := s[i+3:]
	j := strings.IndexByte(rest, '/')
	if j < 0 {
		return Target{}, fmt.Errorf("discovery: target %q: no name after the authority (want %s:///name)", s, t.Scheme)
	}
	t.Authority, t.Name = rest[:j], strings.Trim(rest[j+1:], "/")
	switch t.Scheme {
	case "etcd", "dns", "static":
	default:
		return Target{}, fmt.Errorf("discovery: target %q: unknown scheme %q (want etcd, dns or static)", s, t.Scheme)
	}
	if t.Name == "" {
		return Target{}, fmt.Errorf("discovery: target %q: empty name", s)
	}
	return t, nil
}

// StaticTarget returns the StaticSource a "static:///addr,addr,…" target
// describes, with the target's name as the watched name. Each address is an
// "aster1…" address.
func StaticTarget(t Target) (*StaticSource, error) {
	if t.Scheme != "static" {
		return nil, fmt.Errorf("discovery: %s is not a static target", t)
	}
	var ps []Producer
	for _, a := range strings.Split(t.Name, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		ea, err := ParseAddress(a)
		if err != nil {
			return nil, fmt.Errorf("discovery: static target: %w", err)
		}
		ps = append(ps, Producer{Addr: ea})
	}
	if len(ps) == 0 {
		return nil, fmt.Errorf("discovery: static target %s lists no address", t)
	}
	return NewStaticSource(t.Name, ps...), nil
}
