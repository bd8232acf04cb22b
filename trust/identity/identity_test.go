package identity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

func TestIdentityRoundTrip(t *testing.T) {
	c, _, ep := vectorCredential(t)
	ott := *c
	ott.Name, ott.Type, ott.Nonce, ott.Attributes = "once", enroll.TypeOTT, enroll.NewNonce(), nil
	if err := enroll.Sign(seedKey(t, vecRootSeed), &ott); err != nil {
		t.Fatal(err)
	}
	id := &Identity{Key: ep, Peers: []*enroll.Credential{c, &ott}}
	path := filepath.Join(t.TempDir(), "edge.cred")
	if err := Save(path, id); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %#o, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	for _, want := range []string{"[node]", "[[peers]]", `secret_key = `, `name = 'edge-node-7'`, `role = 'consumer'`, `type = 'policy'`, `attributes = {site = 'eu-west'}`, `expires_at = 1769817600`, `signature = '8f3ef2`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("file lacks %q:\n%s", want, raw)
		}
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 0 {
		t.Errorf("warnings: %v", got.Warnings)
	}
	if !got.Key.Equal(ep) || len(got.Peers) != 2 || !got.Peers[0].Equal(c) || !got.Peers[1].Equal(&ott) {
		t.Fatalf("round trip changed the identity: %+v", got)
	}
	if got.Peer("once", "") != got.Peers[1] || got.Peer("", enroll.RoleProducer) != nil || got.Peer("", enroll.RoleConsumer) != got.Peers[0] {
		t.Error("Peer lookup wrong")
	}
	// Re-enrolling a name replaces its entry.
	repl := *c
	repl.Capabilities = []string{"ops.admin"}
	got.SetPeer(&repl)
	if len(got.Peers) != 2 || got.Peers[0].Capabilities[0] != "ops.admin" {
		t.Errorf("SetPeer did not replace: %+v", got.Peers)
	}
}

func TestIdentityPermissionsWarn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "id")
	if err := Save(path, &Identity{Key: trust.GenerateKey()}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	id, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Warnings) != 1 || !strings.Contains(id.Warnings[0], "chmod 600") {
		t.Errorf("warnings = %v", id.Warnings)
	}
}

func TestParseIdentityErrors(t *testing.T) {
	c, _, ep := vectorCredential(t)
	good, err := (&Identity{Key: ep, Peers: []*enroll.Credential{c}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
	drop := func(field string) []byte {
		var out []string
		for _, l := range strings.Split(string(good), "\n") {
			if !strings.HasPrefix(l, field+" = ") {
				out = append(out, l)
			}
		}
		return []byte(strings.Join(out, "\n"))
	}
	replace := func(old, new string) []byte { return bytes.Replace(good, []byte(old), []byte(new), 1) }
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "neither [node] nor [[peers]]"},
		{"garbage", []byte("\x00\x01 not toml ["), "line 1"},
		{"truncated", good[:len(good)/2], "identity file"},
		{"no signature", drop("signature"), "peers[0] (edge-node-7): missing field signature"},
		{"no name", drop("name"), "peers[0]: missing field name"},
		{"no role", drop("role"), "missing field role"},
		{"no type", drop("type"), "missing field type"},
		{"no root", drop("root_pubkey"), "missing field root_pubkey"},
		{"no expiry", drop("expires_at"), "missing field expires_at"},
		{"no secret key", drop("secret_key"), "[node]: missing field secret_key"},
		{"bad secret key", replace("secret_key = '", "secret_key = '!"), "[node] secret_key"},
		{"node id mismatch", replace("endpoint_id = '"+trust.IDOf(ep).String(), "endpoint_id = '"+trust.IDOf(trust.GenerateKey()).String()), "does not match secret_key"},
		{"bad signature hex", replace("signature = '", "signature = 'zz"), "signature: not hex"},
		{"bad role", replace("role = 'consumer'", "role = 'root'"), "role must be"},
		{"odd capability", replace("'ops.status'", "'ops status'"), `capability "ops status" has invalid character`},
		{"wrong type", replace("expires_at = 1769817600", "expires_at = 'soon'"), "expires_at"},
	} {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.cred"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file = %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestLoadOrCreateIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", ".aster-identity")
	a, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	b, created, err := LoadOrCreate(path)
	if err != nil || created || !a.Key.Equal(b.Key) {
		t.Fatalf("reload: %v %v", created, err)
	}
}

