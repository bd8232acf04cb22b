package trust

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
