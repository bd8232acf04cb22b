package handler

import (
	"context"
	"fmt"
	"reflect"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// Service is a named, versioned set of methods. Build it with NewService or
// NewSessionService, add methods with Handle, and register it with a server.
// A Service must not be changed after it is registered.
type Service struct {
	name     string
	version  uint32
	scope    Scope
	requires trust.Requirement
	mw       []Middleware
	methods  []*Method
	factory  func(ctx context.Context, p Peer) (any, error)
}

// Method is a registered method: its description and handler (or binder for
// session services).
type Method struct {
	Info MethodInfo
	// Handler serves calls (nil for session-scoped services).
	Handler Handler
	// Bind returns the handler bound to a session instance (session services).
	Bind func(instance any) Handler
	mw   []Middleware
	// ownRequires: the method has its own requirement (Requires), which
	// the service's (Service.Require) does not replace.
	ownRequires bool
}

// Middleware returns the method's own middleware (outermost first).
func (m *Method) Middleware() []Middleware { return m.mw }

// NewService returns an empty shared service. Names are 1–128 characters of
// letters, digits, '_', '.', '-' and may not start with '_'; version is at
// least 1. It panics on an invalid name, like http.Handle on a bad pattern:
// service definitions are program constants.
func NewService(name string, version uint32) *Service {
	mustName("service", name)
	if version == 0 {
		panic("handler: service version must be >= 1")
	}
	return &Service{name: name, version: version}
}

// NewSessionService returns a session-scoped service: the server calls
// factory for each new client session and routes the session's calls to that
// instance. If the instance implements io.Closer, Close is called when the
// session ends or the connection closes. Bind methods with On.
func NewSessionService[S any](name string, version uint32, factory func(ctx context.Context, peer Peer) (S, error)) *Service {
	s := NewService(name, version)
	s.scope = ScopeSession
	s.factory = func(ctx context.Context, p Peer) (any, error) { return factory(ctx, p) }
	return s
}

// Name returns the service name.
func (s *Service) Name() string { return s.name }

// Version returns the service version.
func (s *Service) Version() uint32 { return s.version }

// Scope returns the service scope.
func (s *Service) Scope() Scope { return s.scope }

// Methods returns the registered methods in registration order.
func (s *Service) Methods() []*Method { return s.methods }

// Middleware returns the service-wide middleware (outermost first).
func (s *Service) Middleware() []Middleware { return s.mw }

// NewInstance creates a session instance (session services only).
func (s *Service) NewInstance(ctx context.Context, p Peer) (any, error) {
	if s.factory == nil {
		return nil, fmt.Errorf("handler: %s is not a session service", s.name)
	}
	return s.factory(ctx, p)
}

// Require sets a capability requirement for every method that has none of
// its own (Requires), whether it was added before or after, and returns s.
//
// It panics on a malformed requirement (trust.CheckRequirement), like
// Handle on a bad name: a capability that can never be granted would leave
// the methods unusable, and their contract unreadable.
func (s *Service) Require(r trust.Requirement) *Service {
	mustRequirement(s.name, r)
	s.requires = r
	for _, m := range s.methods {
		if !m.ownRequires {
			m.Info.Requires = r
		}
	}
	return s
}

// Use adds middleware around every method of the service (after server-wide
// middleware, before per-method middleware) and returns s.
func (s *Service) Use(mw ...Middleware) *Service { s.mw = append(s.mw, mw...); return s }

// MethodOption configures a method at registration.
type MethodOption func(*Method)

// Requires sets the capability requirement of a method, which takes the
// place of the service's (Service.Require); nil keeps the service's. Handle
// panics on a malformed requirement (trust.CheckRequirement).
func Requires(r trust.Requirement) MethodOption {
	return func(m *Method) {
		mustRequirement(m.Info.Service+"."+m.Info.Name, r)
		m.Info.Requires, m.ownRequires = r, r != nil
	}
}

func mustRequirement(where string, r trust.Requirement) {
	if err := trust.CheckRequirement(r); err != nil {
		panic(fmt.Sprintf("handler: %s: bad capability requirement: %v", where, err))
	}
}

// Idempotent marks a method as safe to retry.
func Idempotent() MethodOption { return func(m *Method) { m.Info.Idempotent = true } }

// Use adds middleware around one method (innermost).
func Use(mw ...Middleware) MethodOption { return func(m *Method) { m.mw = append(m.mw, mw...) } }

// Handle registers a method and returns s. It panics on a duplicate or
// invalid name, a Def without a handler, or a Def made with On on a shared
// service (or without On on a session service).
func (s *Service) Handle(name string, d Def, opts ...MethodOption) *Service {
	mustName("method", name)
	for _, m := range s.methods {
		if m.Info.Name == name {
			panic(fmt.Sprintf("handler: duplicate method %s.%s", s.name, name))
		}
	}
	if d.Pattern < PatternUnary || d.Pattern > PatternBidiStream || d.Request == nil || d.Response == nil {
		panic(fmt.Sprintf("handler: %s.%s: incomplete Def (use handler.Unary, ServerStream, ClientStream or BidiStream)", s.name, name))
	}
	switch {
	case s.scope == ScopeSession && d.Bind == nil:
		panic(fmt.Sprintf("handler: %s.%s: session service methods must be bound with handler.On", s.name, name))
	case s.scope == ScopeShared && d.Handler == nil:
		panic(fmt.Sprintf("handler: %s.%s: Def has no handler (handler.On is for session services)", s.name, name))
	}
	m := &Method{
		Info: MethodInfo{
			Service: s.name, Name: name, Version: s.version, Pattern: d.Pattern, Scope: s.scope,
			Request: d.Request, Response: d.Response,
		},
		Handler: d.Handler,
		Bind:    d.Bind,
	}
	for _, o := range opts {
		o(m)
	}
	if !m.ownRequires {
		m.Info.Requires = s.requires
	}
	s.methods = append(s.methods, m)
	return s
}

func mustName(kind, n string) {
	if err := ValidName(n); err != nil {
		panic(fmt.Sprintf("handler: invalid %s name: %v", kind, err))
	}
}

// ValidName checks a service or method name.
func ValidName(n string) error {
	if n == "" || len(n) > 128 {
		return fmt.Errorf("%q must be 1-128 characters", n)
	}
	if n[0] == '_' {
		return fmt.Errorf("%q: names starting with '_' are reserved", n)
	}
	for i, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return fmt.Errorf("%q: invalid character %q at %d", n, r, i)
		}
	}
	return nil
}

// WireTyper is implemented by message types that declare a stable wire type
// name, e.g.
//
//	func (StatusRequest) WireType() string { return "mission/StatusRequest" }
//
// The name identifies the type in contracts across languages.
type WireTyper interface{ WireType() string }

// TypeName returns the wire type name of t: its WireType() if it implements
// WireTyper (on the value), else "<import path>.<TypeName>". It is the rule
// of status.TypeName, which typed error details use too.
func TypeName(t reflect.Type) string { return status.TypeName(t) }
