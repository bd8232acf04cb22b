package wire

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/aster-go/aster/status"
)

var errStall = errors.New("stalled")

// stalled returns a source that yields b, then fails with errStall, as a
// stream whose sender stopped (and was then reset) would.
func stalled(b []byte) io.Reader {
	return io.MultiReader(bytes.NewReader(b), iotest.ErrReader(errStall))
}

// A length prefix alone must not make the reader allocate what it claims:
// only bytes that arrived take memory.
func TestClaimedLengthReservesNothing(t *testing.T) {
	for _, sent := range []int{0, 1, 100 << 10} {
		in := []byte{0x00, 0x00, 0x00, 0x01, 0x00} // a 16 MiB DATA frame
		in = append(in, bytes.Repeat([]byte{7}, sent)...)
		r := NewReader(stalled(in), 0)
		_, _, err := r.ReadFrame()
		if !errors.Is(err, errStall) {
			t.Fatalf("sent %d: err %v, want the source's error", sent, err)
		}
		if limit := 2*sent + growChunk; cap(r.buf) > limit {
			t.Errorf("sent %d payload bytes of a claimed 16 MiB: buffer holds %d bytes, want at most %d", sent, cap(r.buf), limit)
		}
		r.Release()
	}
}

// Frames larger than the bufio buffer arrive intact however the source cuts
// them, and the buffer is reused for the next frame.
func TestLargeFrameGrows(t *testing.T) {
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(i * 7)
	}
	in := AppendFrame(nil, 0, big)
	in = AppendFrame(in, 0, big[:100<<10])
	for name, src := range map[string]io.Reader{
		"whole": bytes.NewReader(in),
		"half":  iotest.HalfReader(bytes.NewReader(in)),
		"data":  iotest.DataErrReader(bytes.NewReader(in)),
	} {
		r := NewReader(src, 0)
		_, p, err := r.ReadFrame()
		if err != nil || !bytes.Equal(p, big) {
			t.Fatalf("%s: first frame: %d bytes, err %v", name, len(p), err)
		}
		_, p, err = r.ReadFrame()
		if err != nil || !bytes.Equal(p, big[:100<<10]) {
			t.Fatalf("%s: second frame: %d bytes, err %v", name, len(p), err)
		}
		if _, _, err := r.ReadFrame(); err != io.EOF {
			t.Fatalf("%s: end: %v", name, err)
		}
		r.Release()
	}
	// A FIN inside a large frame is still a truncated frame.
	r := NewReader(bytes.NewReader(in[:1<<20]), 0)
	defer r.Release()
	if _, _, err := r.ReadFrame(); err != ErrTruncated {
		t.Fatalf("truncated large frame: %v", err)
	}
}

// The first frame of a call is checked to be a HEADER from its prefix alone,
// so a DATA frame claiming 16 MiB is refused without waiting for its payload.
func TestReadHeaderFrame(t *testing.T) {
	r := NewReader(stalled([]byte{0x00, 0x00, 0x00, 0x01, 0x00}), 0)
	defer r.Release()
	_, _, err := r.ReadHeaderFrame()
	if err != ErrNotHeader || status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("DATA prefix as first frame: %v, want ErrNotHeader", err)
	}
	hdr := AppendFrame(nil, FlagHeader, []byte{0xa0})
	r.Reset(stalled(hdr), 0)
	if f, p, err := r.ReadHeaderFrame(); err != nil || f != FlagHeader || !bytes.Equal(p, []byte{0xa0}) {
		t.Fatalf("header: %x %x %v", f, p, err)
	}
	// Framing errors keep their order (PROTOCOL.md 4.3): an oversized
	// HEADER is RESOURCE_EXHAUSTED, as in ReadFrame.
	r.Reset(stalled([]byte{0x02, 0x00, 0x01, 0x00, FlagHeader}), 0)
	if _, _, err := r.ReadHeaderFrame(); status.CodeOf(err) != status.ResourceExhausted {
		t.Fatalf("oversized header: %v", err)
	}
}
