package cbor

import (
	"bytes"
	"encoding"
	"encoding/binary"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	fxcbor "github.com/fxamacker/cbor/v2"

	"github.com/aster-go/aster/internal/cbordet"
)

// A fast path for decoding into flat structs, the shape of most RPC
// messages (Mission Control's LogEntry, MetricPoint, StatusResponse): a
// struct whose fields are strings, byte slices, bools, integers, float64s
// or map[string]string, with plain names (no embedded structs, toarray or
// keyasint). The general decoder checks well-formedness in one pass and
// then decodes through reflection with per-value dispatch; for a 64-byte
// message that is most of a streaming call's CPU.
//
// The fast path is a strict subset of the general decoder: it handles a
// definite-length map whose keys are text strings naming fields exactly,
// with no duplicates, and values of the field's own CBOR type that fit it.
// It reads the whole message before it writes anything, and on anything
// else (an unknown or differently cased key, null, a tag, an indefinite
// length, an integer that overflows, invalid UTF-8, trailing bytes, ...)
// it gives up and the general decoder decodes the message from scratch, so
// results and errors are the general decoder's. FuzzFastDecode checks that
// both agree on arbitrary input.

// maxFastFields caps the fields of a fast-path struct (the pending values
// are kept in a fixed array on the stack).
const maxFastFields = 32

// maxSharedStrings is the largest total length of a message's string
// fields that are allocated together (one allocation, but a field kept
// alive keeps the others' bytes too).
const maxSharedStrings = 256

type fastKind uint8

const (
	fkString fastKind = iota
	fkBytes
	fkBool
	fkInt
	fkUint
	fkFloat64
	fkStringMap
)

type fastField struct {
	name      string
	idx       int
	kind      fastKind
	bits      uint // integer width for fkInt/fkUint
	omitEmpty bool
	omitZero  bool
}

// fastPlan is the decoding plan of one struct type; nil fields means the
// type is not eligible. enc lists the fields in the order core
// deterministic encoding puts their keys, or is nil if the type is not
// eligible for the fast encoder.
type fastPlan struct {
	fields []fastField
	enc    []*fastField
}

var fastPlans sync.Map // reflect.Type (the pointer type) -> *fastPlan

var (
	typeFxUnmarshaler   = reflect.TypeFor[fxcbor.Unmarshaler]()
	typeBinUnmarshaler  = reflect.TypeFor[encoding.BinaryUnmarshaler]()
	typeTextUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	typeStringMap       = reflect.TypeFor[map[string]string]()
)

func customDecoding(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(typeFxUnmarshaler) || pt.Implements(typeFxUnmarshaler) ||
		t.Implements(typeBinUnmarshaler) || pt.Implements(typeBinUnmarshaler) ||
		t.Implements(typeTextUnmarshaler) || pt.Implements(typeTextUnmarshaler)
}

// planFor returns the plan for pointer type pt, building it on first use.
func planFor(pt reflect.Type) *fastPlan {
	if p, ok := fastPlans.Load(pt); ok {
		return p.(*fastPlan)
	}
	p := buildPlan(pt)
	if p.fields != nil && !selfCheck(pt, p) {
		p = &fastPlan{}
	}
	fastPlans.Store(pt, p)
	return p
}

func buildPlan(pt reflect.Type) *fastPlan {
	none := &fastPlan{}
	if pt.Kind() != reflect.Pointer || pt.Elem().Kind() != reflect.Struct {
		return none
	}
	t := pt.Elem()
	if customDecoding(t) || t.NumField() == 0 || t.NumField() > maxFastFields {
		return none
	}
	var fields []fastField
	seen := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "_" || f.Anonymous {
			return none
		}
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("cbor")
		if tag == "" {
			tag = f.Tag.Get("json")
		}
		if tag == "-" {
			continue
		}
		name, opts := tag, ""
		omitEmpty, omitZero := false, false
		for j := 0; j < len(tag); j++ {
			if tag[j] == ',' {
				name, opts = tag[:j], tag[j+1:]
				break
			}
		}
		for opts != "" {
			o := opts
			for j := 0; j < len(opts); j++ {
				if opts[j] == ',' {
					o, opts = opts[:j], opts[j+1:]
					break
				}
			}
			if o == opts {
				opts = ""
			}
			switch o {
			case "keyasint", "toarray":
				return none
			case "omitempty":
				omitEmpty = true
			case "omitzero":
				omitZero = true
			}
		}
		if name == "" {
			name = f.Name
		}
		if seen[name] {
			return none
		}
		seen[name] = true
		ff := fastField{name: name, idx: i, omitEmpty: omitEmpty, omitZero: omitZero}
		ft := f.Type
		if customDecoding(ft) {
			return none
		}
		switch ft.Kind() {
		case reflect.String:
			ff.kind = fkString
		case reflect.Bool:
			ff.kind = fkBool
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			ff.kind, ff.bits = fkInt, uint(ft.Bits())
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			ff.kind, ff.bits = fkUint, uint(ft.Bits())
		case reflect.Float64:
			ff.kind = fkFloat64
		case reflect.Slice:
			if ft.Elem().Kind() != reflect.Uint8 || customDecoding(ft.Elem()) {
				return none
			}
			ff.kind = fkBytes
		case reflect.Map:
			if ft != typeStringMap {
				return none
			}
			ff.kind = fkStringMap
		default:
			return none
		}
		fields = append(fields, ff)
	}
	if len(fields) == 0 {
		return none
	}
	p := &fastPlan{fields: fields}
	if !customEncoding(t) {
		for i := range fields {
			if customEncoding(t.Field(fields[i].idx).Type) {
				return p
			}
			p.enc = append(p.enc, &p.fields[i])
		}
		slices.SortFunc(p.enc, func(a, b *fastField) int { return cbordet.CompareKeys(a.name, b.name) })
	}
	return p
}

