package wire

import (
	"testing"
	"unsafe"
)

// Service and method names are interned: decoding the header of a method
// seen before allocates nothing, and different names stay different.
func TestHeaderNamesInterned(t *testing.T) {
	enc := func(h Header) []byte {
		b, err := AppendHeader(nil, &h, false)
		if err != nil {
			t.Fatal(err)
		}
		return b[prefixLen:]
	}
	p := enc(Header{Service: "MissionControl", Method: "getStatus", CallID: 7, Reuse: true})
	var a, b Header
	if err := DecodeHeaderInto(p, &a); err != nil {
		t.Fatal(err)
	}
	if err := DecodeHeaderInto(p, &b); err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(a.Service) != unsafe.StringData(b.Service) || unsafe.StringData(a.Method) != unsafe.StringData(b.Method) {
		t.Fatal("the names of a repeated header were allocated again")
	}
	if n := testing.AllocsPerRun(100, func() { _ = DecodeHeaderInto(p, &b) }); n != 0 {
		t.Fatalf("decoding a repeated header allocates %v times, want 0", n)
	}
	q := enc(Header{Service: "MissionControl", Method: "getStatuz"})
	if err := DecodeHeaderInto(q, &b); err != nil || b.Method != "getStatuz" || b.Service != "MissionControl" {
		t.Fatalf("%+v, %v", b, err)
	}
	if a.Method != "getStatus" {
		t.Fatalf("an interned name changed: %q", a.Method)
	}
	// Invalid UTF-8 is still refused (by the general decoder).
	bad := enc(Header{Service: "S", Method: "m"})
	bad[len(bad)-1] = 0xff
	if err := DecodeHeaderInto(bad, &b); err == nil {
		t.Fatal("a name that is not UTF-8 decoded")
	}
}
