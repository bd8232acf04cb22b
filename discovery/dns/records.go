package dns

// The TXT record format at an SRV target, and name checks.

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/trust"
	mdns "github.com/miekg/dns"
)

// The keys of the TXT records at an SRV target.
const (
	// KeyAddr is the key of a TXT record holding the producer's full
	// "aster1…" address.
	KeyAddr = "addr"
	// KeyID is the key of a TXT record holding the producer's endpoint id
	// (64 hex characters); its direct addresses are then the target's A and
	// AAAA records with the SRV port.
	KeyID = "id"
	// KeyCred is the key of a TXT record holding the producer's encoded
	// enrollment credential in standard base64 (padding optional).
	KeyCred = "cred"
)

// checkName checks that name is a DNS name this package asks about: at most
// MaxNameLen bytes without the final dot, labels of 1 to 63 letters, digits,
// hyphens and underscores. It returns the name fully qualified and in lower
// case.
func checkName(name string) (string, error) {
	n := strings.TrimSuffix(name, ".")
	if n == "" {
		return "", errors.New("empty name")
	}
	if len(n) > MaxNameLen {
		return "", fmt.Errorf("name is %d bytes long, limit %d", len(n), MaxNameLen)
	}
	for label := range strings.SplitSeq(n, ".") {
		if label == "" {
			return "", errors.New("empty label")
		}
		if len(label) > 63 {
			return "", fmt.Errorf("label %.20q… is %d bytes long, limit 63", label, len(label))
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return "", fmt.Errorf("label %q has the character %q (want letters, digits, '-' and '_')", label, c)
			}
		}
	}
	return strings.ToLower(n) + ".", nil
}

// txtFields are the known keys found in the TXT records of one target.
type txtFields struct {
	addr, id, cred string
	haveAddr       bool
	haveID         bool
	haveCred       bool
}

// parseTXT reads the TXT records of one target: each record is one
// key=value string, its character-strings concatenated. Records with an
// unknown key or without "=" are skipped (ExternalDNS ownership records,
// other users of the name); a known key given two different values is an
// error, as is a record over MaxTXTLen or more than MaxTXTRecords records.
func parseTXT(rrs []*mdns.TXT) (txtFields, error) {
	var f txtFields
	if len(rrs) > MaxTXTRecords {
		return f, fmt.Errorf("%d TXT records, limit %d", len(rrs), MaxTXTRecords)
	}
	for _, rr := range rrs {
		n := 0
		for _, s := range rr.Txt {
			n += len(s)
		}
		if n > MaxTXTLen {
			return f, fmt.Errorf("a TXT record of %d bytes, limit %d", n, MaxTXTLen)
		}
		v := strings.Join(rr.Txt, "")
		key, val, ok := strings.Cut(v, "=")
		if !ok {
			continue
		}
		var dst *string
		var have *bool
		switch key {
		case KeyAddr:
			dst, have = &f.addr, &f.haveAddr
		case KeyID:
			dst, have = &f.id, &f.haveID
		case KeyCred:
			dst, have = &f.cred, &f.haveCred
		default:
			continue
		}
		if *have && *dst != val {
			return f, fmt.Errorf("two different %s= TXT records", key)
		}
		*dst, *have = val, true
	}
	return f, nil
}

// endpoint returns the address a target's TXT fields describe: the whole
// address for the addr= form, only the id for the id= form (the caller adds
// the direct addresses). An error says why the target is ignored.
func (f txtFields) endpoint() (discovery.EndpointAddr, error) {
	var ea discovery.EndpointAddr
	switch {
	case f.haveAddr:
		if !strings.HasPrefix(f.addr, discovery.AddressPrefix) {
			return ea, fmt.Errorf("addr= is not an %s… address", discovery.AddressPrefix)
		}
		a, err := discovery.ParseAddress(f.addr)
		if err != nil {
			return ea, fmt.Errorf("addr=: %w", err)
		}
		ea = a
		if f.haveID {
			id, err := parseID(f.id)
			if err != nil {
				return ea, err
			}
			if id != ea.ID {
				return ea, fmt.Errorf("id= %s does not match the id %s of addr=", id.Short(), ea.ID.Short())
			}
		}
	case f.haveID:
		id, err := parseID(f.id)
		if err != nil {
			return ea, err
		}
		ea.ID = id
	default:
		return ea, fmt.Errorf("no %s= or %s= TXT record (the key is mandatory)", KeyAddr, KeyID)
	}
	return ea, nil
}

func parseID(s string) (trust.EndpointID, error) {
	if len(s) != 2*len(trust.EndpointID{}) {
		return trust.EndpointID{}, fmt.Errorf("id= is %d characters, want %d hex characters", len(s), 2*len(trust.EndpointID{}))
	}
	id, err := trust.ParseEndpointID(s)
	if err != nil {
		return id, fmt.Errorf("id=: %w", err)
	}
	if id.IsZero() {
		return id, errors.New("id= is all zeros")
	}
	return id, nil
}

// credential decodes the cred= value, or returns nil when there is none.
func (f txtFields) credential() ([]byte, error) {
	if !f.haveCred {
		return nil, nil
	}
	if f.cred == "" {
		return nil, errors.New("empty cred=")
	}
	b, err := base64.StdEncoding.DecodeString(f.cred)
	if err != nil {
		b, err = base64.RawStdEncoding.DecodeString(f.cred)
	}
	if err != nil {
		return nil, fmt.Errorf("cred= is not base64: %w", err)
	}
	if len(b) == 0 {
		// The decoder skips \r and \n, so "cred=\r" decodes to nothing.
		return nil, errors.New("empty cred=")
	}
	return b, nil
}