var (
	typeFxMarshaler   = reflect.TypeFor[fxcbor.Marshaler]()
	typeBinMarshaler  = reflect.TypeFor[encoding.BinaryMarshaler]()
	typeTextMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// isZeroer is the IsZero method omitzero consults.
type isZeroer interface{ IsZero() bool }

var typeIsZeroer = reflect.TypeFor[isZeroer]()

func customEncoding(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return t.Implements(typeIsZeroer) || pt.Implements(typeIsZeroer) || t.Implements(typeFxMarshaler) || pt.Implements(typeFxMarshaler) ||
		t.Implements(typeBinMarshaler) || pt.Implements(typeBinMarshaler) ||
		t.Implements(typeTextMarshaler) || pt.Implements(typeTextMarshaler)
}

// selfCheck decodes an encoding of a value with every field set through
// both decoders and keeps the plan only if they agree: a last guard against
// a field-naming rule the plan does not model.
func selfCheck(pt reflect.Type, p *fastPlan) bool {
	v := reflect.New(pt.Elem())
	for n, f := range p.fields {
		fv := v.Elem().Field(f.idx)
		switch f.kind {
		case fkString:
			fv.SetString("s" + f.name)
		case fkBytes:
			fv.SetBytes([]byte{byte(n), 1})
		case fkBool:
			fv.SetBool(true)
		case fkInt:
			fv.SetInt(int64(-n - 1))
		case fkUint:
			fv.SetUint(uint64(n + 1))
		case fkFloat64:
			fv.SetFloat(float64(n) + 0.5)
		case fkStringMap:
			fv.Set(reflect.ValueOf(map[string]string{f.name: "v"}))
		}
	}
	b, err := encMode.Marshal(v.Interface())
	if err != nil {
		return false
	}
	if p.enc != nil {
		if fb, ok := p.encode(nil, v.Interface()); !ok || !bytes.Equal(fb, b) {
			p.enc = nil
		}
	}
	a, g := reflect.New(pt.Elem()), reflect.New(pt.Elem())
	if !p.decode(b, a.Interface()) {
		return false
	}
	if decMode.Unmarshal(b, g.Interface()) != nil {
		return false
	}
	return reflect.DeepEqual(a.Interface(), g.Interface()) && reflect.DeepEqual(a.Interface(), v.Interface())
}

// text reads a definite-length text (major 3) or byte (major 2) string at
// b[i] and returns its bounds.
func str(b []byte, i int, major byte) (start, end int, ok bool) {
	m, n, next, ok := cbordet.Head(b, i)
	if !ok || m != major || n > uint64(len(b)-next) {
		return 0, 0, false
	}
	return next, next + int(n), true
}

// pending is one decoded field value, applied once the whole message has
// been read.
type pending struct {
	f      *fastField
	start  int // string and byte string bounds
	end    int
	num    uint64 // integers (two's complement for fkInt), float bits, bool
	strMap map[string]string
}

// decode decodes data into v (a pointer to the plan's struct type). It
// returns false, having written nothing, when the message is outside the
// fast path.
func (p *fastPlan) decode(data []byte, v any) bool {
	rv := reflect.ValueOf(v)
	if rv.IsNil() {
		return false
	}
	major, n, i, ok := cbordet.Head(data, 0)
	if !ok || major != cbordet.MajMap || n > uint64(len(p.fields)) {
		return false
	}
	var vals [maxFastFields]pending
	var seen uint64
	for k := range int(n) {
		ks, ke, ok := str(data, i, cbordet.MajText)
		if !ok {
			return false
		}
		key := data[ks:ke]
		fi := -1
		for j := range p.fields {
			if p.fields[j].name == string(key) {
				fi = j
				break
			}
		}
		if fi < 0 || seen&(1<<fi) != 0 {
			return false // unknown, differently cased or duplicate key
		}
		seen |= 1 << fi
		f := &p.fields[fi]
		pv := &vals[k]
		pv.f = f
		i = ke
		switch f.kind {
		case fkString:
			if pv.start, pv.end, ok = str(data, i, cbordet.MajText); !ok || !utf8.Valid(data[pv.start:pv.end]) {
				return false
			}
			i = pv.end
		case fkBytes:
			if pv.start, pv.end, ok = str(data, i, cbordet.MajBytes); !ok {
				return false
			}
			i = pv.end
		case fkBool:
			if i >= len(data) || (data[i] != 0xf4 && data[i] != 0xf5) {
				return false
			}
			pv.num = uint64(data[i] & 1)
			i++
		case fkUint:
			m, u, next, ok := cbordet.Head(data, i)
			if !ok || m != cbordet.MajUint || (f.bits < 64 && u>>f.bits != 0) {
				return false
			}
			pv.num, i = u, next
		case fkInt:
			m, u, next, ok := cbordet.Head(data, i)
			if !ok || u>>(f.bits-1) != 0 {
				return false // out of range for the field
			}
			switch m {
			case cbordet.MajUint:
				pv.num = u
			case cbordet.MajNeg:
				pv.num = uint64(-1 - int64(u))
			default:
				return false
			}
			i = next
		case fkFloat64:
			if i >= len(data) {
				return false
			}
			switch data[i] {
			case 0xf9:
				if i+3 > len(data) {
					return false
				}
				f, ok := halfToFloat(binary.BigEndian.Uint16(data[i+1:]))
				if !ok {
					return false
				}
				pv.num, i = math.Float64bits(f), i+3
			case 0xfa:
				if i+5 > len(data) {
					return false
				}
				f := math.Float32frombits(binary.BigEndian.Uint32(data[i+1:]))
				if f != f || math.IsInf(float64(f), 0) {
					return false
				}
				pv.num, i = math.Float64bits(float64(f)), i+5
			case 0xfb:
				if i+9 > len(data) {
					return false
				}
				bits := binary.BigEndian.Uint64(data[i+1:])
				if f := math.Float64frombits(bits); f != f || math.IsInf(f, 0) {
					return false
				}
				pv.num, i = bits, i+9
			default:
				return false
			}
		case fkStringMap:
			m, cnt, next, ok := cbordet.Head(data, i)
			// Each pair takes at least two bytes: check the count against
			// the data before allocating.
			if !ok || m != cbordet.MajMap || cnt > uint64(len(data)-next)/2 {
				return false
			}
			i = next
			mp := make(map[string]string, cnt)
			for range cnt {
				ks, ke, ok := str(data, i, cbordet.MajText)
				if !ok || !utf8.Valid(data[ks:ke]) {
					return false
				}
				vs, ve, ok := str(data, ke, cbordet.MajText)
				if !ok || !utf8.Valid(data[vs:ve]) {
					return false
				}
				key := string(data[ks:ke])
				if _, dup := mp[key]; dup {
					return false
				}
				mp[key] = string(data[vs:ve])
				i = ve
			}
			pv.strMap = mp
		}
	}
	if i != len(data) {
		return false // trailing bytes
	}
	// Small string fields share one allocation.
	var all string
	var strs, total int
	for k := range int(n) {
		if vals[k].f.kind == fkString {
			strs++
			total += vals[k].end - vals[k].start
		}
	}
	if strs > 1 && total <= maxSharedStrings {
		var sb strings.Builder
		sb.Grow(total)
		for k := range int(n) {
			if pv := &vals[k]; pv.f.kind == fkString {
				sb.Write(data[pv.start:pv.end])
			}
		}
		all = sb.String()
	}
	off := 0
	sv := rv.Elem()
	for k := range int(n) {
		pv := &vals[k]
		fv := sv.Field(pv.f.idx)
		switch pv.f.kind {
		case fkString:
			if all != "" {
				l := pv.end - pv.start
				fv.SetString(all[off : off+l])
				off += l
			} else {
				fv.SetString(string(data[pv.start:pv.end]))
			}
		case fkBytes:
			fv.SetBytes(append([]byte{}, data[pv.start:pv.end]...))
		case fkBool:
			fv.SetBool(pv.num != 0)
		case fkInt:
			fv.SetInt(int64(pv.num))
		case fkUint:
			fv.SetUint(pv.num)
		case fkFloat64:
			fv.SetFloat(math.Float64frombits(pv.num))
		case fkStringMap:
			if fv.IsNil() {
				fv.Set(reflect.ValueOf(pv.strMap))
			} else {
				m := fv.Interface().(map[string]string)
				for k, s := range pv.strMap {
					m[k] = s
				}
			}
		}
	}
	return true
}

// halfToFloat converts an IEEE 754 half-precision value; ok is false for
// infinities and NaNs (left to the general decoder).
func halfToFloat(h uint16) (float64, bool) {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0x1f:
		return 0, false
	case 0:
		return sign * math.Ldexp(mant, -24), true
	}
	return sign * math.Ldexp(1024+mant, exp-25), true
}

