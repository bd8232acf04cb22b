package wire

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/aster-go/aster/status"
)

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	f()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// noFCS compresses b as one zstd frame that does not record its content
// size (a streaming encoder's frame).
func noFCS(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A compressed DATA frame of a few hundred bytes that expands to the
// frame limit (16 MiB of zeros) is refused with RESOURCE_EXHAUSTED, and
// refusing it allocates in proportion to the bytes received, not to the
// limit; with or without its content size recorded. Before, each such
// frame cost the receiver 16 MiB: a stranger sending a few hundred bytes
// per call made each of a connection's 1,000 calls hold 16 MiB.
func TestDecompressionBombRefused(t *testing.T) {
	zeros := make([]byte, DefaultMaxFrameSize)
	_, _ = Decompress(Compress(zeros[:1<<20]), DefaultMaxFrameSize) // the decoder's own buffers, once
	for name, bomb := range map[string][]byte{"fcs": Compress(zeros), "no fcs": noFCS(t, zeros)} {
		var err error
		n := allocated(func() { _, err = Decompress(bomb, DefaultMaxFrameSize) })
		t.Logf("%s: %d compressed bytes claiming %d: %v, %d KiB allocated", name, len(bomb), len(zeros), err, n>>10)
		if status.CodeOf(err) != status.ResourceExhausted {
			t.Errorf("%s: a %d-byte payload that expands to %d bytes: %v, want RESOURCE_EXHAUSTED", name, len(bomb), len(zeros), err)
		}
		if limit := 2*DecompressLimit(len(bomb), DefaultMaxFrameSize) + 256<<10; n > limit {
			t.Errorf("%s: refusing a %d-byte payload allocated %d KiB, want at most %d KiB", name, len(bomb), n>>10, limit>>10)
		}
	}
}

// A lower frame limit is enforced while decompressing: output beyond it
// is never produced (before, decompression ran up to 16 MiB whatever the
// limit, then the result was checked).
func TestDecompressLowerLimit(t *testing.T) {
	const limit = 64 << 10
	msg := make([]byte, 1<<20)
	for i := range msg {
		msg[i] = byte(i * 7 / 5) // compresses well, not absurdly
	}
	_, _ = Decompress(Compress(msg), DefaultMaxFrameSize) // the decoder's own buffers, once
	for name, c := range map[string][]byte{"fcs": Compress(msg), "no fcs": noFCS(t, msg)} {
		var err error
		n := allocated(func() { _, err = Decompress(c, limit) })
		if status.CodeOf(err) != status.ResourceExhausted {
			t.Errorf("%s: %v, want RESOURCE_EXHAUSTED", name, err)
		}
		if n > 4*limit {
			t.Errorf("%s: refusing allocated %d KiB for a %d KiB limit", name, n>>10, limit>>10)
		}
	}
}

// Payloads that compress as real messages do decode, with or without
// their content size, up to the limit.
func TestDecompressOrdinary(t *testing.T) {
	msg := make([]byte, 4<<20)
	for i := range msg {
		msg[i] = byte(i*i>>7) ^ byte(i>>11)
	}
	for name, c := range map[string][]byte{"fcs": Compress(msg), "no fcs": noFCS(t, msg), "small": Compress([]byte("hello, hello, hello"))} {
		want := msg
		if name == "small" {
			want = []byte("hello, hello, hello")
		}
		got, err := Decompress(c, DefaultMaxFrameSize)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d compressed bytes (ratio %.0f): %d bytes, %v", name, len(c), float64(len(want))/float64(len(c)), len(got), err)
		}
	}
}
