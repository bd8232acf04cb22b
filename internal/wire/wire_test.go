package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"

	cborcodec "github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/status"
)

func readAll(t testing.TB, b []byte, max uint32) (frames [][]byte, flags []byte, err error) {
	r := NewReader(bytes.NewReader(b), max)
	defer r.Release()
	for {
		f, p, err := r.ReadFrame()
		if err != nil {
			return frames, flags, err
		}
		frames = append(frames, bytes.Clone(p))
		flags = append(flags, f)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var b []byte
	b = AppendFrame(b, FlagHeader, []byte("h"))
	b = AppendFrame(b, 0, []byte("hello"))
	big := bytes.Repeat([]byte{7}, 100_000) // larger than the bufio buffer
	b = AppendFrame(b, 0, big)
	b = AppendFrame(b, FlagTrailer, []byte{0xa0})
	frames, flags, err := readAll(t, b, 0)
	if err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if len(frames) != 4 || string(frames[1]) != "hello" || !bytes.Equal(frames[2], big) {
		t.Fatalf("frames: %d", len(frames))
	}
	if flags[0] != FlagHeader || flags[3] != FlagTrailer {
		t.Fatalf("flags %v", flags)
	}
}

func TestFrameBytes(t *testing.T) {
	// PROTOCOL.md's example: a data frame carrying the 3 bytes 0xa1 0x61 0x6e.
	got := hex.EncodeToString(AppendFrame(nil, 0, []byte{0xa1, 0x61, 0x6e}))
	if got != "0400000000a1616e" {
		t.Fatalf("got %s", got)
	}
	b, off := BeginFrame([]byte("x"), FlagTrailer)
	b = append(b, 0xa0)
	EndFrame(b, off)
	if hex.EncodeToString(b[1:]) != "0200000002a0" {
		t.Fatalf("BeginFrame/EndFrame: %x", b)
	}
}

func TestFrameErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		max  uint32
		code status.Code
	}{
		{"zero length", []byte{0, 0, 0, 0, 0}, 0, status.InvalidArgument},
		{"over limit", []byte{0x01, 0x00, 0x01, 0x00, 0}, 1000, status.ResourceExhausted},
		{"reserved flag", []byte{1, 0, 0, 0, 0x80}, 0, status.InvalidArgument},
		{"header+trailer", []byte{1, 0, 0, 0, 0x06}, 0, status.InvalidArgument},
		{"truncated prefix", []byte{5, 0, 0}, 0, status.InvalidArgument},
		{"truncated payload", []byte{5, 0, 0, 0, 0, 1}, 0, status.InvalidArgument},
		{"oversized header", AppendFrame(nil, FlagHeader, make([]byte, MaxHeaderSize+1)), 0, status.ResourceExhausted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(t, tc.in, tc.max)
			if status.CodeOf(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
		})
	}
}

func TestReaderOneByteAtATime(t *testing.T) {
	b := AppendFrame(AppendFrame(nil, 0, []byte("abc")), 0, bytes.Repeat([]byte("z"), 40_000))
	r := NewReader(iotest.OneByteReader(bytes.NewReader(b)), 0)
	defer r.Release()
	for i := range 2 {
		if _, _, err := r.ReadFrame(); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if _, _, err := r.ReadFrame(); err != io.EOF {
		t.Fatal(err)
	}
}

func TestReaderPassesTransportErrors(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(iotest.ErrReader(boom), 0)
	defer r.Release()
	if _, _, err := r.ReadFrame(); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := &Header{Service: "MissionControl", Method: "getStatus", Version: 1, CallID: 9, Timeout: 1500,
		SerializationMode: "json", Metadata: map[string]string{"traceparent": "00-ab"}, SessionID: 4}
	for _, asJSON := range []bool{false, true} {
		b, err := AppendHeader(nil, h, asJSON)
		if err != nil {
			t.Fatal(err)
		}
		frames, flags, _ := readAll(t, b, 0)
		if flags[0] != FlagHeader || IsJSON(frames[0]) != asJSON {
			t.Fatalf("json=%v flags=%v", asJSON, flags)
		}
		got, err := DecodeHeader(frames[0])
		if err != nil {
			t.Fatal(err)
		}
		if got.Service != h.Service || got.Method != h.Method || got.Timeout != 1500 || got.SessionID != 4 || got.Metadata["traceparent"] != "00-ab" {
			t.Fatalf("json=%v: %+v", asJSON, got)
		}
	}
}

func TestHeaderValidation(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen+1)
	many := map[string]string{}
	for i := range MaxMetadataPairs + 1 {
		many[string(rune('a'+i%26))+strings.Repeat("k", i)] = "v"
	}
	for _, h := range []Header{
		{Method: "m"}, {Service: "s"}, {Service: long, Method: "m"}, {Service: "s", Method: "m", Metadata: many},
		{Service: "s", Method: "m", Metadata: map[string]string{"": "v"}},
	} {
		if err := h.Validate(); status.CodeOf(err) != status.InvalidArgument {
			t.Errorf("%+v: got %v", h, err)
		}
	}
}

