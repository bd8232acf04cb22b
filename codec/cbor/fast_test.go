package cbor

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// flat has a field of every kind the fast path decodes, names from cbor
// tags, json tags and the Go name, and fields the decoders must skip.
type flat struct {
	S      string            `cbor:"s"`
	B      []byte            `cbor:"b,omitempty"`
	T      bool              `cbor:"t"`
	I8     int8              `cbor:"i8"`
	I      int               `cbor:"i"`
	I64    int64             `cbor:"i64"`
	U16    uint16            `cbor:"u16"`
	U64    uint64            `cbor:"u64"`
	F      float64           `cbor:"f"`
	M      map[string]string `cbor:"m,omitempty"`
	J      string            `json:"j"`
	B2     []byte            `cbor:"b2"` // nil encodes as null
	M2     map[string]string `cbor:"m2"`
	Plain  int32
	Skip   string `cbor:"-"`
	hidden int
}

type logEntry struct {
	Timestamp float64 `cbor:"timestamp" json:"timestamp"`
	Level     string  `cbor:"level" json:"level"`
	Message   string  `cbor:"message" json:"message"`
	AgentID   string  `cbor:"agent_id" json:"agent_id"`
}

// Types the fast path must leave to the general decoder.
type (
	withEmbedded struct {
		logEntry
		X int `cbor:"x"`
	}
	withArray struct {
		_ struct{} `cbor:",toarray"`
		A int
	}
	withKeyAsInt struct {
		A int `cbor:"1,keyasint"`
	}
	withPointer struct {
		P *int `cbor:"p"`
	}
	withNamedMap struct {
		M map[string]int `cbor:"m"`
	}
)

