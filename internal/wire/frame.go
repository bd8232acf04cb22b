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
	"bufio"
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
type Reader struct {
	br  *bufio.Reader
	max uint32
	// buf holds a frame larger than the bufio buffer; it grows with the
	// bytes received, in pooled size classes (bufp is its pool slot).
	buf  []byte
	bufp *[]byte
}

// readerBufSize is the bufio buffer size: frames up to this size are returned
// without copying.
const readerBufSize = 16 << 10

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readerBufSize) }}

// NewReader returns a Reader over r that rejects frames whose length exceeds
// max (DefaultMaxFrameSize if max is 0). Release returns its buffer to a pool.
func NewReader(r io.Reader, max uint32) *Reader {
	if max == 0 {
		max = DefaultMaxFrameSize
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &Reader{br: br, max: max}
}

// Reset reuses the Reader for a new source.
func (r *Reader) Reset(src io.Reader, max uint32) {
	if max == 0 {
		max = DefaultMaxFrameSize
	}
	if r.br == nil {
		r.br = readerPool.Get().(*bufio.Reader)
	}
	r.br.Reset(src)
	r.max = max
}

// Release returns the Reader's buffer to the pool. The Reader must not be
// used afterwards unless Reset.
func (r *Reader) Release() {
	if r.br != nil {
		r.br.Reset(nil)
		readerPool.Put(r.br)
		r.br = nil
	}
	r.putBuf()
}

// putBuf returns the frame buffer to its pool.
func (r *Reader) putBuf() {
	if r.bufp != nil {
		*r.bufp = r.buf[:0]
		bufClasses[classOf(cap(r.buf))].Put(r.bufp)
		r.bufp = nil
	}
	r.buf = nil
}

// WaitEOF waits until the source has more bytes or ends, and reports
// whether it ended cleanly (io.EOF with nothing left). A client calls it
// after the trailer, the last frame, so the transport sees the stream's
// end read rather than abandoned.
func (r *Reader) WaitEOF() bool {
	b, err := r.br.Peek(1)
	return len(b) == 0 && err == io.EOF
}

// ReadFrame reads the next frame. The payload is only valid until the next
// call. At a clean end of stream (no partial frame) it returns io.EOF; a
// partial frame is ErrTruncated. Limits are checked before any allocation,
// and the memory a frame takes grows with the bytes that arrived, never
// with the length its prefix claims (see growChunk). Transport errors are
// returned unchanged.
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

// growChunk is the least a frame buffer grows by. A frame longer than the
// bufio buffer is read into a buffer that starts at growChunk bytes (or
// the frame's length, if less) once its first payload byte has arrived
// and doubles each time it fills, so it is never more than about twice
// the bytes received (plus growChunk): a prefix that claims 16 MiB and
// then stalls holds nothing beyond the bufio buffer.
const growChunk = 32 << 10

func (r *Reader) readFrame(first bool) (flags byte, payload []byte, err error) {
	hdr, err := r.br.Peek(prefixLen)
	if err != nil {
		if err == io.EOF {
			if len(hdr) == 0 {
				return 0, nil, io.EOF
			}
			return 0, nil, ErrTruncated
		}
		return 0, nil, err
	}
	n := binary.LittleEndian.Uint32(hdr)
	flags = hdr[4]
	if n == 0 {
		return 0, nil, ErrZeroLength
	}
	if n > r.max {
		return 0, nil, FrameTooLarge(uint64(n), uint64(r.max))
	}
	if flags&^knownFlags != 0 {
		return 0, nil, ErrUnknownFlags
	}
	if flags&(FlagHeader|FlagTrailer) == FlagHeader|FlagTrailer {
		return 0, nil, ErrBadFlags
	}
	if flags&(FlagHeader|FlagTrailer) != 0 && n-1 > MaxHeaderSize {
		return 0, nil, FrameTooLarge(uint64(n-1), MaxHeaderSize)
	}
	if first && flags&FlagHeader == 0 {
		return 0, nil, ErrNotHeader
	}
	plen := int(n - 1)
	if prefixLen+plen <= r.br.Size() {
		b, err := r.br.Peek(prefixLen + plen)
		if err != nil {
			return 0, nil, truncated(err)
		}
		payload = b[prefixLen:]
		// Discard cannot fail after a successful Peek of the same length.
		_, _ = r.br.Discard(prefixLen + plen)
		return flags, payload, nil
	}
	_, _ = r.br.Discard(prefixLen)
	buf := r.buf[:0]
	for len(buf) < plen {
		if len(buf) == cap(buf) {
			// Make room only for bytes that are here: wait for at least
			// one before growing.
			if _, err := r.br.Peek(1); err != nil {
				r.buf = buf[:0]
				return 0, nil, truncated(err)
			}
			buf = r.grow(buf, plen)
		}
		m, err := r.br.Read(buf[len(buf):min(cap(buf), plen)])
		buf = buf[:len(buf)+m]
		if err != nil && len(buf) < plen {
			r.buf = buf[:0]
			return 0, nil, truncated(err)
		}
	}
	r.buf = buf
	return flags, buf, nil
}

// grow returns buf (the Reader's frame buffer) moved to the next size
// class, at least growChunk and twice its capacity, stopping at the class
// that holds limit bytes. The old buffer goes back to its pool.
func (r *Reader) grow(buf []byte, limit int) []byte {
	k := 0
	if cap(buf) > 0 {
		k = classOf(cap(buf)) + 1
	}
	for k < len(bufClasses)-1 && growChunk<<k < limit {
		if growChunk<<k >= 2*cap(buf) {
			break
		}
		k++
	}
	p := bufClasses[k].Get().(*[]byte)
	nb := append((*p)[:0], buf...)
	r.buf = buf
	r.putBuf()
	r.bufp = p
	return nb
}

// bufClasses pools frame buffers of growChunk << k bytes, up to the
// largest frame (DefaultMaxFrameSize).
var bufClasses [10]sync.Pool

func init() {
	for k := range bufClasses {
		size := growChunk << k
		bufClasses[k].New = func() any { b := make([]byte, 0, size); return &b }
	}
}

// classOf returns the size class of a pooled buffer's capacity.
func classOf(c int) int {
	k := 0
	for growChunk<<k < c {
		k++
	}
	return k
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTruncated
	}
	return err
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
		// Errors are impossible with these static options.
		zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(DefaultMaxFrameSize))
		zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	})
}

// Decompress returns the payload of a FlagCompressed frame, refusing (with
// RESOURCE_EXHAUSTED) to produce more than max bytes. A payload that is not
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
	if hdr.HasFCS && hdr.FrameContentSize > uint64(max) {
		return nil, FrameTooLarge(hdr.FrameContentSize, uint64(max))
	}
	out, err := zstdDecoder.DecodeAll(payload, nil)
	if err != nil {
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			return nil, status.Errorf(status.ResourceExhausted, "wire: decompressed payload exceeds limit of %d", max)
		}
		return nil, status.Errorf(status.InvalidArgument, "wire: bad compressed payload: %v", err)
	}
	if uint64(len(out)) > uint64(max) {
		return nil, FrameTooLarge(uint64(len(out)), uint64(max))
	}
	return out, nil
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
