package wire_test

// This file keeps PROTOCOL.md honest. It extracts every byte example (an
// HTML comment "<!-- example: NAME -->" followed by a fenced block) and every
// marked table from the document and checks them against the implementation
// in both directions: the encoders produce exactly the documented bytes, and
// the decoders read the documented bytes back into the documented values.
// An example without a check, or a check without an example, fails too.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aster-go/aster/codec"
	cborcodec "github.com/aster-go/aster/codec/cbor"
	jsoncodec "github.com/aster-go/aster/codec/json"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

const protocolDoc = "../../PROTOCOL.md"

// docBlock is one marked fenced block of PROTOCOL.md.
type docBlock struct {
	name string
	lang string // "hex" or "text"
	body []string
	line int // line number of the marker, for messages
}

var (
	exampleMarker = regexp.MustCompile(`^<!-- example: ([a-z0-9-]+) -->$`)
	tableMarker   = regexp.MustCompile(`^<!-- table: ([a-z0-9-]+) -->$`)
	lengthNote    = regexp.MustCompile(`#\s*length (\d+)\b`)
)

// parseDoc returns the document's marked examples and tables (each table as
// its rows, split into trimmed cells, header and separator rows dropped).
func parseDoc(t *testing.T) (map[string]docBlock, map[string][][]string) {
	t.Helper()
	raw, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatalf("reading %s: %v", protocolDoc, err)
	}
	lines := strings.Split(string(raw), "\n")
	examples := map[string]docBlock{}
	tables := map[string][][]string{}
	for i := 0; i < len(lines); i++ {
		if m := exampleMarker.FindStringSubmatch(lines[i]); m != nil {
			b := docBlock{name: m[1], line: i + 1}
			if _, dup := examples[b.name]; dup {
				t.Fatalf("PROTOCOL.md:%d: example %q marked twice", b.line, b.name)
			}
			j := i + 1
			for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
				j++
			}
			if j >= len(lines) || !strings.HasPrefix(lines[j], "```") {
				t.Fatalf("PROTOCOL.md:%d: example %q is not followed by a fenced block", b.line, b.name)
			}
			b.lang = strings.TrimPrefix(lines[j], "```")
			for j++; j < len(lines) && lines[j] != "```"; j++ {
				b.body = append(b.body, lines[j])
			}
			if j >= len(lines) {
				t.Fatalf("PROTOCOL.md:%d: example %q: unterminated block", b.line, b.name)
			}
			examples[b.name] = b
			i = j
			continue
		}
		if m := tableMarker.FindStringSubmatch(lines[i]); m != nil {
			var rows [][]string
			j := i + 1
			for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
				j++
			}
			for ; j < len(lines) && strings.HasPrefix(lines[j], "|"); j++ {
				cells := strings.Split(strings.Trim(lines[j], "|"), "|")
				for k := range cells {
					cells[k] = strings.TrimSpace(cells[k])
				}
				rows = append(rows, cells)
			}
			if len(rows) < 3 {
				t.Fatalf("PROTOCOL.md:%d: table %q has no rows", i+1, m[1])
			}
			tables[m[1]] = rows[2:] // drop the header and separator rows
			i = j
		}
	}
	return examples, tables
}

// hexOf returns the bytes of a hex block: on each line, everything after
// '#' is an annotation; the rest, without spaces, is hex. It also checks
// that every "# length N" annotation matches the 4 bytes on its line.
func hexOf(t checkT, b docBlock) []byte {
	t.Helper()
	if b.lang != "hex" {
		t.Fatalf("PROTOCOL.md:%d: example %q is a %q block, want hex", b.line, b.name, b.lang)
	}
	var out []byte
	for i, l := range b.body {
		code, note, _ := strings.Cut(l, "#")
		digits := strings.Join(strings.Fields(code), "")
		v, err := hex.DecodeString(digits)
		if err != nil {
			t.Fatalf("PROTOCOL.md:%d: example %q line %d: %v", b.line, b.name, i+1, err)
		}
		if m := lengthNote.FindStringSubmatch("#" + note); m != nil {
			want, _ := strconv.Atoi(m[1])
			if len(v) != 4 || int(binary.LittleEndian.Uint32(v)) != want {
				t.Errorf("PROTOCOL.md:%d: example %q line %d: annotation says length %d, bytes are %x",
					b.line, b.name, i+1, want, v)
			}
		}
		out = append(out, v...)
	}
	if len(out) == 0 {
		t.Fatalf("PROTOCOL.md:%d: example %q is empty", b.line, b.name)
	}
	return out
}

// textOf returns the single line of a text block.
func textOf(t checkT, b docBlock) string {
	t.Helper()
	if b.lang != "text" || len(b.body) != 1 {
		t.Fatalf("PROTOCOL.md:%d: example %q must be a one-line text block", b.line, b.name)
	}
	return strings.TrimSpace(b.body[0])
}

// sameBytes fails unless the implementation produced the documented bytes.
func sameBytes(t checkT, what string, got, doc []byte) {
	t.Helper()
	if !bytes.Equal(got, doc) {
		t.Errorf("%s: the implementation encodes\n%s\nbut PROTOCOL.md documents\n%s", what, hex.Dump(got), hex.Dump(doc))
	}
}

// sameValue fails unless a decoded value is the documented one.
func sameValue(t checkT, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: decoded %#v, PROTOCOL.md documents %#v", what, got, want)
	}
}

