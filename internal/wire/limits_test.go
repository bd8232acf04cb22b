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
	for _, sent := range []int{0, 1, 64 << 10, 100 << 10} {
		in := []byte{0x00, 0x00, 0x00, 0x01, 0x00} // a 16 MiB DATA frame
		in = append(in, bytes.Repeat([]byte{7}, sent)...)
		r := NewReader(stalled(in), 0)
		_, _, err := r.ReadFrame()
		if !errors.Is(err, errStall) {
			t.Fatalf("sent %d: err %v, want the source's error", sent, err)
		}
		if limit := max(minBuf, 2*(sent+prefixLen)); cap(r.buf) > limit {
			t.Errorf("sent %d payload bytes of a claimed 16 MiB: buffer holds %d bytes, want at most %d", sent, cap(r.buf), limit)
		}
		// A buffer that the bytes received fill exactly does not grow
		// until more arrive.
		if sent == 64<<10 && cap(r.buf) != sent {
			t.Errorf("64 KiB received fill a %d-byte buffer, want 64 KiB", cap(r.buf))
		}
		r.Release()
	}
}

// Frames larger than the smallest buffer arrive intact however the source cuts
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

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

type frameResult struct {
	flags   byte
	payload string
	err     string
}

func readFrames(r *Reader, first bool) (out []frameResult, maxPayload int) {
	for range 100 {
		var (
			f   byte
			p   []byte
			err error
		)
		if first {
			f, p, err = r.ReadHeaderFrame()
			first = false
		} else {
			f, p, err = r.ReadFrame()
		}
		if err != nil {
			return append(out, frameResult{err: err.Error()}), maxPayload
		}
		maxPayload = max(maxPayload, len(p))
		out = append(out, frameResult{flags: f, payload: string(p)})
	}
	return out, maxPayload
}

// FuzzReadFrameChunked reads the same bytes, led by a frame larger than the
// read buffer, whole and in chunks of every size: the frames and errors
// must not depend on how the bytes arrive, and the frame buffer must stay
// within twice the largest frame received (or minBuf).
func FuzzReadFrameChunked(f *testing.F) {
	f.Add([]byte("hello"), uint16(0), uint8(0), false)
	f.Add(AppendFrame(AppendFrame(nil, FlagHeader, []byte{0xa0}), 0, []byte("x")), uint16(9000), uint8(200), true)
	f.Add([]byte{0x00, 0x00, 0x00, 0x01, 0x00}, uint16(100), uint8(3), false)
	f.Fuzz(func(t *testing.T, tail []byte, big uint16, chunk uint8, header bool) {
		seed := append([]byte{1}, tail...)
		payload := bytes.Repeat(seed, (16<<10+int(big)*4)/len(seed)+1)
		flags := byte(0)
		if header {
			flags = FlagHeader
			payload = payload[:min(len(payload), MaxHeaderSize)]
		}
		in := append(AppendFrame(nil, flags, payload), tail...)
		for _, first := range []bool{false, true} {
			whole := NewReader(bytes.NewReader(in), 0)
			want, _ := readFrames(whole, first)
			whole.Release()
			r := NewReader(&chunkReader{r: bytes.NewReader(in), n: int(chunk) + 1}, 0)
			got, maxPayload := readFrames(r, first)
			if limit := max(minBuf, 2*(max(maxPayload, len(tail))+prefixLen)); cap(r.buf) > limit {
				t.Fatalf("frame buffer of %d bytes for payloads of at most %d", cap(r.buf), maxPayload)
			}
			r.Release()
			if len(got) != len(want) {
				t.Fatalf("first=%v: %d results in chunks of %d, %d whole", first, len(got), int(chunk)+1, len(want))
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("first=%v: result %d differs in chunks of %d: %x %q vs %x %q", first, i, int(chunk)+1,
						got[i].flags, got[i].err, want[i].flags, want[i].err)
				}
			}
		}
	})
}

// stepReader returns its chunks one Read at a time, then errStall for
// every Read until more chunks are added.
type stepReader struct{ chunks [][]byte }

func (s *stepReader) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, errStall
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

// A reader that trims (as servers do) and waits for its next frame holds
// at most keepBuf bytes, after a
// small HEADER and after a large frame alike; the wait can fail (a read
// deadline) and be tried again without losing bytes; a frame as large as
// the previous one does not regrow step by step.
func TestWaitingReaderHoldsLittle(t *testing.T) {
	src := &stepReader{}
	r := NewReader(src, 0)
	r.TrimWhenIdle()
	defer r.Release()
	hdr := AppendFrame(nil, FlagHeader, bytes.Repeat([]byte{0xa0}, 100))
	src.chunks = append(src.chunks, hdr)
	if _, _, err := r.ReadHeaderFrame(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.ReadFrame(); !errors.Is(err, errStall) {
		t.Fatalf("waiting for a frame: %v", err)
	}
	if cap(r.buf) > minBuf {
		t.Fatalf("after a %d-byte HEADER, waiting holds a %d-byte buffer", len(hdr), cap(r.buf))
	}
	big := AppendFrame(nil, 0, bytes.Repeat([]byte{1}, 300<<10))
	src.chunks = append(src.chunks, big[:1000])
	if _, _, err := r.ReadFrame(); !errors.Is(err, errStall) {
		t.Fatalf("partial frame: %v", err)
	}
	src.chunks = append(src.chunks, big[1000:])
	if _, p, err := r.ReadFrame(); err != nil || len(p) != 300<<10 {
		t.Fatalf("frame after a failed read: %d bytes, %v", len(p), err)
	}
	if _, _, err := r.ReadFrame(); !errors.Is(err, errStall) {
		t.Fatalf("waiting for a frame: %v", err)
	}
	if cap(r.buf) > keepBuf {
		t.Fatalf("after a %d-byte frame, waiting holds a %d-byte buffer", len(big), cap(r.buf))
	}
	// The next frame of the same size: the first read takes the smallest
	// buffer, then the buffer grows once, to the frame's class.
	src.chunks = append(src.chunks, big[:minBuf], big[minBuf:])
	if _, p, err := r.ReadFrame(); err != nil || len(p) != 300<<10 {
		t.Fatalf("second large frame: %d bytes, %v", len(p), err)
	}
	if want := classSize(classFor(len(big))); cap(r.buf) != want {
		t.Fatalf("buffer of %d bytes for a %d-byte frame, want its class, %d", cap(r.buf), len(big), want)
	}
}
