package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/webtransport"
	"github.com/aster-go/aster/trust"
)

// runDemo connects to addr as a client and exercises every call pattern,
// printing each request and response to w.
func runDemo(ctx context.Context, addr string, w io.Writer, opts ...aster.ClientOption) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var mu sync.Mutex // the tail goroutine prints too
	show := func(label string, v any) {
		b, _ := json.Marshal(v)
		mu.Lock()
		fmt.Fprintf(w, "%-34s %s\n", label, b)
		mu.Unlock()
	}

	if a, err := aster.ParseAddress(addr); err == nil && len(a.Direct) == 0 && a.Relay == "" && a.WebTransport != "" {
		// Reachable only over WebTransport: the aster package does not
		// link that transport, so the client is given its dialer.
		wt := aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer { return webtransport.NewDialer(k, nil) })
		opts = append([]aster.ClientOption{wt}, opts...)
	}
	c, err := aster.Dial(ctx, addr, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	ct, id, err := c.Contract(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "connected; contract %s… lists %d services\n", id[:16], len(ct.Services))

	// Chapter 1: unary.
	st, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", &mission.StatusRequest{AgentID: "edge-node-7"})
	if err != nil {
		return fmt.Errorf("getStatus: %w", err)
	}
	show("unary getStatus ->", st)

	// Chapter 2: server streaming, fed by unary submitLog calls.
	tail, err := aster.CallServerStream[mission.LogEntry](ctx, c, "MissionControl.tailLogs", &mission.TailRequest{AgentID: "edge-node-7", Level: "warn"})
	if err != nil {
		return fmt.Errorf("tailLogs: %w", err)
	}
	defer tail.Close()
	// The tail is registered once the server has read its request; a
	// getStatus round trip on the same connection orders us after it in
	// practice, and the loop below resubmits until entries arrive.
	levels := []string{"info", "warn", "error"}
	msgs := []string{"disk 92% full", "health check failed", "cpu spike detected"}
	got := make(chan error, 1)
	go func() {
		n := 0
		for e, err := range tail.All() {
			if err != nil {
				got <- err
				return
			}
			show(fmt.Sprintf("server stream tailLogs #%d ->", n), e)
			if n++; n == 2 {
				got <- nil
				return
			}
		}
		got <- fmt.Errorf("tailLogs ended early")
	}()
submit:
	for i := 0; ; i++ {
		e := &mission.LogEntry{Timestamp: float64(time.Now().UnixMilli()) / 1000, Level: levels[i%3], Message: msgs[i%3], AgentID: "edge-node-7"}
		r, err := aster.CallUnary[mission.SubmitLogResult](ctx, c, "MissionControl.submitLog", e)
		if err != nil {
			return fmt.Errorf("submitLog: %w", err)
		}
		show(fmt.Sprintf("unary submitLog (%s) ->", e.Level), r)
		select {
		case err := <-got:
			if err != nil {
				return fmt.Errorf("tailLogs: %w", err)
			}
			tail.Close()
			break submit
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// Chapter 3: client streaming.
	ing, err := aster.CallClientStream[mission.MetricPoint, mission.IngestResult](ctx, c, "MissionControl.ingestMetrics")
	if err != nil {
		return fmt.Errorf("ingestMetrics: %w", err)
	}
	start := time.Now()
	for i := range 10000 {
		p := &mission.MetricPoint{Name: "cpu.usage", Value: float64(i%100) / 100, Timestamp: float64(time.Now().UnixNano()) / 1e9}
		if err := ing.Send(p); err == io.EOF {
			break // the server ended the call; CloseAndRecv says how
		} else if err != nil {
			return fmt.Errorf("ingestMetrics send: %w", err)
		}
	}
	res, err := ing.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("ingestMetrics: %w", err)
	}
	show(fmt.Sprintf("client stream 10000 points (%v) ->", time.Since(start).Round(time.Millisecond)), res)

	// Chapter 4: a session-scoped service with a bidi stream.
	sess := c.NewSession()
	as, err := aster.CallUnary[mission.Assignment](ctx, sess, "AgentSession.register", &mission.Heartbeat{AgentID: "edge-7", Capabilities: []string{"gpu"}})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	show("session register ->", as)
	bidi, err := aster.CallBidiStream[mission.Command, mission.CommandResult](ctx, sess, "AgentSession.runCommand")
	if err != nil {
		return fmt.Errorf("runCommand: %w", err)
	}
	defer bidi.Close()
	for _, cmd := range []string{"echo hello from the agent", "uname -s", "exit 3"} {
		if err := bidi.Send(&mission.Command{Command: cmd}); err != nil {
			return fmt.Errorf("runCommand send: %w", err)
		}
		r, err := bidi.Recv()
		if err != nil {
			return fmt.Errorf("runCommand: %w", err)
		}
		show(fmt.Sprintf("bidi runCommand %q ->", cmd), r)
	}
	if err := bidi.CloseSend(); err != nil {
		return err
	}
	if _, err := bidi.Recv(); err != io.EOF {
		return fmt.Errorf("runCommand end: %v", err)
	}
	if err := sess.Close(ctx); err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	fmt.Fprintln(w, "session ended; demo complete")
	return nil
}
