package wire_test

import (
	"testing"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
)

// The draining mark survives both trailer forms, and the fast CBOR
// encoder writes what the general encoder writes.
func TestTrailerDrainingRoundTrip(t *testing.T) {
	tr := wire.TrailerFor(wire.DrainingRefusal("server shutting down"))
	tr.Metadata = map[string]string{"k": "v"}
	for _, asJSON := range []bool{false, true} {
		frame, err := wire.AppendTrailer(nil, &tr, asJSON)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.DecodeTrailer(frame[5:])
		if err != nil {
			t.Fatal(err)
		}
		e := got.Err()
		if !got.Draining || !wire.IsDraining(e) || !status.IsNotProcessed(e) || status.CodeOf(e) != status.Unavailable || got.Metadata["k"] != "v" {
			t.Fatalf("json %v: decoded %+v, err %v", asJSON, got, e)
		}
		if status.FromError(e).Message() != "server shutting down" {
			t.Fatalf("json %v: message %q", asJSON, status.FromError(e).Message())
		}
	}
	frame, _ := wire.AppendTrailer(nil, &tr, false)
	general, err := cbor.Codec{}.Marshal(&tr)
	if err != nil {
		t.Fatal(err)
	}
	if string(frame[5:]) != string(general) {
		t.Fatalf("fast encoder % x\ngeneral      % x", frame[5:], general)
	}
	// A trailer without the mark decodes to a plain *status.Error.
	plain := wire.Trailer{Code: uint32(status.Unavailable), Message: "server shutting down", NotProcessed: true}
	if e := plain.Err(); wire.IsDraining(e) {
		t.Fatalf("unmarked trailer reads as draining: %v", e)
	}
	if _, ok := plain.Err().(*status.Error); !ok {
		t.Fatalf("unmarked trailer's error is %T", plain.Err())
	}
	// The mark on anything but a not-processed UNAVAILABLE is ignored.
	for _, tr := range []wire.Trailer{
		{Code: uint32(status.Internal), NotProcessed: true, Draining: true},
		{Code: uint32(status.Unavailable), Draining: true},
		{Code: 0, Draining: true},
	} {
		if e := tr.Err(); wire.IsDraining(e) {
			t.Fatalf("trailer %+v reads as draining", tr)
		}
	}
}
