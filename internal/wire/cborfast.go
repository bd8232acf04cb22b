package wire

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"unicode/utf8"
)

// Hand-written CBOR for the two fixed-schema messages on every call, the
// header and the trailer. They produce exactly the bytes of the reflective
// deterministic encoder in codec/cbor (core deterministic encoding: shortest
// heads, map keys sorted bytewise by their encoding), which tests check, but
// without reflection. The decoders accept any definite-length encoding;
// anything else falls back to the general decoder.

const (
	majUint  = 0 << 5
	majBytes = 2 << 5
	majText  = 3 << 5
	majArray = 4 << 5
	majMap   = 5 << 5
)

func appendHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, major|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, major|27), n)
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majText, uint64(len(s))), s...)
}

// keyLess orders map keys as core deterministic CBOR does for text keys:
// shorter first, then bytewise.
func keyLess(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func appendStringMap(b []byte, m map[string]string) []byte {
	b = appendHead(b, majMap, uint64(len(m)))
	if len(m) == 1 {
		for k, v := range m {
			return appendText(appendText(b, k), v)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, keyLess)
	for _, k := range keys {
		b = appendText(appendText(b, k), m[k])
	}
	return b
}

// appendHeaderCBOR encodes h. Field order is the deterministic key order:
// callId, method, service, timeout, version, metadata, sessionId,
// serializationMode.
func appendHeaderCBOR(b []byte, h *Header) []byte {
	n := 2 // method and service are always present
	if h.CallID != 0 {
		n++
	}
	if h.Timeout != 0 {
		n++
	}
	if h.Version != 0 {
		n++
	}
	if len(h.Metadata) != 0 {
		n++
	}
	if h.SessionID != 0 {
		n++
	}
	if h.SerializationMode != "" {
		n++
	}
	b = appendHead(b, majMap, uint64(n))
	if h.CallID != 0 {
		b = appendHead(appendText(b, "callId"), majUint, h.CallID)
	}
	b = appendText(appendText(b, "method"), h.Method)
	b = appendText(appendText(b, "service"), h.Service)
	if h.Timeout != 0 {
		b = appendHead(appendText(b, "timeout"), majUint, h.Timeout)
	}
	if h.Version != 0 {
		b = appendHead(appendText(b, "version"), majUint, uint64(h.Version))
	}
	if len(h.Metadata) != 0 {
		b = appendStringMap(appendText(b, "metadata"), h.Metadata)
	}
	if h.SessionID != 0 {
		b = appendHead(appendText(b, "sessionId"), majUint, h.SessionID)
	}
	if h.SerializationMode != "" {
		b = appendText(appendText(b, "serializationMode"), h.SerializationMode)
	}
	return b
}

// appendTrailerCBOR encodes t: code, details, message, metadata.
func appendTrailerCBOR(b []byte, t *Trailer) []byte {
	n := 1
	if len(t.Details) != 0 {
		n++
	}
	if t.Message != "" {
		n++
	}
	if len(t.Metadata) != 0 {
		n++
	}
	b = appendHead(b, majMap, uint64(n))
	b = appendHead(appendText(b, "code"), majUint, uint64(t.Code))
	if len(t.Details) != 0 {
		b = appendHead(appendText(b, "details"), majArray, uint64(len(t.Details)))
		for _, d := range t.Details {
			b = appendHead(b, majMap, 2)
			b = appendText(appendText(b, "type"), d.Type)
			b = appendHead(appendText(b, "value"), majBytes, uint64(len(d.Value)))
			b = append(b, d.Value...)
		}
	}
	if t.Message != "" {
		b = appendText(appendText(b, "message"), t.Message)
	}
	if len(t.Metadata) != 0 {
		b = appendStringMap(appendText(b, "metadata"), t.Metadata)
	}
	return b
}

// errSlowPath makes a fast decoder defer to the general decoder.
var errSlowPath = errors.New("wire: not in the fast-path subset")

type cborReader struct {
	b []byte
	i int
}

// head reads an item head and returns its major type and argument. It
// rejects indefinite lengths and the simple/float major type with
// errSlowPath.
func (r *cborReader) head() (byte, uint64, error) {
	if r.i >= len(r.b) {
		return 0, 0, errSlowPath
	}
	ib := r.b[r.i]
	r.i++
	major, ai := ib&0xe0, ib&0x1f
	var n uint64
	switch {
	case ai < 24:
		n = uint64(ai)
	case ai == 24 && r.i+1 <= len(r.b):
		n = uint64(r.b[r.i])
		r.i++
	case ai == 25 && r.i+2 <= len(r.b):
		n = uint64(binary.BigEndian.Uint16(r.b[r.i:]))
		r.i += 2
	case ai == 26 && r.i+4 <= len(r.b):
		n = uint64(binary.BigEndian.Uint32(r.b[r.i:]))
		r.i += 4
	case ai == 27 && r.i+8 <= len(r.b):
		n = binary.BigEndian.Uint64(r.b[r.i:])
		r.i += 8
	default:
		return 0, 0, errSlowPath
	}
	if major == 7<<5 || major == 6<<5 {
		return 0, 0, errSlowPath
	}
	return major, n, nil
}

func (r *cborReader) bytesOf(major byte) ([]byte, error) {
	m, n, err := r.head()
	if err != nil {
		return nil, err
	}
	if m != major || n > uint64(len(r.b)-r.i) {
		return nil, errSlowPath
	}
	s := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

// text reads a text string. Invalid UTF-8 defers to the general decoder,
// which rejects it, so both paths accept the same inputs.
func (r *cborReader) text() (string, error) {
	b, err := r.bytesOf(majText)
	if err == nil && !utf8.Valid(b) {
		return "", errSlowPath
	}
	return string(b), err
}

func (r *cborReader) uint(max uint64) (uint64, error) {
	m, n, err := r.head()
	if err != nil {
		return 0, err
	}
	if m != majUint || n > max {
		return 0, errSlowPath
	}
	return n, nil
}

func (r *cborReader) count(major byte, limit int) (int, error) {
	m, n, err := r.head()
	if err != nil {
		return 0, err
	}
	if m != major || n > uint64(limit) {
		return 0, errSlowPath
	}
	return int(n), nil
}

func (r *cborReader) stringMap() (map[string]string, error) {
	n, err := r.count(majMap, MaxMetadataPairs+1)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, n)
	for range n {
		k, err := r.text()
		if err != nil {
			return nil, err
		}
		v, err := r.text()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, errSlowPath
		}
		m[k] = v
	}
	return m, nil
}

// decodeHeaderCBOR decodes the common encoding of a header; errSlowPath
// means "use the general decoder" (unknown keys, other encodings, errors).
func decodeHeaderCBOR(b []byte, h *Header) error {
	r := cborReader{b: b}
	n, err := r.count(majMap, 16)
	if err != nil {
		return err
	}
	var seen uint16
	for range n {
		k, err := r.bytesOf(majText)
		if err != nil {
			return err
		}
		var bit uint16
		switch string(k) {
		case "service":
			bit = 1
			h.Service, err = r.text()
		case "method":
			bit = 2
			h.Method, err = r.text()
		case "version":
			bit = 4
			var v uint64
			v, err = r.uint(0xffffffff)
			h.Version = uint32(v)
		case "callId":
			bit = 8
			h.CallID, err = r.uint(^uint64(0))
		case "timeout":
			bit = 16
			h.Timeout, err = r.uint(^uint64(0))
		case "serializationMode":
			bit = 32
			h.SerializationMode, err = r.text()
		case "metadata":
			bit = 64
			h.Metadata, err = r.stringMap()
		case "sessionId":
			bit = 128
			h.SessionID, err = r.uint(^uint64(0))
		default:
			return errSlowPath
		}
		if err != nil || seen&bit != 0 {
			return errSlowPath
		}
		seen |= bit
	}
	if r.i != len(b) {
		return errSlowPath
	}
	return nil
}

// decodeTrailerCBOR is decodeHeaderCBOR for trailers.
func decodeTrailerCBOR(b []byte, t *Trailer) error {
	r := cborReader{b: b}
	n, err := r.count(majMap, 8)
	if err != nil {
		return err
	}
	var seen uint8
	for range n {
		k, err := r.bytesOf(majText)
		if err != nil {
			return err
		}
		var bit uint8
		switch string(k) {
		case "code":
			bit = 1
			var v uint64
			v, err = r.uint(0xffffffff)
			t.Code = uint32(v)
		case "message":
			bit = 2
			t.Message, err = r.text()
		case "metadata":
			bit = 4
			t.Metadata, err = r.stringMap()
		default: // details and anything else: general decoder
			return errSlowPath
		}
		if err != nil || seen&bit != 0 {
			return errSlowPath
		}
		seen |= bit
	}
	if r.i != len(b) {
		return errSlowPath
	}
	return nil
}
