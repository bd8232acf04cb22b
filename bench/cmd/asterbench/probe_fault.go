package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/bench/internal/pb"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// faultClient is the little a fault probe needs from a client.
type faultClient struct {
	echo  func(ctx context.Context) error
	hold  func(ctx context.Context) error
	close func()
}

func dialFault(ctx context.Context, system, addr string) (*faultClient, error) {
	switch system {
	case "aster":
		c, err := dialAster(ctx, addr)
		if err != nil {
			return nil, err
		}
		return &faultClient{
			echo: func(ctx context.Context) error {
				_, err := aster.CallUnary[probeMsg](ctx, c, "Probe.echo", &probeMsg{ID: 1})
				return err
			},
			hold: func(ctx context.Context) error {
				_, err := aster.CallUnary[probeMsg](ctx, c, "Probe.hold", &probeMsg{ID: 2})
				return err
			},
			close: func() { c.Close() },
		}, nil
	default:
		cc, err := dialGRPCProbe(addr)
		if err != nil {
			return nil, err
		}
		return &faultClient{
			echo: func(ctx context.Context) error {
				return cc.Invoke(ctx, grpcEcho, &pb.StatusRequest{AgentId: "1"}, new(pb.StatusResponse))
			},
			hold: func(ctx context.Context) error {
				return cc.Invoke(ctx, grpcHold, &pb.StatusRequest{AgentId: "2"}, new(pb.StatusResponse))
			},
			close: func() { cc.Close() },
		}, nil
	}
}

func codeOf(system string, err error) string {
	if system == "aster" {
		return asterCode(err)
	}
	return grpcCode(err)
}

// outcome is when and how a call ended.
type outcome struct {
	end time.Time
	err error
}

// timed runs call in the background, bounded by e.wait (by cancellation,
// not by a deadline, which would travel with the call), and reports when
// and how it ended.
func timed(ctx context.Context, e *probeEnv, call func(ctx context.Context) error) <-chan outcome {
	return timedFor(ctx, e.wait, call)
}

// timedFor is timed with its own bound.
func timedFor(ctx context.Context, bound time.Duration, call func(ctx context.Context) error) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		cctx, cancel := capCtx(ctx, bound)
		defer cancel()
		err := call(cctx)
		ch <- outcome{end: time.Now(), err: err}
	}()
	return ch
}

// describe is the figure and notes of an outcome, measured from t0, that
// should be a failure.
func (o outcome) describe(e *probeEnv, system string, t0 time.Time) (figure, unit, note string) {
	after := o.end.Sub(t0)
	if o.err == nil {
		f, u := secs(after)
		return f, u, "succeeded (expected a failure)"
	}
	if after >= e.wait-100*time.Millisecond && ctx2cancel(o.err) {
		return "≥" + strconv.FormatFloat(e.wait.Seconds(), 'f', 0, 64), "s", "hung: no failure within the probe's bound"
	}
	f, u := secs(after)
	return f, u, codeOf(system, o.err)
}

// ctx2cancel reports whether err is the probe's own cancellation.
func ctx2cancel(err error) bool {
	return errors.Is(err, context.Canceled) || status.CodeOf(err) == status.Canceled || grpcstatus.Code(err) == codes.Canceled
}

// probeKillServer: a client with a call in flight (no deadline) and a loop
// of new calls; the server process is SIGKILLed. How long until the
// in-flight call fails, and until a call started after the kill fails.
func probeKillServer(ctx context.Context, e *probeEnv, system string) error {
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	c, err := dialFault(ctx, system, p.addr)
	if err != nil {
		return err
	}
	defer c.close()
	for range 20 {
		if err := c.echo(ctx); err != nil {
			return fmt.Errorf("warm-up call: %w", err)
		}
	}
	inflight := timed(ctx, e, c.hold)
	if err := waitHolds(p, 1); err != nil {
		return err
	}
	t0 := time.Now()
	p.kill()
	newCall := timed(ctx, e, c.echo)
	o := <-inflight
	f, u, n := o.describe(e, system, t0)
	e.report("kill-server", system, f, u, "in-flight call without deadline after SIGKILL of the server: "+n)
	o = <-newCall
	f, u, n = o.describe(e, system, t0)
	e.report("kill-server", system, f, u, "new call (no deadline) started right after the SIGKILL: "+n)
	return nil
}

