package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/relay"
)

// untilSuccess calls call (each attempt bounded by the probe's wait, by
// cancellation) until one succeeds or the bound passes, and describes the
// wait from t0: how long until the first success, and the failures before.
func untilSuccess(ctx context.Context, e *probeEnv, system string, t0 time.Time, call func(context.Context) error) (figure, unit, note string) {
	end := t0.Add(e.wait)
	failures := map[string]int{}
	for time.Now().Before(end) {
		cctx, cancel := capCtx(ctx, time.Until(end))
		err := call(cctx)
		cancel()
		if err == nil {
			f, u := secs(time.Since(t0))
			note := "succeeded"
			if len(failures) > 0 {
				note += fmt.Sprintf(" after failures %v", failures)
			}
			return f, u, note
		}
		if !ctx2cancel(err) {
			failures[codeOf(system, err)]++
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "≥" + strconv.FormatFloat(e.wait.Seconds(), 'f', 0, 64), "s", fmt.Sprintf("no success within the probe's bound; failures %v", failures)
}

// probeRestart: the server process is SIGKILLed and restarted on the same
// port (aster: with the same key); a client that was connected calls
// again and again (each call without a deadline): how long after the new
// server is up until a call succeeds. A new client is timed too.
func probeRestart(ctx context.Context, e *probeEnv, system string) error {
	var extra []string
	if system == "aster" {
		seed := make([]byte, 32)
		_, _ = rand.Read(seed)
		extra = []string{"-seed", hex.EncodeToString(seed)}
	}
	p, err := startProbeServer(system, extra...)
	if err != nil {
		return err
	}
	port, err := probePort(system, p.addr)
	if err != nil {
		p.stop()
		return err
	}
	c, err := dialFault(ctx, system, p.addr)
	if err != nil {
		p.stop()
		return err
	}
	defer c.close()
	for range 20 {
		if err := c.echo(ctx); err != nil {
			p.stop()
			return fmt.Errorf("warm-up call: %w", err)
		}
	}
	p.kill()
	p2, err := startProbeServer(system, append(extra, "-listen", "127.0.0.1:"+port)...)
	if err != nil {
		return fmt.Errorf("restart on the same port: %w", err)
	}
	defer p2.stop()
	if system == "aster" && p2.addr != p.addr {
		return fmt.Errorf("restarted server has address %s, want %s", p2.addr, p.addr)
	}
	t0 := time.Now()
	f, u, n := untilSuccess(ctx, e, system, t0, c.echo)
	e.report("restart", system, f, u, "server SIGKILLed and restarted on the same port"+sameKey(system)+"; the connected client calls until one succeeds: "+n)
	t1 := time.Now()
	f, u, n = untilSuccess(ctx, e, system, t1, func(ctx context.Context) error {
		nc, err := dialFault(ctx, system, p2.addr)
		if err != nil {
			return err
		}
		defer nc.close()
		return nc.echo(ctx)
	})
	e.report("restart", system, f, u, "a new client's dial + first call to the restarted server: "+n)
	return nil
}

func sameKey(system string) string {
	if system == "aster" {
		return " with the same key"
	}
	return ""
}

// probePort is the port of a probe server's address.
func probePort(system, addr string) (string, error) {
	if system == "aster" {
		a, err := aster.ParseAddress(addr)
		if err != nil {
			return "", err
		}
		if len(a.Direct) == 0 {
			return "", fmt.Errorf("address %s has no direct address", addr)
		}
		return strconv.Itoa(int(a.Direct[0].Port())), nil
	}
	_, port, err := net.SplitHostPort(addr)
	return port, err
}

// probeRelayRestart: a server reachable only through a relay (in this
// process) and a connected client; the relay is closed and a new one
// started on the same address with the same certificate. How long until
// the connected client's calls succeed again, and a new client's.
func probeRelayRestart(ctx context.Context, e *probeEnv, system string) error {
	cert, err := relay.SelfSignedCertificate("127.0.0.1")
	if err != nil {
		return err
	}
	start := func(addr string) (func(), string, error) {
		rs, err := relay.NewServer(relay.ServerConfig{Certificate: cert, BytesPerSecond: -1, MaxConnsPerIP: 8192, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, "", err
		}
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, "", err
		}
		served := make(chan struct{})
		go func() { _ = rs.Serve(tl); close(served) }()
		return func() { rs.Close(); <-served }, tl.Addr().String(), nil
	}
	stop1, relayAddr, err := start("127.0.0.1:0")
	if err != nil {
		return err
	}
	url := relay.PinnedURL(relayAddr, cert.Certificate[0])
	p, err := startProbeServer(system, "-relay", url)
	if err != nil {
		stop1()
		return err
	}
	defer p.stop()
	c, err := dialFault(ctx, system, p.addr)
	if err != nil {
		stop1()
		return err
	}
	defer c.close()
	for range 20 {
		if err := c.echo(ctx); err != nil {
			stop1()
			return fmt.Errorf("warm-up call: %w", err)
		}
	}
	stop1()
	stop2, _, err := start(relayAddr)
	if err != nil {
		return fmt.Errorf("restart the relay on %s: %w", relayAddr, err)
	}
	defer stop2()
	t0 := time.Now()
	f, u, n := untilSuccess(ctx, e, system, t0, c.echo)
	e.report("relay-restart", system, f, u, "relay closed and restarted on the same address and certificate; the connected client calls until one succeeds: "+n)
	t1 := time.Now()
	f, u, n = untilSuccess(ctx, e, system, t1, func(ctx context.Context) error {
		nc, err := dialFault(ctx, system, p.addr)
		if err != nil {
			return err
		}
		defer nc.close()
		return nc.echo(ctx)
	})
	e.report("relay-restart", system, f, u, "a new client's dial + first call through the restarted relay: "+n)
	return nil
}
