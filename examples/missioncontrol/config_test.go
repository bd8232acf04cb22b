package main

import (
	"errors"
	"math"
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

// TestCheckRate: -rate accepts 0 (no limit) up to maxRate and refuses a
// negative rate, NaN and rates whose burst would overflow.
func TestCheckRate(t *testing.T) {
	for _, r := range []float64{0, 0.5, 100, maxRate} {
		if err := checkRate(r); err != nil {
			t.Errorf("checkRate(%v) = %v", r, err)
		}
	}
	for _, r := range []float64{-5, math.NaN(), math.Inf(1), 1e19} {
		if err := checkRate(r); err == nil {
			t.Errorf("checkRate(%v) accepted", r)
		}
	}
}
