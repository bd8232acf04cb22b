package trust

import (
	"bytes"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityRoundTrip(t *testing.T) {
	c, _, ep := vectorCredential(t)
	ott := *c
	ott.Name, ott.Type, ott.Nonce, ott.Attributes = "once", TypeOTT, NewNonce(), nil
	if err := Sign(seedKey(t, vecRootSeed), &ott); err != nil {
		t.Fatal(err)
	}
	id := &Identity{Key: ep, Peers: []*Credential{c, &ott}}
	path := filepath.Join(t.TempDir(), "edge.cred")
	if err := SaveIdentity(path, id); err != nil {
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
	got, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Warnings) != 0 {
		t.Errorf("warnings: %v", got.Warnings)
	}
	if !got.Key.Equal(ep) || len(got.Peers) != 2 || !got.Peers[0].Equal(c) || !got.Peers[1].Equal(&ott) {
		t.Fatalf("round trip changed the identity: %+v", got)
	}
	if got.Peer("once", "") != got.Peers[1] || got.Peer("", RoleProducer) != nil || got.Peer("", RoleConsumer) != got.Peers[0] {
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
	if err := SaveIdentity(path, &Identity{Key: GenerateKey()}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	id, err := LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Warnings) != 1 || !strings.Contains(id.Warnings[0], "chmod 600") {
		t.Errorf("warnings = %v", id.Warnings)
	}
}

func TestParseIdentityErrors(t *testing.T) {
	c, _, ep := vectorCredential(t)
	good, err := (&Identity{Key: ep, Peers: []*Credential{c}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseIdentity(good); err != nil {
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
		{"node id mismatch", replace("endpoint_id = '"+IDOf(ep).String(), "endpoint_id = '"+IDOf(GenerateKey()).String()), "does not match secret_key"},
		{"bad signature hex", replace("signature = '", "signature = 'zz"), "signature: not hex"},
		{"bad role", replace("role = 'consumer'", "role = 'root'"), "role must be"},
		{"odd capability", replace("'ops.status'", "'ops status'"), `capability "ops status" has invalid character`},
		{"wrong type", replace("expires_at = 1769817600", "expires_at = 'soon'"), "expires_at"},
	} {
		_, err := ParseIdentity(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParseIdentity = %v, want error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLoadOrCreateIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", ".aster-identity")
	a, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	b, created, err := LoadOrCreateIdentity(path)
	if err != nil || created || !a.Key.Equal(b.Key) {
		t.Fatalf("reload: %v %v", created, err)
	}
}

func TestRootKeyFiles(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "keys", "root.key")
	key := GenerateKey()
	pubPath, err := WriteRootKey(keyPath, key, false)
	if err != nil {
		t.Fatal(err)
	}
	if pubPath != filepath.Join(dir, "keys", "root.pub") {
		t.Errorf("pub path %s", pubPath)
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %#o", st.Mode().Perm())
	}
	if _, err := WriteRootKey(keyPath, GenerateKey(), false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("overwrite without force: %v", err)
	}
	got, err := ReadRootKey(keyPath)
	if err != nil || !got.Equal(key) {
		t.Fatalf("ReadRootKey: %v", err)
	}
	pub, err := ReadRootPublicKey(pubPath)
	if err != nil || pub != IDOf(key) {
		t.Fatalf("ReadRootPublicKey: %v", err)
	}
	k2 := GenerateKey()
	if _, err := WriteRootKey(keyPath, k2, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadRootKey(keyPath); !got.Equal(k2) {
		t.Error("force did not replace the key")
	}
	if p, _ := ParseRootPublicKey(`{"public_key":"` + IDOf(k2).String() + `"}`); p != IDOf(k2) {
		t.Error("JSON public key form")
	}
	for _, bad := range []string{"", "{}", "abc", `{"public_key": 5}`} {
		if _, err := ParseRootPublicKey(bad); err == nil {
			t.Errorf("ParseRootPublicKey(%q) succeeded", bad)
		}
	}
	os.WriteFile(keyPath, []byte(`{"private_key":"00"}`), 0o600)
	if _, err := ReadRootKey(keyPath); err == nil {
		t.Error("short private key accepted")
	}
}

func TestGate(t *testing.T) {
	c, root, ep := vectorCredential(t)
	rootPub := IDOf(root)
	now := func() time.Time { return t0.Add(time.Hour) }
	logs := &bytes.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	closed, err := NewGate(Policy{RootPubKey: &rootPub, AllowAllProducers: true, Now: now}, logger)
	if err != nil {
		t.Fatal(err)
	}
	g, err := closed.Admit(IDOf(ep), "", c)
	if err != nil || g.Unrestricted || g.Name != "edge-node-7" || len(g.Capabilities) != 2 || g.Role != RoleConsumer {
		t.Fatalf("valid credential: %+v %v", g, err)
	}
	var rf *Refusal
	_, err = closed.Admit(IDOf(ep), RoleConsumer, nil)
	if !errors.As(err, &rf) || rf.Message != MsgCredentialRequired || rf.Code.String() != "UNAUTHENTICATED" {
		t.Fatalf("no credential: %v", err)
	}
	thief := IDOf(GenerateKey())
	if _, err = closed.Admit(thief, RoleConsumer, c); !errors.Is(err, ErrEndpointMismatch) || !errors.As(err, &rf) || rf.Message != MsgCredentialRejected {
		t.Fatalf("stolen credential: %v", err)
	}
	if strings.Contains(rf.Status().Message(), thief.Short()) {
		t.Error("refusal message leaks the reason")
	}
	// An open producer gate does not let unenrolled producers past a closed consumer gate.
	if _, err = closed.Admit(thief, RoleProducer, nil); err == nil {
		t.Fatal("anonymous producer admitted through a closed consumer gate")
	}
	if _, err = closed.Admit(IDOf(ep), RoleProducer, c); !errors.Is(err, ErrMalformed) {
		t.Fatalf("role mismatch: %v", err)
	}

	open, _ := NewGate(Policy{RootPubKey: &rootPub, AllowAllConsumers: true, Now: now}, logger)
	if g, err := open.Admit(thief, "", nil); err != nil || !g.Unrestricted {
		t.Fatalf("open gate: %+v %v", g, err)
	}
	if _, err := open.Admit(thief, RoleProducer, nil); err == nil {
		t.Fatal("producer admitted without credential with allow_all_producers=false")
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected log: %s", logs)
	}

	dev, _ := NewGate(Policy{}, logger)
	if !dev.DevMode() || !strings.Contains(logs.String(), DevModeWarning) {
		t.Errorf("dev mode: %v log %q", dev.DevMode(), logs)
	}
	if g, err := dev.Admit(thief, "", nil); err != nil || !g.Unrestricted {
		t.Fatalf("dev gate: %+v %v", g, err)
	}
}

func TestGateOneTimeToken(t *testing.T) {
	root, ep := GenerateKey(), GenerateKey()
	rootPub := IDOf(root)
	c := &Credential{Type: TypeOTT, Role: RoleConsumer, Name: "once", EndpointID: IDOf(ep), Nonce: NewNonce(),
		IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour)}
	if err := Sign(root, c); err != nil {
		t.Fatal(err)
	}
	nonces := filepath.Join(t.TempDir(), "store", "ott-nonces")
	g, err := NewGate(Policy{RootPubKey: &rootPub, NonceFile: nonces}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(IDOf(ep), "", c); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, err := g.Admit(IDOf(ep), "", c); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	// A restarted server remembers the nonce.
	g2, err := NewGate(Policy{RootPubKey: &rootPub, NonceFile: nonces}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g2.Admit(IDOf(ep), "", c); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay after restart: %v", err)
	}
	os.WriteFile(nonces, []byte("zz 12\n"), 0o600)
	if _, err := NewGate(Policy{RootPubKey: &rootPub, NonceFile: nonces}, nil); err == nil {
		t.Error("corrupt nonce file accepted")
	}
}

func FuzzParseIdentity(f *testing.F) {
	c, _, ep := vectorCredential(f)
	good, _ := (&Identity{Key: ep, Peers: []*Credential{c}}).Marshal()
	f.Add(good)
	f.Add([]byte("[node]\nsecret_key = 'x'\n"))
	f.Add([]byte("[[peers]]\nname = 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseIdentity(b)
		if err != nil {
			return
		}
		// What parses marshals and parses again to the same identity.
		out, err := id.Marshal()
		if err != nil {
			t.Fatalf("parsed identity does not marshal: %v", err)
		}
		again, err := ParseIdentity(out)
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
	root, node := GenerateKey(), GenerateKey()
	mk := func(name string, role Role) *Credential {
		c := &Credential{Type: TypePolicy, Role: role, Name: name, EndpointID: IDOf(node), IssuedAt: time.Unix(0, 0), ExpiresAt: time.Unix(1735689599, 0)}
		if err := Sign(root, c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := mk("billing-producer", RoleProducer), mk("analytics-consumer", RoleConsumer)
	doc := `[node]
secret_key = "` + EncodeSecretKeyBase64(node) + `"

[[peers]]
name = "billing-producer"
role = "producer"
root_pubkey = "` + IDOf(root).String() + `"
type = "policy"
expires_at = 1735689599
endpoint_id = "` + IDOf(node).String() + `"
attributes = {}
signature = "` + hex.EncodeToString(a.Signature) + `"

[[peers]]
name = "analytics-consumer"
role = "consumer"
root_pubkey = "` + IDOf(root).String() + `"
type = "policy"
expires_at = 1735689599
attributes = {}
signature = "` + hex.EncodeToString(b.Signature) + `"
`
	id, err := ParseIdentity([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Peers) != 2 || !id.Peers[0].Equal(a) || !id.Peers[1].Equal(b) {
		t.Fatalf("parsed %+v", id.Peers)
	}
	at := time.Unix(1735689599-3600, 0)
	for _, c := range id.Peers {
		if err := c.Verify(IDOf(root), IDOf(node), at, 0); err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
}