func TestFastPlanEligibility(t *testing.T) {
	for _, c := range []struct {
		v    any
		want bool
	}{
		{&flat{}, true},
		{&logEntry{}, true},
		{&withEmbedded{}, false},
		{&withArray{}, false},
		{&withKeyAsInt{}, false},
		{&withPointer{}, false},
		{&withNamedMap{}, false},
		{new(map[string]any), false},
		{new(any), false},
		{new(int), false},
	} {
		if got := planFor(reflect.TypeOf(c.v)).fields != nil; got != c.want {
			t.Errorf("%T: eligible %v, want %v", c.v, got, c.want)
		}
	}
	want := []string{"s", "b", "t", "i8", "i", "i64", "u16", "u64", "f", "m", "j", "b2", "m2", "Plain"}
	var got []string
	for _, f := range planFor(reflect.TypeOf(&flat{})).fields {
		got = append(got, f.name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("field names %q, want %q", got, want)
	}
}

func TestFastDecodeMatchesGeneral(t *testing.T) {
	values := []any{
		&flat{S: "héllo", B: []byte{1, 2, 3}, T: true, I8: -128, I: -1 << 40, I64: math.MinInt64, U16: 65535, U64: math.MaxUint64,
			F: 0.5, M: map[string]string{"a": "1", "bb": ""}, J: "j", B2: []byte{}, M2: map[string]string{"k": ""}, Plain: -7},
		&flat{F: 1712567890.1},
		&flat{F: -65504},               // largest half
		&flat{F: 5.960464477539063e-8}, // smallest half subnormal
		&flat{F: 3.4028234663852886e38},
		&flat{I64: math.MaxInt64, I8: 127},
		&flat{},
		&flat{B2: []byte{1}, M2: map[string]string{}},
		&logEntry{Timestamp: 1712567890.25, Level: "info", Message: "agent heartbeat ok", AgentID: "edge-node-7"},
	}
	for _, v := range values {
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		p := planFor(reflect.TypeOf(v))
		fast := reflect.New(reflect.TypeOf(v).Elem())
		if f, ok := v.(*flat); ok && (f.B2 == nil || f.M2 == nil) {
			// nil encodes as null, which the fast path leaves to the
			// general decoder.
			if p.decode(b, fast.Interface()) {
				t.Fatalf("fast path decoded null fields in %x", b)
			}
			compareDecoders(t, reflect.TypeOf(v), b)
			continue
		}
		if !p.decode(b, fast.Interface()) {
			t.Fatalf("%+v: fast path refused its own type's encoding %x", v, b)
		}
		if !reflect.DeepEqual(fast.Interface(), v) {
			t.Fatalf("fast decode %+v, want %+v", fast.Interface(), v)
		}
		compareDecoders(t, reflect.TypeOf(v), b)
	}
}

func TestFastDecodeFallsBack(t *testing.T) {
	p := planFor(reflect.TypeOf(&flat{}))
	for name, in := range map[string]string{
		"unknown key":        "a1617a01",
		"other case":         "a16153 6161",
		"duplicate key":      "a26169016169 02",
		"null value":         "a16173f6",
		"int overflow":       "a1626938 1880",
		"uint negative":      "a1637531362001",
		"invalid utf8":       "a1617361ff",
		"indefinite map":     "bf617301ff",
		"trailing bytes":     "a161690100",
		"truncated":          "a16173636162",
		"half infinity":      "a16166f97c00",
		"int into float":     "a1616601",
		"tag":                "a16173c16161",
		"map dup":            "a1616da2616161786161 6179",
		"map count too big":  "a1616dbb00000000ffffffff",
		"nested bad utf8":    "a1616da16161 61ff",
		"array not map":      "8101",
		"i8 out of range":    "a16269381880",
		"float32 nan":        "a16166fa7fc00000",
		"bytes into string":  "a1617341 61",
		"empty":              "",
		"reserved ai":        "a1616 91c",
		"too many pairs":     "ad",
		"string into bool":   "a1617461 61",
		"negative into uint": "a163753634 20",
	} {
		b := hexBytes(t, in)
		v := &flat{S: "keep"}
		if p.decode(b, v) {
			t.Errorf("%s: fast path accepted %x", name, b)
		}
		if v.S != "keep" {
			t.Errorf("%s: fast path wrote to the value before giving up", name)
		}
		compareDecoders(t, reflect.TypeOf(&flat{}), b)
	}
}

// compareDecoders checks that Unmarshal (fast path first) and the general
// decoder agree on data, into a fresh value and into a filled one.
func compareDecoders(t *testing.T, pt reflect.Type, data []byte) {
	t.Helper()
	for _, filled := range []bool{false, true} {
		a, g := reflect.New(pt.Elem()), reflect.New(pt.Elem())
		if filled {
			if f, ok := a.Interface().(*flat); ok {
				*f = flat{S: "x", B: []byte{9}, I: 5, F: 2.5, M: map[string]string{"k": "v", "a": "old"}}
				*g.Interface().(*flat) = flat{S: "x", B: []byte{9}, I: 5, F: 2.5, M: map[string]string{"k": "v", "a": "old"}}
			}
		}
		errA := Unmarshal(data, a.Interface())
		errG := decMode.Unmarshal(data, g.Interface())
		if (errA == nil) != (errG == nil) {
			t.Fatalf("input %x: Unmarshal error %v, general decoder error %v", data, errA, errG)
		}
		// %#v prints NaN as NaN (DeepEqual finds NaN unequal to itself)
		// and tells nil slices and maps from empty ones.
		if errG == nil && fmt.Sprintf("%#v", a.Interface()) != fmt.Sprintf("%#v", g.Interface()) {
			t.Fatalf("input %x: Unmarshal %+v, general decoder %+v", data, a.Interface(), g.Interface())
		}
	}
}

func hexBytes(t testing.TB, s string) []byte {
	s = strings.ReplaceAll(s, " ", "")
	b := make([]byte, len(s)/2)
	for i := range b {
		var v byte
		for _, c := range s[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c - 'a' + 10)
			default:
				t.Fatalf("bad hex %q", s)
			}
		}
		b[i] = v
	}
	return b
}

