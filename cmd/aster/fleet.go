package main

// Service targets: "aster call", "aster shell" and "aster contract" take an
// aster1… address (one server) or a service target naming a fleet of
// producers ("etcd:///fleet/MissionControl", "dns:///_mc._udp.example.internal",
// "static:///aster1…,aster1…"). connect (connect.go) hands the targets to
// connectFleet.

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

// conn is what the commands use of a connection: one server's client, or a
// fleet that picks a producer per call (and per session).
type conn interface {
	aster.Caller
	middleware.MethodDescriber
	// Contract returns the contract (cached) and its id.
	Contract(ctx context.Context) (*contract.Contract, string, error)
	// RefreshContract fetches the contract again.
	RefreshContract(ctx context.Context) (*contract.Contract, string, error)
	// NewSession starts a session (on one producer, for a fleet).
	NewSession() *aster.Session
	// Label names the peer for people: a short endpoint id, or the target.
	Label() string
	Close() error
}

// clientConn is one server.
type clientConn struct {
	*aster.Client
	addr aster.Address
}

func (c clientConn) Label() string { return c.addr.ID.Short() }

// fleetConn is a fleet of producers.
type fleetConn struct {
	*config.Fleet
	target string
}

func (f fleetConn) Label() string { return f.target }

// RefreshContract fetches the contract from a producer picked afresh.
func (f fleetConn) RefreshContract(ctx context.Context) (*contract.Contract, string, error) {
	return f.Fleet.Contract(ctx)
}

// checkTarget checks raw, an aster1… address (or endpoint id) or a service
// target, before anything is dialled: a bad one is a usage error.
func checkTarget(raw string) error {
	if discovery.IsTarget(raw) {
		if _, err := discovery.ParseTarget(raw); err != nil {
			return usageErrorf("bad service target: %w", err)
		}
		return nil
	}
	if _, err := aster.ParseAddress(raw); err != nil {
		return usageErrorf("bad address: %w (want aster1…, or a service target such as etcd:///fleet/Service)", err)
	}
	return nil
}

// connectFleet is connect for a service target: it dials the fleet of
// producers the [discovery] settings find and fetches the contract from one
// of them, within f.connectTimeout.
func connectFleet(ctx context.Context, c *cobra.Command, raw string, f *connectFlags, s *clientSetup, extra ...aster.ClientOption) (*target, error) {
	dialCtx := ctx
	if f.connectTimeout > 0 {
		var cancel context.CancelFunc
		dialCtx, cancel = context.WithTimeout(ctx, f.connectTimeout)
		defer cancel()
	}
	opts := append(append([]aster.ClientOption{}, s.opts...), extra...)
	d, all, err := fleetSource(dialCtx, s.cfg, raw, opts, c.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	fl, err := aster.DialFleet(dialCtx, d.Source, d.Name, all...)
	if err != nil {
		d.Close()
		return nil, dialFailure(ctx, err, s)
	}
	cf := &config.Fleet{Fleet: fl, Discovery: d}
	ct, id, err := cf.Contract(dialCtx)
	if err != nil {
		cf.Close()
		return nil, dialFailure(ctx, fmt.Errorf("fetching the contract: %w", err), s)
	}
	return &target{client: fleetConn{Fleet: cf, target: raw}, ct: ct, id: id}, nil
}

// fleetSource returns the discovery backend of a service target and the
// fleet's client options (opts, then cfg.FleetOptions and a logger on
// stderr), with the errors of dialTarget.
func fleetSource(ctx context.Context, cfg *config.Config, raw string, opts []aster.ClientOption, stderr io.Writer) (*config.Discovery, []aster.ClientOption, error) {
	fopts, err := cfg.FleetOptions()
	if err != nil {
		return nil, nil, configError(err)
	}
	logger := cfg.NewLogger(stderr)
	d, err := cfg.DiscoverySource(ctx, raw, logger)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			return nil, nil, configError(err)
		}
		if status.CodeOf(err) == status.InvalidArgument {
			return nil, nil, usageErrorf("service target %s: %w", raw, err)
		}
		return nil, nil, connectError(fmt.Errorf("discovery: %w", err))
	}
	all := append(append(append([]aster.ClientOption{}, opts...), fopts...), aster.WithLogger(logger))
	return d, all, nil
}
