package trust

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aster-go/aster/trust/internal/secretfile"
)

// ExpandHome replaces a leading "~" or "~/" in path with the user's home
// directory. Other paths are returned unchanged.
func ExpandHome(path string) (string, error) {
	if path != "~" && !strings.HasPrefix(path, "~/") && !strings.HasPrefix(path, "~"+string(filepath.Separator)) {
		return path, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("trust: expanding %s: %w", path, err)
	}
	return filepath.Join(home, path[1:]), nil
}

// PublicKeyPath returns where the public half of the root key at keyPath is
// written: keyPath with ".key" replaced by ".pub" (or ".pub" appended).
func PublicKeyPath(keyPath string) string {
	return strings.TrimSuffix(keyPath, ".key") + ".pub"
}

// rootKeyJSON is the root private key file: the 32-byte seed and the public
// key, both hex.
type rootKeyJSON struct {
	PrivateKey string `json:"private_key"`
	PublicKey  string `json:"public_key"`
}

// WriteRootKey writes key's private half to keyPath (mode 0600, as JSON
// {"private_key": hex seed, "public_key": hex}) and its public key to
// PublicKeyPath(keyPath) (one line of hex), creating the directory (0700)
// if needed. It refuses to replace an existing private key unless force is
// set. It returns the public key path.
func WriteRootKey(keyPath string, key SecretKey, force bool) (string, error) {
	pubPath := PublicKeyPath(keyPath)
	if err := os.MkdirAll(filepath.Dir(keyPath), 0o700); err != nil {
		return "", fmt.Errorf("trust: %w", err)
	}
	b, _ := json.MarshalIndent(rootKeyJSON{PrivateKey: hex.EncodeToString(key.Seed()), PublicKey: IDOf(key).String()}, "", "  ")
	if err := secretfile.Write(keyPath, append(b, '\n'), force); err != nil {
		return "", err
	}
	if err := os.WriteFile(pubPath, []byte(IDOf(key).String()+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("trust: writing root public key: %w", err)
	}
	return pubPath, nil
}

// ReadRootKey reads a root private key file written by WriteRootKey (JSON),
// or a file holding just the 64-hex-character seed.
func ReadRootKey(path string) (SecretKey, error) {
	b, err := secretfile.Read(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "{") {
		var j rootKeyJSON
		if err := json.Unmarshal([]byte(s), &j); err != nil {
			return nil, fmt.Errorf("trust: root key %s: %w", path, err)
		}
		if j.PrivateKey == "" {
			return nil, fmt.Errorf("trust: root key %s: missing field private_key", path)
		}
		key, err := seedFromHex(j.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("trust: root key %s: private_key: %w", path, err)
		}
		if j.PublicKey != "" {
			pub, err := ParseEndpointID(j.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("trust: root key %s: public_key: %w", path, err)
			}
			if pub != IDOf(key) {
				return nil, fmt.Errorf("trust: root key %s: public_key does not match private_key", path)
			}
		}
		return key, nil
	}
	key, err := seedFromHex(s)
	if err != nil {
		return nil, fmt.Errorf("trust: root key %s: %w", path, err)
	}
	return key, nil
}

func seedFromHex(s string) (SecretKey, error) {
	seed, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("not hex: %w", err)
	}
	return KeyFromSeed(seed)
}

// ErrPrivateKeyFile is returned by ParseRootPublicKey and ReadRootPublicKey
// for the root private key file (JSON with "private_key", as WriteRootKey
// writes it) where the public key was expected.
var ErrPrivateKeyFile = errors.New("this is the root private key file, not the public key: give the .pub file written next to it, and keep the private key off servers")

// ParseRootPublicKey parses a root public key given as 64 hex characters or
// as JSON with a "public_key" field (the forms root_pubkey_file accepts).
// JSON that holds a "private_key" (the root private key file) is refused
// with ErrPrivateKeyFile, though it has a "public_key" too.
func ParseRootPublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "{") {
		var j struct {
			PublicKey  string  `json:"public_key"`
			PrivateKey *string `json:"private_key"`
		}
		if err := json.Unmarshal([]byte(s), &j); err != nil {
			return PublicKey{}, fmt.Errorf("trust: root public key: %w", err)
		}
		if j.PrivateKey != nil {
			return PublicKey{}, fmt.Errorf("trust: root public key: %w", ErrPrivateKeyFile)
		}
		if j.PublicKey == "" {
			return PublicKey{}, errors.New("trust: root public key: missing field public_key")
		}
		s = j.PublicKey
	}
	k, err := ParseEndpointID(s)
	if err != nil {
		return PublicKey{}, fmt.Errorf("trust: root public key: %w", err)
	}
	return k, nil
}

// ReadRootPublicKey reads a root public key file (hex, or JSON with
// "public_key"); "~" is expanded.
func ReadRootPublicKey(path string) (PublicKey, error) {
	p, err := ExpandHome(path)
	if err != nil {
		return PublicKey{}, err
	}
	b, err := secretfile.Read(p)
	if err != nil {
		return PublicKey{}, err
	}
	k, err := ParseRootPublicKey(string(b))
	if err != nil {
		return PublicKey{}, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