// FuzzFastDecode checks that the fast path and the general decoder agree
// on arbitrary input: same error or not, same decoded value.
func FuzzFastDecode(f *testing.F) {
	for _, v := range []any{
		&flat{S: "héllo", B: []byte{1}, T: true, I8: -3, I: 1 << 33, I64: -1, U16: 7, U64: 1 << 63, F: 0.1, M: map[string]string{"a": "b"}, J: "j",
			B2: []byte{2}, M2: map[string]string{"c": "d", "ee": ""}, Plain: 4},
		&flat{F: 0.5, M: map[string]string{}, B2: []byte{}, M2: map[string]string{}},
		&flat{F: 1e300, B: []byte{}, B2: []byte{3}, M2: map[string]string{"x": "y"}},
		&flat{}, // nil B2 and M2: null
	} {
		b, err := Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{0xa1, 0x61, 0x73, 0xf6}, false)
	f.Fuzz(func(t *testing.T, data []byte, asLog bool) {
		if asLog {
			compareDecoders(t, reflect.TypeOf(&logEntry{}), data)
		} else {
			compareDecoders(t, reflect.TypeOf(&flat{}), data)
		}
	})
}

func BenchmarkDecodeLogEntry(b *testing.B) {
	data, err := Marshal(&logEntry{Timestamp: 1712567890.1, Level: "info", Message: "agent heartbeat ok", AgentID: "edge-node-7"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e logEntry
			if err := Unmarshal(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e logEntry
			if err := decMode.Unmarshal(data, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The decoded strings must not alias the input buffer, which the wire
// reader reuses for the next frame.
func TestFastDecodeCopies(t *testing.T) {
	in := &logEntry{Timestamp: 1, Level: "info", Message: "agent heartbeat ok", AgentID: "edge-node-7"}
	data, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out logEntry
	if !planFor(reflect.TypeOf(&out)).decode(data, &out) {
		t.Fatal("fast path refused a LogEntry")
	}
	for i := range data {
		data[i] = 'x'
	}
	if out != *in {
		t.Fatalf("after overwriting the input: %+v, want %+v", out, *in)
	}
}

// omits has the omitempty and omitzero variants of each kind.
type omits struct {
	S  string            `cbor:"s,omitempty"`
	SZ string            `cbor:"sz,omitzero"`
	B  []byte            `cbor:"b,omitempty"`
	BZ []byte            `cbor:"bz,omitzero"`
	T  bool              `cbor:"t,omitempty"`
	I  int64             `cbor:"i,omitempty"`
	IZ int16             `cbor:"iz,omitzero"`
	U  uint32            `cbor:"u,omitempty"`
	F  float64           `cbor:"f,omitempty"`
	FZ float64           `cbor:"fz,omitzero"`
	M  map[string]string `cbor:"m,omitempty"`
	MZ map[string]string `cbor:"mz,omitzero"`
	// A name of 24 bytes or more takes a two-byte head.
	Long string `cbor:"a_field_name_of_thirty_bytes_"`
}

func checkEncode(t *testing.T, v any) {
	t.Helper()
	want, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := planFor(reflect.TypeOf(v))
	if p.enc == nil {
		t.Fatalf("%T not eligible for the fast encoder", v)
	}
	got, ok := p.encode([]byte{0xee}, v)
	if !ok {
		f, isFlat := v.(*flat)
		if isFlat && (f.F != f.F || math.IsInf(f.F, 0)) {
			return // NaN and infinities are left to the general encoder
		}
		o, isOmits := v.(*omits)
		if isOmits && (o.F != o.F || math.IsInf(o.F, 0) || o.FZ != o.FZ || math.IsInf(o.FZ, 0)) {
			return
		}
		t.Fatalf("fast encoder refused %+v", v)
	}
	if got[0] != 0xee || !bytes.Equal(got[1:], want) {
		t.Fatalf("%+v: fast encoder wrote %x, general %x", v, got[1:], want)
	}
}

func TestFastEncodeMatchesGeneral(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 0.5, 1.5, 65504, 65505, 1e-7, 5.960464477539063e-8, 6.103515625e-05, 6.097555160522461e-05,
		1.401298464324817e-45, 3.4028234663852886e38, 1712567890.1, -2.5, 1e300, math.SmallestNonzeroFloat64, math.NaN(), math.Inf(1)} {
		checkEncode(t, &flat{F: f})
		checkEncode(t, &omits{F: f, FZ: f})
	}
	checkEncode(t, &flat{S: "héllo", B: []byte{1, 2}, T: true, I8: -128, I: -1 << 40, I64: math.MinInt64, U16: 65535, U64: math.MaxUint64,
		M: map[string]string{"a": "1", "bb": "", "c": "x", "aa": "y"}, J: "j", Plain: -7, Skip: "not sent", hidden: 3})
	checkEncode(t, &flat{B: []byte{}, M: map[string]string{}})
	checkEncode(t, &flat{B2: []byte{}, M2: map[string]string{}})
	checkEncode(t, &flat{B2: []byte{7}, M2: map[string]string{"x": "y"}})
	checkEncode(t, &omits{})
	checkEncode(t, &omits{B: []byte{}, BZ: []byte{}, M: map[string]string{}, MZ: map[string]string{}})
	checkEncode(t, &omits{S: "s", SZ: "z", T: true, I: -1, IZ: 2, U: 3, Long: "l"})
	checkEncode(t, &logEntry{Timestamp: 1712567890.1, Level: "info", Message: "agent heartbeat ok", AgentID: "edge-node-7"})
	big := map[string]string{}
	for i := range 40 {
		big[strings.Repeat("k", i%30)+string(rune('a'+i%26))] = "v"
	}
	checkEncode(t, &flat{M: big, S: strings.Repeat("x", 300)})
}

// FuzzFastEncode checks that the fast encoder writes exactly the general
// encoder's bytes.
func FuzzFastEncode(f *testing.F) {
	f.Add("s", []byte{1}, true, int8(-1), int64(1<<40), uint64(7), math.Float64bits(0.5), "k", "v", "kk", false, false)
	f.Add("", []byte(nil), false, int8(0), int64(0), uint64(0), math.Float64bits(math.Copysign(0, -1)), "", "", "", true, true)
	f.Fuzz(func(t *testing.T, s string, bs []byte, bo bool, i8 int8, i64 int64, u64 uint64, fbits uint64, k1, v1, k2 string, nilBytes, nilMap bool) {
		fl := math.Float64frombits(fbits)
		m := map[string]string{k1: v1, k2: s}
		if nilMap {
			m = nil
		}
		if nilBytes {
			bs = nil
		}
		checkEncode(t, &flat{S: s, B: bs, T: bo, I8: i8, I: int(i64 >> 3), I64: i64, U16: uint16(u64), U64: u64, F: fl, M: m, J: k1, B2: bs, M2: m, Plain: int32(i64)})
		checkEncode(t, &omits{S: s, SZ: k2, B: bs, BZ: bs, T: bo, I: i64, IZ: int16(i8), U: uint32(u64), F: fl, FZ: fl, M: m, MZ: m, Long: v1})
	})
}

func BenchmarkEncodeLogEntry(b *testing.B) {
	e := &logEntry{Timestamp: 1712567890.1, Level: "info", Message: "agent heartbeat ok", AgentID: "edge-node-7"}
	buf := make([]byte, 0, 256)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := (Codec{}).AppendMarshal(buf[:0], e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encMode.Marshal(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type stamp struct{ n int64 }

func (s stamp) IsZero() bool                   { return s.n == 0 }
func (s stamp) MarshalBinary() ([]byte, error) { return []byte{byte(s.n)}, nil }

type zeroInt int

func (z zeroInt) IsZero() bool { return z == 1 }

type withZeroer struct {
	Z zeroInt `cbor:"z,omitzero"`
}

type textKey string

func (t textKey) MarshalText() ([]byte, error) { return []byte("k"), nil }

type withTextMarshaler struct {
	K textKey `cbor:"k"`
}

func TestFastEncodeEligibility(t *testing.T) {
	for _, v := range []any{&withZeroer{}, &withTextMarshaler{}, &stamp{}} {
		if planFor(reflect.TypeOf(v)).enc != nil {
			t.Errorf("%T: eligible for the fast encoder, want the general one", v)
		}
		a, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		g, err := encMode.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, g) {
			t.Errorf("%T: Marshal %x, general encoder %x", v, a, g)
		}
	}
	if planFor(reflect.TypeOf(&logEntry{})).enc == nil {
		t.Error("logEntry not eligible for the fast encoder")
	}
}
