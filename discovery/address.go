package discovery

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/aster-go/aster/trust"
)

// The aster1 address format.
//
// An address is AddressPrefix followed by the base58 (Bitcoin alphabet)
// encoding of a binary record:
//
//	version   1 byte   AddressVersion (0x01)
//	id        32 bytes the endpoint id
//	entries   zero or more of: type (1 byte), length (1 byte), value
//	checksum  4 bytes  first 4 bytes of SHA-256 over everything before it
//
// Entry types:
//
//	0x01 direct IPv4 address: 4-byte IP, 2-byte big-endian port (length 6)
//	0x02 direct IPv6 address: 16-byte IP, 2-byte big-endian port (length 18)
//	0x03 relay URL, UTF-8, 1..255 bytes (at most one)
//	0x90 WebTransport URL, UTF-8 "https://…", 9..255 bytes (at most one)
//	0x91 WebTransport certificate SHA-256 hash, 32 bytes (at most MaxCertHashes)
//	0x80..0xFF others: optional extensions, skipped by decoders that do not know them
//
// Other types (0x00, 0x04..0x7F) are rejected, since a future version may give
// them a meaning a decoder must not ignore. The WebTransport entries are
// optional (0x80 and above) so that decoders that predate them still read
// the direct addresses. Encoders write the direct addresses in slice order,
// then the relay, then the WebTransport URL and the certificate hashes in
// slice order; IPv4-mapped IPv6 addresses are written (and read back) as
// IPv4.
const (
	// AddressPrefix starts every aster1 address.
	AddressPrefix = "aster1"
	// AddressVersion is the record version this package writes and reads.
	AddressVersion = 0x01

	entryIPv4   = 0x01
	entryIPv6   = 0x02
	entryRelay  = 0x03
	entryWTURL  = 0x90
	entryWTHash = 0x91
	// Entry types at or above entryOptional may be skipped when unknown.
	entryOptional = 0x80

	// MaxRelayLen is the longest relay URL, in bytes, an address can carry.
	MaxRelayLen = 255
	// MaxWebTransportLen is the longest WebTransport URL, in bytes.
	MaxWebTransportLen = 255

	checksumLen = 4
	// minRecordLen is a record with no entries: version, id, checksum.
	minRecordLen = 1 + len(trust.EndpointID{}) + checksumLen
	// maxRecordLen caps the decoded record size.
	maxRecordLen = 1024
	// maxPayloadLen is the most base58 characters a maxRecordLen-byte record
	// (which never starts with a zero byte) takes: ceil(1024*8/log2(58)).
	maxPayloadLen = 1399
)

// ErrBadAddress is wrapped by every error ParseAddress returns.
var ErrBadAddress = errors.New("discovery: bad address")

func badAddress(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadAddress}, args...)...)
}