// appendFloat appends f in the shortest of float16, float32 and float64
// that holds it exactly, as the deterministic encoder does. ok is false for
// NaN and infinities (left to the general encoder).
func appendFloat(b []byte, f float64) ([]byte, bool) {
	if f != f || math.IsInf(f, 0) {
		return b, false
	}
	f32 := float32(f)
	if float64(f32) != f {
		return binary.BigEndian.AppendUint64(append(b, 0xfb), math.Float64bits(f)), true
	}
	bits := math.Float32bits(f32)
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23&0xff) - 127
	mant := bits & 0x7fffff
	switch {
	case bits&0x7fffffff == 0: // ±0
		return binary.BigEndian.AppendUint16(append(b, 0xf9), sign), true
	case exp >= -14 && exp <= 15 && mant&0x1fff == 0: // normal half
		return binary.BigEndian.AppendUint16(append(b, 0xf9), sign|uint16(exp+15)<<10|uint16(mant>>13)), true
	case exp >= -24 && exp < -14 && exp > -127:
		// subnormal half: value = m × 2^-24 with m = significand × 2^(exp+1)
		full := mant | 1<<23
		shift := uint(-(exp + 1))
		if full&(1<<shift-1) == 0 {
			return binary.BigEndian.AppendUint16(append(b, 0xf9), sign|uint16(full>>shift)), true
		}
	}
	return binary.BigEndian.AppendUint32(append(b, 0xfa), bits), true
}

