package etcd

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/trust"
)

// The byte-exact example entry quoted in the package documentation notes
// (and PROTOCOL.md): the aster1 test vector address with a 4-byte
// credential.
const (
	vectorKey   = "/aster/fleet/MissionControl/000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	vectorValue = `{"addr":"aster1EUehKUF7U4gthugev63w5f1txDmd5Kf9dZ4FmjuUgmkN9AycwqjLbwJuiwrurwAqkPsihv2WMseh4WC2TRdBZcwSf8ZGqaTELujr5eeNNiuzPTMqCmvdAHiKg2vj7p","credential":"Y3JlZA=="}`
)

func vectorProducer() discovery.Producer {
	var id trust.EndpointID
	for i := range id {
		id[i] = byte(i)
	}
	return discovery.Producer{
		Addr: discovery.EndpointAddr{
			ID:     id,
			Relay:  "https://relay.example:3340",
			Direct: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4433"), netip.MustParseAddrPort("[::1]:4433")},
		},
		Credential: []byte("cred"),
	}
}

func TestEntryVector(t *testing.T) {
	p := vectorProducer()
	v, err := encodeValue(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(v) != vectorValue {
		t.Fatalf("value\n%s\nwant\n%s", v, vectorValue)
	}
	if key := DefaultPrefix + "fleet/MissionControl/" + hex.EncodeToString(p.Addr.ID[:]); key != vectorKey {
		t.Fatalf("key %s, want %s", key, vectorKey)
	}
	got, err := decodeEntry(DefaultPrefix+"fleet/MissionControl/", []byte(vectorKey), []byte(vectorValue))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(p) {
		t.Fatalf("decoded %+v, want %+v", got, p)
	}

	// Without a credential the field is left out; unknown fields are
	// ignored; null and "" credentials mean none.
	p.Credential = nil
	v, _ = encodeValue(p)
	if strings.Contains(string(v), "credential") {
		t.Fatalf("value without a credential: %s", v)
	}
	addr := p.Addr.String()
	for _, val := range []string{
		`{"addr":"` + addr + `"}`,
		`{"addr":"` + addr + `","credential":null}`,
		`{"addr":"` + addr + `","credential":""}`,
		`{"addr":"` + addr + `","weight":3,"zone":{"a":1}}`,
		` {"addr" : "` + addr + `"} `,
	} {
		got, err := decodeEntry(DefaultPrefix+"fleet/MissionControl/", []byte(vectorKey), []byte(val))
		if err != nil || !got.Equal(p) || got.Credential != nil {
			t.Errorf("%s: %+v, %v", val, got, err)
		}
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	dir := DefaultPrefix + "fleet/MissionControl/"
	p := vectorProducer()
	good, _ := encodeValue(p)
	id := hex.EncodeToString(p.Addr.ID[:])
	other := p
	other.Addr.ID[0] = 0xff
	otherVal, _ := encodeValue(other)
	for _, c := range []struct{ name, key, val string }{
		{"not json", dir + id, "{"},
		{"empty", dir + id, ""},
		{"array", dir + id, "[]"},
		{"addr not a string", dir + id, `{"addr":1}`},
		{"no addr", dir + id, `{"credential":"Y3JlZA=="}`},
		{"bare id addr", dir + id, `{"addr":"` + id + `"}`},
		{"bad checksum", dir + id, strings.Replace(string(good), "vj7p", "vj7q", 1)},
		{"space-padded addr", dir + id, `{"addr":" ` + p.Addr.String() + `"}`},
		{"bad base64", dir + id, `{"addr":"` + p.Addr.String() + `","credential":"%%%"}`},
		{"other id", dir + id, string(otherVal)},
		{"upper-case key", dir + strings.ToUpper(id), string(good)},
		{"short key", dir + id[:62], string(good)},
		{"not hex", dir + "g" + id[1:], string(good)},
		{"other prefix", "/other/" + id, string(good)},
		{"oversized", dir + id, string(good[:len(good)-1]) + `,"pad":"` + strings.Repeat("x", MaxValueSize) + `"}`},
	} {
		if got, err := decodeEntry(dir, []byte(c.key), []byte(c.val)); err == nil {
			t.Errorf("%s: accepted as %+v", c.name, got)
		}
	}
}

// FuzzDecodeEntry: no input panics, and what is accepted is consistent (the
// key's id is the address's) and encodes back to an equal entry.
func FuzzDecodeEntry(f *testing.F) {
	dir := DefaultPrefix + "fleet/MissionControl/"
	f.Add([]byte(vectorKey), []byte(vectorValue))
	f.Add([]byte(vectorKey), []byte(`{"addr":"aster1"}`))
	f.Add([]byte(dir+"x"), []byte(`{}`))
	f.Fuzz(func(t *testing.T, key, val []byte) {
		p, err := decodeEntry(dir, key, val)
		if err != nil {
			return
		}
		if !bytes.HasSuffix(key, []byte(p.Addr.ID.String())) {
			t.Fatalf("key %q accepted for id %s", key, p.Addr.ID)
		}
		v, err := encodeValue(p)
		if err != nil {
			// Accepted entries with extension entries or oversized
			// credentials may not re-encode within the limit; the address
			// must still be valid.
			if p.Addr.Validate() != nil {
				t.Fatalf("accepted an invalid address: %v", err)
			}
			return
		}
		q, err := decodeEntry(dir, key, v)
		if err != nil || !q.Equal(p) {
			t.Fatalf("re-encoded %s: %+v, %v", v, q, err)
		}
	})
}
