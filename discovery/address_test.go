package discovery

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/aster-go/aster/trust"
)

// The known test vector quoted by PROTOCOL.md.
const (
	vectorRecordHex = "01" +
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" +
		"0106" + "7f000001" + "1151" +
		"0212" + "00000000000000000000000000000001" + "1151" +
		"031a" + "68747470733a2f2f72656c61792e6578616d706c653a33333430" +
		"9e2d1d2b"
	vectorAddress = "aster1EUehKUF7U4gthugev63w5f1txDmd5Kf9dZ4FmjuUgmkN9AycwqjLbwJuiwrurwAqkPsihv2WMseh4WC2TRdBZcwSf8ZGqaTELujr5eeNNiuzPTMqCmvdAHiKg2vj7p"
)

func testID() trust.EndpointID {
	var id trust.EndpointID
	for i := range id {
		id[i] = byte(i)
	}
	return id
}

func vectorAddr() EndpointAddr {
	return EndpointAddr{
		ID:     testID(),
		Relay:  "https://relay.example:3340",
		Direct: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4433"), netip.MustParseAddrPort("[::1]:4433")},
	}
}

func equalAddr(a, b EndpointAddr) bool {
	if a.ID != b.ID || a.Relay != b.Relay || len(a.Direct) != len(b.Direct) ||
		a.WebTransport != b.WebTransport || len(a.CertHashes) != len(b.CertHashes) {
		return false
	}
	for i := range a.CertHashes {
		if a.CertHashes[i] != b.CertHashes[i] {
			return false
		}
	}
	for i := range a.Direct {
		if a.Direct[i] != b.Direct[i] {
			return false
		}
	}
	return true
}

// seal appends the checksum to body and returns the aster1 address of it.
func seal(body []byte) string {
	sum := sha256.Sum256(body)
	return AddressPrefix + base58Encode(append(body[:len(body):len(body)], sum[:4]...))
}

// header returns a record body with version v and the test id.
func header(v byte) []byte {
	id := testID()
	return append([]byte{v}, id[:]...)
}

func v4Entry(ip string, port uint16) []byte {
	b := netip.MustParseAddr(ip).As4()
	return binary.BigEndian.AppendUint16(append([]byte{0x01, 6}, b[:]...), port)
}

func v6Entry(ip string, port uint16) []byte {
	b := netip.MustParseAddr(ip).As16()
	return binary.BigEndian.AppendUint16(append([]byte{0x02, 18}, b[:]...), port)
}