type frame struct {
	flags   byte
	payload []byte
}

// readFrames decodes b with the implementation's frame reader.
func readFrames(t checkT, b []byte) []frame {
	t.Helper()
	r := wire.NewReader(bytes.NewReader(b), 0)
	defer r.Release()
	var out []frame
	for {
		flags, p, err := r.ReadFrame()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(out), err)
		}
		out = append(out, frame{flags, bytes.Clone(p)})
	}
}

func wantFrames(t checkT, fs []frame, flags ...byte) {
	t.Helper()
	if len(fs) != len(flags) {
		t.Fatalf("%d frames, PROTOCOL.md shows %d", len(fs), len(flags))
	}
	for i, f := range fs {
		if f.flags != flags[i] {
			t.Fatalf("frame %d has flags %s, want %s", i, wire.FlagString(f.flags), wire.FlagString(flags[i]))
		}
	}
}

// Encoders, as the client and server use them.

func headerFrame(t checkT, h wire.Header, asJSON bool) []byte {
	t.Helper()
	b, err := wire.AppendHeader(nil, &h, asJSON)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return b
}

func trailerFrame(t checkT, tr wire.Trailer, asJSON bool) []byte {
	t.Helper()
	b, err := wire.AppendTrailer(nil, &tr, asJSON)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return b
}

