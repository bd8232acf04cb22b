package mcpgw

import (
	"fmt"
	"path"
	"strings"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/trust"
)

// Globs (--allow, --deny, --confirm) are path.Match patterns over
// "Service.method": "*" matches any run of characters but "/", so
// "MissionControl.*" is every method of MissionControl and "*.get*" every
// getter.

// checkGlobs checks patterns, naming the flag a bad one came from.
func checkGlobs(flag string, patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return fmt.Errorf("%s: empty pattern", flag)
		}
		if strings.HasPrefix(p, "tag:") {
			// The contract (PROTOCOL.md §13) has no tags to match.
			return fmt.Errorf("%s %q: aster contracts carry no tags; filter by Service.method globs", flag, p)
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%s %q: %w", flag, p, err)
		}
	}
	return nil
}

// matchAny reports whether name matches one of patterns.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// exclusion says why a method is not offered as a tool ("" if it is).
func (o *Options) exclusion(full string, m *contract.Method) string {
	switch {
	case len(o.Allow) > 0 && !matchAny(o.Allow, full):
		return "not matched by --allow"
	case matchAny(o.Deny, full):
		return "matched by --deny"
	case o.ReadOnly && !m.Idempotent:
		return "not idempotent (--read-only)"
	}
	if o.Capabilities != nil && m.Requires != nil {
		req, err := m.Requires.Requirement()
		if err != nil {
			return "capability requirement not understood: " + err.Error()
		}
		if !req.Satisfied(o.Capabilities) {
			return "the credential lacks " + req.String()
		}
	}
	return ""
}

// requiresString renders a method's capability requirement ("" if none).
func requiresString(e *trust.Expr) string {
	if e == nil {
		return ""
	}
	r, err := e.Requirement()
	if err != nil {
		return "?"
	}
	return r.String()
}
