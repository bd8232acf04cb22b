package discovery

import (
	"bytes"
	"encoding/hex"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBase58Vectors(t *testing.T) {
	for _, tc := range []struct{ hex, b58 string }{
		{"", ""},
		{"00", "1"},
		{"0000", "11"},
		{"01", "2"},
		{"39", "z"},
		{"3a", "21"},
		{"ff", "5Q"},
		{"0000287fb4cd", "11233QC4"},
		{hex.EncodeToString([]byte("Hello World!")), "2NEpo7TZRRrLZSi2U"},
		{hex.EncodeToString([]byte("The quick brown fox jumps over the lazy dog.")),
			"USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z"},
	} {
		b, _ := hex.DecodeString(tc.hex)
		if got := base58Encode(b); got != tc.b58 {
			t.Errorf("base58Encode(%s) = %q, want %q", tc.hex, got, tc.b58)
		}
		got, _, ok := base58Decode(tc.b58)
		if !ok || !bytes.Equal(got, b) {
			t.Errorf("base58Decode(%q) = %x, %v, want %s", tc.b58, got, ok, tc.hex)
		}
	}
}

// refBase58Encode is a plain math/big reference implementation.
func refBase58Encode(b []byte) string {
	n := new(big.Int).SetBytes(b)
	var out []byte
	for mod, base := new(big.Int), big.NewInt(58); n.Sign() > 0; {
		n.DivMod(n, base, mod)
		out = append(out, base58Alphabet[mod.Int64()])
	}
	for i := 0; i < len(b) && b[i] == 0; i++ {
		out = append(out, '1')
	}
	slices.Reverse(out)
	return string(out)
}

func TestBase58RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 3000 {
		size := r.IntN(80)
		if n%10 == 0 {
			size = r.IntN(maxRecordLen + 100)
		}
		b := make([]byte, size)
		for i := range b {
			if r.IntN(4) != 0 { // plenty of zero bytes, leading ones included
				b[i] = byte(r.Uint32())
			}
		}
		s := base58Encode(b)
		if want := refBase58Encode(b); s != want {
			t.Fatalf("base58Encode(%x) = %q, reference gives %q", b, s, want)
		}
		got, _, ok := base58Decode(s)
		if !ok || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x via %q gave %x, %v", b, s, got, ok)
		}
	}
}

func TestBase58DecodeInvalid(t *testing.T) {
	for _, tc := range []struct {
		s   string
		bad int
	}{
		{"0", 0}, {"O", 0}, {"I", 0}, {"l", 0}, {"abc+", 3}, {"11 2", 2}, {"ab\xc3\xa9", 2}, {"\x00", 0},
	} {
		if _, bad, ok := base58Decode(tc.s); ok || bad != tc.bad {
			t.Errorf("base58Decode(%q) = bad %d, ok %v; want bad %d, !ok", tc.s, bad, ok, tc.bad)
		}
	}
}

// Every base58 string is the encoding of exactly one byte string, so decoding
// any string and encoding the result gives the string back.
func TestBase58DecodeEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := range 2000 {
		s := make([]byte, r.IntN(60))
		if n%10 == 0 {
			s = make([]byte, r.IntN(maxPayloadLen+1))
		}
		for i := range s {
			s[i] = base58Alphabet[r.IntN(58)]
			if r.IntN(8) == 0 {
				s[i] = 'z' // the top digit, for long carries
			}
		}
		b, _, ok := base58Decode(string(s))
		if !ok {
			t.Fatalf("base58Decode(%q) failed", s)
		}
		if got := base58Encode(b); got != string(s) {
			t.Fatalf("base58Encode(base58Decode(%q)) = %q", s, got)
		}
	}
}