// dataFrame encodes msg the way Send does: straight into the frame buffer.
func dataFrame(t checkT, c codec.Codec, msg any) []byte {
	t.Helper()
	b, off := wire.BeginFrame(nil, 0)
	b, err := c.AppendMarshal(b, msg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	wire.EndFrame(b, off)
	return b
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// Decoders.

func checkHeader(t checkT, f frame, asJSON bool, want wire.Header) {
	t.Helper()
	if f.flags != wire.FlagHeader {
		t.Fatalf("header frame flags %s", wire.FlagString(f.flags))
	}
	if wire.IsJSON(f.payload) != asJSON {
		t.Fatalf("IsJSON = %v, want %v", !asJSON, asJSON)
	}
	got, err := wire.DecodeHeader(f.payload)
	if err != nil {
		t.Fatalf("decoding the documented header: %v", err)
	}
	sameValue(t, "header", *got, want)
}

func checkTrailer(t checkT, f frame, asJSON bool, want wire.Trailer) {
	t.Helper()
	if f.flags != wire.FlagTrailer {
		t.Fatalf("trailer frame flags %s", wire.FlagString(f.flags))
	}
	if wire.IsJSON(f.payload) != asJSON {
		t.Fatalf("IsJSON = %v, want %v", !asJSON, asJSON)
	}
	got, err := wire.DecodeTrailer(f.payload)
	if err != nil {
		t.Fatalf("decoding the documented trailer: %v", err)
	}
	sameValue(t, "trailer", *got, want)
	if code := status.CodeOf(got.Err()); uint32(code) != want.Code {
		t.Errorf("trailer status %v, want code %d", code, want.Code)
	}
}

// checkResponseHeader checks the documented response HEADER carrying
// {"x-served-by": "edge-1"}: the encoder writes it, the decoder reads the
// metadata back, and the call header decoder (which requires service and
// method) is not what reads it.
func checkResponseHeader(t checkT, doc []byte, asJSON bool) {
	t.Helper()
	md := map[string]string{"x-served-by": "edge-1"}
	b, err := wire.AppendResponseHeader(nil, md, asJSON)
	if err != nil {
		t.Fatalf("%v", err)
	}
	sameBytes(t, "response header", b, doc)
	fs := readFrames(t, doc)
	wantFrames(t, fs, wire.FlagHeader)
	if wire.IsJSON(fs[0].payload) != asJSON {
		t.Fatalf("IsJSON = %v, want %v", !asJSON, asJSON)
	}
	got, err := wire.DecodeResponseHeader(fs[0].payload)
	if err != nil {
		t.Fatalf("decoding the documented response header: %v", err)
	}
	sameValue(t, "response metadata", got, md)
	if _, err := wire.DecodeHeader(fs[0].payload); status.CodeOf(err) != status.InvalidArgument {
		t.Errorf("a response header decoded as a call header: %v", err)
	}
}

// quotaInfo is the typed detail of the trailer-details examples.
type quotaInfo struct {
	Limit int `cbor:"limit" json:"limit"`
}

func (quotaInfo) WireType() string { return "mission/QuotaInfo" }

// checkDetailsTrailer checks a documented trailer carrying the typed detail
// quotaInfo{Limit: 1000} (sections 7.3 and 7.4): WithDetails produces the
// documented detail, the trailer encoder the documented bytes, and the
// decoded trailer's error gives the detail back typed.
func checkDetailsTrailer(t checkT, doc []byte, asJSON bool) {
	t.Helper()
	err, derr := status.New(100, "quota exceeded").WithDetails(&quotaInfo{Limit: 1000})
	if derr != nil {
		t.Fatalf("%v", derr)
	}
	detail := status.Detail{Type: "mission/QuotaInfo", Value: cborBytes(t, map[string]int{"limit": 1000})}
	want := wire.Trailer{Code: 100, Message: "quota exceeded", Details: []status.Detail{detail}}
	sameBytes(t, "trailer", trailerFrame(t, wire.TrailerFor(err), asJSON), doc)
	fs := readFrames(t, doc)
	wantFrames(t, fs, wire.FlagTrailer)
	checkTrailer(t, fs[0], asJSON, want)
	got, _ := wire.DecodeTrailer(fs[0].payload)
	q, ok := status.AsDetail[quotaInfo](got.Err())
	if !ok || q.Limit != 1000 {
		t.Errorf("AsDetail on the documented trailer: %+v, %v", q, ok)
	}
	if !status.Code(want.Code).IsApplication() {
		t.Error("code 100 is not an application code")
	}
}

// checkData decodes a data frame with codec c into a new value of want's
// type and compares.
func checkData(t checkT, f frame, c codec.Codec, want any) {
	t.Helper()
	if f.flags&(wire.FlagHeader|wire.FlagTrailer) != 0 {
		t.Fatalf("data frame flags %s", wire.FlagString(f.flags))
	}
	data, err := wire.DataPayload(f.flags, f.payload, 0)
	if err != nil {
		t.Fatalf("%v", err)
	}
	got := reflect.New(reflect.TypeOf(want))
	if err := c.Unmarshal(data, got.Interface()); err != nil {
		t.Fatalf("decoding the documented message: %v", err)
	}
	sameValue(t, "message", got.Elem().Interface(), want)
}

// Message types of the examples (mirroring examples/missioncontrol/mission).

type statusRequest struct {
	AgentID string `cbor:"agent_id" json:"agent_id"`
}

type statusResponse struct {
	AgentID    string `cbor:"agent_id" json:"agent_id"`
	Status     string `cbor:"status" json:"status"`
	UptimeSecs int64  `cbor:"uptime_secs" json:"uptime_secs"`
}

type echoMsg struct {
	Text string `cbor:"text" json:"text"`
}

func (echoMsg) WireType() string { return "demo/Msg" }

var (
	getStatusHeader = wire.Header{Service: "MissionControl", Method: "getStatus", Version: 1, CallID: 1, Timeout: 5000}
	notFound        = wire.Trailer{Code: uint32(status.NotFound), Message: "unknown method MissionControl.getStats"}
	bigMessage      = map[string]string{"message": strings.Repeat("disk full; ", 28)}
)

func cborBytes(t checkT, v any) []byte {
	t.Helper()
	b, err := cborcodec.Marshal(v)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return b
}

// echoContract is the contract of section 13.4.
func echoContract(t checkT) *contract.Contract {
	t.Helper()
	svc := handler.NewService("Echo", 1).Handle("say",
		handler.Unary(func(_ context.Context, m *echoMsg) (*echoMsg, error) { return m, nil }),
		handler.Requires(trust.Cap("demo.say")))
	c, err := contract.Build([]*handler.Service{svc})
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

// vectorAddr is the address of section 16.3.
func vectorAddr() discovery.EndpointAddr {
	var id trust.EndpointID
	for i := range id {
		id[i] = byte(i)
	}
	return discovery.EndpointAddr{
		ID:     id,
		Relay:  "https://relay.example:3340",
		Direct: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4433"), netip.MustParseAddrPort("[::1]:4433")},
	}
}

// base58Decode is an independent (big.Int) decoder of the Bitcoin alphabet,
// so the vector is checked against the text of section 16.2, not against
// the package's own code.
func base58Decode(t checkT, s string) []byte {
	t.Helper()
	const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
	n := new(big.Int)
	for _, r := range s {
		d := strings.IndexRune(alphabet, r)
		if d < 0 {
			t.Fatalf("%q is not a base58 character", r)
		}
		n.Mul(n, big.NewInt(58))
		n.Add(n, big.NewInt(int64(d)))
	}
	zeros := len(s) - len(strings.TrimLeft(s, "1"))
	return append(make([]byte, zeros), n.Bytes()...)
}

// frameErr reads one frame from b and returns the error.
func frameErr(b []byte) error {
	r := wire.NewReader(bytes.NewReader(b), 0)
	defer r.Release()
	_, _, err := r.ReadFrame()
	return err
}

func wantCode(t checkT, err error, code status.Code) {
	t.Helper()
	var se *status.Error
	if !errors.As(err, &se) || se.Code() != code {
		t.Fatalf("got %v, PROTOCOL.md says %v", err, code)
	}
}

// docChecks holds one check per example of PROTOCOL.md, by name.
var docChecks = map[string]func(t checkT, ex map[string]docBlock){
	"frame-layout": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["frame-layout"])
		sameBytes(t, "frame", wire.AppendFrame(nil, 0, []byte{0xa1, 0x61, 0x6e}), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, 0)
		sameValue(t, "payload", fs[0].payload, []byte{0xa1, 0x61, 0x6e})
	},
	"unary-request-header": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["unary-request-header"])
		sameBytes(t, "header", headerFrame(t, getStatusHeader, false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader)
		checkHeader(t, fs[0], false, getStatusHeader)
		// Section 5.2: any key order and non-shortest heads decode the same.
		loose := []byte{0xa5}
		loose = append(append(loose, 0x67), "service"...)
		loose = append(append(loose, 0x6e), "MissionControl"...)
		loose = append(append(loose, 0x67), "version"...)
		loose = append(loose, 0x1a, 0, 0, 0, 1)
		loose = append(append(loose, 0x66), "method"...)
		loose = append(append(loose, 0x69), "getStatus"...)
		loose = append(append(loose, 0x67), "timeout"...)
		loose = append(loose, 0x1b, 0, 0, 0, 0, 0, 0, 0x13, 0x88)
		loose = append(append(loose, 0x66), "callId"...)
		loose = append(loose, 0x18, 0x01)
		checkHeader(t, frame{wire.FlagHeader, loose}, false, getStatusHeader)
	},
	"unary-request-header-json": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["unary-request-header-json"])
		sameBytes(t, "JSON header", headerFrame(t, getStatusHeader, true), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader)
		checkHeader(t, fs[0], true, getStatusHeader)
	},
	"header-metadata": func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: "MissionControl", Method: "tailLogs", CallID: 3, Metadata: map[string]string{"x-request-id": "r-42"}}
		doc := hexOf(t, ex["header-metadata"])
		sameBytes(t, "header", headerFrame(t, h, false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader)
		checkHeader(t, fs[0], false, h)
	},
	"response-header": func(t checkT, ex map[string]docBlock) {
		checkResponseHeader(t, hexOf(t, ex["response-header"]), false)
	},
	"response-header-json": func(t checkT, ex map[string]docBlock) {
		checkResponseHeader(t, hexOf(t, ex["response-header-json"]), true)
	},
	"unary-request-data": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["unary-request-data"])
		sameBytes(t, "request", dataFrame(t, cborcodec.Codec{}, &statusRequest{AgentID: "edge-node-7"}), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, 0)
		checkData(t, fs[0], cborcodec.Codec{}, statusRequest{AgentID: "edge-node-7"})
		checkData(t, fs[0], cborcodec.Codec{}, map[string]any{"agent_id": "edge-node-7"})
	},
	"unary-response-data": func(t checkT, ex map[string]docBlock) {
		resp := statusResponse{AgentID: "edge-node-7", Status: "running", UptimeSecs: 3600}
		doc := hexOf(t, ex["unary-response-data"])
		sameBytes(t, "response", dataFrame(t, cborcodec.Codec{}, &resp), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, 0)
		checkData(t, fs[0], cborcodec.Codec{}, resp)
	},
	"json-mode-request": func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: "MissionControl", Method: "getStatus", SerializationMode: jsoncodec.Name}
		doc := hexOf(t, ex["json-mode-request"])
		sameBytes(t, "JSON request", cat(headerFrame(t, h, true), dataFrame(t, jsoncodec.Codec{}, &statusRequest{AgentID: "edge-node-7"})), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader, 0)
		checkHeader(t, fs[0], true, h)
		checkData(t, fs[1], jsoncodec.Codec{}, statusRequest{AgentID: "edge-node-7"})
	},
	"json-mode-response": func(t checkT, ex map[string]docBlock) {
		resp := statusResponse{AgentID: "edge-node-7", Status: "running", UptimeSecs: 3600}
		doc := hexOf(t, ex["json-mode-response"])
		sameBytes(t, "JSON response", cat(dataFrame(t, jsoncodec.Codec{}, &resp), trailerFrame(t, wire.TrailerFor(nil), true)), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, 0, wire.FlagTrailer)
		checkData(t, fs[0], jsoncodec.Codec{}, resp)
		checkTrailer(t, fs[1], true, wire.Trailer{})
	},
	"trailer-ok": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["trailer-ok"])
		sameBytes(t, "trailer", trailerFrame(t, wire.TrailerFor(nil), false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagTrailer)
		checkTrailer(t, fs[0], false, wire.Trailer{})
	},
	"trailer-not-found": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["trailer-not-found"])
		err := status.New(status.NotFound, "unknown method MissionControl.getStats")
		sameBytes(t, "trailer", trailerFrame(t, wire.TrailerFor(err), false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagTrailer)
		checkTrailer(t, fs[0], false, notFound)
	},
	"trailer-not-found-json": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["trailer-not-found-json"])
		sameBytes(t, "JSON trailer", trailerFrame(t, notFound, true), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagTrailer)
		checkTrailer(t, fs[0], true, notFound)
	},
	"trailer-draining": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["trailer-draining"])
		tr := wire.TrailerFor(wire.DrainingRefusal("server shutting down"))
		if !tr.Draining || !tr.NotProcessed || tr.Code != uint32(status.Unavailable) {
			t.Errorf("the draining refusal's trailer %+v", tr)
		}
		sameBytes(t, "trailer", trailerFrame(t, tr, false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagTrailer)
		checkTrailer(t, fs[0], false, tr)
		got, derr := wire.DecodeTrailer(fs[0].payload)
		if derr != nil || !status.IsNotProcessed(got.Err()) || !wire.IsDraining(got.Err()) {
			t.Errorf("decoded trailer %+v (err %v): the error is not marked not processed and draining", got, derr)
		}
		// What a handler can produce never carries the mark: the same
		// status built by hand, the decoded refusal passed on as is, or
		// the refusal wrapped.
		for _, err := range []error{
			status.New(status.Unavailable, "server shutting down").WithNotProcessed(),
			got.Err(),
			fmt.Errorf("passing on: %w", wire.DrainingRefusal("server shutting down")),
		} {
			if tr := wire.TrailerFor(err); tr.Draining {
				t.Errorf("TrailerFor(%v) is marked draining", err)
			}
		}
	},
	"trailer-metadata": func(t checkT, ex map[string]docBlock) {
		tr := wire.Trailer{Metadata: map[string]string{"cache": "miss", "server-timing": "db;dur=2.5"}}
		doc := hexOf(t, ex["trailer-metadata"])
		sameBytes(t, "trailer", trailerFrame(t, tr, false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagTrailer)
		checkTrailer(t, fs[0], false, tr)
	},
	"trailer-details": func(t checkT, ex map[string]docBlock) {
		checkDetailsTrailer(t, hexOf(t, ex["trailer-details"]), false)
	},
	"trailer-details-json": func(t checkT, ex map[string]docBlock) {
		checkDetailsTrailer(t, hexOf(t, ex["trailer-details-json"]), true)
	},
	"compressed-data-frame": func(t checkT, ex map[string]docBlock) {
		msg := cborBytes(t, bigMessage)
		if len(msg) != 320 {
			t.Fatalf("the message is %d bytes, PROTOCOL.md says 320", len(msg))
		}
		doc := hexOf(t, ex["compressed-data-frame"])
		sameBytes(t, "compressed frame", wire.AppendFrame(nil, wire.FlagCompressed, wire.Compress(msg)), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagCompressed)
		checkData(t, fs[0], cborcodec.Codec{}, bigMessage)
		// Section 4.4: the declared content size is checked before decoding.
		_, err := wire.Decompress(fs[0].payload, 319)
		wantCode(t, err, status.ResourceExhausted)
	},
	"contract-request": func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: wire.ControlService, Method: wire.MethodContract, CallID: 1}
		doc := hexOf(t, ex["contract-request"])
		sameBytes(t, "contract request", cat(headerFrame(t, h, false), dataFrame(t, cborcodec.Codec{}, struct{}{})), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader, 0)
		checkHeader(t, fs[0], false, h)
		checkData(t, fs[1], cborcodec.Codec{}, map[string]any{})
	},
	"reusable-request-header": func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: "MissionControl", Method: "getStatus", CallID: 9, Reuse: true}
		doc := hexOf(t, ex["reusable-request-header"])
		sameBytes(t, "reusable header", headerFrame(t, h, false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader)
		checkHeader(t, fs[0], false, h)
		// The JSON form and the general decoder agree.
		j := []byte(`{"service":"MissionControl","method":"getStatus","callId":9,"reuse":true}`)
		checkHeader(t, frame{wire.FlagHeader, j}, true, h)
		sameBytes(t, "JSON reusable header", headerFrame(t, h, true), wire.AppendFrame(nil, wire.FlagHeader, j))
		// reuse: false is the same as absent.
		f := append([]byte{0xa3, 0x65}, "reuse"...)
		f = append(append(append(f, 0xf4, 0x66), "method"...), 0x61, 'm')
		f = append(append(append(f, 0x67), "service"...), 0x61, 'S')
		checkHeader(t, frame{wire.FlagHeader, f}, false, wire.Header{Service: "S", Method: "m"})
	},
	"end-of-request": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["end-of-request"])
		sameBytes(t, "end-of-request", wire.EndOfRequest, doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagTrailer)
		if !wire.IsEndOfRequest(fs[0].flags, fs[0].payload) {
			t.Fatalf("IsEndOfRequest(%x) = false", doc)
		}
		// SkipRequests stops right after it, leaving the next call's bytes.
		next := headerFrame(t, wire.Header{Service: "S", Method: "m"}, false)
		big := wire.AppendFrame(nil, 0, make([]byte, 1<<20)) // over the reader's limit
		r := wire.NewReader(bytes.NewReader(cat(big, doc, next)), 1<<10)
		defer r.Release()
		if err := r.SkipRequests(); err != nil {
			t.Fatalf("SkipRequests: %v", err)
		}
		if r.Buffered() > len(next) {
			t.Fatalf("%d bytes left after the end-of-request frame, the next HEADER has %d", r.Buffered(), len(next))
		}
		if _, p, err := r.ReadHeaderFrame(); err != nil || !bytes.Equal(p, next[5:]) {
			t.Fatalf("next HEADER after SkipRequests: %x, %v", p, err)
		}
	},
	"session-call-header": func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: "AgentSession", Method: "register", CallID: 2, SessionID: 1}
		doc := hexOf(t, ex["session-call-header"])
		sameBytes(t, "session header", headerFrame(t, h, false), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader)
		checkHeader(t, fs[0], false, h)
	},
	"end-session-request": func(t checkT, ex map[string]docBlock) {
		h := wire.Header{Service: wire.ControlService, Method: wire.MethodEndSession, CallID: 5, SessionID: 1}
		doc := hexOf(t, ex["end-session-request"])
		sameBytes(t, "endSession request", cat(headerFrame(t, h, false), dataFrame(t, cborcodec.Codec{}, struct{}{})), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, wire.FlagHeader, 0)
		checkHeader(t, fs[0], false, h)
		checkData(t, fs[1], cborcodec.Codec{}, map[string]any{})
	},
	"end-session-response": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["end-session-response"])
		sameBytes(t, "endSession response", cat(dataFrame(t, cborcodec.Codec{}, struct{}{}), trailerFrame(t, wire.TrailerFor(nil), false)), doc)
		fs := readFrames(t, doc)
		wantFrames(t, fs, 0, wire.FlagTrailer)
		checkData(t, fs[0], cborcodec.Codec{}, map[string]any{})
		checkTrailer(t, fs[1], false, wire.Trailer{})
	},
	"contract-echo": func(t checkT, ex map[string]docBlock) {
		c := echoContract(t)
		enc, err := c.Encode()
		if err != nil {
			t.Fatalf("%v", err)
		}
		doc := hexOf(t, ex["contract-echo"])
		sameBytes(t, "contract", enc, doc)
		got, err := contract.Decode(doc)
		if err != nil {
			t.Fatalf("decoding the documented contract: %v", err)
		}
		sameValue(t, "contract", got, c)
	},
	"contract-echo-id": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["contract-echo"])
		id := textOf(t, ex["contract-echo-id"])
		sum := sha256.Sum256(doc)
		if id != hex.EncodeToString(sum[:]) {
			t.Errorf("documented id %s is not the SHA-256 of the documented contract (%x)", id, sum)
		}
		if got := contract.ID(doc); got != id {
			t.Errorf("contract.ID = %s, PROTOCOL.md documents %s", got, id)
		}
	},
	"aster1-address-record": func(t checkT, ex map[string]docBlock) {
		rec := hexOf(t, ex["aster1-address-record"])
		text := textOf(t, ex["aster1-address"])
		// The record is the base58 payload of the documented address ...
		sameBytes(t, "address record", base58Decode(t, strings.TrimPrefix(text, discovery.AddressPrefix)), rec)
		// ... and ends with its checksum.
		sum := sha256.Sum256(rec[:len(rec)-4])
		sameBytes(t, "checksum", sum[:4], rec[len(rec)-4:])
		if rec[0] != discovery.AddressVersion {
			t.Errorf("version byte %#x, want %#x", rec[0], discovery.AddressVersion)
		}
	},
	"aster1-address": func(t checkT, ex map[string]docBlock) {
		text := textOf(t, ex["aster1-address"])
		a := vectorAddr()
		if got := a.String(); got != text {
			t.Errorf("the implementation encodes\n%s\nPROTOCOL.md documents\n%s", got, text)
		}
		got, err := discovery.ParseAddress(text)
		if err != nil {
			t.Fatalf("parsing the documented address: %v", err)
		}
		sameValue(t, "address", got, a)
	},
	// Discovery records (22.2, 22.3): discovery/etcd and discovery/dns
	// check these blocks against their encoders and decoders; here, what
	// the wire package can check without linking them: the records name the
	// test vector's endpoint and addresses.
	"etcd-entry-key": func(t checkT, ex map[string]docBlock) {
		key := textOf(t, ex["etcd-entry-key"])
		if want := "/aster/fleet/MissionControl/" + vectorAddr().ID.String(); key != want {
			t.Errorf("documented key %s, want %s", key, want)
		}
	},
	"etcd-entry-value": func(t checkT, ex map[string]docBlock) {
		var v struct {
			Addr       string `json:"addr"`
			Credential []byte `json:"credential"`
		}
		if err := stdjson.Unmarshal([]byte(textOf(t, ex["etcd-entry-value"])), &v); err != nil {
			t.Fatalf("documented value: %v", err)
		}
		a, err := discovery.ParseAddress(v.Addr)
		if err != nil {
			t.Fatalf("documented addr: %v", err)
		}
		sameValue(t, "addr", a, vectorAddr())
		sameBytes(t, "credential", v.Credential, []byte("cred"))
	},
	"dns-zone": func(t checkT, ex map[string]docBlock) {
		b := ex["dns-zone"]
		if b.lang != "text" {
			t.Fatalf("PROTOCOL.md:%d: example dns-zone must be a text block", b.line)
		}
		var addrs, ids int
		for _, l := range b.body {
			if _, rest, ok := strings.Cut(l, `"addr=`); ok {
				a, err := discovery.ParseAddress(strings.TrimSuffix(rest, `"`))
				if err != nil {
					t.Errorf("zone line %q: %v", l, err)
				} else if want := netip.MustParseAddrPort("10.1.0.18:7000"); len(a.Direct) != 1 || a.Direct[0] != want {
					t.Errorf("zone line %q: direct addresses %v, want [%v] as the text says", l, a.Direct, want)
				}
				addrs++
			}
			if _, rest, ok := strings.Cut(l, `"id=`); ok {
				if _, err := trust.ParseEndpointID(strings.TrimSuffix(rest, `"`)); err != nil {
					t.Errorf("zone line %q: %v", l, err)
				}
				ids++
			}
		}
		if addrs != 1 || ids != 2 {
			t.Errorf("the zone has %d addr= and %d id= records; the text describes 1 and 2", addrs, ids)
		}
	},
	"bad-zero-length": func(t checkT, ex map[string]docBlock) {
		wantCode(t, frameErr(hexOf(t, ex["bad-zero-length"])), status.InvalidArgument)
	},
	"bad-reserved-flag": func(t checkT, ex map[string]docBlock) {
		wantCode(t, frameErr(hexOf(t, ex["bad-reserved-flag"])), status.InvalidArgument)
	},
	"bad-header-and-trailer": func(t checkT, ex map[string]docBlock) {
		wantCode(t, frameErr(hexOf(t, ex["bad-header-and-trailer"])), status.InvalidArgument)
	},
	"bad-oversized": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["bad-oversized"])
		if n := binary.LittleEndian.Uint32(doc); n != wire.DefaultMaxFrameSize+1 {
			t.Errorf("length %d, want the 16 MiB default limit + 1", n)
		}
		wantCode(t, frameErr(doc), status.ResourceExhausted)
	},
	"bad-oversized-header": func(t checkT, ex map[string]docBlock) {
		doc := hexOf(t, ex["bad-oversized-header"])
		if n := binary.LittleEndian.Uint32(doc); n != wire.MaxHeaderSize+2 {
			t.Errorf("length %d, want a payload of 64 KiB + 1", n)
		}
		wantCode(t, frameErr(doc), status.ResourceExhausted)
	},
	"bad-truncated": func(t checkT, ex map[string]docBlock) {
		wantCode(t, frameErr(hexOf(t, ex["bad-truncated"])), status.InvalidArgument)
	},
}

