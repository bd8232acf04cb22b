// Package enroll holds enrollment credentials and admission: a root key's
// signed statement that an endpoint may join a deployment as a consumer or a
// producer with some capabilities (Credential, Sign, Decode), and the Gate a
// server runs to admit or refuse a peer by its credential (Policy, Grant,
// Refusal, NonceStore for one-time tokens).
//
// Credentials travel in CBOR on the admission exchange (PROTOCOL.md,
// "Admission"); the canonical bytes a root signs are described there and on
// Credential.SigningBytes.
package enroll

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/aster-go/aster/trust"
)

// Role is what an enrolled peer is admitted as.
type Role string

// Roles.
const (
	// RoleConsumer is a peer that calls services (a client, an agent, an operator).
	RoleConsumer Role = "consumer"
	// RoleProducer is a peer that serves services itself and joins the
	// deployment as one of its producers.
	RoleProducer Role = "producer"
)

// CredentialType says how often a credential may be used.
type CredentialType string

// Credential types.
const (
	// TypePolicy is a reusable credential, valid until it expires.
	TypePolicy CredentialType = "policy"
	// TypeOTT is a one-time token: a server admits it once (it remembers the
	// nonce until the credential expires).
	TypeOTT CredentialType = "ott"
)

// Credential limits, enforced by Validate and by the decoder before anything
// larger is allocated.
const (
	MaxNameLen       = 128
	MaxCapabilities  = 64
	MaxAttributes    = 64
	MaxAttrKeyLen    = 128
	MaxAttrValueLen  = 1024
	NonceSize        = 16
	MaxCredentialLen = 16 << 10 // encoded size, CBOR
)

// signingDomain starts the canonical signing bytes, so that a signature over
// a credential can never be mistaken for a signature over anything else.
const signingDomain = "aster-credential-v1\x00"

// Verification errors. Verify and Gate.Admit wrap one of them; match with
// errors.Is.
var (
	ErrMalformed        = errors.New("trust: malformed credential")
	ErrBadSignature     = errors.New("trust: credential signature does not verify")
	ErrWrongRoot        = errors.New("trust: credential is signed by another root")
	ErrExpired          = errors.New("trust: credential has expired")
	ErrNotYetValid      = errors.New("trust: credential is not yet valid")
	ErrEndpointMismatch = errors.New("trust: credential belongs to another endpoint")
	ErrReplayed         = errors.New("trust: one-time credential already used")
)

// Credential is an enrollment credential: a root key's signed statement that
// the endpoint EndpointID may join as Role with Capabilities until ExpiresAt.
// It is bound to the endpoint: only a peer proving EndpointID's secret key in
// the transport handshake can use it.
type Credential struct {
	// Type is TypePolicy (reusable) or TypeOTT (one-time).
	Type CredentialType
	// Role is RoleConsumer or RoleProducer.
	Role Role
	// Name names the enrolled peer ("edge-node-7"), for people and logs.
	Name string
	// RootPubKey is the public key of the root that signed the credential.
	RootPubKey trust.PublicKey
	// EndpointID is the endpoint the credential is issued to.
	EndpointID trust.EndpointID
	// Capabilities are granted to the peer on admission, in the order issued.
	Capabilities []string
	// Attributes are free key/value pairs the root attests (may be nil).
	Attributes map[string]string
	// IssuedAt and ExpiresAt bound the validity, to the second.
	IssuedAt  time.Time
	ExpiresAt time.Time
	// Nonce is 16 random bytes for one-time tokens, empty for policies.
	Nonce []byte
	// Signature is the root's ed25519 signature over SigningBytes.
	Signature []byte
}

// ParseRole parses "consumer" or "producer".
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case RoleConsumer, RoleProducer:
		return Role(s), nil
	}
	return "", fmt.Errorf("trust: role must be %q or %q, got %q", RoleConsumer, RoleProducer, s)
}

