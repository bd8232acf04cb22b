package trust_test

import (
	"strings"
	"testing"

	"github.com/aster-go/aster/trust"
)

func mustPanic(t *testing.T, name, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		msg, _ := recover().(string)
		if !strings.Contains(msg, want) {
			t.Errorf("%s: recovered %q, want a panic containing %q", name, msg, want)
		}
	}()
	f()
}

// An empty AllOf was satisfied by every caller (a capability list that came
// out empty opened the method to everyone), and a nil requirement inside
// AnyOf or AllOf panicked only when a call was checked, in the server's
// connection goroutine. Both are refused when the requirement is built.
func TestRequirementConstructorsRefuseMistakes(t *testing.T) {
	var none []trust.Requirement
	mustPanic(t, "empty AllOf", "AllOf needs at least one", func() { trust.AllOf(none...) })
	mustPanic(t, "empty AnyOf", "AnyOf needs at least one", func() { trust.AnyOf() })
	mustPanic(t, "nil in AnyOf", "requirement 1 is nil", func() { trust.AnyOf(trust.Cap("a"), nil) })
	mustPanic(t, "nil in AllOf", "requirement 0 is nil", func() { trust.AllOf(nil) })

	// The variadic slice is copied: changing it later changes nothing.
	reqs := []trust.Requirement{trust.Cap("ops.admin")}
	r := trust.AllOf(reqs...)
	reqs[0] = trust.Cap("ops.status")
	if r.Satisfied([]string{"ops.status"}) || !r.Satisfied([]string{"ops.admin"}) {
		t.Errorf("AllOf follows the caller's slice: %s", r)
	}
}

func TestCheckRequirement(t *testing.T) {
	for _, r := range []trust.Requirement{nil, trust.Cap("ops.status"), trust.AnyOf(trust.Cap("a"), trust.AllOf(trust.Cap("b"), trust.Cap("c")))} {
		if err := trust.CheckRequirement(r); err != nil {
			t.Errorf("%v: %v", r, err)
		}
	}
	for _, r := range []trust.Requirement{trust.Cap(""), trust.Cap("ops status"), trust.AnyOf(trust.Cap("a"), trust.Cap("b\n"))} {
		if err := trust.CheckRequirement(r); err == nil {
			t.Errorf("%q: accepted", r)
		}
	}
}
