package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/transport/portmap"
)

// TestConfigPortmapper checks network.portmapper_config's values: on by
// default, "disabled" off, one protocol forced, anything else an *Error
// naming field, source and value.
func TestConfigPortmapper(t *testing.T) {
	isolate(t)
	for _, tc := range []struct {
		val    string
		on     bool
		protos []portmap.Protocol
	}{
		{"", true, portmap.AllProtocols},
		{"default", true, portmap.AllProtocols},
		{"Enabled", true, portmap.AllProtocols},
		{"disabled", false, nil},
		{"pcp", true, []portmap.Protocol{portmap.PCP}},
		{"NATPMP", true, []portmap.Protocol{portmap.NATPMP}},
		{"upnp", true, []portmap.Protocol{portmap.UPnP}},
	} {
		t.Run(tc.val, func(t *testing.T) {
			t.Setenv("ASTER_PORTMAPPER_CONFIG", tc.val)
			c, err := config.Load()
			if err != nil {
				t.Fatal(err)
			}
			protos, on := c.PortMapping()
			if on != tc.on || !slices.Equal(protos, tc.protos) {
				t.Fatalf("PortMapping() = %v, %v; want %v, %v", protos, on, tc.protos, tc.on)
			}
		})
	}
	// Direct QUIC cleared: nothing to map.
	if _, on := (&config.Config{ClearIPTransports: true, RelayMode: "https://relay.example.test"}).PortMapping(); on {
		t.Error("PortMapping on without IP transports")
	}

	t.Setenv("ASTER_PORTMAPPER_CONFIG", "miniupnp")
	_, err := config.Load()
	checkConfigErr(t, err, nil, "network.portmapper_config", "ASTER_PORTMAPPER_CONFIG", `is not "default", "enabled", "disabled", "pcp", "natpmp" or "upnp"`)
	var ce *config.Error
	if errors.As(err, &ce) && ce.Value != `"miniupnp"` {
		t.Errorf("Value = %s, want \"miniupnp\"", ce.Value)
	}

	t.Setenv("ASTER_PORTMAPPER_CONFIG", "")
	dir := t.TempDir()
	file := filepath.Join(dir, "aster.toml")
	if err := os.WriteFile(file, []byte("[network]\nportmapper_config = \"nat-pmp\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = config.LoadFile(file)
	checkConfigErr(t, err, nil, "network.portmapper_config", file, "is not")

	// A literal Config is checked when used.
	if _, err := (&config.Config{PortmapperConfig: "yes"}).NewServer(); err == nil {
		t.Error("literal Config with PortmapperConfig \"yes\": NewServer succeeded")
	}
}

// TestServerPortmap: with port mapping disabled no mapper runs; with it
// on, a server listening on loopback starts one (whatever the machine's
// gateway answers) and Close stops it. A dev-mode server (these have no
// root key) maps only when the setting names "enabled" or a protocol.
func TestServerPortmap(t *testing.T) {
	isolate(t)
	t.Setenv("ASTER_LOG_LEVEL", "error")
	maps := map[string]bool{"disabled": false, "": false, "default": false, "enabled": true, "pcp": true}
	for _, val := range []string{"disabled", "", "default", "enabled", "pcp"} {
		t.Run(val, func(t *testing.T) {
			c := config.Default()
			c.PortmapperConfig = val
			c.BindAddr = "127.0.0.1:0"
			c.LogLevel = "error"
			s, err := c.NewServer()
			if err != nil {
				t.Fatal(err)
			}
			ready := make(chan struct{})
			done := make(chan error, 1)
			go func() { done <- s.ListenAndServe("", func(aster.Address) { close(ready) }) }()
			<-ready
			st, running := s.PortMapStatus()
			if running != maps[val] {
				t.Fatalf("port mapper running = %v (%+v) with portmapper_config %q in dev mode", running, st, val)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			<-done
			if _, running := s.PortMapStatus(); running != maps[val] {
				t.Fatal("status changed after Close")
			}
			if c := s.PortMapCandidates(); len(c) != 0 {
				t.Fatalf("candidates after Close: %v", c)
			}
		})
	}
}
