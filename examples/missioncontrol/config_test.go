package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/aster-go/aster/config"
)

// TestServeRejectsBadConfig checks that the example reads its settings
// through config.Load: a bad value fails before anything listens.
func TestServeRejectsBadConfig(t *testing.T) {
	t.Setenv("ASTER_BIND_ADDR", "no-port")
	err := serve(true)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Field != "network.bind_addr" || !strings.Contains(err.Error(), "ASTER_BIND_ADDR") {
		t.Fatalf("serve with ASTER_BIND_ADDR=no-port: %v, want a *config.Error naming the variable", err)
	}
}

// TestServeRefusesAdmissionWithoutRoot checks that asking for admission
// without a root key stops the example before it listens, rather than
// running in dev mode with the gate open.
func TestServeRefusesAdmissionWithoutRoot(t *testing.T) {
	t.Setenv("ASTER_ALLOW_ALL_CONSUMERS", "false")
	t.Setenv("ASTER_LOG_LEVEL", "error")
	err := serve(true)
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Field != "trust.allow_all_consumers" || ce.Source != "ASTER_ALLOW_ALL_CONSUMERS" {
		t.Fatalf("serve with ASTER_ALLOW_ALL_CONSUMERS=false and no root key: %v, want a *config.Error naming it", err)
	}
}
