package mcpgw

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// missionServer is the Mission Control services served over QUIC on
// loopback, in this process.
type missionServer struct {
	addr     aster.Address
	mc       *mission.MissionControl
	mu       sync.Mutex
	released []string // agent ids of AgentSession instances released
}

// releasedIDs returns the agent ids of the released AgentSession instances.
func (s *missionServer) releasedIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.released...)
}

// startMission serves Mission Control; caps, if not nil, are the
// capabilities every peer is granted (an admission gate standing in for
// credentials).
func startMission(t testing.TB, caps []string) *missionServer {
	t.Helper()
	ms := &missionServer{mc: mission.NewMissionControl()}
	opts := []aster.ServerOption{aster.WithLogger(slog.New(slog.DiscardHandler))}
	if caps != nil {
		opts = append(opts, aster.WithAdmission(func(_ context.Context, c transport.Conn) (handler.Peer, error) {
			return handler.Peer{ID: c.RemoteID(), Capabilities: caps}, nil
		}))
	}
	srv := aster.NewServer(opts...)
	srv.MustRegister(ms.mc.Service(), mission.NewAgentSessionService(func(id string) {
		ms.mu.Lock()
		ms.released = append(ms.released, id)
		ms.mu.Unlock()
	}))
	ready := make(chan aster.Address, 1)
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe("127.0.0.1:0", func(a aster.Address) { ready <- a }) }()
	select {
	case ms.addr = <-ready:
	case err := <-served:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return ms
}

// dialMission connects a client and fetches the contract.
func dialMission(t testing.TB, ms *missionServer) *aster.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := aster.DialAddress(ctx, ms.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newGateway builds a gateway over a fresh client of ms.
func newGateway(t testing.TB, ms *missionServer, opts Options) *Gateway {
	t.Helper()
	c := dialMission(t, ms)
	ct, _, err := c.Contract(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(c, ct, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// pipeRW joins a pipe's reader and another's writer into one stream end.
type pipeRW struct {
	io.ReadCloser
	io.WriteCloser
}

func (p pipeRW) Close() error {
	p.ReadCloser.Close()
	return p.WriteCloser.Close()
}

// connectStdio runs g.ServeStdio over a pair of in-process pipes (the
// stdio transport's newline-delimited JSON-RPC) and connects a Go SDK
// client to the other end. The session closes at the test's cleanup.
func connectStdio(t testing.TB, g *Gateway, copts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	return connectStdioSession(t, g, copts, nil)
}

// connectStdioSession is connectStdio with session options (a protocol
// version).
func connectStdioSession(t testing.TB, g *Gateway, copts *mcp.ClientOptions, sopts *mcp.ClientSessionOptions) *mcp.ClientSession {
	t.Helper()
	cr, sw := io.Pipe() // server → client
	sr, cw := io.Pipe() // client → server
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- g.ServeStdio(ctx, sr, sw) }()
	client := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-test", Version: "1"}, copts)
	cs, err := client.Connect(ctx, &mcp.IOTransport{Reader: cr, Writer: cw}, sopts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.Close()
		cw.Close()
		cr.Close()
		select {
		case err := <-served:
			if err != nil && !strings.Contains(err.Error(), "maximum line length") { // TestLimits
				t.Errorf("ServeStdio: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeStdio did not return after the client closed")
		}
		cancel()
		sr.Close()
		sw.Close()
	})
	return cs
}

// callTool calls a tool and fails the test on a protocol error.
func callTool(t testing.TB, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return res
}

// structured decodes a result's structured content.
func structured(t testing.TB, res *mcp.CallToolResult) map[string]any {
	t.Helper()
	if res.IsError {
		t.Fatalf("tool error: %s", resultText(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("structured content %s: %v", b, err)
	}
	return m
}

// resultText joins a result's text contents.
func resultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// statusCode returns the code in a tool error's _meta["aster/status"].
func statusCode(res *mcp.CallToolResult) string {
	st, _ := res.Meta["aster/status"].(map[string]any)
	code, _ := st["code"].(string)
	return code
}
