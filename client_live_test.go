package aster_test

import (
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/status"
)

// Once Close returns, calls fail with UNAVAILABLE "client closed", also
// when a live connection was there just before (getConn's lock-free path),
// and nothing redials.
func TestCallAfterCloseUnavailable(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		c := e.dial(t)
		for range 3 {
			if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{N: 1}); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
		for range 3 {
			_, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{N: 1})
			wantCode(t, err, status.Unavailable)
			if !strings.Contains(err.Error(), "client closed") {
				t.Fatalf("call after Close: %v", err)
			}
		}
		if c.RemoteAddr() != nil {
			t.Fatal("a closed client has a connection")
		}
	})
}