// Validate reports whether a can be encoded exactly as an aster1 address: at
// most MaxDirectAddrs direct addresses, each a valid IP address without a
// zone and with a non-zero port, and a relay URL of at most MaxRelayLen bytes
// of valid UTF-8.
func (a EndpointAddr) Validate() error {
	if len(a.Direct) > MaxDirectAddrs {
		return fmt.Errorf("discovery: %d direct addresses, at most %d allowed", len(a.Direct), MaxDirectAddrs)
	}
	for i, ap := range a.Direct {
		if err := checkDirect(ap); err != nil {
			return fmt.Errorf("discovery: direct address %d: %w", i, err)
		}
	}
	if len(a.Relay) > MaxRelayLen {
		return fmt.Errorf("discovery: relay URL is %d bytes, at most %d allowed", len(a.Relay), MaxRelayLen)
	}
	if !utf8.ValidString(a.Relay) {
		return errors.New("discovery: relay URL is not valid UTF-8")
	}
	if a.WebTransport != "" {
		if err := checkWebTransport(a.WebTransport); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	if len(a.CertHashes) > MaxCertHashes {
		return fmt.Errorf("discovery: %d certificate hashes, at most %d allowed", len(a.CertHashes), MaxCertHashes)
	}
	return nil
}

// checkWebTransport checks a WebTransport URL as the address format allows
// it: https, at most MaxWebTransportLen bytes of UTF-8.
func checkWebTransport(u string) error {
	switch {
	case len(u) > MaxWebTransportLen:
		return fmt.Errorf("WebTransport URL is %d bytes, at most %d allowed", len(u), MaxWebTransportLen)
	case !utf8.ValidString(u):
		return errors.New("WebTransport URL is not valid UTF-8")
	case !strings.HasPrefix(u, "https://") || len(u) == len("https://"):
		return fmt.Errorf("WebTransport URL %.64q does not start with https://host", u)
	}
	return nil
}

func checkDirect(ap netip.AddrPort) error {
	switch {
	case !ap.Addr().IsValid():
		return errors.New("invalid IP address")
	case ap.Addr().Zone() != "":
		return fmt.Errorf("%v: IPv6 zones are not allowed", ap)
	case ap.Port() == 0:
		return fmt.Errorf("%v: port 0 is not allowed", ap)
	}
	return nil
}

// String returns a's aster1 address.
//
// String never fails. If a does not pass Validate it encodes what can be
// represented: direct addresses that Validate would reject are left out, only
// the first MaxDirectAddrs of the rest are kept, and an invalid relay URL is
// dropped. Use Validate (or MarshalText, which calls it) to detect this.
func (a EndpointAddr) String() string {
	return AddressPrefix + base58Encode(a.record())
}

// record returns a's binary record, checksum included.
func (a EndpointAddr) record() []byte {
	rec := make([]byte, 0, 128)
	rec = append(rec, AddressVersion)
	rec = append(rec, a.ID[:]...)
	n := 0
	for _, ap := range a.Direct {
		if n == MaxDirectAddrs {
			break
		}
		if checkDirect(ap) != nil {
			continue
		}
		n++
		ip := ap.Addr().Unmap()
		if ip.Is4() {
			b := ip.As4()
			rec = append(rec, entryIPv4, 6)
			rec = append(rec, b[:]...)
		} else {
			b := ip.As16()
			rec = append(rec, entryIPv6, 18)
			rec = append(rec, b[:]...)
		}
		rec = binary.BigEndian.AppendUint16(rec, ap.Port())
	}
	if r := a.Relay; r != "" && len(r) <= MaxRelayLen && utf8.ValidString(r) {
		rec = append(rec, entryRelay, byte(len(r)))
		rec = append(rec, r...)
	}
	if u := a.WebTransport; u != "" && checkWebTransport(u) == nil {
		rec = append(rec, entryWTURL, byte(len(u)))
		rec = append(rec, u...)
	}
	for i, h := range a.CertHashes {
		if i == MaxCertHashes {
			break
		}
		rec = append(rec, entryWTHash, byte(len(h)))
		rec = append(rec, h[:]...)
	}
	sum := sha256.Sum256(rec)
	return append(rec, sum[:checksumLen]...)
}

// MarshalText implements encoding.TextMarshaler. Unlike String it fails if a
// does not pass Validate, rather than dropping part of it.
func (a EndpointAddr) MarshalText() ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return []byte(a.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler using ParseAddress.
func (a *EndpointAddr) UnmarshalText(b []byte) error {
	v, err := ParseAddress(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// ParseAddress parses an aster1 address; surrounding white space is ignored.
// For convenience it also accepts a bare endpoint id (64 hex characters),
// which gives an EndpointAddr with only ID set. Optional extension entries
// (types 0x80..0xFF) are skipped. Every error wraps ErrBadAddress.
func ParseAddress(s string) (EndpointAddr, error) {
	s = strings.TrimSpace(s)
	payload, ok := strings.CutPrefix(s, AddressPrefix)
	if !ok {
		if len(s) == hex.EncodedLen(len(trust.EndpointID{})) {
			id, err := trust.ParseEndpointID(s)
			if err != nil {
				return EndpointAddr{}, badAddress("neither an %s address nor a hex endpoint id: %v", AddressPrefix, err)
			}
			return EndpointAddr{ID: id}, nil
		}
		if s == "" {
			return EndpointAddr{}, badAddress("empty")
		}
		return EndpointAddr{}, badAddress("missing %q prefix", AddressPrefix)
	}
	if len(payload) > maxPayloadLen {
		return EndpointAddr{}, badAddress("record too long: %d characters, at most %d allowed", len(s), len(AddressPrefix)+maxPayloadLen)
	}
	rec, bad, ok := base58Decode(payload)
	if !ok {
		i := len(AddressPrefix) + bad
		r, _ := utf8.DecodeRuneInString(s[i:])
		return EndpointAddr{}, badAddress("invalid base58 character %q at position %d (0, O, I and l are not used)",
			r, utf8.RuneCountInString(s[:i])+1)
	}
	if len(rec) > maxRecordLen {
		return EndpointAddr{}, badAddress("record too long: %d bytes, at most %d allowed", len(rec), maxRecordLen)
	}
	if len(rec) < minRecordLen {
		return EndpointAddr{}, badAddress("too short: %d-byte record, at least %d needed", len(rec), minRecordLen)
	}
	body, check := rec[:len(rec)-checksumLen], rec[len(rec)-checksumLen:]
	if sum := sha256.Sum256(body); string(sum[:checksumLen]) != string(check) {
		return EndpointAddr{}, badAddress("checksum mismatch: address mistyped or truncated")
	}
	if body[0] != AddressVersion {
		return EndpointAddr{}, badAddress("unknown version %d", body[0])
	}
	var a EndpointAddr
	copy(a.ID[:], body[1:])
	relays, wtURLs := 0, 0
	for p := body[minRecordLen-checksumLen:]; len(p) > 0; {
		if len(p) < 2 {
			return EndpointAddr{}, badAddress("truncated entry header")
		}
		typ, n := p[0], int(p[1])
		if len(p)-2 < n {
			return EndpointAddr{}, badAddress("truncated entry: type 0x%02x needs %d bytes, %d left", typ, n, len(p)-2)
		}
		v := p[2 : 2+n]
		p = p[2+n:]
		switch {
		case typ == entryIPv4 || typ == entryIPv6:
			ipLen := 4
			if typ == entryIPv6 {
				ipLen = 16
			}
			if n != ipLen+2 {
				return EndpointAddr{}, badAddress("bad entry length: type 0x%02x must be %d bytes, got %d", typ, ipLen+2, n)
			}
			if len(a.Direct) == MaxDirectAddrs {
				return EndpointAddr{}, badAddress("more than %d direct addresses", MaxDirectAddrs)
			}
			ip, _ := netip.AddrFromSlice(v[:ipLen])
			ap := netip.AddrPortFrom(ip.Unmap(), binary.BigEndian.Uint16(v[ipLen:]))
			if ap.Port() == 0 {
				return EndpointAddr{}, badAddress("direct address %v has port 0", ap.Addr())
			}
			a.Direct = append(a.Direct, ap)
		case typ == entryRelay:
			if relays++; relays > 1 {
				return EndpointAddr{}, badAddress("more than one relay")
			}
			if n == 0 {
				return EndpointAddr{}, badAddress("empty relay URL")
			}
			if !utf8.Valid(v) {
				return EndpointAddr{}, badAddress("relay URL is not valid UTF-8")
			}
			a.Relay = string(v)
		case typ == entryWTURL:
			if wtURLs++; wtURLs > 1 {
				return EndpointAddr{}, badAddress("more than one WebTransport URL")
			}
			if err := checkWebTransport(string(v)); err != nil {
				return EndpointAddr{}, badAddress("%v", err)
			}
			a.WebTransport = string(v)
		case typ == entryWTHash:
			if n != len(CertHash{}) {
				return EndpointAddr{}, badAddress("bad entry length: type 0x%02x must be %d bytes, got %d", typ, len(CertHash{}), n)
			}
			if len(a.CertHashes) == MaxCertHashes {
				return EndpointAddr{}, badAddress("more than %d certificate hashes", MaxCertHashes)
			}
			a.CertHashes = append(a.CertHashes, CertHash(v))
		case typ >= entryOptional:
			// Optional extension this version does not know: skip it.
		default:
			return EndpointAddr{}, badAddress("unsupported entry type 0x%02x", typ)
		}
	}
	return a, nil
}