func relayEntry(url string) []byte { return append([]byte{0x03, byte(len(url))}, url...) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestKnownVector(t *testing.T) {
	a := vectorAddr()
	if got := hex.EncodeToString(a.record()); got != vectorRecordHex {
		t.Errorf("record = %s\nwant     %s", got, vectorRecordHex)
	}
	if got := a.String(); got != vectorAddress {
		t.Errorf("String() = %s\nwant       %s", got, vectorAddress)
	}
	got, err := ParseAddress(vectorAddress)
	if err != nil || !equalAddr(got, a) {
		t.Errorf("ParseAddress(vector) = %+v, %v; want %+v", got, err, a)
	}
	// The vector is also what the helpers build by hand.
	if s := seal(cat(header(1), v4Entry("127.0.0.1", 4433), v6Entry("::1", 4433), relayEntry(a.Relay))); s != vectorAddress {
		t.Errorf("hand-built vector = %s", s)
	}
}

func TestRoundTrip(t *testing.T) {
	ap := netip.MustParseAddrPort
	var fifteen []netip.AddrPort
	for i := range MaxDirectAddrs {
		if i%2 == 0 {
			fifteen = append(fifteen, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), uint16(1000+i)))
		} else {
			fifteen = append(fifteen, netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i)), uint16(65535-i)))
		}
	}
	for name, a := range map[string]EndpointAddr{
		"zero":    {},
		"id only": {ID: testID()},
		"v4":      {ID: testID(), Direct: []netip.AddrPort{ap("192.0.2.1:1")}},
		"v6":      {ID: testID(), Direct: []netip.AddrPort{ap("[2001:db8::1]:65535")}},
		"mixed": {ID: testID(), Direct: []netip.AddrPort{
			ap("[fe80::1]:7000"), ap("192.168.1.2:7000"), ap("[::]:1"), ap("0.0.0.0:2"),
		}},
		"relay":             {ID: testID(), Relay: "https://relay.example"},
		"relay 255 bytes":   {ID: testID(), Relay: "https://r.example/" + strings.Repeat("x", 255-18)},
		"relay utf8":        {ID: testID(), Relay: "https://réseau.example/ü"},
		"15 addrs":          {ID: testID(), Direct: fifteen},
		"15 addrs + relay":  {ID: testID(), Direct: fifteen, Relay: strings.Repeat("r", 255)},
		"vector":            vectorAddr(),
		"relay, no address": {Relay: "x"},
	} {
		t.Run(name, func(t *testing.T) {
			if err := a.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s := a.String()
			if !strings.HasPrefix(s, AddressPrefix) {
				t.Fatalf("String() = %q lacks prefix", s)
			}
			got, err := ParseAddress(s)
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", s, err)
			}
			if !equalAddr(got, a) {
				t.Fatalf("ParseAddress(String()) = %+v, want %+v", got, a)
			}
			if len(a.Direct) == 0 && got.Direct != nil {
				t.Errorf("Direct = %#v, want nil", got.Direct)
			}
			got, err = ParseAddress(" \t\n" + s + "\r\n ")
			if err != nil || !equalAddr(got, a) {
				t.Errorf("with white space: %+v, %v", got, err)
			}
		})
	}
}

