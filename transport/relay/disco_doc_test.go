package relay

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

// hexExamples returns the hex blocks of PROTOCOL.md that follow the marker
// "<!-- KIND: NAME -->", by name.
func hexExamples(t *testing.T, kind string) map[string][]byte {
	t.Helper()
	raw, err := os.ReadFile("../../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := regexp.MustCompile(`^<!-- ` + kind + `: ([a-z0-9-]+) -->$`)
	lines := strings.Split(string(raw), "\n")
	examples := map[string][]byte{}
	for i := 0; i < len(lines); i++ {
		m := marker.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "```hex" {
			t.Fatalf("PROTOCOL.md:%d: example %q is not followed by a hex block", i+1, m[1])
		}
		var b []byte
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			code, _, _ := strings.Cut(lines[i], "#")
			v, err := hex.DecodeString(strings.Join(strings.Fields(code), ""))
			if err != nil {
				t.Fatalf("PROTOCOL.md:%d: %v", i+1, err)
			}
			b = append(b, v...)
		}
		examples[m[1]] = b
	}
	return examples
}

// discoDocValues are the inputs of the examples of PROTOCOL.md §24.
func discoDocValues() (key, peer trust.SecretKey, at time.Time, tx [discoTxLen]byte, a, b netip.AddrPort) {
	key, _ = trust.KeyFromSeed(bytes.Repeat([]byte{1}, 32))
	peer, _ = trust.KeyFromSeed(bytes.Repeat([]byte{2}, 32))
	at = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range tx {
		tx[i] = byte(i)
	}
	return key, peer, at, tx, netip.MustParseAddrPort("203.0.113.7:41641"), netip.MustParseAddrPort("[2001:db8::1]:4433")
}

func discoDocWant() map[string][]byte {
	key, peer, at, tx, a, b := discoDocValues()
	id, peerID := trust.IDOf(key), trust.IDOf(peer)
	ping := encodeDisco(key, peerID, discoPing, at, pingBody(tx, a, 0))
	return map[string][]byte{
		"ping":          ping,
		"ping-signed":   discoSignedBytes(peerID, ping[len(discoMagic):len(ping)-discoSigLen]),
		"pong":          encodeDisco(peer, id, discoPong, at, pingBody(tx, netip.MustParseAddrPort("198.51.100.9:50000"), 0)),
		"call-me-maybe": encodeDisco(key, peerID, discoCallMeMaybe, at, callMeMaybeBody([]netip.AddrPort{a, b})),
		"observe":       encodeDisco(key, trust.EndpointID{}, discoObserve, at, tx[:]),
		"observed":      encodeObserved(tx, netip.MustParseAddrPort("198.51.100.9:50000")),
	}
}

// TestDirectPathDocExamples checks the byte examples of PROTOCOL.md §24
// ("<!-- disco-example: NAME -->" blocks) against the encoders, and that
// the decoder and signature checks accept them.
func TestDirectPathDocExamples(t *testing.T) {
	examples := hexExamples(t, "disco-example")
	want := discoDocWant()
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	}) {
		got, ok := examples[name]
		if !ok {
			t.Errorf("PROTOCOL.md lacks the example %q:\n%s", name, hexDump(want[name]))
			continue
		}
		if !bytes.Equal(got, want[name]) {
			t.Errorf("example %q:\n doc  %x\n code %x", name, got, want[name])
		}
	}
	for name := range examples {
		if _, ok := want[name]; !ok {
			t.Errorf("PROTOCOL.md example %q is not checked", name)
		}
	}
	key, peer, at, tx, a, b := discoDocValues()
	id, peerID := trust.IDOf(key), trust.IDOf(peer)
	m, err := parseDisco(examples["ping"])
	if err != nil || m.typ != discoPing || m.tx != tx || m.addr != a || m.sender != id || verifyDisco(&m, peerID, at) != nil {
		t.Errorf("the documented PING parses as %+v, %v", m, err)
	}
	if verifyDisco(&m, id, at) == nil {
		t.Error("the documented PING verifies for another receiver")
	}
	if verifyDisco(&m, peerID, at.Add(MaxClockSkew+time.Second)) == nil {
		t.Error("the documented PING verifies long after its time")
	}
	m, err = parseDisco(examples["call-me-maybe"])
	if err != nil || len(m.cands) != 2 || m.cands[0] != a || m.cands[1] != b || verifyDisco(&m, peerID, at) != nil {
		t.Errorf("the documented CALL-ME-MAYBE parses as %+v, %v", m, err)
	}
	m, err = parseDisco(examples["observe"])
	if err != nil || verifyDisco(&m, trust.EndpointID{}, at) != nil {
		t.Errorf("the documented OBSERVE parses as %+v, %v", m, err)
	}
	if len(examples["observed"]) >= len(examples["observe"]) {
		t.Error("OBSERVED is not shorter than OBSERVE")
	}
}

func hexDump(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		n := min(32, len(b))
		fmt.Fprintf(&sb, "%x\n", b[:n])
		b = b[n:]
	}
	return sb.String()
}