// ParseCredentialType parses "policy" or "ott".
func ParseCredentialType(s string) (CredentialType, error) {
	switch CredentialType(s) {
	case TypePolicy, TypeOTT:
		return CredentialType(s), nil
	}
	return "", fmt.Errorf("trust: credential type must be %q or %q, got %q", TypePolicy, TypeOTT, s)
}

// ValidName checks a peer name: 1–128 bytes of UTF-8 without control
// characters.
func ValidName(s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("trust: name must be 1-%d bytes, got %d", MaxNameLen, len(s))
	}
	return printable("name", s)
}

func printable(what, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("trust: %s %q is not valid UTF-8", what, s)
	}
	for i, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("trust: %s %q has a control character at %d", what, s, i)
		}
	}
	return nil
}

// ValidAttribute checks an attribute: the key 1–128 characters from
// [A-Za-z0-9._:/-] (as capabilities), the value up to 1024 bytes of UTF-8
// without control characters.
func ValidAttribute(k, v string) error {
	if k == "" || len(k) > MaxAttrKeyLen {
		return fmt.Errorf("trust: attribute key %q must be 1-%d characters", k, MaxAttrKeyLen)
	}
	if err := trust.ValidCapability(k); err != nil {
		return fmt.Errorf("trust: attribute key %q has invalid characters (allowed: A-Z a-z 0-9 . _ : / -)", k)
	}
	if len(v) > MaxAttrValueLen {
		return fmt.Errorf("trust: attribute %s: value must be at most %d bytes, got %d", k, MaxAttrValueLen, len(v))
	}
	return printable("attribute value of "+k, v)
}

// Validate checks every field's form and limits (not the signature, expiry
// or binding: see Verify). Errors wrap ErrMalformed.
func (c *Credential) Validate() error {
	bad := func(err error) error { return fmt.Errorf("%w: %w", ErrMalformed, err) }
	if _, err := ParseCredentialType(string(c.Type)); err != nil {
		return bad(err)
	}
	if _, err := ParseRole(string(c.Role)); err != nil {
		return bad(err)
	}
	if err := ValidName(c.Name); err != nil {
		return bad(err)
	}
	if c.RootPubKey.IsZero() {
		return bad(errors.New("root_pubkey is missing"))
	}
	if c.EndpointID.IsZero() {
		return bad(errors.New("endpoint_id is missing"))
	}
	if len(c.Capabilities) > MaxCapabilities {
		return bad(fmt.Errorf("at most %d capabilities, got %d", MaxCapabilities, len(c.Capabilities)))
	}
	for i, cp := range c.Capabilities {
		if err := trust.ValidCapability(cp); err != nil {
			return bad(err)
		}
		if slices.Contains(c.Capabilities[:i], cp) {
			return bad(fmt.Errorf("capability %q listed twice", cp))
		}
	}
	if len(c.Attributes) > MaxAttributes {
		return bad(fmt.Errorf("at most %d attributes, got %d", MaxAttributes, len(c.Attributes)))
	}
	for k, v := range c.Attributes {
		if err := ValidAttribute(k, v); err != nil {
			return bad(err)
		}
	}
	if c.IssuedAt.Unix() < 0 || c.ExpiresAt.Unix() <= 0 {
		return bad(errors.New("issued_at and expires_at must be positive Unix times"))
	}
	if !c.ExpiresAt.After(c.IssuedAt) {
		return bad(errors.New("expires_at must be after issued_at"))
	}
	switch {
	case c.Type == TypeOTT && len(c.Nonce) != NonceSize:
		return bad(fmt.Errorf("a one-time credential needs a %d-byte nonce, got %d", NonceSize, len(c.Nonce)))
	case c.Type == TypePolicy && len(c.Nonce) != 0:
		return bad(errors.New("a policy credential has no nonce"))
	}
	if c.Signature != nil && len(c.Signature) != ed25519.SignatureSize {
		return bad(fmt.Errorf("signature must be %d bytes, got %d", ed25519.SignatureSize, len(c.Signature)))
	}
	return nil
}