func TestTrailer(t *testing.T) {
	err := status.New(status.NotFound, "unknown method X.y").WithMetadata("retry-after", "1s")
	tr := TrailerFor(err)
	b, e := AppendTrailer(nil, &tr, false)
	if e != nil {
		t.Fatal(e)
	}
	frames, _, _ := readAll(t, b, 0)
	got, e := DecodeTrailer(frames[0])
	if e != nil {
		t.Fatal(e)
	}
	res := got.Err()
	var se *status.Error
	if !errors.As(res, &se) || se.Code() != status.NotFound || se.Message() != "unknown method X.y" || se.Metadata()["retry-after"] != "1s" {
		t.Fatalf("got %v", res)
	}
	ok := TrailerFor(nil)
	if ok.Err() != nil {
		t.Fatal("OK trailer has an error")
	}
	if _, e := DecodeTrailer([]byte{0xff}); status.CodeOf(e) != status.Internal {
		t.Fatalf("garbage trailer: %v", e)
	}
}

func TestCompression(t *testing.T) {
	payload := bytes.Repeat([]byte("metric "), 10_000)
	c := Compress(payload)
	if len(c) >= len(payload) {
		t.Fatalf("did not compress: %d", len(c))
	}
	out, err := DataPayload(FlagCompressed, c, 0)
	if err != nil || !bytes.Equal(out, payload) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := Decompress(c, 1000); status.CodeOf(err) != status.ResourceExhausted {
		t.Fatalf("bomb limit: %v", err)
	}
	if _, err := Decompress([]byte("nope"), 0); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("garbage: %v", err)
	}
}

// slowWriter records writes, blocking each until released, to check that the
// streaming Writer coalesces frames while a write is in progress.
type slowWriter struct {
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{}
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	w.writes = append(w.writes, bytes.Clone(p))
	w.mu.Unlock()
	return len(p), nil
}

func TestWriterCoalesces(t *testing.T) {
	sw := &slowWriter{gate: make(chan struct{})}
	var w Writer
	w.Reset(sw)
	w.SetStreaming()
	for i := range 100 {
		if err := w.Append(func(b []byte) ([]byte, error) { return AppendFrame(b, 0, []byte{byte(i)}), nil }); err != nil {
			t.Fatal(err)
		}
	}
	close(sw.gate)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Wait()
	var all []byte
	for _, b := range sw.writes {
		all = append(all, b...)
	}
	frames, _, err := readAll(t, all, 0)
	if err != io.EOF || len(frames) != 100 {
		t.Fatalf("%d frames, %v", len(frames), err)
	}
	for i, f := range frames {
		if f[0] != byte(i) {
			t.Fatalf("frame %d out of order", i)
		}
	}
	if len(sw.writes) > 3 {
		t.Fatalf("100 frames took %d writes; want them coalesced", len(sw.writes))
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("reset") }

func TestWriterReportsWriteError(t *testing.T) {
	var w Writer
	w.Reset(failWriter{})
	w.SetStreaming()
	_ = w.Append(func(b []byte) ([]byte, error) { return AppendFrame(b, 0, []byte{1}), nil })
	w.Wait()
	if err := w.Append(func(b []byte) ([]byte, error) { return AppendFrame(b, 0, []byte{1}), nil }); err == nil {
		t.Fatal("append after a failed write succeeded")
	}
	if err := w.Flush(); err == nil {
		t.Fatal("flush after a failed write succeeded")
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, 0, []byte("hello")))
	f.Add(AppendFrame(AppendFrame(nil, FlagHeader, []byte{0xa0}), FlagTrailer, []byte{0xa0}))
	f.Add([]byte{0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0})
	f.Add([]byte{3, 0, 0, 0, 0x80, 1})
	f.Add(AppendFrame(nil, FlagCompressed, Compress([]byte("zzzzzzzzzzzz"))))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 1<<16)
		defer r.Release()
		for i := 0; i < 1000; i++ {
			flags, p, err := r.ReadFrame()
			if err == io.EOF {
				return
			}
			if err != nil {
				var se *status.Error
				if !errors.As(err, &se) {
					t.Fatalf("error without a status code: %v", err)
				}
				return
			}
			if len(p) > 1<<16 {
				t.Fatalf("payload of %d bytes passed a 64 KiB limit", len(p))
			}
			if flags&FlagHeader != 0 {
				_, _ = DecodeHeader(p)
			}
			if flags&FlagTrailer != 0 {
				_, _ = DecodeTrailer(p)
			}
			if flags&FlagCompressed != 0 {
				_, _ = Decompress(p, 1<<16)
			}
		}
	})
}

