package contract_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	fxcbor "github.com/fxamacker/cbor/v2"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
)

func ref(name string) contract.TypeRef { return contract.TypeRef{Kind: contract.KindRef, Ref: name} }
func kind(k string) contract.TypeRef   { return contract.TypeRef{Kind: k} }
func opt(t contract.TypeRef) contract.TypeRef {
	t.Optional = true
	return t
}
func list(e contract.TypeRef) contract.TypeRef {
	return contract.TypeRef{Kind: contract.KindList, Elem: &e}
}
func mapOf(k, e contract.TypeRef) contract.TypeRef {
	return contract.TypeRef{Kind: contract.KindMap, Key: &k, Elem: &e}
}

// testContract has one type per kind plus nesting; Types must be sorted.
func testContract() *contract.Contract {
	return &contract.Contract{Types: []contract.TypeDef{
		{Name: "t/All", Fields: []contract.Field{
			{Name: "any", Type: kind(contract.KindAny)},
			{Name: "b", Type: kind(contract.KindBool)},
			{Name: "by", Type: kind(contract.KindBytes)},
			{Name: "f", Type: kind(contract.KindFloat)},
			{Name: "i", Type: kind(contract.KindInt)},
			{Name: "imap", Type: mapOf(kind(contract.KindInt), kind(contract.KindString))},
			{Name: "inner", Type: ref("t/Inner")},
			{Name: "inners", Type: list(ref("t/Inner"))},
			{Name: "l", Type: list(kind(contract.KindInt))},
			{Name: "m", Type: mapOf(kind(contract.KindString), kind(contract.KindFloat))},
			{Name: "nested", Type: list(mapOf(kind(contract.KindString), list(kind(contract.KindString))))},
			{Name: "oi", Type: opt(kind(contract.KindInt))},
			{Name: "oinner", Type: opt(ref("t/Inner"))},
			{Name: "s", Type: kind(contract.KindString)},
			{Name: "t", Type: kind(contract.KindTime)},
			{Name: "u", Type: kind(contract.KindUint)},
		}},
		{Name: "t/Empty", Fields: []contract.Field{}},
		{Name: "t/Inner", Fields: []contract.Field{
			{Name: "name", Type: kind(contract.KindString)},
			{Name: "tags", Type: mapOf(kind(contract.KindString), kind(contract.KindString))},
		}},
		{Name: "t/Node", Fields: []contract.Field{
			{Name: "next", Type: opt(ref("t/Node"))},
			{Name: "v", Type: kind(contract.KindInt)},
		}},
	}}
}

