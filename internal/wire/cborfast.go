package wire

import (
	"errors"
	"sync/atomic"
	"unicode/utf8"

	"github.com/aster-go/aster/internal/cbordet"
)

// Hand-written CBOR for the two fixed-schema messages on every call, the
// header and the trailer. They produce exactly the bytes of the reflective
// deterministic encoder in codec/cbor (core deterministic encoding: shortest
// heads, map keys sorted bytewise by their encoding), which tests check, but
// without reflection. The decoders accept any definite-length encoding;
// anything else falls back to the general decoder.

const (
	majUint  = cbordet.MajUint
	majBytes = cbordet.MajBytes
	majText  = cbordet.MajText
	majArray = cbordet.MajArray
	majMap   = cbordet.MajMap
)

// appendHeaderCBOR encodes h. Field order is the deterministic key order:
// reuse, callId, method, service, timeout, version, metadata, sessionId,
// serializationMode.
func appendHeaderCBOR(b []byte, h *Header) []byte {
	n := 2 // method and service are always present
	if h.Reuse {
		n++
	}
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
	b = cbordet.AppendHead(b, majMap, uint64(n))
	if h.Reuse {
		b = append(cbordet.AppendText(b, "reuse"), cborTrue)
	}
	if h.CallID != 0 {
		b = cbordet.AppendHead(cbordet.AppendText(b, "callId"), majUint, h.CallID)
	}
	b = cbordet.AppendText(cbordet.AppendText(b, "method"), h.Method)
	b = cbordet.AppendText(cbordet.AppendText(b, "service"), h.Service)
	if h.Timeout != 0 {
		b = cbordet.AppendHead(cbordet.AppendText(b, "timeout"), majUint, h.Timeout)
	}
	if h.Version != 0 {
		b = cbordet.AppendHead(cbordet.AppendText(b, "version"), majUint, uint64(h.Version))
	}
	if len(h.Metadata) != 0 {
		b = cbordet.AppendStringMap(cbordet.AppendText(b, "metadata"), h.Metadata)
	}
	if h.SessionID != 0 {
		b = cbordet.AppendHead(cbordet.AppendText(b, "sessionId"), majUint, h.SessionID)
	}
	if h.SerializationMode != "" {
		b = cbordet.AppendText(cbordet.AppendText(b, "serializationMode"), h.SerializationMode)
	}
	return b
}

// appendTrailerCBOR encodes t: code, details, message, draining,
// metadata, notProcessed.
func appendTrailerCBOR(b []byte, t *Trailer) []byte {
	n := 1
	if t.NotProcessed {
		n++
	}
	if t.Draining {
		n++
	}
	if len(t.Details) != 0 {
		n++
	}
	if t.Message != "" {
		n++
	}
	if len(t.Metadata) != 0 {
		n++
	}
	b = cbordet.AppendHead(b, majMap, uint64(n))
	b = cbordet.AppendHead(cbordet.AppendText(b, "code"), majUint, uint64(t.Code))
	if len(t.Details) != 0 {
		b = cbordet.AppendHead(cbordet.AppendText(b, "details"), majArray, uint64(len(t.Details)))
		for _, d := range t.Details {
			b = cbordet.AppendHead(b, majMap, 2)
			b = cbordet.AppendText(cbordet.AppendText(b, "type"), d.Type)
			b = cbordet.AppendHead(cbordet.AppendText(b, "value"), majBytes, uint64(len(d.Value)))
			b = append(b, d.Value...)
		}
	}
	if t.Message != "" {
		b = cbordet.AppendText(cbordet.AppendText(b, "message"), t.Message)
	}
	if t.Draining {
		b = append(cbordet.AppendText(b, "draining"), 0xf5) // true
	}
	if len(t.Metadata) != 0 {
		b = cbordet.AppendStringMap(cbordet.AppendText(b, "metadata"), t.Metadata)
	}
	if t.NotProcessed {
		b = append(cbordet.AppendText(b, "notProcessed"), 0xf5) // true
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
// rejects indefinite lengths and the tag and simple/float major types with
// errSlowPath.
func (r *cborReader) head() (byte, uint64, error) {
	major, n, next, ok := cbordet.Head(r.b, r.i)
	if !ok || major == cbordet.MajTag || major == cbordet.MajSimple {
		return 0, 0, errSlowPath
	}
	r.i = next
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

// CBOR's simple values false and true.
const (
	cborFalse = 0xf4
	cborTrue  = 0xf5
)

// bool reads false or true.
func (r *cborReader) bool() (bool, error) {
	if r.i >= len(r.b) {
		return false, errSlowPath
	}
	switch r.b[r.i] {
	case cborFalse:
		r.i++
		return false, nil
	case cborTrue:
		r.i++
		return true, nil
	}
	return false, errSlowPath
}

// name reads a service or method name, interned: the names of a server's
// methods recur on every call, so the string of one seen before is shared
// rather than allocated again.
func (r *cborReader) name() (string, error) {
	b, err := r.bytesOf(majText)
	if err != nil || len(b) > MaxNameLen {
		if err == nil {
			return string(b), nil // Validate rejects it
		}
		return "", err
	}
	h := uint32(2166136261) // FNV-1a
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	slot := &internedNames[h%uint32(len(internedNames))]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p, nil
	}
	if !utf8.Valid(b) {
		return "", errSlowPath
	}
	s := string(b)
	slot.Store(&s)
	return s, nil
}

// internedNames holds recently decoded names, one per hash slot (a newer
// name with the same slot replaces the older one).
var internedNames [512]atomic.Pointer[string]

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
			h.Service, err = r.name()
		case "method":
			bit = 2
			h.Method, err = r.name()
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
		case "reuse":
			bit = 256
			h.Reuse, err = r.bool()
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
