package quic

import (
	"errors"
	"net"
	"testing"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
	quicgo "github.com/quic-go/quic-go"
)

func TestZZExperiment(t *testing.T) {
	ln, _ := Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	defer ln.Close()
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	tr, base, _ := d.transport()
	tc := clientTLSConfig(base, testutil.ID(t, 3), func(trust.EndpointID) {})
	_, err := tr.Dial(t.Context(), net.UDPAddrFromAddrPort(ln.Addr().Direct[0]), tc, d.qcfg)
	var te *quicgo.TransportError
	t.Logf("raw err=%v (%T) Is(mismatch)=%v As(TransportError)=%v", err, err, errors.Is(err, transport.ErrPeerMismatch), errors.As(err, &te))
}
