package relay

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

// FuzzDisco decodes arbitrary datagrams as the path layer does (parseDisco,
// then the signature and time checks) and checks that nothing panics, that
// an accepted message is no longer than maxDiscoLen and of a length its
// type allows, that every error wraps errDisco, and that an accepted
// message encodes back to the bytes it was read from.
func FuzzDisco(f *testing.F) {
	for _, b := range discoDocWant() {
		f.Add(b)
	}
	f.Add([]byte(discoMagic))
	f.Add(append([]byte(discoMagic), discoCallMeMaybe))
	f.Add(append(append([]byte(discoMagic), discoCallMeMaybe), bytes.Repeat([]byte{0xff}, 80)...))
	f.Add([]byte{0x40, 0x01})
	key, peerKey, at0, tx0, a0, _ := discoDocValues()
	f.Add(encodeDisco(key, trust.IDOf(peerKey), discoPing, at0, pingBody(tx0, a0, MaxPingLen-pingBaseLen)))
	_, peer, at, _, _, _ := discoDocValues()
	peerID := trust.IDOf(peer)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseDisco(data)
		if err != nil {
			if !errors.Is(err, errDisco) {
				t.Fatalf("error %v does not wrap errDisco", err)
			}
			return
		}
		if len(data) > maxDiscoLen {
			t.Fatalf("accepted %d bytes", len(data))
		}
		if len(m.cands) > MaxCandidates {
			t.Fatalf("%d candidates", len(m.cands))
		}
		if got := m.appendTo(nil); !bytes.Equal(got, data) {
			t.Fatalf("round trip:\n in  %x\n out %x", data, got)
		}
		if m.typ != discoObserved {
			_ = verifyDisco(&m, peerID, at)
			_ = verifyDisco(&m, trust.EndpointID{}, time.Now())
		}
	})
}
