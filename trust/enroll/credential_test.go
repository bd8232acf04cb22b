package enroll

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

// The test vector of PROTOCOL.md ("Credential signing bytes"): RFC 8032
// test 1 is the root, RFC 8032 test 2 the endpoint.
const (
	vecRootSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	vecEPSeed   = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
	vecSigning  = "61737465722d63726564656e7469616c2d76310001010000000b656467652d6e6f64652d37d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c000000006955b90000000000697d460000000000000000020000000a6f70732e7374617475730000000a6f70732e696e676573740000000100000004736974650000000765752d77657374"
	vecSig      = "8f3ef213eb074355db4192630d804375bd048c4bf4f02b4fde470f59cd2e63c8ced3cb118c78190c914f496153e9deb4671eb5ebc37fe1e88d6eca925af9a301"
	vecCBOR     = "aa646e616d656b656467652d6e6f64652d3764726f6c6568636f6e73756d6572647479706566706f6c696379696973737565645f61741a6955b900697369676e617475726558408f3ef213eb074355db4192630d804375bd048c4bf4f02b4fde470f59cd2e63c8ced3cb118c78190c914f496153e9deb4671eb5ebc37fe1e88d6eca925af9a3016a61747472696275746573a164736974656765752d776573746a657870697265735f61741a697d46006b656e64706f696e745f696458203d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c6b726f6f745f7075626b65795820d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a6c6361706162696c6974696573826a6f70732e7374617475736a6f70732e696e67657374"
)

