// Command agent is the Mission Control agent of chapters 2 and 3 (logs.py and
// metrics.py in the guide).
//
//	go run ./examples/missioncontrol/agent <aster1…address>                 # submit a log entry a second
//	go run ./examples/missioncontrol/agent --metrics 10000 <aster1…address> # stream metric points
//	go run ./examples/missioncontrol/agent --rcan edge-node-7.cred <aster1…address> # present a credential
//
// Instead of one server's address the agent takes a service target and
// calls the fleet of producers it names ("Scaling out" in the README): each
// call goes to one of them, and an idempotent call whose producer dies is
// retried on another. The [discovery] settings come from the ASTER_*
// variables (config.Load):
//
//	ASTER_DISCOVERY_ENDPOINTS=127.0.0.1:2379 go run ./examples/missioncontrol/agent etcd:///fleet/MissionControl
//	go run ./examples/missioncontrol/agent dns://127.0.0.1:5353/_mc._udp.example.internal
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

func main() {
	metrics := flag.Int("metrics", 0, "stream this many metric points with ingestMetrics and exit (0: submit logs instead)")
	count := flag.Int("count", 0, "submit this many log entries and exit (0: until interrupted)")
	interval := flag.Duration("interval", time.Second, "pause between log entries")
	agentID := flag.String("agent-id", "edge-node-7", "agent id to report")
	rcan := flag.String("rcan", os.Getenv("ASTER_ENROLLMENT_CREDENTIAL"), "enrollment credential file to present (aster enroll node --out); default $ASTER_ENROLLMENT_CREDENTIAL")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: agent [--metrics N | --count N] <aster1...address | etcd:///fleet/MissionControl | dns:///name>")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var opts []aster.ClientOption
	if *rcan != "" {
		id, err := identity.Load(*rcan)
		if err == nil {
			var cred *enroll.Credential
			if cred, err = id.Credential(""); err == nil {
				opts = append(opts, aster.WithSecretKey(id.Key), aster.WithCredential(cred))
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "agent: --rcan:", err)
			os.Exit(2)
		}
	}
	if err := run(ctx, flag.Arg(0), *agentID, *metrics, *count, *interval, opts...); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, agentID string, metrics, count int, interval time.Duration, opts ...aster.ClientOption) error {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dial(dctx, addr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	if metrics > 0 {
		ing, err := aster.CallClientStream[mission.MetricPoint, mission.IngestResult](ctx, c, "MissionControl.ingestMetrics")
		if err != nil {
			return err
		}
		defer ing.Close()
		for range metrics {
			p := &mission.MetricPoint{Name: "cpu.usage", Value: rand.Float64(), Timestamp: float64(time.Now().UnixNano()) / 1e9}
			if err := ing.Send(p); err == io.EOF {
				break // the server ended the call; CloseAndRecv says how
			} else if err != nil {
				return err
			}
		}
		res, err := ing.CloseAndRecv()
		if err != nil {
			return err
		}
		fmt.Printf("Accepted: %d\n", res.Accepted)
		return nil
	}

	levels := []string{"info", "warn", "error"}
	messages := []string{"disk 92% full", "health check failed", "cpu spike detected"}
	for i := 0; count == 0 || i < count; i++ {
		e := &mission.LogEntry{
			Timestamp: float64(time.Now().UnixNano()) / 1e9,
			Level:     levels[i%len(levels)],
			Message:   messages[i%len(messages)],
			AgentID:   agentID,
		}
		if _, err := aster.CallUnary[mission.SubmitLogResult](ctx, c, "MissionControl.submitLog", e); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Printf("submitted log #%d\n", i+1)
		if count != 0 && i == count-1 {
			break
		}
		select {
		case <-time.After(interval):
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// caller is a connection to one server or to a fleet.
type caller interface {
	aster.Caller
	Close() error
}

// dial connects to addr: an aster1… address, or a service target whose
// producers the [discovery] settings find.
func dial(ctx context.Context, addr string, opts ...aster.ClientOption) (caller, error) {
	if !discovery.IsTarget(addr) {
		return aster.Dial(ctx, addr, opts...)
	}
	cfg, err := config.Load()
	if err != nil {
		return nil, err
	}
	return cfg.DialFleet(ctx, addr, opts...)
}
