package testutil

import (
	"testing"

	"go.uber.org/goleak"
)

// VerifyNoLeaks runs the tests of m and then fails the test binary if
// goroutines are still running that were not running before, retrying for a
// short while so goroutines that are just exiting do not count. Call it from
// a package's TestMain:
//
//	func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
//
// opts are passed to goleak.VerifyTestMain, e.g. goleak.IgnoreTopFunction for
// a goroutine a dependency never stops.
func VerifyNoLeaks(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, opts...)
}