func FuzzDecodeHeader(f *testing.F) {
	h, _ := AppendHeader(nil, &Header{Service: "S", Method: "m", Metadata: map[string]string{"k": "v"}, SessionID: 3}, false)
	f.Add(h[5:])
	f.Add([]byte(`{"service":"S","method":"m","timeout":100}`))
	f.Add([]byte(`{"service":1}`))
	f.Add([]byte{0xa1, 0x67})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := DecodeHeader(in)
		if err != nil {
			if status.CodeOf(err) != status.InvalidArgument {
				t.Fatalf("header error not INVALID_ARGUMENT: %v", err)
			}
			return
		}
		if h.Validate() != nil {
			t.Fatal("DecodeHeader returned an invalid header")
		}
		if _, err := AppendHeader(nil, h, false); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func TestFastCBORMatchesReflective(t *testing.T) {
	headers := []*Header{
		{Service: "S", Method: "m"},
		{Service: "MissionControl", Method: "getStatus", Version: 1, CallID: 1 << 40, Timeout: 30000,
			SerializationMode: "json", SessionID: 300, Metadata: map[string]string{"b": "1", "a": "2", "traceparent": "00-x", strings.Repeat("k", 30): "v"}},
		{Service: strings.Repeat("s", 100), Method: "m", Version: 0xffffffff, CallID: 23, Timeout: 24},
	}
	for _, h := range headers {
		fast := appendHeaderCBOR(nil, h)
		slow, err := cborcodec.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, slow) {
			t.Errorf("header %+v:\nfast %x\nslow %x", h, fast, slow)
		}
		var got Header
		if err := decodeHeaderCBOR(slow, &got); err != nil {
			t.Fatalf("fast decode: %v", err)
		}
		if got.Service != h.Service || got.CallID != h.CallID || len(got.Metadata) != len(h.Metadata) || got.Version != h.Version {
			t.Fatalf("fast decode: %+v", got)
		}
	}
	trailers := []*Trailer{
		{}, {Code: 5, Message: "unknown method"},
		{Code: 8, Message: "slow down", Metadata: map[string]string{"retry-after": "1s", "x": "y"},
			Details: []status.Detail{{Type: "aster/RetryInfo", Value: []byte{1, 2}}}},
	}
	for _, tr := range trailers {
		fast := appendTrailerCBOR(nil, tr)
		slow, err := cborcodec.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, slow) {
			t.Errorf("trailer %+v:\nfast %x\nslow %x", tr, fast, slow)
		}
		got, err := DecodeTrailer(slow)
		if err != nil || got.Code != tr.Code || got.Message != tr.Message || len(got.Details) != len(tr.Details) || len(got.Metadata) != len(tr.Metadata) {
			t.Fatalf("decode %+v: %+v %v", tr, got, err)
		}
	}
	// Encodings outside the fast subset still decode: indefinite-length map.
	indef := []byte{0xbf, 0x66, 'm', 'e', 't', 'h', 'o', 'd', 0x61, 'm', 0x67, 's', 'e', 'r', 'v', 'i', 'c', 'e', 0x61, 'S', 0xff}
	h, err := DecodeHeader(indef)
	if err != nil || h.Service != "S" || h.Method != "m" {
		t.Fatalf("indefinite map: %+v %v", h, err)
	}
	// Duplicate keys are rejected.
	dup := []byte{0xa2, 0x66, 'm', 'e', 't', 'h', 'o', 'd', 0x61, 'm', 0x66, 'm', 'e', 't', 'h', 'o', 'd', 0x61, 'n'}
	if _, err := DecodeHeader(dup); err == nil {
		t.Fatal("duplicate key accepted")
	}
}

