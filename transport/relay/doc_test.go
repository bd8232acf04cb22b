package relay

import (
	"bytes"
	"slices"
	"testing"

	"github.com/aster-go/aster/trust"
)

// TestProtocolDocExamples checks the byte examples of PROTOCOL.md section
// 19 ("<!-- relay-example: NAME -->" blocks) against the encoders and
// decoders of this package, and that every example is checked.
func TestProtocolDocExamples(t *testing.T) {
	examples := hexExamples(t, "relay-example")

	key, _ := trust.KeyFromSeed(bytes.Repeat([]byte{1}, 32))
	peer, _ := trust.KeyFromSeed(bytes.Repeat([]byte{2}, 32))
	id, peerID := trust.IDOf(key), trust.IDOf(peer)
	nonce := make([]byte, nonceLen)
	for i := range nonce {
		nonce[i] = byte(i)
	}
	exporter := bytes.Repeat([]byte{0xee}, exporterLen)
	datagram := []byte{0x40, 0x01, 0x02, 0x03}
	want := map[string][]byte{
		"challenge":       challengeFrame(nonce),
		"register-signed": registerMessage(nonce, exporter, id),
		"register":        registerFrame(key, nonce, exporter),
		"accepted":        appendFrame(nil, frameAccepted),
		"send":            datagramFrame(frameSend, peerID, datagram),
		"recv":            datagramFrame(frameRecv, id, datagram),
		"close":           closeFrame(CloseReplaced, "replaced"),
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range examples {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		w, ok := want[name]
		if !ok {
			t.Errorf("PROTOCOL.md example %q is not checked", name)
			continue
		}
		if !bytes.Equal(examples[name], w) {
			t.Errorf("example %q:\n doc  %x\n code %x", name, examples[name], w)
		}
	}
	for name := range want {
		if _, ok := examples[name]; !ok {
			t.Errorf("PROTOCOL.md lacks the example %q", name)
		}
	}

	// The decoding direction: the relay's checks accept the documented
	// REGISTER for the documented challenge, and the frames parse back.
	reg := examples["register"]
	if got, ok := verifyRegister(reg[3:], nonce, exporter); len(reg) != 3+97 || !ok || got != id {
		t.Error("the documented REGISTER does not verify")
	}
	bad := slices.Clone(reg)
	bad[len(bad)-1] ^= 1
	if _, ok := verifyRegister(bad[3:], nonce, exporter); ok {
		t.Error("a modified REGISTER verifies")
	}
	if ce := parseClose(examples["close"][3:]); ce.Code != CloseReplaced || ce.Reason != "replaced" {
		t.Errorf("CLOSE parsed as %+v", ce)
	}
}
