package etcd

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

// value is the JSON form of an entry's value. Credential is a []byte, which
// encoding/json writes and reads as standard base64 with padding.
type value struct {
	Addr       string `json:"addr"`
	Credential []byte `json:"credential,omitempty"`
}

// encodeValue returns the value Register writes for p:
// {"addr":"aster1…","credential":"<base64>"}, the credential left out when
// p.Credential is empty. It fails (status InvalidArgument) if p.Addr does
// not pass Validate, has a zero id, or the value exceeds MaxValueSize.
func encodeValue(p discovery.Producer) ([]byte, error) {
	if p.Addr.ID.IsZero() {
		return nil, status.New(status.InvalidArgument, "discovery/etcd: producer has no endpoint id")
	}
	addr, err := p.Addr.MarshalText()
	if err != nil {
		return nil, status.Wrap(status.InvalidArgument, fmt.Errorf("discovery/etcd: producer address: %w", err))
	}
	v := value{Addr: string(addr)}
	if len(p.Credential) > 0 {
		v.Credential = p.Credential
	}
	// MaxValueSize bounds the base64 credential too: check before encoding.
	if n := len(addr) + (len(p.Credential)+2)/3*4 + 64; n > MaxValueSize {
		return nil, status.Errorf(status.InvalidArgument, "discovery/etcd: entry value would be about %d bytes, at most %d allowed", n, MaxValueSize)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, status.Wrap(status.Internal, fmt.Errorf("discovery/etcd: encoding the entry: %w", err))
	}
	return b, nil
}

// errNested marks a key below a deeper name ("<name>/<sub>/<id>"): not this
// name's entry, and not an error worth logging.
var errNested = errors.New("key of a nested name")

// decodeEntry parses the entry stored at key, where namePrefix is
// "<Prefix><name>/". It checks that the key ends in the 64 lower-case hex
// characters of an endpoint id, that val is at most MaxValueSize bytes of
// JSON with an "aster1…" address whose id is the key's, and returns the
// producer. Unknown JSON fields are ignored.
func decodeEntry(namePrefix string, key, val []byte) (discovery.Producer, error) {
	rest, ok := strings.CutPrefix(string(key), namePrefix)
	if !ok {
		return discovery.Producer{}, fmt.Errorf("key not under %q", namePrefix)
	}
	if strings.Contains(rest, "/") {
		return discovery.Producer{}, errNested
	}
	if len(rest) != hex.EncodedLen(len(trust.EndpointID{})) || strings.ToLower(rest) != rest {
		return discovery.Producer{}, fmt.Errorf("key does not end in a 64-character lower-case hex endpoint id")
	}
	id, err := trust.ParseEndpointID(rest)
	if err != nil {
		return discovery.Producer{}, fmt.Errorf("key: %w", err)
	}
	if len(val) > MaxValueSize {
		return discovery.Producer{}, fmt.Errorf("value is %d bytes, at most %d allowed", len(val), MaxValueSize)
	}
	var v value
	if err := json.Unmarshal(val, &v); err != nil {
		return discovery.Producer{}, fmt.Errorf("value is not the expected JSON: %w", err)
	}
	if !strings.HasPrefix(v.Addr, discovery.AddressPrefix) {
		return discovery.Producer{}, fmt.Errorf("addr %.32q is not an %s address", v.Addr, discovery.AddressPrefix)
	}
	a, err := discovery.ParseAddress(v.Addr)
	if err != nil {
		return discovery.Producer{}, err
	}
	if a.ID != id {
		return discovery.Producer{}, fmt.Errorf("address is of endpoint %s, the key names %s", a.ID.Short(), id.Short())
	}
	p := discovery.Producer{Addr: a}
	if len(v.Credential) > 0 {
		p.Credential = v.Credential
	}
	return p, nil
}