// waitHolds waits until the server has n Probe.hold calls in progress.
func waitHolds(p *probeProc, n int64) error {
	for range 200 {
		s, err := p.stats()
		if err != nil {
			return err
		}
		if s.Holds >= n {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("the server never saw %d hold calls", n)
}

// probeKillClient: a client process reads an unbounded server stream (1
// KiB every 10ms); it is SIGKILLed; how long until the server's handler
// ends (its context cancelled or its send failing), as the server reports.
func probeKillClient(ctx context.Context, e *probeEnv, system string) error {
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	cmd, err := probeCommand("probe-client", "-system", system, "-addr", p.addr)
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Signal(syscall.SIGKILL); <-exited }()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
		for sc.Scan() {
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			return fmt.Errorf("the client process did not start its stream")
		}
	case <-time.After(30 * time.Second):
		return fmt.Errorf("the client process did not start its stream within 30s")
	}
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-exited
	deadline := t0.Add(e.wait)
	for time.Now().Before(deadline) {
		s, err := p.stats()
		if err != nil {
			return err
		}
		if len(s.Ended) > 0 {
			f, u := secs(time.Unix(0, s.Ended[0]).Sub(t0))
			e.report("kill-client", system, f, u, "server handler (sending 1 KiB every 10ms) notices the SIGKILLed client process")
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.report("kill-client", system, "≥"+strconv.FormatFloat(e.wait.Seconds(), 'f', 0, 64), "s",
		"hung: the server handler was still running at the probe's bound")
	return nil
}

// probeDeadDial: dial an address where nothing listens (a UDP port for
// aster, a TCP port for grpc, both just released on loopback).
func probeDeadDial(ctx context.Context, e *probeEnv, system string) error {
	var call func(ctx context.Context) error
	switch system {
	case "aster":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		id, err := trust.EndpointIDFromPublicKey(trust.GenerateKey().Public().(ed25519.PublicKey))
		if err != nil {
			return err
		}
		a := aster.Address{ID: id, Direct: []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}}
		call = func(ctx context.Context) error {
			c, err := aster.DialAddress(ctx, a, aster.WithSecretKey(trust.GenerateKey()))
			if err == nil {
				c.Close()
			}
			return err
		}
	default:
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr := ln.Addr().String()
		ln.Close()
		call = func(ctx context.Context) error {
			cc, err := dialGRPCProbe(addr)
			if err != nil {
				return err
			}
			defer cc.Close()
			return cc.Invoke(ctx, grpcEcho, &pb.StatusRequest{AgentId: "1"}, new(pb.StatusResponse), grpc.WaitForReady(false))
		}
	}
	what := "aster1 address whose UDP port has no listener"
	if system == "grpc" {
		what = "TCP port with no listener (first call, default options)"
	}
	for _, v := range deadlineVariants {
		t0 := time.Now()
		o := <-timed(ctx, e, v.wrap(call))
		f, u, n := o.describe(e, system, t0)
		e.report("dead-dial", system, f, u, what+", "+v.name+": "+n)
	}
	return nil
}

// deadlineVariants run a call without a deadline (bounded only by the
// probe's cancellation) and with a 30 s deadline on the caller's context,
// which travels with the call and changes some codes.
var deadlineVariants = []struct {
	name string
	wrap func(func(context.Context) error) func(context.Context) error
}{
	{"no deadline", func(f func(context.Context) error) func(context.Context) error { return f }},
	{"30 s caller deadline", func(f func(context.Context) error) func(context.Context) error {
		return func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return f(ctx)
		}
	}},
}

// probeDrain: the server is in a graceful Shutdown (a call in flight
// holds it open); a new client dials and calls. How long until it gets an
// answer, and which.
func probeDrain(ctx context.Context, e *probeEnv, system string) error {
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	c, err := dialFault(ctx, system, p.addr)
	if err != nil {
		return err
	}
	defer c.close()
	// The held call outlives the new clients' bounded attempts.
	held := timedFor(ctx, 4*e.wait, c.hold)
	if err := waitHolds(p, 1); err != nil {
		return err
	}
	if _, err := p.ctl("shutdown"); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	for _, v := range deadlineVariants {
		t0 := time.Now()
		o := <-timed(ctx, e, v.wrap(func(ctx context.Context) error {
			nc, err := dialFault(ctx, system, p.addr)
			if err != nil {
				return err
			}
			defer nc.close()
			return nc.echo(ctx)
		}))
		f, u, n := o.describe(e, system, t0)
		e.report("drain", system, f, u, "new client (dial + call, "+v.name+") during Shutdown with a call in flight: "+n)
	}
	if _, err := p.ctl("release"); err != nil {
		return err
	}
	if h := <-held; h.err != nil {
		e.report("drain", system, "-", "-", "the in-flight call failed once released: "+codeOf(system, h.err))
	}
	return nil
}
