package aster

import (
	"context"
	"fmt"
	"testing"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
)

// TestMapErrConnClose: a call in flight when the server closes the
// connection reports the close code as PROTOCOL.md 3.3 says clients do:
// REFUSED (a credential that expired) is UNAUTHENTICATED and DENIED is
// PERMISSION_DENIED, neither of them retryable; any other close, or a
// local one, is UNAVAILABLE.
func TestMapErrConnClose(t *testing.T) {
	cs := &clientStream{ctx: context.Background()}
	for _, tc := range []struct {
		ce   transport.ConnError
		want status.Code
	}{
		{transport.ConnError{Code: transport.ConnRefused, Reason: "credential expired", Remote: true}, status.Unauthenticated},
		{transport.ConnError{Code: transport.ConnDenied, Reason: "connection refused", Remote: true}, status.PermissionDenied},
		{transport.ConnError{Code: transport.ConnShutdown, Reason: "server shutting down", Remote: true}, status.Unavailable},
		{transport.ConnError{Code: transport.ConnNoError, Remote: true}, status.Unavailable},
		{transport.ConnError{Code: transport.ConnRefused}, status.Unavailable}, // closed locally
	} {
		err := cs.mapErr(fmt.Errorf("read: %w", &tc.ce))
		if got := status.FromError(err).Code(); got != tc.want {
			t.Errorf("%v: %v (%v), want %v", &tc.ce, got, err, tc.want)
		}
	}
}
