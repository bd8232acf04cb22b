package trust

import (
	"fmt"
	"slices"
	"strings"
)

// Requirement is a capability expression attached to a service or method: Cap,
// AnyOf or AllOf, nested freely. A nil Requirement requires nothing.
type Requirement interface {
	// Satisfied reports whether a caller granted caps meets the requirement.
	Satisfied(caps []string) bool
	// String renders the expression ("ops.status", "any_of(ops.logs, ops.admin)").
	String() string
	// Expr returns the expression as data, for contracts.
	Expr() Expr
}

// Expr is the data form of a Requirement, as stored in contracts:
// exactly one of Cap, AnyOf or AllOf is set.
type Expr struct {
	Cap   string `cbor:"cap,omitempty" json:"cap,omitempty"`
	AnyOf []Expr `cbor:"any_of,omitempty" json:"any_of,omitempty"`
	AllOf []Expr `cbor:"all_of,omitempty" json:"all_of,omitempty"`
}

// Requirement converts the data form back to a Requirement.
func (e Expr) Requirement() (Requirement, error) {
	switch {
	case e.Cap != "" && e.AnyOf == nil && e.AllOf == nil:
		if err := ValidCapability(e.Cap); err != nil {
			return nil, err
		}
		return Cap(e.Cap), nil
	case e.Cap == "" && e.AnyOf != nil && e.AllOf == nil:
		rs, err := exprsToReqs(e.AnyOf)
		return anyOf(rs), err
	case e.Cap == "" && e.AnyOf == nil && e.AllOf != nil:
		rs, err := exprsToReqs(e.AllOf)
		return allOf(rs), err
	}
	return nil, fmt.Errorf("trust: capability expression must set exactly one of cap, any_of, all_of")
}

func exprsToReqs(es []Expr) ([]Requirement, error) {
	if len(es) == 0 {
		return nil, fmt.Errorf("trust: empty capability list")
	}
	rs := make([]Requirement, len(es))
	for i, e := range es {
		r, err := e.Requirement()
		if err != nil {
			return nil, err
		}
		rs[i] = r
	}
	return rs, nil
}

// ValidCapability checks a capability name: 1–128 characters from
// [A-Za-z0-9._:/-].
func ValidCapability(c string) error {
	if c == "" || len(c) > 128 {
		return fmt.Errorf("trust: capability %q must be 1-128 characters", c)
	}
	for i, r := range c {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == ':', r == '/', r == '-':
		default:
			return fmt.Errorf("trust: capability %q has invalid character %q at %d", c, r, i)
		}
	}
	return nil
}

// Cap is a single required capability, e.g. Cap("ops.status").
type Cap string

// Satisfied reports whether caps contains c.
func (c Cap) Satisfied(caps []string) bool { return slices.Contains(caps, string(c)) }

// String returns the capability name.
func (c Cap) String() string { return string(c) }

// Expr returns {cap: c}.
func (c Cap) Expr() Expr { return Expr{Cap: string(c)} }

type anyOf []Requirement
type allOf []Requirement

// AnyOf is satisfied when at least one of reqs is. It panics when reqs is
// empty or holds a nil Requirement: requirements are program constants,
// and either would be a mistake found only when a call is checked.
func AnyOf(reqs ...Requirement) Requirement {
	mustReqs("AnyOf", reqs)
	return anyOf(slices.Clone(reqs))
}

// AllOf is satisfied when every one of reqs is. It panics when reqs is
// empty (an empty AllOf would be satisfied by every caller, so a list that
// came out empty would open the method to everyone) or holds a nil
// Requirement.
func AllOf(reqs ...Requirement) Requirement {
	mustReqs("AllOf", reqs)
	return allOf(slices.Clone(reqs))
}

func mustReqs(name string, reqs []Requirement) {
	if len(reqs) == 0 {
		panic("trust: " + name + " needs at least one requirement")
	}
	for i, r := range reqs {
		if r == nil {
			panic(fmt.Sprintf("trust: %s: requirement %d is nil", name, i))
		}
	}
}

// CheckRequirement reports whether r is well formed: every capability
// name valid (ValidCapability) and every AnyOf and AllOf non-empty, so that
// its contract form (Expr) converts back to it. A nil r (no requirement)
// is well formed.
func CheckRequirement(r Requirement) error {
	if r == nil {
		return nil
	}
	_, err := r.Expr().Requirement()
	return err
}

func (a anyOf) Satisfied(caps []string) bool {
	for _, r := range a {
		if r.Satisfied(caps) {
			return true
		}
	}
	return false
}

func (a allOf) Satisfied(caps []string) bool {
	for _, r := range a {
		if !r.Satisfied(caps) {
			return false
		}
	}
	return true
}

func (a anyOf) String() string { return "any_of(" + joinReqs(a) + ")" }
func (a allOf) String() string { return "all_of(" + joinReqs(a) + ")" }

func (a anyOf) Expr() Expr { return Expr{AnyOf: reqsToExprs(a)} }
func (a allOf) Expr() Expr { return Expr{AllOf: reqsToExprs(a)} }

func joinReqs(rs []Requirement) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func reqsToExprs(rs []Requirement) []Expr {
	es := make([]Expr, len(rs))
	for i, r := range rs {
		es[i] = r.Expr()
	}
	return es
}
