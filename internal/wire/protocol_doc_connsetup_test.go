package wire_test

import (
	cborcodec "github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/internal/wire"
)

// The examples of PROTOCOL.md 17.6 (calls sent behind the admission
// request), kept apart from docChecks' literal so that sections added in
// parallel do not collide.
func init() {
	docChecks["pipelined-admit-stream"] = func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: wire.ControlService, Method: wire.MethodAdmit, CallID: 1}
		doc := hexOf(t, ex["pipelined-admit-stream"])
		sameBytes(t, "admission request", cat(headerFrame(t, h, false), dataFrame(t, cborcodec.Codec{}, struct{}{})), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader, 0)
		checkHeader(t, fs[0], false, h)
		checkData(t, fs[1], cborcodec.Codec{}, map[string]any{})
	}
	docChecks["pipelined-call-stream"] = func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: "MissionControl", Method: "getStatus", CallID: 2}
		req := map[string]any{"agent_id": "edge-node-7"}
		doc := hexOf(t, ex["pipelined-call-stream"])
		sameBytes(t, "first call", cat(headerFrame(t, h, false), dataFrame(t, cborcodec.Codec{}, req)), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader, 0)
		checkHeader(t, fs[0], false, h)
		checkData(t, fs[1], cborcodec.Codec{}, req)
	}
}