// TestProtocolDocExamples checks every byte example of PROTOCOL.md.
func TestProtocolDocExamples(t *testing.T) {
	ex, _ := parseDoc(t)
	for name, b := range ex {
		if docChecks[name] == nil {
			t.Errorf("PROTOCOL.md:%d: example %q has no check in %s", b.line, name, "protocol_doc_test.go")
		}
	}
	for name, check := range docChecks {
		t.Run(name, func(t *testing.T) {
			if _, ok := ex[name]; !ok {
				t.Fatalf("PROTOCOL.md has no example %q", name)
			}
			check(t, ex)
		})
	}
}

// TestProtocolDocTables checks the code tables of PROTOCOL.md against the
// constants of the implementation.
func TestProtocolDocTables(t *testing.T) {
	_, tables := parseDoc(t)
	parseNum := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 0, 32)
		if err != nil {
			t.Fatalf("table cell %q: %v", s, err)
		}
		return n
	}

	t.Run("status-codes", func(t *testing.T) {
		rows := tables["status-codes"]
		if len(rows) != 17 {
			t.Fatalf("%d status codes documented, want 17 (0-16)", len(rows))
		}
		for i, r := range rows {
			if n := parseNum(r[0]); n != uint64(i) || status.Code(n).String() != r[1] {
				t.Errorf("row %d: %s %s, implementation: %d %v", i, r[0], r[1], i, status.Code(i))
			}
		}
		if status.FirstApplicationCode != 100 {
			t.Errorf("application codes start at %d, PROTOCOL.md says 100", status.FirstApplicationCode)
		}
	})

	t.Run("stream-codes", func(t *testing.T) {
		want := map[string]transport.StreamErrorCode{
			"NO_ERROR": transport.CodeNoError, "CANCEL": transport.CodeCancel, "INTERNAL": transport.CodeInternal,
			"PROTOCOL": transport.CodeProtocol, "DEADLINE": transport.CodeDeadline,
		}
		rows := tables["stream-codes"]
		if len(rows) != len(want) {
			t.Fatalf("%d stream codes documented, the implementation has %d", len(rows), len(want))
		}
		for _, r := range rows {
			c, ok := want[r[1]]
			if !ok || uint64(c) != parseNum(r[0]) {
				t.Errorf("documented %s %s does not match the implementation", r[0], r[1])
			}
		}
	})

	t.Run("conn-codes", func(t *testing.T) {
		want := map[string]transport.ConnErrorCode{
			"NO_ERROR": transport.ConnNoError, "PROTOCOL_ERROR": transport.ConnProtocolError,
			"REFUSED": transport.ConnRefused, "SHUTDOWN": transport.ConnShutdown,
			"DENIED": transport.ConnDenied,
		}
		rows := tables["conn-codes"]
		if len(rows) != len(want) {
			t.Fatalf("%d connection codes documented, the implementation has %d", len(rows), len(want))
		}
		for _, r := range rows {
			c, ok := want[r[1]]
			if !ok || uint64(c) != parseNum(r[0]) {
				t.Errorf("documented %s %s does not match the implementation", r[0], r[1])
			}
		}
	})
}