// TestWriterReleaseReturnsWrittenBuffer checks that a Writer used once (as
// a client call's is) hands the buffer it wrote back to the pool, so the
// next Writer needs no new one. Before, Release returned the empty buffer
// left after a flush, and every call grew a fresh one.
func TestWriterReleaseReturnsWrittenBuffer(t *testing.T) {
	var w Writer
	payload := make([]byte, 200)
	fill := func(b []byte) ([]byte, error) { return AppendFrame(b, 0, payload), nil }
	run := func() {
		w = Writer{}
		w.Reset(io.Discard)
		if err := w.Append(fill); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		w.Release()
	}
	run() // the pool now holds a buffer that fits
	allocs := testing.AllocsPerRun(200, run)
	// Under the race detector sync.Pool drops a share of Puts on purpose,
	// so allow some; without the fix every run allocates at least once.
	if allocs >= 0.5 {
		t.Errorf("%.2f allocations per use of a fresh Writer, want about 0", allocs)
	}
}

// hookWriter calls onWrite (once) from inside Write, as if the sender
// appended while the flusher was writing.
type hookWriter struct {
	onWrite func(b []byte)
}

func (h *hookWriter) Write(b []byte) (int, error) {
	if f := h.onWrite; f != nil {
		h.onWrite = nil
		f(b)
	}
	return len(b), nil
}

