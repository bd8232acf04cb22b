// Package wire encodes and decodes aster frames, call headers and trailers
// (PROTOCOL.md is the normative description). It is shared by the client and
// the server and knows nothing about handlers or transports beyond io.Reader
// and io.Writer.
//
// A frame is
//
//	u32 little-endian length | u8 flags | payload
//
// where length counts the flags byte and the payload, so it is at least 1.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/aster-go/aster/status"
)

// Frame flags.
const (
	FlagCompressed byte = 0x01 // payload is a zstd frame
	FlagTrailer    byte = 0x02 // payload is the call trailer
	FlagHeader     byte = 0x04 // payload is the call header
	knownFlags          = FlagCompressed | FlagTrailer | FlagHeader
)

// Limits.
const (
	// DefaultMaxFrameSize is the default cap on a frame's length field (and on
	// a decompressed payload): 16 MiB.
	DefaultMaxFrameSize = 16 << 20
	// MaxHeaderSize caps a header or trailer frame: 64 KiB.
	MaxHeaderSize = 64 << 10
	// prefixLen is the size of the length field plus the flags byte.
	prefixLen = 5
)

// Errors returned by the frame reader, each carrying a status code.
var (
	ErrZeroLength   = status.New(status.InvalidArgument, "wire: frame length 0")
	ErrUnknownFlags = status.New(status.InvalidArgument, "wire: reserved frame flag bits set")
	ErrBadFlags     = status.New(status.InvalidArgument, "wire: header and trailer flags both set")
	ErrTruncated    = status.New(status.InvalidArgument, "wire: truncated frame")
)

// FrameTooLarge returns the RESOURCE_EXHAUSTED error for a frame of n bytes
// over limit max.
func FrameTooLarge(n, max uint64) error {
	return status.Errorf(status.ResourceExhausted, "wire: frame of %d bytes exceeds limit of %d", n, max)
}

// Reader reads frames from a stream through a buffer. It is not safe for
// concurrent use.
//
// The buffer grows with the bytes received, never with the length a frame
// claims: it starts at minBuf bytes, taken when the first read is made,
// and only a buffer filled with received bytes grows, to the next pooled
// size class (twice its size, or at once to the frame's size if the
// previous frame of the stream was at least as large). With TrimWhenIdle,
// between frames a buffer larger than keepBuf with nothing left in it goes
// back to its pool, so a call waiting for its next frame holds at most
// keepBuf bytes.
type Reader struct {
	src io.Reader
	max uint32
	// buf[r:w] are the bytes received and not yet returned; bufp is the
	// buffer's pool slot (nil if it is not pooled).
	buf  []byte
	bufp *[]byte
	r, w int
	// err is a read error that came with bytes, returned once they are
	// used.
	err error
	// last is the payload length of the previous frame.
	last int
	// pending is the payload length (plus one) and flags of a frame whose
	// prefix was read and whose payload has not fully arrived.
	pending      int
	pendingFlags byte
	// peek receives the bytes that show a full buffer must grow.
	peek [8]byte
	// trim is set by TrimWhenIdle.
	trim bool
	// npeek bytes in peek were read by Await and go to the front of the
	// next buffer.
	npeek int
}

// minBuf is the size of the smallest buffer: the HEADER and the message
// of a small call fit in one read.
const minBuf = 1 << 10

// keepBuf is the largest buffer kept while waiting for a frame.
const keepBuf = 4 << 10

// NewReader returns a Reader over r that rejects frames whose length exceeds
// max (DefaultMaxFrameSize if max is 0). Release returns its buffer to a pool.
func NewReader(r io.Reader, max uint32) *Reader {
	rd := new(Reader)
	rd.Reset(r, max)
	return rd
}

// Reset reuses the Reader for a new source.
func (r *Reader) Reset(src io.Reader, max uint32) {
	if max == 0 {
		max = DefaultMaxFrameSize
	}
	r.src, r.max = src, max
	r.r, r.w, r.err, r.last, r.pending, r.trim, r.npeek = 0, 0, nil, 0, 0, false, 0
}

