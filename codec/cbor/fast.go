package cbor

import (
	"encoding"
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"sync"
	"unicode/utf8"

	fxcbor "github.com/fxamacker/cbor/v2"
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
	name string
	idx  int
	kind fastKind
	bits uint // integer width for fkInt/fkUint
}

// fastPlan is the decoding plan of one struct type; nil fields means the
// type is not eligible.
type fastPlan struct {
	fields []fastField
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
			if o == "keyasint" || o == "toarray" {
				return none
			}
		}
		if name == "" {
			name = f.Name
		}
		if seen[name] {
			return none
		}
		seen[name] = true
		ff := fastField{name: name, idx: i}
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
	return &fastPlan{fields: fields}
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
	a, g := reflect.New(pt.Elem()), reflect.New(pt.Elem())
	if !p.decode(b, a.Interface()) {
		return false
	}
	if decMode.Unmarshal(b, g.Interface()) != nil {
		return false
	}
	return reflect.DeepEqual(a.Interface(), g.Interface()) && reflect.DeepEqual(a.Interface(), v.Interface())
}

// head reads a CBOR item head at b[i]: major type, argument and the offset
// after the head. ok is false for a truncated head, a reserved additional
// info or an indefinite length.
func head(b []byte, i int) (major byte, arg uint64, next int, ok bool) {
	if i >= len(b) {
		return 0, 0, 0, false
	}
	c := b[i]
	major, ai := c>>5, c&0x1f
	i++
	switch {
	case ai < 24:
		return major, uint64(ai), i, true
	case ai == 24:
		if i+1 > len(b) {
			return 0, 0, 0, false
		}
		return major, uint64(b[i]), i + 1, true
	case ai == 25:
		if i+2 > len(b) {
			return 0, 0, 0, false
		}
		return major, uint64(binary.BigEndian.Uint16(b[i:])), i + 2, true
	case ai == 26:
		if i+4 > len(b) {
			return 0, 0, 0, false
		}
		return major, uint64(binary.BigEndian.Uint32(b[i:])), i + 4, true
	case ai == 27:
		if i+8 > len(b) {
			return 0, 0, 0, false
		}
		return major, binary.BigEndian.Uint64(b[i:]), i + 8, true
	}
	return 0, 0, 0, false
}

// text reads a definite-length text (major 3) or byte (major 2) string at
// b[i] and returns its bounds.
func str(b []byte, i int, major byte) (start, end int, ok bool) {
	m, n, next, ok := head(b, i)
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
	major, n, i, ok := head(data, 0)
	if !ok || major != 5 || n > uint64(len(p.fields)) {
		return false
	}
	var vals [maxFastFields]pending
	var seen uint64
	for k := range int(n) {
		ks, ke, ok := str(data, i, 3)
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
			if pv.start, pv.end, ok = str(data, i, 3); !ok || !utf8.Valid(data[pv.start:pv.end]) {
				return false
			}
			i = pv.end
		case fkBytes:
			if pv.start, pv.end, ok = str(data, i, 2); !ok {
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
			m, u, next, ok := head(data, i)
			if !ok || m != 0 || (f.bits < 64 && u>>f.bits != 0) {
				return false
			}
			pv.num, i = u, next
		case fkInt:
			m, u, next, ok := head(data, i)
			if !ok || u>>(f.bits-1) != 0 {
				return false // out of range for the field
			}
			switch m {
			case 0:
				pv.num = u
			case 1:
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
			m, cnt, next, ok := head(data, i)
			// Each pair takes at least two bytes: check the count against
			// the data before allocating.
			if !ok || m != 5 || cnt > uint64(len(data)-next)/2 {
				return false
			}
			i = next
			mp := make(map[string]string, cnt)
			for range cnt {
				ks, ke, ok := str(data, i, 3)
				if !ok || !utf8.Valid(data[ks:ke]) {
					return false
				}
				vs, ve, ok := str(data, ke, 3)
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
