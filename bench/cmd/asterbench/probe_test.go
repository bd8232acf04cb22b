package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as asterbench for the probe's child
// processes (probe-serve, probe-client), which it starts with
// os.Executable.
func TestMain(m *testing.M) {
	if os.Getenv(probeChildEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSelectProbes(t *testing.T) {
	all, err := selectProbes("", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if p.name == "soak" {
			t.Error("soak selected without -soak")
		}
	}
	if len(all) != len(probeTable())-1 {
		t.Errorf("default selection has %d probes, want %d", len(all), len(probeTable())-1)
	}
	withSoak, err := selectProbes("", true)
	if err != nil || len(withSoak) != len(probeTable()) {
		t.Errorf("with soak: %d probes, %v", len(withSoak), err)
	}
	hostile, err := selectProbes("hostile,load,load", false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range hostile {
		names = append(names, p.name)
	}
	if got := strings.Join(names, ","); got != "hostile-claimed,hostile-stalled,hostile-unread,hostile-garbage,load" {
		t.Errorf("-only hostile,load,load = %s", got)
	}
	if _, err := selectProbes("nope", false); err == nil || !strings.Contains(err.Error(), "unknown probe") {
		t.Errorf("unknown probe: %v", err)
	}
}

// TestProbeQuick runs a few cheap probes in quick mode against real
// probe-serve processes: each must run to its end and report its line.
// Timings are not asserted.
func TestProbeQuick(t *testing.T) {
	var out, log bytes.Buffer
	e := &probeEnv{quick: true, wait: 4 * time.Second, systems: []string{"aster", "grpc"}, out: &out, log: &log}
	sel, err := selectProbes("load,hostile-garbage,relay-close,restart", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := runProbes(context.Background(), e, sel); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := map[string]int{"load aster": 1, "load grpc": 1, "hostile-garbage aster": 9, "relay-close aster": 1, "restart aster": 2, "restart grpc": 2}
	got := map[string]int{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 4 {
			t.Errorf("short result line %q", l)
			continue
		}
		got[f[0]+" "+f[1]]++
		if f[2] == "error" {
			t.Errorf("probe failed: %q", l)
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%d %q lines, want %d\n%s", got[k], k, n, out.String())
		}
	}
	if !strings.Contains(out.String(), "0 lost, 0 duplicated, 0 mismatched, 0 failed") {
		t.Errorf("load lost or mismatched calls:\n%s", out.String())
	}
	if strings.Count(out.String(), "INVALID_ARGUMENT") < 6 {
		t.Errorf("garbage frames did not get INVALID_ARGUMENT:\n%s", out.String())
	}
}