// TestProtocolDocConstants checks numbers PROTOCOL.md states in prose.
func TestProtocolDocConstants(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"flag COMPRESSED", uint64(wire.FlagCompressed), 0x01},
		{"flag TRAILER", uint64(wire.FlagTrailer), 0x02},
		{"flag HEADER", uint64(wire.FlagHeader), 0x04},
		{"default max frame size", wire.DefaultMaxFrameSize, 16 << 20},
		{"max header/trailer payload", wire.MaxHeaderSize, 64 << 10},
		{"max name length", wire.MaxNameLen, 128},
		{"max metadata pairs", wire.MaxMetadataPairs, 64},
		{"max metadata key/value", wire.MaxMetadataLen, 8192},
		{"max direct addresses", discovery.MaxDirectAddrs, 15},
		{"max relay URL", discovery.MaxRelayLen, 255},
	} {
		if c.got != c.want {
			t.Errorf("%s: implementation %d, PROTOCOL.md %d", c.name, c.got, c.want)
		}
	}
	if transport.ALPN != "aster/1" || wire.ControlService != "_aster" {
		t.Errorf("ALPN %q, control service %q", transport.ALPN, wire.ControlService)
	}
	if !strings.Contains(readDocText(t), "ALPN (RFC 7301): both sides MUST offer exactly the protocol id `"+transport.ALPN+"`") {
		t.Error("PROTOCOL.md does not state the ALPN id the implementation uses")
	}
}

