package quicwrap

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/aster-go/aster/transport"
)

func TestTruncateReason(t *testing.T) {
	short := strings.Repeat("a", MaxReasonLen)
	if got := TruncateReason(short); got != short {
		t.Errorf("a reason of MaxReasonLen bytes was cut to %d", len(got))
	}
	// "é" is two bytes: cutting at MaxReasonLen would split it.
	long := strings.Repeat("a", MaxReasonLen-1) + "é!"
	if got := TruncateReason(long); got != strings.Repeat("a", MaxReasonLen-1) {
		t.Errorf("cut to %d bytes ending %q", len(got), got[len(got)-2:])
	}
}

func TestResetState(t *testing.T) {
	// Reset before the end was read: a later io.EOF is the reset.
	var r resetState
	r.reset(7)
	var se *transport.StreamError
	if err := r.eof(); !errors.As(err, &se) || se.Code != 7 || se.Remote {
		t.Fatalf("eof after reset: %v", err)
	}
	if !r.wasReset() {
		t.Fatal("wasReset false after reset")
	}
	// The end read first: it stays the end, even after a Reset.
	var e resetState
	if err := e.eof(); err != io.EOF {
		t.Fatalf("eof: %v", err)
	}
	e.reset(9)
	if err := e.eof(); err != io.EOF {
		t.Fatalf("eof after end then reset: %v", err)
	}
	// The first reset's code wins.
	var f resetState
	f.reset(0)
	f.reset(5)
	if err := f.eof(); !errors.As(err, &se) || se.Code != 0 {
		t.Fatalf("eof after two resets: %v", err)
	}
}