func FuzzParseIdentity(f *testing.F) {
	c, _, ep := vectorCredential(f)
	good, _ := (&Identity{Key: ep, Peers: []*enroll.Credential{c}}).Marshal()
	f.Add(good)
	f.Add([]byte("[node]\nsecret_key = 'x'\n"))
	f.Add([]byte("[[peers]]\nname = 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := Parse(b)
		if err != nil {
			return
		}
		// What parses marshals and parses again to the same identity.
		out, err := id.Marshal()
		if err != nil {
			t.Fatalf("parsed identity does not marshal: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("marshalled identity does not parse: %v\n%s", err, out)
		}
		if len(again.Peers) != len(id.Peers) || !again.Key.Equal(id.Key) {
			t.Fatalf("round trip changed the identity")
		}
		for i := range id.Peers {
			if !again.Peers[i].Equal(id.Peers[i]) {
				t.Fatalf("round trip changed peer %d", i)
			}
		}
	})
}

// The layout of the configuration reference's example parses: no
// capabilities or issued_at, endpoint_id omitted under a [node].
func TestParseIdentityReferenceLayout(t *testing.T) {
	root, node := trust.GenerateKey(), trust.GenerateKey()
	mk := func(name string, role enroll.Role) *enroll.Credential {
		c := &enroll.Credential{Type: enroll.TypePolicy, Role: role, Name: name, EndpointID: trust.IDOf(node), IssuedAt: time.Unix(0, 0), ExpiresAt: time.Unix(1735689599, 0)}
		if err := enroll.Sign(root, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := mk("billing-producer", enroll.RoleProducer), mk("analytics-consumer", enroll.RoleConsumer)
	doc := `[node]
secret_key = "` + trust.EncodeSecretKeyBase64(node) + `"

[[peers]]
name = "billing-producer"
role = "producer"
root_pubkey = "` + trust.IDOf(root).String() + `"
type = "policy"
expires_at = 1735689599
endpoint_id = "` + trust.IDOf(node).String() + `"
attributes = {}
signature = "` + hex.EncodeToString(a.Signature) + `"

[[peers]]
name = "analytics-consumer"
role = "consumer"
root_pubkey = "` + trust.IDOf(root).String() + `"
type = "policy"
expires_at = 1735689599
attributes = {}
signature = "` + hex.EncodeToString(b.Signature) + `"
`
	id, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Peers) != 2 || !id.Peers[0].Equal(a) || !id.Peers[1].Equal(b) {
		t.Fatalf("parsed %+v", id.Peers)
	}
	at := time.Unix(1735689599-3600, 0)
	for _, c := range id.Peers {
		if err := c.Verify(trust.IDOf(root), trust.IDOf(node), at, 0); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
}

// Credential picks what a client presents: a named entry, or the first
// consumer credential, and fails without a node key or a match.
func TestCredential(t *testing.T) {
	root, node := trust.GenerateKey(), trust.GenerateKey()
	mk := func(name string, role enroll.Role) *enroll.Credential {
		c := &enroll.Credential{Type: enroll.TypePolicy, Role: role, Name: name, EndpointID: trust.IDOf(node),
			IssuedAt: time.Unix(0, 0), ExpiresAt: time.Unix(1735689599, 0)}
		if err := enroll.Sign(root, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	prod, cons := mk("billing-producer", enroll.RoleProducer), mk("analytics-consumer", enroll.RoleConsumer)
	id := &Identity{Key: node, Peers: []*enroll.Credential{prod, cons}}
	for name, want := range map[string]*enroll.Credential{"": cons, "billing-producer": prod, "analytics-consumer": cons} {
		if got, err := id.Credential(name); err != nil || got != want {
			t.Errorf("Credential(%q) = %v, %v; want %s", name, got, err, want.Name)
		}
	}
	if got, err := (&Identity{Key: node, Peers: []*enroll.Credential{prod}}).Credential(""); err != nil || got != prod {
		t.Errorf("only a producer entry: Credential(\"\") = %v, %v", got, err)
	}
	if _, err := id.Credential("nobody"); err == nil || !strings.Contains(err.Error(), `no peer entry "nobody"`) {
		t.Errorf("unknown name: %v", err)
	}
	if _, err := (&Identity{Key: node}).Credential(""); err == nil || !strings.Contains(err.Error(), "no [[peers]]") {
		t.Errorf("no peers: %v", err)
	}
	if _, err := (&Identity{Peers: id.Peers}).Credential(""); err == nil || !strings.Contains(err.Error(), "no [node] secret_key") {
		t.Errorf("no key: %v", err)
	}
}

// A file that does not parse is reported by position and reason only: the
// parser's rendering quotes the lines around the error, and those hold
// secrets (a root private key file given where an identity file belongs,
// or a node key above a typo).
func TestParseErrorQuotesNoSecret(t *testing.T) {
	key := trust.GenerateKey()
	seedHex := hex.EncodeToString(key.Seed())
	seedB64 := trust.EncodeSecretKeyBase64(key)
	for name, in := range map[string]string{
		"root key JSON":           "{\n  \"private_key\": \"" + seedHex + "\",\n  \"public_key\": \"" + trust.IDOf(key).String() + "\"\n}\n",
		"typo below the node key": "[node]\nsecret_key = '" + seedB64 + "'\nendpoint_id = 12x\n",
		"typo on the key's line":  "[node]\nsecret_key = '" + seedB64 + "' x\n",
	} {
		_, err := Parse([]byte(in))
		if err == nil {
			t.Fatalf("%s: parsed", name)
		}
		if strings.Contains(err.Error(), seedHex[:16]) || strings.Contains(err.Error(), seedB64[:16]) {
			t.Errorf("%s: the error quotes the secret key: %v", name, err)
		}
		if !strings.Contains(err.Error(), "line ") {
			t.Errorf("%s: the error gives no position: %v", name, err)
		}
	}
}