// SigningBytes returns the canonical bytes the root signs (PROTOCOL.md,
// "Credential signing bytes"):
//
//	"aster-credential-v1" 0x00
//	u8 type (1 policy, 2 ott)   u8 role (1 consumer, 2 producer)
//	str name   [32]root_pubkey   [32]endpoint_id
//	u64 issued_at   u64 expires_at   (Unix seconds)
//	bytes nonce
//	u32 n, then n × str capability        (in credential order)
//	u32 n, then n × (str key, str value)  (keys in ascending byte order)
//
// where integers are big-endian, str and bytes are a u32 length followed by
// that many bytes. The credential must Validate.
func (c *Credential) SigningBytes() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 256)
	b = append(b, signingDomain...)
	b = append(b, map[CredentialType]byte{TypePolicy: 1, TypeOTT: 2}[c.Type])
	b = append(b, map[Role]byte{RoleConsumer: 1, RoleProducer: 2}[c.Role])
	b = appendStr(b, c.Name)
	b = append(b, c.RootPubKey[:]...)
	b = append(b, c.EndpointID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.IssuedAt.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.ExpiresAt.Unix()))
	b = appendStr(b, string(c.Nonce))
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.Capabilities)))
	for _, cp := range c.Capabilities {
		b = appendStr(b, cp)
	}
	keys := make([]string, 0, len(c.Attributes))
	for k := range c.Attributes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = binary.BigEndian.AppendUint32(b, uint32(len(keys)))
	for _, k := range keys {
		b = appendStr(appendStr(b, k), c.Attributes[k])
	}
	return b, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// NewNonce returns a random nonce for a one-time credential.
func NewNonce() []byte {
	n := make([]byte, NonceSize)
	rand.Read(n)
	return n
}

// Sign fills in c.RootPubKey and c.Signature with root's signature. Times are
// truncated to the second (the precision that is signed).
func Sign(root trust.SecretKey, c *Credential) error {
	if len(root) != ed25519.PrivateKeySize {
		return fmt.Errorf("trust: root key must be %d bytes, got %d", ed25519.PrivateKeySize, len(root))
	}
	c.RootPubKey = trust.IDOf(root)
	c.IssuedAt = time.Unix(c.IssuedAt.Unix(), 0).UTC()
	c.ExpiresAt = time.Unix(c.ExpiresAt.Unix(), 0).UTC()
	c.Signature = nil
	msg, err := c.SigningBytes()
	if err != nil {
		return err
	}
	c.Signature = ed25519.Sign(root, msg)
	return nil
}

// VerifySignature checks the form of c and that Signature is RootPubKey's
// signature over SigningBytes. It does not check which root that is, the
// validity period or the binding to a connection: see Verify.
func (c *Credential) VerifySignature() error {
	if c.Signature == nil {
		return fmt.Errorf("%w: signature is missing", ErrMalformed)
	}
	msg, err := c.SigningBytes()
	if err != nil {
		return err
	}
	if !ed25519.Verify(c.RootPubKey.PublicKey(), msg, c.Signature) {
		return ErrBadSignature
	}
	return nil
}

// DefaultClockSkew is how far clocks may disagree when checking validity
// periods: a credential is accepted from IssuedAt−skew until ExpiresAt+skew.
const DefaultClockSkew = 60 * time.Second

// Verify checks everything a server checks before admitting the credential's
// holder: form, that root signed it, that now (± skew) lies in its validity
// period, and that peer — the endpoint id proven by the connection's
// handshake — is the endpoint it was issued to. The error wraps one of
// ErrMalformed, ErrWrongRoot, ErrBadSignature, ErrNotYetValid, ErrExpired,
// ErrEndpointMismatch. One-time nonces are checked by Gate.
func (c *Credential) Verify(root trust.PublicKey, peer trust.EndpointID, now time.Time, skew time.Duration) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.RootPubKey != root {
		return fmt.Errorf("%w: signed by %s, trusted root is %s", ErrWrongRoot, c.RootPubKey.Short(), root.Short())
	}
	if err := c.VerifySignature(); err != nil {
		return err
	}
	if now.Add(skew).Before(c.IssuedAt) {
		return fmt.Errorf("%w: valid from %s", ErrNotYetValid, FormatTime(c.IssuedAt))
	}
	if now.Add(-skew).After(c.ExpiresAt) {
		return fmt.Errorf("%w: expired at %s", ErrExpired, FormatTime(c.ExpiresAt))
	}
	if c.EndpointID != peer {
		return fmt.Errorf("%w: issued to %s, presented by %s", ErrEndpointMismatch, c.EndpointID.Short(), peer.Short())
	}
	return nil
}

