package quic

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/aster-go/aster/trust"
)

// An endpoint's certificate (PROTOCOL.md 2.2) is built here rather than by
// x509.CreateCertificate, which costs about 120 µs for an ed25519 key: it
// checks the signature it just made (an ed25519 verification, twice the
// cost of signing) and goes through its general template machinery, and
// the result was parsed again. Here it is a fixed layout filled in and one
// signature (about 25 µs). A Dialer makes one per key and a client
// typically makes one Dialer, often with a fresh key, so this was a
// sixth of connection set-up. The certificate is the one
// x509.CreateCertificate makes for the same template, byte for byte
// (TestCertificateMatchesX509 checks it); the check of the key pair is
// checkKey's, which runs before. A program using one key for many Dialers
// or Listeners builds it once (certs).

var (
	oidEd25519          = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidServerAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}

	certNotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	certNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// The structures below are RFC 5280's, as crypto/x509 declares them.
type certificateDER struct {
	TBS       asn1.RawValue
	Algorithm pkix.AlgorithmIdentifier
	Signature asn1.BitString
}

type tbsCertificate struct {
	Version    int `asn1:"optional,explicit,default:0,tag:0"`
	Serial     *big.Int
	Algorithm  pkix.AlgorithmIdentifier
	Issuer     asn1.RawValue
	Validity   validity
	Subject    asn1.RawValue
	PublicKey  publicKeyInfo
	Extensions []pkix.Extension `asn1:"omitempty,optional,explicit,tag:3"`
}

type validity struct {
	NotBefore, NotAfter time.Time
}

type publicKeyInfo struct {
	Algorithm pkix.AlgorithmIdentifier
	PublicKey asn1.BitString
}

// certExtensions are the extensions of every endpoint certificate: key
// usage digitalSignature (critical), extended key usage serverAuth and
// clientAuth, basic constraints without CA (critical).
var certExtensions = sync.OnceValues(func() ([]pkix.Extension, error) {
	// digitalSignature is bit 0: one byte 0x80 with 7 unused bits.
	ku, err := asn1.Marshal(asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})
	if err != nil {
		return nil, err
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidServerAuth, oidClientAuth})
	if err != nil {
		return nil, err
	}
	bc, err := asn1.Marshal(struct{}{}) // cA FALSE is the default, hence omitted
	if err != nil {
		return nil, err
	}
	return []pkix.Extension{
		{Id: oidKeyUsage, Critical: true, Value: ku},
		{Id: oidExtKeyUsage, Value: eku},
		{Id: oidBasicConstraints, Critical: true, Value: bc},
	}, nil
})

// certSerial derives the certificate's serial number from the endpoint id:
// 16 bytes, positive. Only the key identifies an endpoint (PROTOCOL.md
// 2.2), so the serial need not be random; a derived one makes the
// certificate a function of the key, which lets it be cached.
func certSerial(id trust.EndpointID) *big.Int {
	h := sha256.Sum256(append([]byte("aster/1 certificate serial "), id[:]...))
	h[0] = h[0]&0x3f | 0x40 // positive and exactly 16 bytes in DER
	return new(big.Int).SetBytes(h[:16])
}

// certLayout is the DER of an endpoint certificate with the places of what
// differs between keys: the serial, the subject and issuer common names
// (the endpoint id in hex), the public key and the signature. Every field
// has a fixed length, so a certificate is the layout with those filled in.
type certLayout struct {
	der            []byte
	tbs            [2]int // the signed part, der[tbs[0]:tbs[1]]
	serial, pubkey int
	names          [2]int
	sig            int
}