func TestIPv4MappedEncodedAsIPv4(t *testing.T) {
	a := EndpointAddr{ID: testID(), Direct: []netip.AddrPort{netip.MustParseAddrPort("[::ffff:192.0.2.7]:9000")}}
	want := EndpointAddr{ID: testID(), Direct: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:9000")}}
	if s, w := a.String(), want.String(); s != w {
		t.Errorf("mapped address encodes as %s, want the IPv4 form %s", s, w)
	}
	got, err := ParseAddress(a.String())
	if err != nil || !equalAddr(got, want) {
		t.Errorf("got %+v, %v; want %+v", got, err, want)
	}
	// A (non-canonical) IPv6 entry holding a mapped address decodes as IPv4.
	got, err = ParseAddress(seal(cat(header(1), v6Entry("::ffff:192.0.2.7", 9000))))
	if err != nil || !equalAddr(got, want) {
		t.Errorf("mapped IPv6 entry: got %+v, %v; want %+v", got, err, want)
	}
}

func TestExtensionEntriesSkipped(t *testing.T) {
	body := cat(header(1),
		[]byte{0x80, 3, 'a', 'b', 'c'},
		v4Entry("192.0.2.1", 443),
		[]byte{0xff, 0},
		relayEntry("https://relay.example"),
		append([]byte{0xc0, 255}, make([]byte, 255)...),
	)
	got, err := ParseAddress(seal(body))
	if err != nil {
		t.Fatal(err)
	}
	want := EndpointAddr{ID: testID(), Relay: "https://relay.example", Direct: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:443")}}
	if !equalAddr(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestEntryOrderIsFree(t *testing.T) {
	got, err := ParseAddress(seal(cat(header(1), relayEntry("r"), v6Entry("::2", 2), v4Entry("1.2.3.4", 1))))
	if err != nil {
		t.Fatal(err)
	}
	want := EndpointAddr{ID: testID(), Relay: "r", Direct: []netip.AddrPort{
		netip.MustParseAddrPort("[::2]:2"), netip.MustParseAddrPort("1.2.3.4:1"),
	}}
	if !equalAddr(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestBareHexID(t *testing.T) {
	id := testID()
	for _, s := range []string{id.String(), strings.ToUpper(id.String()), "  " + id.String() + "\n"} {
		got, err := ParseAddress(s)
		if err != nil || !equalAddr(got, EndpointAddr{ID: id}) {
			t.Errorf("ParseAddress(%q) = %+v, %v", s, got, err)
		}
	}
}

func TestParseAddressErrors(t *testing.T) {
	valid := header(1)
	var sixteen []byte
	for i := range MaxDirectAddrs + 1 {
		sixteen = append(sixteen, v4Entry("10.0.0.1", uint16(i+1))...)
	}
	badChecksum := func() string {
		s := vectorAddress
		rec, _, _ := base58Decode(s[len(AddressPrefix):])
		rec[len(rec)-1] ^= 1
		return AddressPrefix + base58Encode(rec)
	}()
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", "empty"},
		{"blank", " \n", "empty"},
		{"no prefix", "EUehKUF7U4gthugev63w5f1txDmd5Kf9dZ4Fmj", `missing "aster1" prefix`},
		{"other prefix", "aster2" + vectorAddress[6:], `missing "aster1" prefix`},
		{"upper-case prefix", "ASTER1" + vectorAddress[6:], `missing "aster1" prefix`},
		{"64 non-hex", strings.Repeat("g", 64), "neither an aster1 address nor a hex endpoint id"},
		{"63 hex", strings.Repeat("a", 63), `missing "aster1" prefix`},
		{"zero", vectorAddress[:20] + "0" + vectorAddress[21:], `invalid base58 character '0' at position 21`},
		{"letter l", vectorAddress[:7] + "l" + vectorAddress[8:], `invalid base58 character 'l' at position 8`},
		{"non-ASCII", "aster1éabc", `invalid base58 character 'é' at position 7`},
		{"space inside", vectorAddress[:30] + " " + vectorAddress[30:], `invalid base58 character ' ' at position 31`},
		{"prefix only", "aster1", "too short"},
		{"short", "aster1abc", "too short"},
		{"truncated", vectorAddress[:len(vectorAddress)-5], "checksum mismatch: address mistyped or truncated"},
		{"bad checksum", badChecksum, "checksum mismatch: address mistyped or truncated"},
		{"no checksum", AddressPrefix + base58Encode(cat(valid, relayEntry("abcd"))), "checksum mismatch"},
		{"version 0", seal(header(0)), "unknown version 0"},
		{"version 2", seal(header(2)), "unknown version 2"},
		{"leading 1s", "aster11" + vectorAddress[6:], "checksum mismatch"},
		{"truncated header", seal(cat(valid, []byte{0x01})), "truncated entry header"},
		{"truncated value", seal(cat(valid, []byte{0x01, 6, 1, 2, 3})), "truncated entry"},
		{"truncated relay", seal(cat(valid, []byte{0x03, 10, 'h'})), "truncated entry"},
		{"truncated extension", seal(cat(valid, []byte{0x80, 1})), "truncated entry"},
		{"v4 length 5", seal(cat(valid, []byte{0x01, 5, 1, 2, 3, 4, 5})), "bad entry length: type 0x01 must be 6 bytes, got 5"},
		{"v4 length 18", seal(cat(valid, []byte{0x01, 18}, make([]byte, 18))), "bad entry length"},
		{"v6 length 6", seal(cat(valid, []byte{0x02, 6, 1, 2, 3, 4, 0, 5})), "bad entry length: type 0x02 must be 18 bytes, got 6"},
		{"16 direct", seal(cat(valid, sixteen)), "more than 15 direct addresses"},
		{"two relays", seal(cat(valid, relayEntry("a"), relayEntry("b"))), "more than one relay"},
		{"two equal relays", seal(cat(valid, relayEntry("a"), relayEntry("a"))), "more than one relay"},
		{"empty relay", seal(cat(valid, []byte{0x03, 0})), "empty relay"},
		{"relay not UTF-8", seal(cat(valid, relayEntry("\xff\xfe"))), "not valid UTF-8"},
		{"v4 port 0", seal(cat(valid, v4Entry("192.0.2.1", 0))), "port 0"},
		{"v6 port 0", seal(cat(valid, v6Entry("2001:db8::1", 0))), "port 0"},
		{"type 0x00", seal(cat(valid, []byte{0x00, 0})), "unsupported entry type 0x00"},
		{"type 0x04", seal(cat(valid, []byte{0x04, 1, 0})), "unsupported entry type 0x04"},
		{"type 0x7f", seal(cat(valid, []byte{0x7f, 0})), "unsupported entry type 0x7f"},
		{"too long chars", AddressPrefix + strings.Repeat("z", 1400), "record too long: 1406 characters, at most 1405"},
		{"huge", AddressPrefix + strings.Repeat("z", 1<<20), "record too long"},
		{"too long bytes", AddressPrefix + strings.Repeat("z", 1399), "record too long: 1025 bytes, at most 1024"},
		{"too long record", seal(cat(valid, bigExtensions(1024-len(valid)-4+1))), "record too long: 1025 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAddress(tc.in)
			if err == nil {
				t.Fatalf("ParseAddress(%q) = %+v, want error containing %q", tc.in, got, tc.want)
			}
			if !errors.Is(err, ErrBadAddress) {
				t.Errorf("error %v does not wrap ErrBadAddress", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "discovery: bad address: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

// bigExtensions returns extension entries totalling exactly n bytes (n >= 2).
func bigExtensions(n int) []byte {
	var out []byte
	for n > 0 {
		l := min(n-2, 255)
		if rest := n - 2 - l; rest == 1 { // avoid leaving a single byte
			l--
		}
		out = append(out, 0x80, byte(l))
		out = append(out, make([]byte, l)...)
		n -= 2 + l
	}
	return out
}

func TestLargestRecordAccepted(t *testing.T) {
	body := cat(header(1), v4Entry("192.0.2.1", 1))
	body = cat(body, bigExtensions(maxRecordLen-len(body)-4))
	s := seal(body)
	if len(s) > len(AddressPrefix)+maxPayloadLen {
		t.Fatalf("1024-byte record takes %d characters, more than the cap", len(s))
	}
	if _, err := ParseAddress(s); err != nil {
		t.Fatalf("1024-byte record: %v", err)
	}
}

// TestTyposDetected checks that every single-character substitution,
// deletion, insertion and adjacent transposition of the vector is rejected.
func TestTyposDetected(t *testing.T) {
	s := vectorAddress
	try := func(kind string, i int, typo string) {
		t.Helper()
		if typo == s {
			return
		}
		if a, err := ParseAddress(typo); err == nil {
			t.Errorf("%s at %d not detected: %q parsed as %+v", kind, i, typo, a)
		}
	}
	const chars = base58Alphabet + "0OIl"
	for i := range len(s) {
		for j := range len(chars) {
			try("substitution", i, s[:i]+chars[j:j+1]+s[i+1:])
			try("insertion", i, s[:i]+chars[j:j+1]+s[i:])
		}
		try("deletion", i, s[:i]+s[i+1:])
		if i+1 < len(s) {
			try("transposition", i, s[:i]+s[i+1:i+2]+s[i:i+1]+s[i+2:])
		}
	}
}

func TestValidate(t *testing.T) {
	ap := netip.MustParseAddrPort
	many := make([]netip.AddrPort, MaxDirectAddrs+1)
	for i := range many {
		many[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1)
	}
	for _, tc := range []struct {
		name string
		a    EndpointAddr
		want string
	}{
		{"16 direct", EndpointAddr{Direct: many}, "16 direct addresses, at most 15"},
		{"port 0", EndpointAddr{Direct: []netip.AddrPort{ap("192.0.2.1:1"), ap("192.0.2.1:0")}}, "direct address 1: 192.0.2.1:0: port 0"},
		{"invalid", EndpointAddr{Direct: []netip.AddrPort{{}}}, "invalid IP address"},
		{"zone", EndpointAddr{Direct: []netip.AddrPort{ap("[fe80::1%eth0]:1")}}, "zones are not allowed"},
		{"relay too long", EndpointAddr{Relay: strings.Repeat("r", 256)}, "relay URL is 256 bytes, at most 255"},
		{"relay not UTF-8", EndpointAddr{Relay: "\xff"}, "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.a.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.want)
			}
			if _, err := tc.a.MarshalText(); err == nil {
				t.Errorf("MarshalText accepted an invalid address")
			}
			// String still yields a parseable address.
			if _, err := ParseAddress(tc.a.String()); err != nil {
				t.Errorf("String() of invalid address does not parse: %v", err)
			}
		})
	}
}

func TestStringDropsWhatItCannotEncode(t *testing.T) {
	ap := netip.MustParseAddrPort
	var direct, want []netip.AddrPort
	direct = append(direct, ap("192.0.2.1:0"), netip.AddrPort{}, ap("[fe80::1%eth0]:5"))
	for i := range MaxDirectAddrs + 3 {
		a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 7)
		direct = append(direct, a)
		if i < MaxDirectAddrs {
			want = append(want, a)
		}
	}
	a := EndpointAddr{ID: testID(), Direct: direct, Relay: strings.Repeat("r", 256)}
	got, err := ParseAddress(a.String())
	if err != nil {
		t.Fatal(err)
	}
	if w := (EndpointAddr{ID: testID(), Direct: want}); !equalAddr(got, w) {
		t.Errorf("got %+v, want %+v", got, w)
	}
}

func TestTextMarshaling(t *testing.T) {
	type doc struct {
		Peer EndpointAddr `json:"peer"`
	}
	b, err := json.Marshal(doc{Peer: vectorAddr()})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"peer":"` + vectorAddress + `"}`; string(b) != want {
		t.Errorf("json = %s, want %s", b, want)
	}
	var d doc
	if err := json.Unmarshal(b, &d); err != nil || !equalAddr(d.Peer, vectorAddr()) {
		t.Errorf("Unmarshal = %+v, %v", d.Peer, err)
	}
	id := testID()
	if err := json.Unmarshal([]byte(`{"peer":"`+id.String()+`"}`), &d); err != nil || !equalAddr(d.Peer, EndpointAddr{ID: id}) {
		t.Errorf("Unmarshal hex id = %+v, %v", d.Peer, err)
	}
	var a EndpointAddr
	if err := a.UnmarshalText([]byte("aster1")); !errors.Is(err, ErrBadAddress) {
		t.Errorf("UnmarshalText(aster1) = %v", err)
	}
	if _, err := (EndpointAddr{Direct: []netip.AddrPort{{}}}).MarshalText(); err == nil {
		t.Error("MarshalText accepted an invalid address")
	}
}

// FuzzParseAddress checks that ParseAddress never panics, that every error
// wraps ErrBadAddress, and that whatever parses re-encodes to an address that
// parses to an equal value. Each input is tried twice: as address text, and
// as a record body sealed with a valid checksum, so that the fuzzer reaches
// the entry parser without having to forge checksums.
//
// Inputs over maxFuzzLen bytes are skipped: go test's minimizer is quadratic
// in the input length and would spend most of a short fuzzing run on them.
// Long inputs (up to and beyond the size caps) are covered by
// TestParseAddressErrors, TestLargestRecordAccepted and the base58 tests.
func FuzzParseAddress(f *testing.F) {
	const maxFuzzLen = 900 // longer than the largest useful address (811 characters)
	id := testID()
	seeds := []string{
		vectorAddress,
		EndpointAddr{ID: id}.String(),
		EndpointAddr{}.String(),
		id.String(),
		seal(cat(header(1), []byte{0x80, 2, 1, 2}, v6Entry("::ffff:1.2.3.4", 80))),
		seal(cat(header(1), relayEntry("a"), relayEntry("b"))),
		seal(cat(header(1), []byte{0x01, 6, 1})),
		seal(cat(header(1), []byte{0x04, 0})),
		seal(header(2)),
		vectorAddress[:40],
		vectorAddress[:len(vectorAddress)-1],
		vectorAddress[:20] + "0" + vectorAddress[21:],
		"aster1",
		"aster10OIl",
		"",
		"  " + vectorAddress + "\n",
		strings.Repeat("g", 64),
		// Record bodies (the checksum is added by the target).
		string(cat(header(1), v4Entry("127.0.0.1", 4433), v6Entry("::1", 4433), relayEntry("https://relay.example:3340"))),
		string(cat(header(1), []byte{0xff, 3, 1, 2, 3}, v4Entry("10.0.0.1", 0))),
		string(cat(header(1), []byte{0x02, 18}, make([]byte, 16), []byte{0, 1}, []byte{0x03, 0})),
		string(cat(header(1), []byte{0x01, 7}, make([]byte, 7))),
		string(header(1)),
		wtVectorAddress,
		string(cat(header(1), []byte{0x90, 9}, []byte("https://h"), []byte{0x91, 32}, make([]byte, 32), []byte{0x91, 1, 0})),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	check := func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("error %v does not wrap ErrBadAddress", err)
			}
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("parsed address %+v does not validate: %v", a, err)
		}
		s2 := a.String()
		b, err := ParseAddress(s2)
		if err != nil {
			t.Fatalf("re-encoded %q does not parse: %v", s2, err)
		}
		if !equalAddr(a, b) {
			t.Fatalf("%q parsed as %+v, re-encoded %q parsed as %+v", s, a, s2, b)
		}
		if s3 := b.String(); s3 != s2 {
			t.Fatalf("encoding not stable: %q then %q", s2, s3)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxFuzzLen {
			t.Skip()
		}
		check(t, s)
		check(t, seal([]byte(s)))
	})
}

// The WebTransport test vector quoted by PROTOCOL.md section 18: the test
// id, one direct IPv4 address, the WebTransport URL and two certificate
// hashes (0x11… and 0x22…).
const (
	wtVectorRecordHex = "01" +
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" +
		"0106" + "7f000001" + "1151" +
		"901c" + "68747470733a2f2f3132372e302e302e313a343433342f6173746572" +
		"9120" + "1111111111111111111111111111111111111111111111111111111111111111" +
		"9120" + "2222222222222222222222222222222222222222222222222222222222222222"
	wtVectorAddress = "aster1jWWerZXKoKWuGV3KQrEtFnYVNLAVPekUtULrejQtrdrnbp2c2NB4VBQzYBooM2X9ThAw5kKUqQb51MQ52HNFUKGVecxg1Rc9LT3T45674XjXvsvqto4YyA3HbHnVwfrbba1ZdREzxPHaShMswHMszFnLwneTSE3QWbRTVvDVg7n7iJPjh15RVVHYCWvFYVQm74"
)

func wtVectorAddr() EndpointAddr {
	var h1, h2 CertHash
	for i := range h1 {
		h1[i], h2[i] = 0x11, 0x22
	}
	return EndpointAddr{
		ID:           testID(),
		Direct:       []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4433")},
		WebTransport: "https://127.0.0.1:4434/aster",
		CertHashes:   []CertHash{h1, h2},
	}
}

func wtEntry(typ byte, v []byte) []byte { return append([]byte{typ, byte(len(v))}, v...) }

func TestWebTransportVector(t *testing.T) {
	a := wtVectorAddr()
	body, err := hex.DecodeString(wtVectorRecordHex)
	if err != nil {
		t.Fatal(err)
	}
	rec := a.record()
	if got := hex.EncodeToString(rec[:len(rec)-checksumLen]); got != wtVectorRecordHex {
		t.Errorf("record body = %s\nwant          %s", got, wtVectorRecordHex)
	}
	want := seal(body)
	if want != wtVectorAddress {
		t.Errorf("sealed vector = %s\nwant             %s", want, wtVectorAddress)
	}
	if s := a.String(); s != want {
		t.Errorf("String() = %s\nwant       %s", s, want)
	}
	// Built by hand from the entry definitions.
	h1, h2 := a.CertHashes[0], a.CertHashes[1]
	if s := seal(cat(header(1), v4Entry("127.0.0.1", 4433), wtEntry(0x90, []byte(a.WebTransport)), wtEntry(0x91, h1[:]), wtEntry(0x91, h2[:]))); s != want {
		t.Errorf("hand-built WebTransport vector = %s", s)
	}
	got, err := ParseAddress(want)
	if err != nil || !equalAddr(got, a) {
		t.Errorf("ParseAddress(WebTransport vector) = %+v, %v; want %+v", got, err, a)
	}
	// The original vector still decodes with no WebTransport fields.
	old, err := ParseAddress(vectorAddress)
	if err != nil || old.WebTransport != "" || old.CertHashes != nil {
		t.Errorf("old vector: %+v, %v", old, err)
	}
}

func TestWebTransportEntriesBad(t *testing.T) {
	var h CertHash
	url := []byte("https://h:1/aster")
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"two URLs":     {cat(header(1), wtEntry(0x90, url), wtEntry(0x90, url)), "more than one WebTransport URL"},
		"not https":    {cat(header(1), wtEntry(0x90, []byte("http://h:1/aster"))), "does not start with https://host"},
		"bare https":   {cat(header(1), wtEntry(0x90, []byte("https://"))), "does not start with https://host"},
		"bad utf8":     {cat(header(1), wtEntry(0x90, []byte("https://\xff"))), "not valid UTF-8"},
		"short hash":   {cat(header(1), wtEntry(0x91, h[:31])), "must be 32 bytes, got 31"},
		"long hash":    {cat(header(1), wtEntry(0x91, append(h[:], 0))), "must be 32 bytes, got 33"},
		"five hashes":  {cat(header(1), wtEntry(0x91, h[:]), wtEntry(0x91, h[:]), wtEntry(0x91, h[:]), wtEntry(0x91, h[:]), wtEntry(0x91, h[:])), "more than 4 certificate hashes"},
		"unknown 0x92": {cat(header(1), wtEntry(0x92, []byte("x")), wtEntry(0x91, h[:])), ""},
	} {
		a, err := ParseAddress(seal(tc.body))
		if tc.want == "" {
			if err != nil || len(a.CertHashes) != 1 {
				t.Errorf("%s: %+v, %v; want the unknown optional entry skipped", name, a, err)
			}
			continue
		}
		if !errors.Is(err, ErrBadAddress) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an ErrBadAddress containing %q", name, err, tc.want)
		}
	}
	if err := (EndpointAddr{WebTransport: "ftp://x"}).Validate(); err == nil {
		t.Error("Validate accepted a non-https WebTransport URL")
	}
	if err := (EndpointAddr{CertHashes: make([]CertHash, 5)}).Validate(); err == nil {
		t.Error("Validate accepted 5 certificate hashes")
	}
	var ch CertHash
	if err := ch.UnmarshalText([]byte(strings.Repeat("ab", 32))); err != nil || ch[0] != 0xab {
		t.Errorf("CertHash.UnmarshalText: %v", err)
	}
	if err := ch.UnmarshalText([]byte("abc")); err == nil {
		t.Error("CertHash.UnmarshalText accepted 3 characters")
	}
}
