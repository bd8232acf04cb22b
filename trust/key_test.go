package trust

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// RFC 8032 section 7.1, test 1.
const (
	rfcSeedHex = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	rfcPubHex  = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)

func TestParseEndpointID(t *testing.T) {
	want, _ := hex.DecodeString(rfcPubHex)
	for _, s := range []string{rfcPubHex, strings.ToUpper(rfcPubHex), " \t" + rfcPubHex + "\n"} {
		id, err := ParseEndpointID(s)
		if err != nil {
			t.Fatalf("ParseEndpointID(%q): %v", s, err)
		}
		if !bytes.Equal(id[:], want) {
			t.Errorf("ParseEndpointID(%q) = %s", s, id)
		}
		if id.String() != rfcPubHex {
			t.Errorf("String() = %s, want %s", id, rfcPubHex)
		}
		if id.Short() != rfcPubHex[:16] {
			t.Errorf("Short() = %s", id.Short())
		}
		if id.IsZero() {
			t.Error("IsZero() on a real id")
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"", "must be 64 hex characters, got 0"},
		{rfcPubHex[:62], "must be 64 hex characters, got 62"},
		{rfcPubHex[:63], "must be 64 hex characters, got 63"},
		{rfcPubHex + "00", "must be 64 hex characters, got 66"},
		{"zz" + rfcPubHex[2:], "not hex"},
		{rfcPubHex[:63] + "g", "not hex"},
		{rfcPubHex[:30] + "é" + rfcPubHex[32:], "not hex"},
	} {
		if _, err := ParseEndpointID(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseEndpointID(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestEndpointIDText(t *testing.T) {
	id, err := ParseEndpointID(rfcPubHex)
	if err != nil {
		t.Fatal(err)
	}
	b, err := id.MarshalText()
	if err != nil || string(b) != rfcPubHex {
		t.Fatalf("MarshalText = %s, %v", b, err)
	}
	var got EndpointID
	if err := got.UnmarshalText(b); err != nil || got != id {
		t.Fatalf("UnmarshalText = %s, %v", got, err)
	}
	if err := got.UnmarshalText([]byte("abc")); err == nil {
		t.Error("UnmarshalText accepted a short id")
	}
	if got != id {
		t.Error("failed UnmarshalText modified the id")
	}
	if !(EndpointID{}).IsZero() {
		t.Error("zero id not IsZero")
	}
}

func TestIDOf(t *testing.T) {
	seed, _ := hex.DecodeString(rfcSeedHex)
	key, err := KeyFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	id := IDOf(key)
	if id.String() != rfcPubHex {
		t.Errorf("IDOf = %s, want %s", id, rfcPubHex)
	}
	if !bytes.Equal(id.PublicKey(), key.Public().(ed25519.PublicKey)) {
		t.Error("PublicKey() differs from the key's public key")
	}
	fromPub, err := EndpointIDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil || fromPub != id {
		t.Errorf("EndpointIDFromPublicKey = %s, %v", fromPub, err)
	}
	if _, err := EndpointIDFromPublicKey(make([]byte, 31)); err == nil {
		t.Error("EndpointIDFromPublicKey accepted 31 bytes")
	}
	// A signature by the key verifies under the id.
	msg := []byte("aster")
	if !ed25519.Verify(id.PublicKey(), msg, ed25519.Sign(key, msg)) {
		t.Error("signature does not verify under IDOf(key)")
	}
	a, b := GenerateKey(), GenerateKey()
	if IDOf(a) == IDOf(b) || IDOf(a).IsZero() {
		t.Error("generated keys have equal or zero ids")
	}
}

func TestKeyFromSeedLength(t *testing.T) {
	for _, n := range []int{0, 31, 33, 64} {
		if _, err := KeyFromSeed(make([]byte, n)); err == nil {
			t.Errorf("KeyFromSeed accepted %d bytes", n)
		}
	}
}

func TestParseSecretKeyBase64(t *testing.T) {
	// A seed whose base64 uses '+' and '/' (standard) or '-' and '_' (URL)
	// and needs one '=' of padding.
	seed := bytes.Repeat([]byte{0xfb, 0xff}, 16)
	std := base64.StdEncoding.EncodeToString(seed)
	if !strings.ContainsAny(std, "+/") || !strings.HasSuffix(std, "=") {
		t.Fatalf("test seed encodes as %q; want '+' or '/' and padding", std)
	}
	want := ed25519.NewKeyFromSeed(seed)
	for name, s := range map[string]string{
		"std":        std,
		"raw std":    base64.RawStdEncoding.EncodeToString(seed),
		"url":        base64.URLEncoding.EncodeToString(seed),
		"raw url":    base64.RawURLEncoding.EncodeToString(seed),
		"whitespace": "  " + std + "\n",
	} {
		key, err := ParseSecretKeyBase64(s)
		if err != nil {
			t.Errorf("%s %q: %v", name, s, err)
			continue
		}
		if !key.Equal(want) {
			t.Errorf("%s %q: wrong key", name, s)
		}
	}
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"blank", " \n\t", "empty"},
		{"31 bytes", base64.StdEncoding.EncodeToString(seed[:31]), "must be 32 bytes, got 31"},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(seed, 1)), "must be 32 bytes, got 33"},
		{"64-byte private key", base64.StdEncoding.EncodeToString(want), "must be 32 bytes, got 64"},
		{"garbage", "not base64!!", "not base64"},
		{"hex", hex.EncodeToString(seed), "must be 32 bytes"}, // hex is valid base64 of the wrong length
		{"mixed alphabets", strings.Replace(base64.StdEncoding.EncodeToString(seed), "/", "_", 1), "not base64"},
		{"bad padding", std + "==", "not base64"},
	} {
		_, err := ParseSecretKeyBase64(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParseSecretKeyBase64(%q) = %v, want error containing %q", tc.name, tc.in, err, tc.want)
		}
	}
}

func TestEncodeSecretKeyBase64RoundTrip(t *testing.T) {
	seed, _ := hex.DecodeString(rfcSeedHex)
	key, _ := KeyFromSeed(seed)
	if got, want := EncodeSecretKeyBase64(key), base64.StdEncoding.EncodeToString(seed); got != want {
		t.Errorf("EncodeSecretKeyBase64 = %q, want %q", got, want)
	}
	for range 20 {
		key := GenerateKey()
		s := EncodeSecretKeyBase64(key)
		got, err := ParseSecretKeyBase64(s)
		if err != nil {
			t.Fatalf("ParseSecretKeyBase64(%q): %v", s, err)
		}
		if !got.Equal(key) || IDOf(got) != IDOf(key) {
			t.Fatalf("round trip of %q changed the key", s)
		}
	}
}
