package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
)

func init() { addCommand(newDiscoverCmd) }

// discoverFlags are the flags of "aster discover".
type discoverFlags struct {
	asJSON         bool
	connectTimeout time.Duration
	rcan           string
}

func newDiscoverCmd() *cobra.Command {
	var f discoverFlags
	cmd := &cobra.Command{
		Use:   "discover <target>",
		Short: "List the producers of a service target and their health",
		Long: `discover resolves a service target (etcd:///fleet/MissionControl,
dns:///_mc._udp.example.internal, dns://host:port/name or static:///aster1...,...)
through the [discovery] settings (ASTER_DISCOVERY_ENDPOINTS, ...; see
'aster config print'), connects to every producer it lists as a call would,
and prints each one with:

  state        ready, connecting, ejected (its connection failed), draining
               (shutting down) or rejected (no valid producer credential,
               with allow_all_producers=false: it is never dialled)
  outstanding  calls in flight from this client (0 here: discover makes none)
  calls        calls sent, failures  those that failed with UNAVAILABLE
  credential   valid, unchecked (no producer root configured), none, or why
               the entry was rejected
  last error   the last failure seen, e.g. why a connection failed

It waits until no producer is still connecting, at most --connect-timeout.
It exits with UNAVAILABLE's status (24) when the target lists no producer or
none of them is ready, so scripts can check a fleet's health.

` + exitCodeTable,
		Example: `  ASTER_DISCOVERY_ENDPOINTS=127.0.0.1:2379 aster discover etcd:///fleet/MissionControl
  aster discover --json dns://127.0.0.1:5353/_mc._udp.example.internal
  aster discover static:///aster1...,aster1...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDiscover(cmd.Context(), cmd, &f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.asJSON, "json", false, "print one JSON object instead of a table")
	fl.DurationVar(&f.connectTimeout, "connect-timeout", 10*time.Second, "limit for resolving the target and connecting to its producers")
	fl.StringVar(&f.rcan, "rcan", "", "present the enrollment credential in this .aster-identity `file` (default: from the config)")
	return cmd
}

// discoveredProducer is one producer in the output.
type discoveredProducer struct {
	ID          string `json:"id"`
	Addr        string `json:"addr"`
	State       string `json:"state"`
	Outstanding int    `json:"outstanding"`
	Calls       uint64 `json:"calls"`
	Failures    uint64 `json:"failures"`
	Credential  string `json:"credential"`
	LastError   string `json:"last_error,omitempty"`
}

// discovered is the output of "aster discover".
type discovered struct {
	Target    string               `json:"target"`
	Name      string               `json:"name"`
	Producers []discoveredProducer `json:"producers"`
	Ready     int                  `json:"ready"`
}

// runDiscover implements "aster discover".
func runDiscover(ctx context.Context, cmd *cobra.Command, f *discoverFlags, raw string) error {
	if f.connectTimeout <= 0 {
		return usageErrorf("--connect-timeout must be above 0")
	}
	if !discovery.IsTarget(raw) {
		return usageErrorf("%q is not a service target (want etcd:///name, dns:///name, dns://server/name or static:///aster1...,...)", raw)
	}
	if err := checkTarget(raw); err != nil {
		return err
	}
	cfg, err := loadClientConfig(cmd)
	if err != nil {
		return err
	}
	setup, err := setupClient(cmd, &cfg, f.rcan)
	if err != nil {
		return err
	}
	opts := setup.opts

	ctx, cancel := context.WithTimeout(ctx, f.connectTimeout)
	defer cancel()
	d, fopts, err := fleetSource(ctx, &cfg, raw, opts, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer d.Close()
	// The listing first, from a watch of its own: how many producers the
	// fleet must show before the table is complete.
	listed, err := firstSet(ctx, d)
	if err != nil {
		return connectError(fmt.Errorf("discovery: %w", err))
	}
	var ps []aster.ProducerStatus
	if len(listed) > 0 {
		fleet := aster.NewFleet(d.Source, d.Name, fopts...)
		defer fleet.Close()
		ps = settle(ctx, distinct(listed), fleet.Producers)
	}

	out := discovered{Target: raw, Name: d.Name, Producers: []discoveredProducer{}}
	for _, p := range ps {
		out.Producers = append(out.Producers, discoveredProducer{
			ID: p.ID.String(), Addr: p.Addr.String(), State: p.State.String(),
			Outstanding: p.Outstanding, Calls: p.Calls, Failures: p.Failures,
			Credential: p.Credential, LastError: p.LastError,
		})
		if p.State == aster.ProducerReady {
			out.Ready++
		}
	}
	w := cmd.OutOrStdout()
	if f.asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
	} else if err := printDiscovered(w, out); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	switch {
	case len(out.Producers) == 0:
		return callError(status.Errorf(status.Unavailable, "%s lists no producers of %s", raw, out.Name))
	case out.Ready == 0:
		return callError(status.Errorf(status.Unavailable, "none of the %d producers of %s is ready", len(out.Producers), out.Name))
	}
	return nil
}

// firstSet returns the producers the target lists now.
func firstSet(ctx context.Context, d *config.Discovery) ([]discovery.Producer, error) {
	w, err := d.Source.Watch(ctx, d.Name)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	return w.Next(ctx)
}

// distinct returns how many producers a fleet makes of the listing ps:
// one per distinct entry (address and credential), at most
// aster.MaxFleetProducers.
func distinct(ps []discovery.Producer) int {
	seen := map[string]bool{}
	for _, p := range ps {
		seen[p.Addr.String()+"\x00"+string(p.Credential)] = true
	}
	return min(len(seen), aster.MaxFleetProducers)
}

// settle polls producers until it lists at least n and none is connecting,
// or ctx ends, and returns the last snapshot.
func settle(ctx context.Context, n int, producers func() []aster.ProducerStatus) []aster.ProducerStatus {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ps := producers()
		done := len(ps) >= n
		for _, p := range ps {
			done = done && p.State != aster.ProducerConnecting
		}
		if done {
			return ps
		}
		select {
		case <-ctx.Done():
			return producers()
		case <-tick.C:
		}
	}
}

// printDiscovered writes the producers as a table.
func printDiscovered(w io.Writer, d discovered) error {
	label := d.Name
	if t, err := discovery.ParseTarget(d.Target); err == nil && t.Scheme == "static" {
		label = "static list" // the name is the addresses themselves
	}
	fmt.Fprintf(w, "%s: %d producers, %d ready\n", label, len(d.Producers), d.Ready)
	if len(d.Producers) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tOUTSTANDING\tCALLS\tFAILURES\tCREDENTIAL\tADDRESS\tLAST ERROR")
	for _, p := range d.Producers {
		last := p.LastError
		if last == "" {
			last = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", shortHex(p.ID), p.State, p.Outstanding, p.Calls, p.Failures,
			p.Credential, p.Addr, strings.ReplaceAll(last, "\n", " "))
	}
	return tw.Flush()
}

// shortHex returns the first 10 characters of an id.
func shortHex(id string) string {
	if len(id) > 10 {
		return id[:10]
	}
	return id
}