func readDocText(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(protocolDoc)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return string(b)
}

// TestProtocolDocHeaderRules checks decoder rules of sections 5.2 and 5.3
// that the examples do not show.
func TestProtocolDocHeaderRules(t *testing.T) {
	text := func(s string) []byte { return append([]byte{0x60 | byte(len(s))}, s...) }
	hdr := func(service []byte) []byte {
		return cat([]byte{0xa2}, text("method"), text("m"), text("service"), service)
	}
	// Valid UTF-8 beyond ASCII is fine; invalid UTF-8 is rejected, by the
	// fast decoder as by the general one.
	if h, err := wire.DecodeHeader(hdr(text("Café"))); err != nil || h.Service != "Café" {
		t.Fatalf("UTF-8 service: %+v %v", h, err)
	}
	_, err := wire.DecodeHeader(hdr([]byte{0x62, 'S', 0xff}))
	wantCode(t, err, status.InvalidArgument)
	_, err = wire.DecodeTrailer(cat([]byte{0xa2}, text("code"), []byte{1}, text("message"), []byte{0x61, 0xff}))
	wantCode(t, err, status.Internal)

	for name, in := range map[string][]byte{
		"duplicate key":        cat([]byte{0xa3}, text("method"), text("m"), text("service"), text("S"), text("method"), text("n")),
		"trailing bytes":       append(hdr(text("S")), 0x00),
		"negative timeout":     cat([]byte{0xa3}, text("method"), text("m"), text("service"), text("S"), text("timeout"), []byte{0x20}),
		"float version":        cat([]byte{0xa3}, text("method"), text("m"), text("service"), text("S"), text("version"), []byte{0xf9, 0x3c, 0x00}),
		"version over 2^32-1":  cat([]byte{0xa3}, text("method"), text("m"), text("service"), text("S"), text("version"), []byte{0x1b, 0, 0, 0, 1, 0, 0, 0, 0}),
		"byte string service":  hdr([]byte{0x41, 'S'}),
		"no service":           cat([]byte{0xa1}, text("method"), text("m")),
		"JSON after a space":   []byte(` {"service":"S","method":"m"}`),
		"JSON float version":   []byte(`{"service":"S","method":"m","version":1.0}`),
		"JSON trailing data":   []byte(`{"service":"S","method":"m"} x`),
		"empty metadata key":   []byte(`{"service":"S","method":"m","metadata":{"":"v"}}`),
		"name over 128 bytes":  []byte(`{"service":"` + strings.Repeat("s", 129) + `","method":"m"}`),
		"empty header payload": {},
	} {
		if _, err := wire.DecodeHeader(in); status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("%s: got %v, PROTOCOL.md says INVALID_ARGUMENT", name, err)
		}
	}
	// Unknown keys are ignored; null means the default; trailing JSON
	// whitespace is allowed.
	for name, in := range map[string][]byte{
		"unknown CBOR key":  cat([]byte{0xa3}, text("method"), text("m"), text("service"), text("S"), text("future"), []byte{0x01}),
		"null metadata":     cat([]byte{0xa3}, text("method"), text("m"), text("service"), text("S"), text("metadata"), []byte{0xf6}),
		"unknown JSON key":  []byte(`{"service":"S","method":"m","future":true}`),
		"JSON trailing \\n": []byte("{\"service\":\"S\",\"method\":\"m\"}\n"),
	} {
		if h, err := wire.DecodeHeader(in); err != nil || h.Service != "S" || h.Method != "m" {
			t.Errorf("%s: got %+v %v", name, h, err)
		}
	}
}