// FormatTime renders t as the CLI and logs show it: RFC 3339 in UTC with a
// numeric offset, e.g. 2026-05-10T20:20:12+00:00.
func FormatTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05+00:00") }

// wireCredential is the CBOR form of a credential (PROTOCOL.md).
type wireCredential struct {
	Type         string            `cbor:"type"`
	Role         string            `cbor:"role"`
	Name         string            `cbor:"name"`
	RootPubKey   []byte            `cbor:"root_pubkey"`
	EndpointID   []byte            `cbor:"endpoint_id"`
	Capabilities []string          `cbor:"capabilities"`
	Attributes   map[string]string `cbor:"attributes"`
	IssuedAt     int64             `cbor:"issued_at"`
	ExpiresAt    int64             `cbor:"expires_at"`
	Nonce        []byte            `cbor:"nonce,omitempty"`
	Signature    []byte            `cbor:"signature"`
}

var (
	credEnc cbor.EncMode
	credDec cbor.DecMode
)

func init() {
	var err error
	if credEnc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	credDec, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  MaxCapabilities,
		MaxMapPairs:       MaxAttributes + 16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Encode returns the credential's CBOR encoding (deterministic), as carried
// by the admission exchange.
func (c *Credential) Encode() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	w := wireCredential{
		Type: string(c.Type), Role: string(c.Role), Name: c.Name,
		RootPubKey: c.RootPubKey[:], EndpointID: c.EndpointID[:],
		Capabilities: c.Capabilities, Attributes: c.Attributes,
		IssuedAt: c.IssuedAt.Unix(), ExpiresAt: c.ExpiresAt.Unix(),
		Nonce: c.Nonce, Signature: c.Signature,
	}
	if w.Capabilities == nil {
		w.Capabilities = []string{}
	}
	if w.Attributes == nil {
		w.Attributes = map[string]string{}
	}
	return credEnc.Marshal(w)
}

// Decode decodes and validates a CBOR credential (the inverse of
// Credential.Encode). It never panics; input over MaxCredentialLen is refused before
// decoding. Errors wrap ErrMalformed.
func Decode(b []byte) (*Credential, error) {
	if len(b) > MaxCredentialLen {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxCredentialLen)
	}
	var w wireCredential
	if err := credDec.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	c := &Credential{
		Type: CredentialType(w.Type), Role: Role(w.Role), Name: w.Name,
		Capabilities: w.Capabilities, Attributes: w.Attributes,
		IssuedAt: time.Unix(w.IssuedAt, 0).UTC(), ExpiresAt: time.Unix(w.ExpiresAt, 0).UTC(),
		Nonce: w.Nonce, Signature: w.Signature,
	}
	if len(w.RootPubKey) != len(c.RootPubKey) || len(w.EndpointID) != len(c.EndpointID) {
		return nil, fmt.Errorf("%w: root_pubkey and endpoint_id must be %d bytes", ErrMalformed, len(c.RootPubKey))
	}
	copy(c.RootPubKey[:], w.RootPubKey)
	copy(c.EndpointID[:], w.EndpointID)
	if len(c.Attributes) == 0 {
		c.Attributes = nil
	}
	if len(c.Capabilities) == 0 {
		c.Capabilities = nil
	}
	if c.Signature == nil {
		return nil, fmt.Errorf("%w: signature is missing", ErrMalformed)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Equal reports whether two credentials are the same, field by field.
func (c *Credential) Equal(o *Credential) bool {
	a, err1 := c.Encode()
	b, err2 := o.Encode()
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}
