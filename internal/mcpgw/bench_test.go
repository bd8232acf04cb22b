package mcpgw

import (
	"context"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/aster-go/aster"
)

// BenchmarkMCPUnary measures what the gateway adds to a unary call:
// MissionControl.getStatus on a loopback QUIC server, called directly
// (aster.CallDynamic with JSON in and out, as the gateway does) and as an
// MCP tool through the Go SDK's client over the stdio transport (in-process
// pipes). The difference is the gateway's cost per call.
func BenchmarkMCPUnary(b *testing.B) {
	ms := startMission(b, nil)
	b.Run("direct", func(b *testing.B) {
		c := dialMission(b, ms)
		ctx := context.Background()
		ct, _, err := c.Contract(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for b.Loop() {
			dc, err := aster.CallDynamic(ctx, c, ct, "MissionControl.getStatus")
			if err != nil {
				b.Fatal(err)
			}
			if err := dc.SendJSON([]byte(`{"agent_id":"edge-node-7"}`)); err != nil {
				b.Fatal(err)
			}
			dc.CloseSend()
			if _, err := dc.Recv(); err != nil {
				b.Fatal(err)
			}
			dc.Close()
		}
	})
	b.Run("mcp", func(b *testing.B) {
		g := newGateway(b, ms, Options{})
		cs := connectStdio(b, g, nil)
		ctx := context.Background()
		params := &mcp.CallToolParams{Name: "MissionControl.getStatus", Arguments: map[string]any{"agent_id": "edge-node-7"}}
		b.ResetTimer()
		for b.Loop() {
			res, err := cs.CallTool(ctx, params)
			if err != nil || res.IsError {
				b.Fatal(err, resultText(res))
			}
		}
	})
}