// TestProtocolDocDetectsDrift proves the example check is not vacuous: a
// copy of PROTOCOL.md with one byte of one example changed must fail it.
func TestProtocolDocDetectsDrift(t *testing.T) {
	ex, _ := parseDoc(t)
	for _, name := range []string{"unary-request-header", "trailer-not-found", "contract-echo"} {
		b := ex[name]
		// Flip the last hex digit of the first line that has payload bytes
		// after the frame prefix.
		altered := b
		altered.body = append([]string(nil), b.body...)
		line := len(altered.body) - 1
		code, note, _ := strings.Cut(altered.body[line], "#")
		code = strings.TrimRight(code, " ")
		last := code[len(code)-1]
		repl := byte('0')
		if last == '0' {
			repl = '1'
		}
		altered.body[line] = code[:len(code)-1] + string(repl) + " #" + note
		mod := map[string]docBlock{}
		for k, v := range ex {
			mod[k] = v
		}
		mod[name] = altered
		if fails(docChecks[name], ex) {
			t.Fatalf("example %q fails unaltered", name)
		}
		if !fails(docChecks[name], mod) {
			t.Errorf("changing one byte of example %q went unnoticed", name)
		}
	}
}

// checkT is the part of *testing.T the checks use, so that
// TestProtocolDocDetectsDrift can run them against a recorder.
type checkT interface {
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Error(args ...any)
}

// recorder is a checkT that records failures; Fatalf stops the check.
type recorder struct{ failed bool }

type stopCheck struct{}

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Error(...any)          { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true; panic(stopCheck{}) }

// fails reports whether check fails on ex.
func fails(check func(checkT, map[string]docBlock), ex map[string]docBlock) (failed bool) {
	r := &recorder{}
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(stopCheck); !ok {
				panic(v)
			}
		}
		failed = r.failed
	}()
	check(r, ex)
	return r.failed
}