// TrimWhenIdle makes the Reader, until the next Reset, return a buffer
// larger than keepBuf (4 KiB) to its pool whenever a frame is to be read
// and nothing is left in it, so that waiting for a frame holds at most
// keepBuf bytes of buffer. A server uses it for its calls, which a peer
// may open by the thousand and leave waiting; it costs a pool round trip
// per frame larger than keepBuf that arrives after a pause.
func (r *Reader) TrimWhenIdle() { r.trim = true }

// Release returns the Reader's buffer to the pool. The Reader must not be
// used afterwards unless Reset.
func (r *Reader) Release() {
	r.putBuf()
	r.src = nil
	r.r, r.w, r.err, r.pending, r.npeek = 0, 0, nil, 0, 0
}

// putBuf returns the buffer to its pool.
func (r *Reader) putBuf() {
	if r.bufp != nil {
		*r.bufp = r.buf[:0]
		bufClasses[classOf(cap(r.buf))].Put(r.bufp)
		r.bufp = nil
	}
	r.buf = nil
}

// fill reads once from the source into the free end of the buffer (up to
// end, if end > 0), taking the smallest buffer if there is none. The
// caller makes room.
func (r *Reader) fill(end int) error {
	if r.err != nil {
		err := r.err
		r.err = nil
		return err
	}
	if r.buf == nil {
		p := bufClasses[0].Get().(*[]byte)
		r.buf, r.bufp = (*p)[:cap(*p)], p
	}
	if r.npeek > 0 { // bytes Await read: the buffer is new and empty
		r.w += copy(r.buf[r.w:], r.peek[:r.npeek])
		r.npeek = 0
		return nil
	}
	dst := r.buf[r.w:]
	if end > r.w && end < len(r.buf) {
		dst = r.buf[r.w:end]
	}
	for range 100 {
		n, err := r.src.Read(dst)
		r.w += n
		if n > 0 {
			r.err = err
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// ensure reads until n bytes are buffered (n <= the frame limit). Room is made by moving the buffered bytes to the front and,
// when at least half the buffer holds received bytes, by growing it (see
// Reader). Bytes beyond the n are read ahead only while n is small, so
// that a large frame does not leave part of the next one to be moved.
func (r *Reader) ensure(n int) error {
	for r.w-r.r < n {
		if r.w == len(r.buf) && r.buf != nil {
			if r.r > 0 {
				r.w = copy(r.buf, r.buf[r.r:r.w])
				r.r = 0
			}
			if 2*r.w >= len(r.buf) {
				// Grow only for bytes that are here: with the buffer
				// full, read some into peek first.
				var m int
				if r.w == len(r.buf) {
					var err error
					if m, err = r.readPeek(); m == 0 {
						return err
					}
				}
				size := 2 * len(r.buf)
				if r.last >= n {
					size = n
				}
				r.grow(max(min(size, n), len(r.buf)+m))
				r.w += copy(r.buf[r.w:], r.peek[:m])
				continue
			}
		}
		end := 0
		if n > keepBuf {
			end = r.r + n
		}
		if err := r.fill(end); err != nil {
			return err
		}
	}
	return nil
}

// readPeek reads up to len(peek) bytes into peek, for a full buffer.
func (r *Reader) readPeek() (int, error) {
	if r.err != nil {
		err := r.err
		r.err = nil
		return 0, err
	}
	for range 100 {
		n, err := r.src.Read(r.peek[:])
		if n > 0 {
			r.err = err
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, io.ErrNoProgress
}

// grow moves the buffered bytes (all at the front) to a buffer of the
// class that holds size bytes.
func (r *Reader) grow(size int) {
	k := classFor(size)
	var nb []byte
	var np *[]byte
	if k < len(bufClasses) {
		np = bufClasses[k].Get().(*[]byte)
		nb = (*np)[:cap(*np)]
	} else {
		nb = make([]byte, size)
	}
	w := copy(nb, r.buf[:r.w])
	r.putBuf()
	r.buf, r.bufp, r.r, r.w = nb, np, 0, w
}

// Buffered returns how many received bytes the Reader holds that no read
// has returned yet (a frame prefix already read counts as returned).
func (r *Reader) Buffered() int { return r.w - r.r + r.npeek }

// Await waits until the source has at least one byte (or fails) without
// taking a buffer: the byte is kept in the Reader and the buffer is taken
// by the next read. A server waits so on an idle reusable stream, which
// then holds no read buffer. Its errors are the source's.
func (r *Reader) Await() error {
	if r.w > r.r || r.npeek > 0 || r.pending > 0 {
		return nil
	}
	if r.buf != nil {
		r.r, r.w = 0, 0
		r.putBuf()
	}
	n, err := r.readPeek()
	if n == 0 {
		return err
	}
	r.npeek = n
	return nil
}

// ErrNotRequest is SkipRequests' error for a HEADER frame, or a TRAILER
// frame that is not the end-of-request frame, among a call's requests.
var ErrNotRequest = status.New(status.InvalidArgument, "wire: header or trailer frame among the requests")

// SkipRequests reads and discards the rest of a call's requests, up to
// and including the end-of-request frame (PROTOCOL.md 23.3), whatever
// their size: a frame over the Reader's limit is skipped as it arrives,
// never held, and the buffer does not grow. It returns nil at the
// end-of-request frame; io.EOF if the stream ended first; ErrNotRequest,
// a malformed prefix's error or a transport error otherwise.
func (r *Reader) SkipRequests() error {
	for {
		if r.pending == 0 {
			if err := r.ensure(prefixLen); err != nil {
				if err == io.EOF && r.w == r.r {
					return io.EOF
				}
				return truncated(err)
			}
			hdr := r.buf[r.r : r.r+prefixLen]
			n, flags := binary.LittleEndian.Uint32(hdr), hdr[4]
			switch {
			case n == 0:
				return ErrZeroLength
			case flags&^knownFlags != 0:
				return ErrUnknownFlags
			case flags&FlagHeader != 0:
				return ErrNotRequest
			case flags&FlagTrailer != 0:
				if flags != FlagTrailer || n != 1 { // not an empty payload
					return ErrNotRequest
				}
				r.r += prefixLen
				return nil
			}
			r.r += prefixLen
			r.pending, r.pendingFlags = int(n), flags
		}
		for r.pending > 1 {
			if r.w == r.r {
				r.r, r.w = 0, 0
				if err := r.fill(0); err != nil {
					return truncated(err)
				}
			}
			k := min(r.pending-1, r.w-r.r)
			r.r += k
			r.pending -= k
		}
		r.pending = 0
	}
}

// WaitEOF waits until the source has more bytes or ends, and reports
// whether it ended cleanly (io.EOF with nothing left). A client calls it
// after the trailer, the last frame, so the transport sees the stream's
// end read rather than abandoned.
func (r *Reader) WaitEOF() bool {
	if r.w > r.r {
		return false
	}
	r.r, r.w = 0, 0
	err := r.fill(0)
	return r.w == 0 && err == io.EOF
}

// ReadFrame reads the next frame. The payload is only valid until the next
// call. At a clean end of stream (no partial frame) it returns io.EOF; a
// partial frame is ErrTruncated. Limits are checked before any allocation,
// and the memory a frame takes grows with the bytes that arrived, never
// with the length its prefix claims (see Reader). Transport errors are
// returned unchanged; a read may be tried again after one (a deadline).
func (r *Reader) ReadFrame() (flags byte, payload []byte, err error) {
	return r.readFrame(false)
}

// ReadHeaderFrame reads the first frame of a call, which must be a HEADER
// frame: a frame prefix without the HEADER flag is ErrNotHeader, returned
// before any of its payload is read, so the first frame of a stream can
// never make the reader hold more than MaxHeaderSize bytes. It is
// otherwise ReadFrame.
func (r *Reader) ReadHeaderFrame() (flags byte, payload []byte, err error) {
	return r.readFrame(true)
}

// ErrNotHeader is ReadHeaderFrame's error for a first frame that is not a
// HEADER frame (PROTOCOL.md 8.1, step 2).
var ErrNotHeader = status.New(status.InvalidArgument, "first frame of a call must be a header")

func (r *Reader) readFrame(first bool) (flags byte, payload []byte, err error) {
	if r.r == r.w {
		r.r, r.w = 0, 0
		if r.trim && len(r.buf) > keepBuf {
			r.putBuf()
		}
	}
	if r.pending == 0 {
		if flags, err = r.readPrefix(first); err != nil {
			return 0, nil, err
		}
	}
	plen := r.pending - 1
	if err := r.ensure(plen); err != nil {
		return 0, nil, truncated(err)
	}
	flags = r.pendingFlags
	payload = r.buf[r.r : r.r+plen : r.r+plen]
	r.r += plen
	r.last, r.pending = plen, 0
	return flags, payload, nil
}

// readPrefix reads and checks a frame prefix, and consumes it: the
// payload is then pending (a read error while it arrives leaves it so,
// and the next read resumes it).
func (r *Reader) readPrefix(first bool) (flags byte, err error) {
	if err := r.ensure(prefixLen); err != nil {
		if err == io.EOF {
			if r.w == r.r {
				return 0, io.EOF
			}
			return 0, ErrTruncated
		}
		return 0, err
	}
	hdr := r.buf[r.r : r.r+prefixLen]
	n := binary.LittleEndian.Uint32(hdr)
	flags = hdr[4]
	if n == 0 {
		return 0, ErrZeroLength
	}
	if n > r.max {
		return 0, FrameTooLarge(uint64(n), uint64(r.max))
	}
	if flags&^knownFlags != 0 {
		return 0, ErrUnknownFlags
	}
	if flags&(FlagHeader|FlagTrailer) == FlagHeader|FlagTrailer {
		return 0, ErrBadFlags
	}
	if flags&(FlagHeader|FlagTrailer) != 0 && n-1 > MaxHeaderSize {
		return 0, FrameTooLarge(uint64(n-1), MaxHeaderSize)
	}
	if first && flags&FlagHeader == 0 {
		return 0, ErrNotHeader
	}
	r.r += prefixLen
	r.pending, r.pendingFlags = int(n), flags
	return flags, nil
}

// bufClasses pools read buffers of minBuf << k bytes, up to the largest
// payload (DefaultMaxFrameSize).
var bufClasses [15]sync.Pool

func classSize(k int) int { return minBuf << k }

func init() {
	for k := range bufClasses {
		size := classSize(k)
		bufClasses[k].New = func() any { b := make([]byte, size); return &b }
	}
}

// classFor returns the smallest class that holds n bytes (len(bufClasses)
// if none does).
func classFor(n int) int {
	k := 0
	for k < len(bufClasses) && classSize(k) < n {
		k++
	}
	return k
}

// classOf returns the size class of a pooled buffer's capacity.
func classOf(c int) int { return classFor(c) }

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
}

// EndOfRequest is the frame a client sends in place of FIN to end the
// requests of a call on a reusable stream (PROTOCOL.md 23.2): a TRAILER
// frame with an empty payload.
var EndOfRequest = []byte{1, 0, 0, 0, FlagTrailer}

// IsEndOfRequest reports whether a frame read from a client is the
// end-of-request frame.
func IsEndOfRequest(flags byte, payload []byte) bool {
	return flags == FlagTrailer && len(payload) == 0
}

// AppendFrame appends a frame with the given flags and payload to buf.
func AppendFrame(buf []byte, flags byte, payload []byte) []byte {
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(payload)+1))
	buf = append(buf, flags)
	return append(buf, payload...)
}

// BeginFrame reserves a frame prefix in buf and returns the extended buffer
// and the prefix offset; append the payload, then call EndFrame. This encodes
// a message straight into the output buffer without a copy.
func BeginFrame(buf []byte, flags byte) ([]byte, int) {
	off := len(buf)
	return append(buf, 0, 0, 0, 0, flags), off
}

// EndFrame fills in the length of the frame begun at off.
func EndFrame(buf []byte, off int) {
	binary.LittleEndian.PutUint32(buf[off:], uint32(len(buf)-off-4))
}

var (
	zstdDecoder *zstd.Decoder
	zstdEncoder *zstd.Encoder
	zstdOnce    sync.Once
)

func zstdInit() {
	zstdOnce.Do(func() {
		// Errors are impossible with these static options. DecodeAll
		// produces at most cap(dst) bytes (WithDecodeAllCapLimit), and
		// Decompress sizes dst to the payload's limit.
		zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(DefaultMaxFrameSize), zstd.WithDecodeAllCapLimit(true))
		zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	})
}

// zstdMaxBlock is the most one zstd block decodes to (RFC 8878 3.1.1.2.3).
const zstdMaxBlock = 128 << 10

// Bounds of decompression (PROTOCOL.md 4.4): a compressed payload may
// expand to at most MaxDecompressionRatio times its size plus
// DecompressionSlack bytes, and never beyond the frame limit.
const (
	// MaxDecompressionRatio bounds how many times its size a compressed
	// payload may expand to: real messages compress far less, and a
	// payload of a few hundred bytes that expands to the whole frame limit
	// would make the receiver hold 16 MiB for it.
	MaxDecompressionRatio = 256
	// DecompressionSlack is what any compressed payload may expand to,
	// whatever its size.
	DecompressionSlack = 64 << 10
)

// DecompressLimit is the most a compressed payload of n bytes may expand
// to under a frame limit of max.
func DecompressLimit(n int, max uint32) uint64 {
	return min(uint64(max), uint64(n)*MaxDecompressionRatio+DecompressionSlack)
}

// Decompress returns the payload of a FlagCompressed frame, refusing (with
// RESOURCE_EXHAUSTED) to produce more than max bytes, or more than
// DecompressLimit for the payload's size. What it allocates is bounded
// by that limit, not by the frame limit: a declared content size above it
// is refused before decoding, and without one the output is cut once it
// passes the limit (by at most one zstd block, 128 KiB, into a buffer the
// decoder may then grow to about twice the limit). A payload that is not
// valid zstd is INVALID_ARGUMENT.
func Decompress(payload []byte, max uint32) ([]byte, error) {
	zstdInit()
	if max == 0 {
		max = DefaultMaxFrameSize
	}
	var hdr zstd.Header
	if err := hdr.Decode(payload); err != nil {
		return nil, status.Errorf(status.InvalidArgument, "wire: bad compressed payload: %v", err)
	}
	limit := DecompressLimit(len(payload), max)
	if hdr.HasFCS && hdr.FrameContentSize > limit {
		return nil, decompressTooLarge(hdr.FrameContentSize, len(payload), max)
	}
	size := limit
	if hdr.HasFCS {
		size = hdr.FrameContentSize
	}
	out, err := zstdDecoder.DecodeAll(payload, make([]byte, 0, size))
	if err != nil {
		// Without a declared size, output cut at the limit can also fail
		// as a block that does not fit; out holds what was decoded.
		cut := !hdr.HasFCS && uint64(len(out))+zstdMaxBlock > size
		if cut || errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return nil, status.Errorf(status.ResourceExhausted, "wire: decompressed payload exceeds limit of %d", limit)
		}
		return nil, status.Errorf(status.InvalidArgument, "wire: bad compressed payload: %v", err)
	}
	if uint64(len(out)) > limit {
		return nil, decompressTooLarge(uint64(len(out)), len(payload), max)
	}
	return out, nil
}

