// Package cbor is aster's default codec: CBOR (RFC 8949) via
// github.com/fxamacker/cbor/v2 with core deterministic encoding, so equal
// values always encode to equal bytes (contract ids depend on it).
//
// Struct fields use `cbor` tags and fall back to `json` tags, so one set of
// tags serves both codecs.
package cbor

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"

	fxcbor "github.com/fxamacker/cbor/v2"
)

// Name is the codec's wire name.
const Name = "cbor"

var (
	encMode fxcbor.UserBufferEncMode
	decMode fxcbor.DecMode
)

func init() {
	var err error
	eo := fxcbor.CoreDetEncOptions()
	eo.Time = fxcbor.TimeRFC3339Nano
	if encMode, err = eo.UserBufferEncMode(); err != nil {
		panic(err)
	}
	decMode, err = fxcbor.DecOptions{
		// Maps decoded into interface values get string keys when possible so
		// they convert to JSON naturally.
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)),
		MaxNestedLevels:  64,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
		DupMapKey:        fxcbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Codec is the CBOR codec. The zero value is ready to use.
type Codec struct{}

// Name returns "cbor".
func (Codec) Name() string { return Name }

// Marshal encodes v with deterministic CBOR.
func (Codec) Marshal(v any) ([]byte, error) {
	if p := fastEncodePlan(v); p != nil {
		if b, ok := p.encode(nil, v); ok {
			return b, nil
		}
	}
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("cbor: encode %T: %w", v, err)
	}
	return b, nil
}

// AppendMarshal encodes v after buf.
func (Codec) AppendMarshal(buf []byte, v any) ([]byte, error) {
	if p := fastEncodePlan(v); p != nil {
		if b, ok := p.encode(buf, v); ok {
			return b, nil
		}
	}
	bb := bufPool.Get().(*bytes.Buffer)
	*bb = *bytes.NewBuffer(buf) // encode straight into buf, growing it as needed
	err := encMode.MarshalToBuffer(v, bb)
	out := bb.Bytes()
	*bb = bytes.Buffer{}
	bufPool.Put(bb)
	if err != nil {
		return buf, fmt.Errorf("cbor: encode %T: %w", v, err)
	}
	return out, nil
}

// fastEncodePlan returns the fast-path plan for encoding v, or nil.
func fastEncodePlan(v any) *fastPlan {
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer {
		if p := planFor(t); p.enc != nil {
			return p
		}
	}
	return nil
}

// bufPool recycles the bytes.Buffer headers AppendMarshal wraps around the
// caller's slice.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Unmarshal decodes exactly one CBOR item from data into v; trailing bytes are
// an error.
func (Codec) Unmarshal(data []byte, v any) error {
	if v != nil {
		if p := planFor(reflect.TypeOf(v)); p.fields != nil && p.decode(data, v) {
			return nil
		}
	}
	if err := decMode.Unmarshal(data, v); err != nil {
		return fmt.Errorf("cbor: decode %T: %w", v, err)
	}
	return nil
}

// Marshal encodes v with the package's deterministic encoder.
func Marshal(v any) ([]byte, error) { return Codec{}.Marshal(v) }

// Unmarshal decodes data into v with the package's decoder limits.
func Unmarshal(data []byte, v any) error { return Codec{}.Unmarshal(data, v) }