func seedKey(t testing.TB, h string) trust.SecretKey {
	t.Helper()
	b, _ := hex.DecodeString(h)
	k, err := trust.KeyFromSeed(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var (
	t0 = time.Unix(1767225600, 0).UTC() // 2026-01-01
	t1 = time.Unix(1769817600, 0).UTC() // 2026-01-31
)

func vectorCredential(t testing.TB) (*Credential, trust.SecretKey, trust.SecretKey) {
	root, ep := seedKey(t, vecRootSeed), seedKey(t, vecEPSeed)
	c := &Credential{Type: TypePolicy, Role: RoleConsumer, Name: "edge-node-7", EndpointID: trust.IDOf(ep),
		Capabilities: []string{"ops.status", "ops.ingest"}, Attributes: map[string]string{"site": "eu-west"},
		IssuedAt: t0, ExpiresAt: t1}
	if err := Sign(root, c); err != nil {
		t.Fatal(err)
	}
	return c, root, ep
}

func TestCredentialVector(t *testing.T) {
	c, root, ep := vectorCredential(t)
	sb, err := c.SigningBytes()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(sb); got != vecSigning {
		t.Errorf("signing bytes\n got %s\nwant %s", got, vecSigning)
	}
	if got := hex.EncodeToString(c.Signature); got != vecSig {
		t.Errorf("signature\n got %s\nwant %s", got, vecSig)
	}
	enc, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(enc); got != vecCBOR {
		t.Errorf("CBOR\n got %s\nwant %s", got, vecCBOR)
	}
	if err := c.Verify(trust.IDOf(root), trust.IDOf(ep), t0.Add(time.Hour), DefaultClockSkew); err != nil {
		t.Errorf("vector does not verify: %v", err)
	}
	raw, _ := hex.DecodeString(vecCBOR)
	d, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Equal(c) {
		t.Errorf("decoded credential differs: %+v", d)
	}
}

func TestVerifyFailures(t *testing.T) {
	c, root, ep := vectorCredential(t)
	now := t0.Add(time.Hour)
	other := trust.GenerateKey()
	cases := []struct {
		name string
		mod  func(c *Credential)
		root trust.PublicKey
		peer trust.EndpointID
		now  time.Time
		want error
	}{
		{"ok", nil, trust.IDOf(root), trust.IDOf(ep), now, nil},
		{"within skew after expiry", nil, trust.IDOf(root), trust.IDOf(ep), t1.Add(30 * time.Second), nil},
		{"within skew before issue", nil, trust.IDOf(root), trust.IDOf(ep), t0.Add(-30 * time.Second), nil},
		{"expired", nil, trust.IDOf(root), trust.IDOf(ep), t1.Add(2 * time.Minute), ErrExpired},
		{"not yet valid", nil, trust.IDOf(root), trust.IDOf(ep), t0.Add(-2 * time.Minute), ErrNotYetValid},
		{"other trusted root", nil, trust.IDOf(other), trust.IDOf(ep), now, ErrWrongRoot},
		{"stolen: other endpoint", nil, trust.IDOf(root), trust.IDOf(other), now, ErrEndpointMismatch},
		{"forged signature", func(c *Credential) { c.Signature = bytes.Repeat([]byte{7}, 64) }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"re-signed by other root claiming ours", func(c *Credential) {
			Sign(other, c)
			c.RootPubKey = trust.IDOf(root)
		}, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"signed by other root", func(c *Credential) { Sign(other, c) }, trust.IDOf(root), trust.IDOf(ep), now, ErrWrongRoot},
		{"no signature", func(c *Credential) { c.Signature = nil }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		{"short signature", func(c *Credential) { c.Signature = c.Signature[:63] }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		// Tampering with any signed field breaks the signature.
		{"tampered name", func(c *Credential) { c.Name = "edge-node-8" }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"tampered role", func(c *Credential) { c.Role = RoleProducer }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"tampered type", func(c *Credential) { c.Type = TypeOTT; c.Nonce = make([]byte, NonceSize) }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"added capability", func(c *Credential) { c.Capabilities = append(c.Capabilities, "ops.admin") }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"reordered capabilities", func(c *Credential) { c.Capabilities = []string{"ops.ingest", "ops.status"} }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"changed capability", func(c *Credential) { c.Capabilities = []string{"ops.status", "ops.admin"} }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"tampered attribute", func(c *Credential) { c.Attributes = map[string]string{"site": "us-east"} }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"extended expiry", func(c *Credential) { c.ExpiresAt = c.ExpiresAt.Add(time.Hour) }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"earlier issue", func(c *Credential) { c.IssuedAt = c.IssuedAt.Add(-time.Hour) }, trust.IDOf(root), trust.IDOf(ep), now, ErrBadSignature},
		{"endpoint swapped to thief", func(c *Credential) { c.EndpointID = trust.IDOf(other) }, trust.IDOf(root), trust.IDOf(other), now, ErrBadSignature},
		{"bad capability chars", func(c *Credential) { c.Capabilities = []string{"ops status"} }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		{"duplicate capability", func(c *Credential) { c.Capabilities = []string{"a", "a"} }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		{"control char in name", func(c *Credential) { c.Name = "edge\x00" }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		{"bad role", func(c *Credential) { c.Role = "admin" }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		{"expiry before issue", func(c *Credential) { c.ExpiresAt = c.IssuedAt }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
		{"ott without nonce", func(c *Credential) { c.Type = TypeOTT }, trust.IDOf(root), trust.IDOf(ep), now, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cc := *c
			cc.Capabilities = append([]string(nil), c.Capabilities...)
			cc.Signature = append([]byte(nil), c.Signature...)
			if tc.mod != nil {
				tc.mod(&cc)
			}
			err := cc.Verify(tc.root, tc.peer, tc.now, DefaultClockSkew)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

// Every single-bit flip of the encoded credential is refused: it either does
// not decode or does not verify.
func TestTamperedEncodingEveryBit(t *testing.T) {
	c, root, ep := vectorCredential(t)
	enc, _ := c.Encode()
	for i := range enc {
		for bit := range 8 {
			b := append([]byte(nil), enc...)
			b[i] ^= 1 << bit
			d, err := Decode(b)
			if err != nil {
				continue
			}
			if err := d.Verify(trust.IDOf(root), trust.IDOf(ep), t0.Add(time.Hour), DefaultClockSkew); err == nil {
				t.Fatalf("flipping bit %d of byte %d still verifies", bit, i)
			}
		}
	}
}

func TestDecodeCredentialMalformed(t *testing.T) {
	c, _, _ := vectorCredential(t)
	enc, _ := c.Encode()
	for name, b := range map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("not cbor at all"),
		"truncated": enc[:len(enc)/2],
		"trailing":  append(append([]byte(nil), enc...), 0),
		"huge":      make([]byte, MaxCredentialLen+1),
		"array":     {0x80},
		"int":       {0x01},
	} {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", name, err)
		}
	}
}

func TestSignRejectsInvalid(t *testing.T) {
	root := trust.GenerateKey()
	c := &Credential{Type: TypePolicy, Role: RoleConsumer, Name: "x", EndpointID: trust.IDOf(trust.GenerateKey()),
		Capabilities: []string{"ok", "bad cap"}, IssuedAt: t0, ExpiresAt: t1}
	if err := Sign(root, c); err == nil || !strings.Contains(err.Error(), "bad cap") {
		t.Errorf("Sign with a bad capability = %v", err)
	}
	if err := Sign(trust.SecretKey{1, 2}, c); err == nil {
		t.Error("Sign with a short key succeeded")
	}
	c.Attributes = map[string]string{"k y": "v"}
	c.Capabilities = nil
	if err := Sign(root, c); err == nil || !strings.Contains(err.Error(), "attribute key") {
		t.Errorf("Sign with a bad attribute key = %v", err)
	}
}

func FuzzDecodeCredential(f *testing.F) {
	c, _, _ := vectorCredential(f)
	enc, _ := c.Encode()
	f.Add(enc)
	f.Add([]byte{0xa0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// A decoded credential is valid and re-encodes to a decodable form.
		again, err := d.Encode()
		if err != nil {
			t.Fatalf("decoded credential does not encode: %v", err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("re-encoded credential does not decode: %v", err)
		}
	})
}
