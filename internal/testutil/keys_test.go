package testutil_test

import (
	"testing"

	"github.com/aster-go/aster/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func TestKey(t *testing.T) {
	a, b := testutil.Key(t, 1), testutil.Key(t, 1)
	if !a.Equal(b) {
		t.Error("Key(1) is not deterministic")
	}
	if testutil.ID(t, 1) == testutil.ID(t, 2) {
		t.Error("Key(1) and Key(2) have the same id")
	}
}
