package mission_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport/mem"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

type fixture struct {
	mc       *mission.MissionControl
	client   *aster.Client
	released chan string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	nw := mem.NewNetwork()
	key := testutil.Key(t, 1)
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{mc: mission.NewMissionControl(), released: make(chan string, 16)}
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	srv.MustRegister(f.mc.Service(), mission.NewAgentSessionService(func(id string) { f.released <- id }))
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	f.client = aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(testutil.Key(t, 2))))
	t.Cleanup(func() { f.client.Close(); srv.Close(); <-done })
	return f
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestGetStatus(t *testing.T) {
	f := setup(t)
	r, err := aster.CallUnary[mission.StatusResponse](ctx(t), f.client, "MissionControl.getStatus", &mission.StatusRequest{AgentID: "edge-node-7"})
	if err != nil {
		t.Fatal(err)
	}
	if *r != (mission.StatusResponse{AgentID: "edge-node-7", Status: "running", UptimeSecs: 3600}) {
		t.Fatalf("got %+v", r)
	}
}

// TestTailFanOut: two tails with the same filter each see every matching
// entry, and filtering by agent and minimum level works as the guide says.
// It runs in a synctest bubble so that it can wait until the server has
// taken the three subscriptions (every goroutine blocked) instead of
// polling for them.
func TestTailFanOut(t *testing.T) { synctest.Test(t, testTailFanOut) }

func testTailFanOut(t *testing.T) {
	f := setup(t)
	c := ctx(t)
	tail := func(req *mission.TailRequest) *aster.ServerStreamCall[mission.LogEntry] {
		s, err := aster.CallServerStream[mission.LogEntry](c, f.client, "MissionControl.tailLogs", req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	a := tail(&mission.TailRequest{AgentID: "edge-node-7", Level: "warn"})
	b := tail(&mission.TailRequest{AgentID: "edge-node-7", Level: "warn"})
	all := tail(&mission.TailRequest{Level: "debug"})
	synctest.Wait()
	if n := f.mc.Subscribers(); n != 3 {
		t.Fatalf("%d tails subscribed, want 3", n)
	}
	levels := []string{"info", "warn", "error", "debug", "fatal"}
	agents := []string{"edge-node-7", "other"}
	want := 0
	for i := range 50 {
		e := &mission.LogEntry{Level: levels[i%len(levels)], AgentID: agents[i%2], Message: fmt.Sprint(i)}
		if e.AgentID == "edge-node-7" && (e.Level == "warn" || e.Level == "error" || e.Level == "fatal") {
			want++
		}
		if _, err := aster.CallUnary[mission.SubmitLogResult](c, f.client, "MissionControl.submitLog", e); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, s *aster.ServerStreamCall[mission.LogEntry], n int, ok func(*mission.LogEntry) bool) {
		var prev = -1
		for i := range n {
			e, err := s.Recv()
			if err != nil {
				t.Fatalf("%s: entry %d: %v", name, i, err)
			}
			if !ok(e) {
				t.Fatalf("%s: entry %+v should have been filtered", name, e)
			}
			var seq int
			fmt.Sscan(e.Message, &seq)
			if seq <= prev {
				t.Fatalf("%s: out of order", name)
			}
			prev = seq
		}
	}
	filtered := func(e *mission.LogEntry) bool {
		return e.AgentID == "edge-node-7" && e.Level != "info" && e.Level != "debug"
	}
	check("a", a, want, filtered)
	check("b", b, want, filtered)
	check("all", all, 50, func(*mission.LogEntry) bool { return true })
}

func TestIngestMetrics(t *testing.T) {
	f := setup(t)
	ing, err := aster.CallClientStream[mission.MetricPoint, mission.IngestResult](ctx(t), f.client, "MissionControl.ingestMetrics")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10000 {
		if err := ing.Send(&mission.MetricPoint{Name: "cpu.usage", Value: float64(i), Tags: map[string]string{"host": "a"}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := ing.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != 10000 {
		t.Fatalf("accepted %d", res.Accepted)
	}
}

func TestAgentSession(t *testing.T) {
	f := setup(t)
	c := ctx(t)
	sess := f.client.NewSession()
	as, err := aster.CallUnary[mission.Assignment](c, sess, "AgentSession.register", &mission.Heartbeat{AgentID: "edge-7", Capabilities: []string{"gpu"}})
	if err != nil {
		t.Fatal(err)
	}
	if as.TaskID != "train-42" {
		t.Fatalf("gpu agent got %+v", as)
	}
	b, err := aster.CallBidiStream[mission.Command, mission.CommandResult](c, sess, "AgentSession.runCommand")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var results []*mission.CommandResult
	wg.Add(1)
	go func() {
		defer wg.Done()
		for r, err := range b.All() {
			if err != nil {
				t.Error(err)
				return
			}
			results = append(results, r)
		}
	}()
	for _, cmd := range []string{"echo out; echo err >&2", "exit 7"} {
		if err := b.Send(&mission.Command{Command: cmd}); err != nil {
			t.Fatal(err)
		}
	}
	b.CloseSend()
	wg.Wait()
	b.Close()
	if len(results) != 2 || results[0].Stdout != "out\n" || results[0].Stderr != "err\n" || results[1].ExitCode != 7 {
		t.Fatalf("got %+v", results)
	}
	if err := sess.Close(c); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-f.released:
		if id != "edge-7" {
			t.Fatalf("released %q, want the registered agent edge-7", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session instance was not released")
	}
	// A new session starts fresh: a non-gpu agent gets the idle task.
	as, err = aster.CallUnary[mission.Assignment](c, f.client.NewSession(), "AgentSession.register", &mission.Heartbeat{AgentID: "edge-8"})
	if err != nil || as.TaskID != "idle" {
		t.Fatalf("fresh session: %+v %v", as, err)
	}
}
