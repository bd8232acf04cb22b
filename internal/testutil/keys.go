package testutil

import (
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/aster-go/aster/trust"
)

// Key returns the deterministic test key number n: the same n always yields
// the same key, different n yield different keys. The seed is derived from n,
// so these keys must never be used outside tests.
func Key(t testing.TB, n int) trust.SecretKey {
	t.Helper()
	seed := sha256.Sum256(fmt.Appendf(nil, "aster testutil key %d", n))
	key, err := trust.KeyFromSeed(seed[:])
	if err != nil {
		t.Fatalf("testutil.Key(%d): %v", n, err)
	}
	return key
}

// ID returns the endpoint id of Key(t, n).
func ID(t testing.TB, n int) trust.EndpointID {
	t.Helper()
	return trust.IDOf(Key(t, n))
}