// layout is built once, through encoding/asn1, for a marker key.
var layout = sync.OnceValues(func() (*certLayout, error) {
	var id trust.EndpointID
	for i := range id {
		id[i] = byte(i + 1)
	}
	exts, err := certExtensions()
	if err != nil {
		return nil, err
	}
	name, err := asn1.Marshal(pkix.Name{CommonName: id.String()}.ToRDNSequence())
	if err != nil {
		return nil, err
	}
	alg := pkix.AlgorithmIdentifier{Algorithm: oidEd25519}
	serial := certSerial(id)
	tbs, err := asn1.Marshal(tbsCertificate{
		Version:    2, // v3
		Serial:     serial,
		Algorithm:  alg,
		Issuer:     asn1.RawValue{FullBytes: name},
		Validity:   validity{certNotBefore, certNotAfter},
		Subject:    asn1.RawValue{FullBytes: name},
		PublicKey:  publicKeyInfo{Algorithm: alg, PublicKey: asn1.BitString{Bytes: id[:], BitLength: 8 * len(id)}},
		Extensions: exts,
	})
	if err != nil {
		return nil, err
	}
	var sig [ed25519.SignatureSize]byte
	for i := range sig {
		sig[i] = 0xa5
	}
	der, err := asn1.Marshal(certificateDER{
		TBS:       asn1.RawValue{FullBytes: tbs},
		Algorithm: alg,
		Signature: asn1.BitString{Bytes: sig[:], BitLength: 8 * len(sig)},
	})
	if err != nil {
		return nil, err
	}
	l := &certLayout{der: der}
	find := func(what string, b []byte, n int) ([]int, error) {
		var at []int
		for i := 0; ; {
			j := bytes.Index(der[i:], b)
			if j < 0 {
				break
			}
			at = append(at, i+j)
			i += j + len(b)
		}
		if len(at) != n {
			return nil, fmt.Errorf("certificate layout: %s found %d times, want %d", what, len(at), n)
		}
		return at, nil
	}
	at, err := find("to-be-signed part", tbs, 1)
	if err != nil {
		return nil, err
	}
	l.tbs = [2]int{at[0], at[0] + len(tbs)}
	if at, err = find("serial", serial.Bytes(), 1); err != nil {
		return nil, err
	}
	l.serial = at[0]
	if at, err = find("public key", id[:], 1); err != nil {
		return nil, err
	}
	l.pubkey = at[0]
	if at, err = find("common name", []byte(id.String()), 2); err != nil {
		return nil, err
	}
	l.names = [2]int{at[0], at[1]}
	if at, err = find("signature", sig[:], 1); err != nil {
		return nil, err
	}
	l.sig = at[0]
	return l, nil
})

// buildCertificate returns the DER of the self-signed certificate of key,
// whose public half is id.
func buildCertificate(key trust.SecretKey, id trust.EndpointID) ([]byte, error) {
	l, err := layout()
	if err != nil {
		return nil, err
	}
	der := bytes.Clone(l.der)
	copy(der[l.serial:], certSerial(id).Bytes())
	copy(der[l.pubkey:], id[:])
	for _, at := range l.names {
		hex.Encode(der[at:], id[:])
	}
	copy(der[l.sig:], ed25519.Sign(ed25519.PrivateKey(key), der[l.tbs[0]:l.tbs[1]]))
	return der, nil
}

// newCertificate returns the self-signed certificate of key, whose endpoint
// id (checked by checkKey) is id. Only its public key matters: peers
// identify an endpoint by it, not by names, validity or issuer, so it is
// valid until the end of year 9999 and has no CA. Certificates are cached
// by key (see certs).
func newCertificate(key trust.SecretKey, id trust.EndpointID) (tls.Certificate, error) {
	ck := certCacheKey(key)
	der, ok := certs.get(ck)
	if !ok {
		var err error
		if der, err = buildCertificate(key, id); err != nil {
			return tls.Certificate{}, fmt.Errorf("quic: create certificate: %w", err)
		}
		certs.put(ck, der)
	}
	return certificateOf(key, der), nil
}

// certificateOf pairs key with its certificate der.
func certificateOf(key trust.SecretKey, der []byte) tls.Certificate {
	// No Leaf: crypto/tls parses it only to choose among several
	// certificates or to match a server name or CA list, which never
	// happens here.
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: ed25519.PrivateKey(key)}
}

// certCacheSize bounds the certificate cache: a process typically uses one
// key, or a few (a CLI, tests, a fleet's shared dialer).
const certCacheSize = 32

// certs caches the certificates of the keys used most recently, so that a
// program making many Dialers or Listeners with one key (a Client per
// endpoint, a CLI dialling again) builds its certificate once. It holds
// certificates only, which are public; never the keys. Only keys that
// checkKey accepted get an entry (every caller of newCertificate checks
// first), so a Dialer whose key has one skips the check (startCertificate).
var certs = &certCache{m: make(map[[sha256.Size]byte]*certEntry)}

// certCache is a small LRU of certificates (DER) by certCacheKey.
type certCache struct {
	mu   sync.Mutex
	tick uint64
	m    map[[sha256.Size]byte]*certEntry
}

type certEntry struct {
	der  []byte // shared by every tls.Certificate made from it: read only
	used uint64
}

// certCacheKey names key in the cache: a hash of the whole key, so a key
// whose halves do not match (which checkKey rejects before) cannot hit
// another key's entry, and the map holds nothing secret.
func certCacheKey(key trust.SecretKey) [sha256.Size]byte {
	return sha256.Sum256(append([]byte("aster/1 certificate cache "), key...))
}

func (c *certCache) get(k [sha256.Size]byte) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	c.tick++
	e.used = c.tick
	return e.der, true
}

func (c *certCache) put(k [sha256.Size]byte, der []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= certCacheSize {
		var oldest [sha256.Size]byte
		least := ^uint64(0)
		for k, e := range c.m {
			if e.used < least {
				oldest, least = k, e.used
			}
		}
		delete(c.m, oldest)
	}
	c.tick++
	c.m[k] = &certEntry{der: der, used: c.tick}
}