// encode appends the deterministic encoding of v (a non-nil pointer to the
// plan's struct type) to b, byte for byte what the general encoder writes.
// It returns false, with b unchanged in length, for values it leaves to
// the general encoder.
func (p *fastPlan) encode(b []byte, v any) ([]byte, bool) {
	rv := reflect.ValueOf(v)
	if rv.IsNil() {
		return b, false
	}
	sv := rv.Elem()
	var present [maxFastFields]bool
	n := 0
	for i, f := range p.enc {
		fv := sv.Field(f.idx)
		omit := false
		switch f.kind {
		case fkString:
			omit = (f.omitEmpty || f.omitZero) && fv.Len() == 0
		case fkBytes, fkStringMap:
			omit = (f.omitEmpty && fv.Len() == 0) || (f.omitZero && fv.IsNil())
		case fkBool:
			omit = (f.omitEmpty || f.omitZero) && !fv.Bool()
		case fkInt:
			omit = (f.omitEmpty || f.omitZero) && fv.Int() == 0
		case fkUint:
			omit = (f.omitEmpty || f.omitZero) && fv.Uint() == 0
		case fkFloat64:
			x := fv.Float()
			omit = (f.omitEmpty || f.omitZero) && x == 0 // -0 too, as reflect's IsZero says
		}
		if !omit {
			present[i] = true
			n++
		}
	}
	start := len(b)
	b = cbordet.AppendHead(b, cbordet.MajMap, uint64(n))
	for i, f := range p.enc {
		if !present[i] {
			continue
		}
		b = cbordet.AppendText(b, f.name)
		fv := sv.Field(f.idx)
		switch f.kind {
		case fkString:
			b = cbordet.AppendText(b, fv.String())
		case fkBytes:
			if fv.IsNil() {
				b = append(b, 0xf6)
				break
			}
			x := fv.Bytes()
			b = cbordet.AppendHead(b, cbordet.MajBytes, uint64(len(x)))
			b = append(b, x...)
		case fkBool:
			if fv.Bool() {
				b = append(b, 0xf5)
			} else {
				b = append(b, 0xf4)
			}
		case fkInt:
			if x := fv.Int(); x >= 0 {
				b = cbordet.AppendHead(b, cbordet.MajUint, uint64(x))
			} else {
				b = cbordet.AppendHead(b, cbordet.MajNeg, uint64(-1-x))
			}
		case fkUint:
			b = cbordet.AppendHead(b, cbordet.MajUint, fv.Uint())
		case fkFloat64:
			var ok bool
			if b, ok = appendFloat(b, fv.Float()); !ok {
				return b[:start], false
			}
		case fkStringMap:
			if fv.IsNil() {
				b = append(b, 0xf6)
				break
			}
			m := fv.Interface().(map[string]string)
			b = cbordet.AppendStringMap(b, m)
		}
	}
	return b, true
}