// decompressTooLarge is the RESOURCE_EXHAUSTED error for a compressed
// payload of n bytes that expands to size.
func decompressTooLarge(size uint64, n int, max uint32) error {
	if size > uint64(max) {
		return FrameTooLarge(size, uint64(max))
	}
	return status.Errorf(status.ResourceExhausted, "wire: a compressed payload of %d bytes expands to %d, more than %d times its size", n, size, MaxDecompressionRatio)
}

// Compress returns payload compressed as one zstd frame (with its content
// size recorded, so receivers can check limits before decoding).
func Compress(payload []byte) []byte {
	zstdInit()
	return zstdEncoder.EncodeAll(payload, make([]byte, 0, len(payload)/2+16))
}

// DataPayload returns the message bytes of a data frame, decompressing when
// FlagCompressed is set.
func DataPayload(flags byte, payload []byte, max uint32) ([]byte, error) {
	if flags&FlagCompressed != 0 {
		return Decompress(payload, max)
	}
	return payload, nil
}

// String names the flags for logs ("HEADER|COMPRESSED").
func FlagString(flags byte) string {
	if flags == 0 {
		return "DATA"
	}
	s := ""
	add := func(n string) {
		if s != "" {
			s += "|"
		}
		s += n
	}
	if flags&FlagHeader != 0 {
		add("HEADER")
	}
	if flags&FlagTrailer != 0 {
		add("TRAILER")
	}
	if flags&FlagCompressed != 0 {
		add("COMPRESSED")
	}
	if flags&^knownFlags != 0 {
		add(fmt.Sprintf("%#x", flags&^knownFlags))
	}
	return s
}