// TestWriterNoAliasAfterLargeBuffer writes a buffer too large to keep as
// the spare, then checks that a frame appended while the next buffer is
// being written does not overwrite it. Before the fix the fill buffer and
// the spare shared one array after such a write, so the bytes being
// written were overwritten (and Release handed that array to the pool
// while keeping it).
func TestWriterNoAliasAfterLargeBuffer(t *testing.T) {
	hw := &hookWriter{}
	var w Writer
	w.Reset(hw)
	app := func(p []byte) {
		if err := w.Append(func(b []byte) ([]byte, error) { return AppendFrame(b, 0, p), nil }); err != nil {
			t.Fatal(err)
		}
	}
	flush := func() {
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	app([]byte("small"))
	flush()
	app(make([]byte, maxKeepCall+1))
	flush()
	app([]byte("first"))
	var got []byte
	hw.onWrite = func(b []byte) {
		app([]byte("XXXXX"))
		got = append([]byte(nil), b...)
	}
	flush()
	if want := AppendFrame(nil, 0, []byte("first")); !bytes.Equal(got, want) {
		t.Fatalf("written %q, want %q", got, want)
	}
	w.Release()
}

func TestReaderWaitEOF(t *testing.T) {
	two := AppendFrame(AppendFrame(nil, 0, []byte("a")), FlagTrailer, []byte{0xa0})
	r := NewReader(bytes.NewReader(two), DefaultMaxFrameSize)
	if _, _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if r.WaitEOF() {
		t.Fatal("WaitEOF true with a frame left")
	}
	if _, _, err := r.ReadFrame(); err != nil { // WaitEOF consumed nothing
		t.Fatal(err)
	}
	if !r.WaitEOF() {
		t.Fatal("WaitEOF false at the end")
	}
	r = NewReader(iotest.ErrReader(errors.New("reset")), DefaultMaxFrameSize)
	if r.WaitEOF() {
		t.Fatal("WaitEOF true after a read error")
	}
}

// TestWriterKeepsLargeBufferDuringCall checks that a buffer larger than the
// pool keeps, as a fast stream builds under backpressure, is reused for the
// next batch of the same call rather than regrown, and dropped at Release.
func TestWriterKeepsLargeBufferDuringCall(t *testing.T) {
	var w Writer
	w.Reset(io.Discard)
	big := make([]byte, (maxKeep+maxKeepCall)/2)
	if err := w.Append(func(b []byte) ([]byte, error) { return AppendFrame(b, 0, big), nil }); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if cap(w.spare) < len(big) {
		t.Fatalf("spare has capacity %d after writing %d bytes; want the written buffer kept", cap(w.spare), len(big))
	}
	allocs := testing.AllocsPerRun(20, func() {
		if err := w.Append(func(b []byte) ([]byte, error) { return AppendFrame(b, 0, big), nil }); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per 600 KiB batch, want 0 (buffers reused)", allocs)
	}
	w.Release()
	if cap(w.spare) > maxKeep || cap(w.buf) > maxKeep {
		t.Fatalf("after Release the Writer keeps %d and %d bytes; want at most %d", cap(w.spare), cap(w.buf), maxKeep)
	}
}

func TestResponseHeader(t *testing.T) {
	md := map[string]string{"x-served-by": "edge-1", "cursor": ""}
	for _, asJSON := range []bool{false, true} {
		b, err := AppendResponseHeader(nil, md, asJSON)
		if err != nil {
			t.Fatal(err)
		}
		frames, flags, err := readAll(t, b, 0)
		if err != io.EOF || len(frames) != 1 || flags[0] != FlagHeader {
			t.Fatalf("json=%v: frames %d flags %v err %v", asJSON, len(frames), flags, err)
		}
		got, err := DecodeResponseHeader(frames[0])
		if err != nil || len(got) != 2 || got["x-served-by"] != "edge-1" {
			t.Fatalf("json=%v: decoded %v, %v", asJSON, got, err)
		}
	}
	// Other keys are ignored; absent metadata is nil.
	full, _ := cborcodec.Marshal(map[string]any{"service": "S", "method": "m", "metadata": map[string]string{"k": "v"}})
	if got, err := DecodeResponseHeader(full); err != nil || got["k"] != "v" {
		t.Errorf("header with extra keys: %v, %v", got, err)
	}
	if got, err := DecodeResponseHeader([]byte{0xa0}); err != nil || got != nil {
		t.Errorf("empty map: %v, %v", got, err)
	}
	tooMany := map[string]string{}
	for i := range MaxMetadataPairs + 1 {
		tooMany[strings.Repeat("k", i+1)] = "v"
	}
	manyCBOR, _ := cborcodec.Marshal(map[string]any{"metadata": tooMany})
	emptyKey, _ := cborcodec.Marshal(map[string]any{"metadata": map[string]string{"": "v"}})
	longValue, _ := cborcodec.Marshal(map[string]any{"metadata": map[string]string{"k": strings.Repeat("v", MaxMetadataLen+1)}})
	for name, p := range map[string][]byte{
		"empty":          nil,
		"not a map":      {0x01},
		"trailing bytes": {0xa0, 0x00},
		"metadata text":  append([]byte{0xa1, 0x68}, "metadata\x61x"...),
		"bad json":       []byte(`{"metadata":`),
		"too many pairs": manyCBOR,
		"empty key":      emptyKey,
		"long value":     longValue,
	} {
		if _, err := DecodeResponseHeader(p); status.CodeOf(err) != status.Internal {
			t.Errorf("%s: err %v, want INTERNAL", name, err)
		}
	}
}

func TestWriteMessage(t *testing.T) {
	var out bytes.Buffer
	var w Writer
	w.Reset(&out)
	defer w.Release()
	n, err := w.WriteMessage(cborcodec.Codec{}, map[string]int{"n": 1}, 64)
	if err != nil || n != 4 {
		t.Fatalf("WriteMessage = %d, %v", n, err)
	}
	// Too large for the limit: nothing appended.
	if _, err := w.WriteMessage(cborcodec.Codec{}, strings.Repeat("x", 100), 64); status.CodeOf(err) != status.ResourceExhausted {
		t.Fatalf("oversized: %v", err)
	}
	// Does not encode: *EncodeError, nothing appended.
	_, err = w.WriteMessage(cborcodec.Codec{}, make(chan int), 64)
	var ee *EncodeError
	if !errors.As(err, &ee) || ee.Unwrap() == nil || !strings.Contains(err.Error(), "does not encode") {
		t.Fatalf("unencodable: %v", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	frames, flags, err := readAll(t, out.Bytes(), 0)
	if err != io.EOF || len(frames) != 1 || flags[0] != 0 || hex.EncodeToString(frames[0]) != "a1616e01" {
		t.Fatalf("written: %x %v %v", frames, flags, err)
	}
}
