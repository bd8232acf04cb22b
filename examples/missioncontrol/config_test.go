package main

import (
	"strings"
	"testing"

	"github.com/aster-go/aster/status"
)

// TestServeRejectsBadConfig checks that the example reads its settings
// through aster.LoadConfig: a bad value fails before anything listens.
func TestServeRejectsBadConfig(t *testing.T) {
	t.Setenv("ASTER_BIND_ADDR", "no-port")
	err := serve(true)
	if status.CodeOf(err) != status.InvalidArgument || !strings.Contains(err.Error(), "ASTER_BIND_ADDR") {
		t.Fatalf("serve with ASTER_BIND_ADDR=no-port: %v, want INVALID_ARGUMENT naming the variable", err)
	}
}
