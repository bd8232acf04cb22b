package contract_test

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/trust"
)

// TestDecodeRejectsMalformed checks that Decode refuses contracts that
// would break the code using them (the CLI's JSON conversion, type
// rendering) or that PROTOCOL.md §13.1 rules out.
func TestDecodeRejectsMalformed(t *testing.T) {
	msg := func(fields ...contract.Field) []contract.TypeDef {
		return []contract.TypeDef{{Name: "t/M", Fields: fields}}
	}
	svc := func(ms ...contract.Method) []contract.Service {
		return []contract.Service{{Name: "S", Version: 1, Scope: "shared", Methods: ms}}
	}
	unary := contract.Method{Name: "m", Pattern: "unary", Request: "t/M", Response: "t/M"}
	field := func(r contract.TypeRef) contract.Field { return contract.Field{Name: "f", Type: r} }
	str := contract.TypeRef{Kind: contract.KindString}
	tests := map[string]struct {
		c    contract.Contract
		want string
	}{
		"list without elem": {contract.Contract{Types: msg(field(contract.TypeRef{Kind: contract.KindList}))}, "list takes an elem"},
		"map without key":   {contract.Contract{Types: msg(field(contract.TypeRef{Kind: contract.KindMap, Elem: &str}))}, "map takes a key"},
		"nested list without elem": {contract.Contract{Types: msg(field(contract.TypeRef{Kind: contract.KindMap, Key: &str,
			Elem: &contract.TypeRef{Kind: contract.KindList}}))}, "list takes an elem"},
		"unknown kind":           {contract.Contract{Types: msg(field(contract.TypeRef{Kind: "complex"}))}, `unknown kind "complex"`},
		"ref not defined":        {contract.Contract{Types: msg(field(contract.TypeRef{Kind: contract.KindRef, Ref: "t/Gone"}))}, `"t/Gone" not defined`},
		"string with elem":       {contract.Contract{Types: msg(field(contract.TypeRef{Kind: contract.KindString, Elem: &str}))}, "takes no elem"},
		"type twice":             {contract.Contract{Types: append(msg(), msg()...)}, "defined twice"},
		"field twice":            {contract.Contract{Types: msg(field(str), field(str))}, `field "f" defined twice`},
		"method twice":           {contract.Contract{Types: msg(), Services: svc(unary, unary)}, "described twice"},
		"service twice":          {contract.Contract{Types: msg(), Services: append(svc(unary), svc(unary)...)}, "described twice"},
		"unknown scope":          {contract.Contract{Types: msg(), Services: []contract.Service{{Name: "S", Scope: "global"}}}, `unknown scope "global"`},
		"requires nothing":       {contract.Contract{Types: msg(), Services: svc(contract.Method{Name: "m", Pattern: "unary", Request: "t/M", Response: "t/M", Requires: &trust.Expr{}})}, "requires"},
		"bad capability":         {contract.Contract{Types: msg(), Services: svc(contract.Method{Name: "m", Pattern: "unary", Request: "t/M", Response: "t/M", Requires: &trust.Expr{Cap: "a b"}})}, "requires"},
		"unknown pattern":        {contract.Contract{Types: msg(), Services: svc(contract.Method{Name: "m", Pattern: "duplex", Request: "t/M", Response: "t/M"})}, "unknown pattern"},
		"escape in method name":  {contract.Contract{Types: msg(), Services: svc(contract.Method{Name: "m\x1b[2J", Pattern: "unary", Request: "t/M", Response: "t/M"})}, "method name"},
		"space in service name":  {contract.Contract{Types: msg(), Services: []contract.Service{{Name: "S x", Scope: "shared"}}}, "service name"},
		"reserved service name":  {contract.Contract{Types: msg(), Services: []contract.Service{{Name: "_aster", Scope: "shared"}}}, "reserved"},
		"escape in type name":    {contract.Contract{Types: []contract.TypeDef{{Name: "t/\x1b]0;owned\x07"}}}, "type name"},
		"bidi override in field": {contract.Contract{Types: msg(contract.Field{Name: "a\u202eb", Type: str})}, "format character"},
		"newline in field name":  {contract.Contract{Types: msg(contract.Field{Name: "a\nb", Type: str})}, "control"},
		"invalid UTF-8 field":    {contract.Contract{Types: msg(contract.Field{Name: "a\xffb", Type: str})}, "UTF-8"},
		"long type name":         {contract.Contract{Types: []contract.TypeDef{{Name: strings.Repeat("t", contract.MaxNameLen+1)}}}, "1-256 bytes"},
		"request undefined":      {contract.Contract{Types: msg(), Services: svc(contract.Method{Name: "m", Pattern: "unary", Request: "t/X", Response: "t/M"})}, `"t/X" not defined`},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := tt.c.Encode()
			if err != nil {
				t.Fatal(err)
			}
			_, err = contract.Decode(b)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestDecodeSizeLimit checks that a contract larger than MaxEncodedSize is
// refused before it is decoded.
func TestDecodeSizeLimit(t *testing.T) {
	// A valid CBOR byte string (0x5a, 32-bit length) one byte too large.
	n := contract.MaxEncodedSize + 1 - 5
	b := append([]byte{0x5a, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, bytes.Repeat([]byte{0}, n)...)
	_, err := contract.Decode(b)
	if err == nil || !strings.Contains(err.Error(), "allowed") {
		t.Fatalf("Decode of %d bytes: %v, want a size error", len(b), err)
	}
}

// TestDecodeMemoryBound checks the worst case the limits allow: a contract
// of MaxEncodedSize bytes made of empty entries, which decode to the
// largest Go structs per encoded byte, stays within 100 times its size.
func TestDecodeMemoryBound(t *testing.T) {
	// {"services": [{"methods": [{} x k]} ...]}: each method is one byte (0xa0).
	const per = 1 << 16 // at the list limit
	var b []byte
	b = append(b, 0xa1, 0x68)
	b = append(b, "services"...)
	nsvc := (contract.MaxEncodedSize - 16) / (per + 16)
	b = binary.BigEndian.AppendUint16(append(b, 0x99), uint16(nsvc))
	for range nsvc {
		b = append(b, 0xa1, 0x67)
		b = append(b, "methods"...)
		b = binary.BigEndian.AppendUint32(append(b, 0x9a), per)
		b = append(b, bytes.Repeat([]byte{0xa0}, per)...)
	}
	if len(b) > contract.MaxEncodedSize {
		t.Fatalf("test input of %d bytes exceeds the limit", len(b))
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := contract.Decode(b)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a contract of nameless services was accepted")
	}
	got := after.TotalAlloc - before.TotalAlloc
	if got > 100*uint64(len(b)) {
		t.Errorf("decoding %d bytes allocated %d bytes (%.0f×)", len(b), got, float64(got)/float64(len(b)))
	}
	t.Logf("decoding %d bytes allocated %d bytes (%.0f×)", len(b), got, float64(got)/float64(len(b)))
}

// TestTypeRefStringMalformed checks that rendering a TypeRef that Decode
// would refuse (a list or map without its parts, as a hand-built contract
// may have) does not panic.
func TestTypeRefStringMalformed(t *testing.T) {
	for _, r := range []contract.TypeRef{{Kind: contract.KindList}, {Kind: contract.KindMap}, {}} {
		_ = r.String()
	}
	c := &contract.Contract{Types: []contract.TypeDef{{Name: "t/M", Fields: []contract.Field{{Name: "f", Type: contract.TypeRef{Kind: contract.KindMap}}}}}}
	if _, err := contract.ToJSON(c, "t/M", map[string]any{"f": []any{1}}); err == nil {
		t.Error("ToJSON of a list into a malformed map type succeeded")
	}
}