func TestFromJSON(t *testing.T) {
	c := testContract()
	ts := time.Date(2026, 11, 3, 10, 4, 5, 123000000, time.UTC)
	tests := []struct {
		name string
		typ  string
		in   string
		want any
	}{
		{"empty object", "t/All", `{}`, map[string]any{}},
		{"string", "t/All", `{"s":"hi"}`, map[string]any{"s": "hi"}},
		{"bool", "t/All", `{"b":true}`, map[string]any{"b": true}},
		{"int", "t/All", `{"i":-42}`, map[string]any{"i": int64(-42)}},
		{"int max", "t/All", `{"i":9223372036854775807}`, map[string]any{"i": int64(math.MaxInt64)}},
		{"int integral float", "t/All", `{"i":3.0}`, map[string]any{"i": int64(3)}},
		{"int exponent", "t/All", `{"i":1e3}`, map[string]any{"i": int64(1000)}},
		{"uint", "t/All", `{"u":18446744073709551615}`, map[string]any{"u": uint64(math.MaxUint64)}},
		{"float from int literal", "t/All", `{"f":1}`, map[string]any{"f": float64(1)}},
		{"float", "t/All", `{"f":1.5}`, map[string]any{"f": 1.5}},
		{"float inf", "t/All", `{"f":"-Infinity"}`, map[string]any{"f": math.Inf(-1)}},
		{"bytes", "t/All", `{"by":"aGVsbG8="}`, map[string]any{"by": []byte("hello")}},
		{"bytes unpadded url", "t/All", `{"by":"_-8"}`, map[string]any{"by": []byte{0xff, 0xef}}},
		{"time", "t/All", `{"t":"2026-11-03T10:04:05.123Z"}`, map[string]any{"t": ts}},
		{"list", "t/All", `{"l":[1,2,3]}`, map[string]any{"l": []any{int64(1), int64(2), int64(3)}}},
		{"empty list", "t/All", `{"l":[]}`, map[string]any{"l": []any{}}},
		{"null list", "t/All", `{"l":null}`, map[string]any{"l": nil}},
		{"map", "t/All", `{"m":{"a":1,"b":2.5}}`, map[string]any{"m": map[string]any{"a": float64(1), "b": 2.5}}},
		{"int-keyed map", "t/All", `{"imap":{"7":"x","-1":"y"}}`, map[string]any{"imap": map[any]any{int64(7): "x", int64(-1): "y"}}},
		{"ref", "t/All", `{"inner":{"name":"n","tags":{"k":"v"}}}`,
			map[string]any{"inner": map[string]any{"name": "n", "tags": map[string]any{"k": "v"}}}},
		{"list of refs", "t/All", `{"inners":[{"name":"a"},{}]}`,
			map[string]any{"inners": []any{map[string]any{"name": "a"}, map[string]any{}}}},
		{"nested", "t/All", `{"nested":[{"k":["a","b"]},{}]}`,
			map[string]any{"nested": []any{map[string]any{"k": []any{"a", "b"}}, map[string]any{}}}},
		{"optional null", "t/All", `{"oi":null,"oinner":null}`, map[string]any{"oi": nil, "oinner": nil}},
		{"optional set", "t/All", `{"oi":5,"oinner":{"name":"x"}}`, map[string]any{"oi": int64(5), "oinner": map[string]any{"name": "x"}}},
		{"any", "t/All", `{"any":{"x":[1,1.5,"s",true,null,18446744073709551615]}}`,
			map[string]any{"any": map[string]any{"x": []any{int64(1), 1.5, "s", true, nil, uint64(math.MaxUint64)}}}},
		{"any null", "t/All", `{"any":null}`, map[string]any{"any": nil}},
		{"recursive", "t/Node", `{"v":1,"next":{"v":2,"next":null}}`,
			map[string]any{"v": int64(1), "next": map[string]any{"v": int64(2), "next": nil}}},
		{"whitespace", "t/Empty", " \n{ }\n ", map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := contract.FromJSON(c, tt.typ, []byte(tt.in))
			if err != nil {
				t.Fatalf("FromJSON(%s): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("FromJSON(%s)\n got %#v\nwant %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFromJSONErrors(t *testing.T) {
	c := testContract()
	tests := []struct {
		name, typ, in string
		path          string // JSONError.Path
		msg           string // substring of the message
	}{
		{"malformed", "t/All", `{"s":`, "", "malformed JSON"},
		{"trailing data", "t/All", `{} {}`, "", "after the top-level value"},
		{"empty input", "t/All", ``, "", "no JSON value"},
		{"top-level array", "t/All", `[1]`, "", "expected object (t/All), got list"},
		{"top-level null", "t/All", `null`, "", "null is not allowed"},
		{"unknown field", "t/All", `{"nope":1}`, "nope", "unknown field (t/All has: any, b, by"},
		{"unknown nested field", "t/All", `{"inner":{"nmae":"x"}}`, "inner.nmae", "unknown field (t/Inner has: name, tags)"},
		{"string got number", "t/All", `{"s":1}`, "s", "expected string, got number 1"},
		{"bool got string", "t/All", `{"b":"true"}`, "b", "expected bool, got string"},
		{"int got fraction", "t/All", `{"i":1.5}`, "i", "expected integer, got 1.5"},
		{"int got string", "t/All", `{"i":"1"}`, "i", "expected integer, got string"},
		{"int overflow", "t/All", `{"i":9223372036854775808}`, "i", "out of range for int"},
		{"uint negative", "t/All", `{"u":-1}`, "u", "expected unsigned integer, got -1"},
		{"float got string", "t/All", `{"f":"1.5"}`, "f", "expected number, got string"},
		{"bytes bad base64", "t/All", `{"by":"!!"}`, "by", "invalid base64"},
		{"bytes got list", "t/All", `{"by":[1,2]}`, "by", "expected base64 string, got list"},
		{"time bad", "t/All", `{"t":"yesterday"}`, "t", `invalid RFC 3339 time "yesterday"`},
		{"time got number", "t/All", `{"t":5}`, "t", "expected RFC 3339 time string"},
		{"list got string", "t/All", `{"l":"1,2"}`, "l", "expected list, got string"},
		{"list element", "t/All", `{"l":[1,"two"]}`, "l[1]", "expected integer, got string"},
		{"map got list", "t/All", `{"m":[]}`, "m", "expected object (map), got list"},
		{"map value", "t/All", `{"m":{"a":"x"}}`, "m[a]", "expected number, got string"},
		{"map bad int key", "t/All", `{"imap":{"x":"y"}}`, "imap[x]", "expected integer"},
		{"ref got string", "t/All", `{"inner":"x"}`, "inner", "expected object (t/Inner), got string"},
		{"null ref", "t/All", `{"inner":null}`, "inner", "null is not allowed for t/Inner"},
		{"null string", "t/All", `{"s":null}`, "s", "null is not allowed for string"},
		{"deep path", "t/All", `{"inners":[{},{"tags":{"k":1}}]}`, "inners[1].tags[k]", "expected string, got number 1"},
		{"nested list path", "t/All", `{"nested":[{"k":["a",2]}]}`, "nested[0][k][1]", "expected string"},
		{"recursive path", "t/Node", `{"next":{"next":{"v":"x"}}}`, "next.next.v", "expected integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := contract.FromJSON(c, tt.typ, []byte(tt.in))
			var je *contract.JSONError
			if !errors.As(err, &je) {
				t.Fatalf("FromJSON(%s) = %#v, %v; want a *JSONError", tt.in, got, err)
			}
			if je.Path != tt.path || !strings.Contains(je.Msg, tt.msg) {
				t.Fatalf("FromJSON(%s) error path %q msg %q; want path %q msg containing %q", tt.in, je.Path, je.Msg, tt.path, tt.msg)
			}
			if tt.path != "" && !strings.HasPrefix(err.Error(), `field "`+tt.path+`": `) {
				t.Fatalf("Error() = %q; want the field path first", err.Error())
			}
		})
	}
}

func TestErrorFormat(t *testing.T) {
	c := &contract.Contract{Types: []contract.TypeDef{{Name: "mission/Heartbeat", Fields: []contract.Field{
		{Name: "capabilities", Type: list(kind(contract.KindString))},
	}}}}
	_, err := contract.FromJSON(c, "mission/Heartbeat", []byte(`{"capabilities":"gpu"}`))
	if want := `field "capabilities": expected list, got string`; err == nil || err.Error() != want {
		t.Fatalf("error = %v; want %s", err, want)
	}
}

func TestUnknownType(t *testing.T) {
	c := testContract()
	if _, err := contract.FromJSON(c, "t/Nope", []byte(`{}`)); err == nil {
		t.Fatal("FromJSON of an undefined type succeeded")
	}
	if _, err := contract.ToJSON(c, "t/Nope", map[string]any{}); err == nil {
		t.Fatal("ToJSON of an undefined type succeeded")
	}
}

func TestFromJSONValue(t *testing.T) {
	c := testContract()
	got, err := contract.FromJSONValue(c, "t/All", map[string]any{"i": json.Number("7"), "f": json.Number("2")})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"i": int64(7), "f": float64(2)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v want %#v", got, want)
	}
}

// toJSONString runs ToJSON and encodes the result.
func toJSONString(t *testing.T, c *contract.Contract, typ string, v any) string {
	t.Helper()
	j, err := contract.ToJSON(c, typ, v)
	if err != nil {
		t.Fatalf("ToJSON(%#v): %v", v, err)
	}
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatalf("json.Marshal(%#v): %v", j, err)
	}
	return string(b)
}

func TestToJSON(t *testing.T) {
	c := testContract()
	tests := []struct {
		name string
		typ  string
		in   any // as the CBOR codec decodes into an interface
		want string
	}{
		{"empty", "t/All", map[string]any{}, `{}`},
		{"scalars", "t/All", map[string]any{"s": "x", "b": false, "i": int64(-3), "u": uint64(math.MaxUint64)},
			`{"b":false,"i":-3,"s":"x","u":18446744073709551615}`},
		{"positive int as uint64", "t/All", map[string]any{"i": uint64(3600)}, `{"i":3600}`},
		{"float holding an integer", "t/All", map[string]any{"f": float64(3)}, `{"f":3}`},
		{"float", "t/All", map[string]any{"f": 0.25}, `{"f":0.25}`},
		{"float from int on the wire", "t/All", map[string]any{"f": uint64(2)}, `{"f":2}`},
		{"float nan", "t/All", map[string]any{"f": math.NaN()}, `{"f":"NaN"}`},
		{"int as integral float", "t/All", map[string]any{"i": float64(5)}, `{"i":5}`},
		{"bytes", "t/All", map[string]any{"by": []byte("hello")}, `{"by":"aGVsbG8="}`},
		{"null bytes", "t/All", map[string]any{"by": nil}, `{"by":null}`},
		{"time string", "t/All", map[string]any{"t": "2026-11-03T10:04:05.5+01:00"}, `{"t":"2026-11-03T10:04:05.5+01:00"}`},
		{"time value", "t/All", map[string]any{"t": time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, `{"t":"2026-01-02T03:04:05Z"}`},
		{"list", "t/All", map[string]any{"l": []any{uint64(1), int64(-2)}}, `{"l":[1,-2]}`},
		{"null list", "t/All", map[string]any{"l": nil}, `{"l":null}`},
		{"map", "t/All", map[string]any{"m": map[string]any{"b": float64(1), "a": 0.5}}, `{"m":{"a":0.5,"b":1}}`},
		{"int-keyed map", "t/All", map[string]any{"imap": map[any]any{uint64(7): "x", int64(-1): "y"}}, `{"imap":{"-1":"y","7":"x"}}`},
		{"ref and list of refs", "t/All", map[string]any{
			"inner":  map[string]any{"name": "n", "tags": map[string]any{"k": "v"}},
			"inners": []any{map[string]any{"name": "a"}},
		}, `{"inner":{"name":"n","tags":{"k":"v"}},"inners":[{"name":"a"}]}`},
		{"optional null", "t/All", map[string]any{"oi": nil, "oinner": nil}, `{"oi":null,"oinner":null}`},
		{"any", "t/All", map[string]any{"any": map[any]any{uint64(1): []any{[]byte{1}, 1.5, math.Inf(1)}}},
			`{"any":{"1":["AQ==",1.5,"Infinity"]}}`},
		{"undescribed field kept", "t/Inner", map[string]any{"name": "n", "extra": []byte{0}}, `{"extra":"AA==","name":"n"}`},
		{"recursive", "t/Node", map[string]any{"v": uint64(1), "next": map[string]any{"v": uint64(2)}}, `{"next":{"v":2},"v":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toJSONString(t, c, tt.typ, tt.in); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestToJSONErrors(t *testing.T) {
	c := testContract()
	tests := []struct {
		name string
		typ  string
		in   any
		path string
		msg  string
	}{
		{"not a map", "t/All", "x", "", "expected t/All, got string"},
		{"string got int", "t/All", map[string]any{"s": uint64(1)}, "s", "expected string, got integer"},
		{"int got fraction", "t/All", map[string]any{"i": 1.5}, "i", "expected int, got float"},
		{"bad time", "t/All", map[string]any{"t": "soon"}, "t", "invalid RFC 3339 time"},
		{"nested", "t/All", map[string]any{"inners": []any{map[string]any{"tags": map[string]any{"k": true}}}}, "inners[0].tags[k]", "expected string, got bool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := contract.ToJSON(c, tt.typ, tt.in)
			var je *contract.JSONError
			if !errors.As(err, &je) || je.Path != tt.path || !strings.Contains(je.Msg, tt.msg) {
				t.Fatalf("ToJSON error = %v; want path %q msg containing %q", err, tt.path, tt.msg)
			}
		})
	}
}

// Round trip through real Go types and the CBOR codec, using a contract
// built from them: JSON → FromJSON → CBOR → Go struct, and Go struct → CBOR
// → any → ToJSON → JSON.

type rtInner struct {
	Name string            `cbor:"name"`
	Tags map[string]string `cbor:"tags,omitempty"`
}

type rtMsg struct {
	S      string           `cbor:"s"`
	B      bool             `cbor:"b"`
	I      int64            `cbor:"i"`
	I32    int32            `cbor:"i32"`
	U      uint16           `cbor:"u"`
	F      float64          `cbor:"f"`
	F32    float32          `cbor:"f32"`
	By     []byte           `cbor:"by"`
	T      time.Time        `cbor:"t"`
	L      []string         `cbor:"l"`
	M      map[string]int   `cbor:"m"`
	IM     map[int]string   `cbor:"im"`
	Inner  rtInner          `cbor:"inner"`
	PInner *rtInner         `cbor:"pinner"`
	PI     *int             `cbor:"pi"`
	Inners []rtInner        `cbor:"inners"`
	Any    any              `cbor:"any"`
	Nested map[string][]int `cbor:"nested"`
}

func (rtMsg) WireType() string { return "rt/Msg" }

func buildRT(t *testing.T) *contract.Contract {
	t.Helper()
	svc := handler.NewService("RT", 1).Handle("echo", handler.Unary(func(_ context.Context, m *rtMsg) (*rtMsg, error) { return m, nil }))
	c, err := contract.Build([]*handler.Service{svc})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := contract.Decode(raw) // what a client sees
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRoundTripThroughCBOR(t *testing.T) {
	c := buildRT(t)
	in := `{"s":"x","b":true,"i":-5,"i32":7,"u":65535,"f":3,"f32":0.5,"by":"AAEC","t":"2026-11-03T10:04:05.25Z",` +
		`"l":["a","b"],"m":{"k":1},"im":{"3":"three"},"inner":{"name":"n","tags":{"a":"b"}},"pinner":null,"pi":9,` +
		`"inners":[{"name":"p"}],"any":{"deep":[1,2.5]},"nested":{"x":[1,2]}}`
	wire, err := contract.FromJSON(c, "rt/Msg", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cbor.Marshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	var m rtMsg
	if err := cbor.Unmarshal(b, &m); err != nil {
		t.Fatalf("server-side decode: %v", err)
	}
	nine := 9
	want := rtMsg{
		S: "x", B: true, I: -5, I32: 7, U: 65535, F: 3, F32: 0.5, By: []byte{0, 1, 2},
		T: time.Date(2026, 11, 3, 10, 4, 5, 250000000, time.UTC),
		L: []string{"a", "b"}, M: map[string]int{"k": 1}, IM: map[int]string{3: "three"},
		Inner: rtInner{Name: "n", Tags: map[string]string{"a": "b"}}, PI: &nine,
		Inners: []rtInner{{Name: "p"}}, Any: map[string]any{"deep": []any{uint64(1), 2.5}},
		Nested: map[string][]int{"x": {1, 2}},
	}
	if !m.T.Equal(want.T) {
		t.Fatalf("time = %v, want %v", m.T, want.T)
	}
	m.T = want.T
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("decoded\n %#v\nwant\n %#v", m, want)
	}

	// And back: the server's response as the CLI decodes it.
	out, err := cbor.Marshal(&m)
	if err != nil {
		t.Fatal(err)
	}
	// The codec's own decoder turns maps into map[string]any and so cannot
	// decode map[int]string into an interface; decode with fxamacker's
	// defaults (map[any]any), as the CLI does.
	var decoded any
	if err := fxcbor.Unmarshal(out, &decoded); err != nil {
		t.Fatalf("client-side decode into any: %v", err)
	}
	got := toJSONString(t, c, "rt/Msg", decoded)
	wantJSON := `{"any":{"deep":[1,2.5]},"b":true,"by":"AAEC","f":3,"f32":0.5,"i":-5,"i32":7,"im":{"3":"three"},` +
		`"inner":{"name":"n","tags":{"a":"b"}},"inners":[{"name":"p"}],"l":["a","b"],"m":{"k":1},` +
		`"nested":{"x":[1,2]},"pi":9,"pinner":null,"s":"x","t":"2026-11-03T10:04:05.25Z","u":65535}`
	if got != wantJSON {
		t.Fatalf("ToJSON\n got %s\nwant %s", got, wantJSON)
	}
}

// A JSON 1 for a float field must travel as a CBOR float so a strict
// decoder (or another language) sees a float.
func TestFloatStaysFloatOnTheWire(t *testing.T) {
	c := buildRT(t)
	wire, err := contract.FromJSON(c, "rt/Msg", []byte(`{"f":1,"i":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cbor.Marshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := cbor.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if _, ok := back["f"].(float64); !ok {
		t.Fatalf("f decoded as %T, want float64", back["f"])
	}
	if _, ok := back["i"].(uint64); !ok {
		t.Fatalf("i decoded as %T, want an integer", back["i"])
	}
}
