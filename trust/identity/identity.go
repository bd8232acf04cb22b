// Package identity reads and writes .aster-identity files: a node's secret
// key ([node]) and the enrollment credentials issued to it ([[peers]]), in
// TOML, as "aster enroll node" and "aster trust sign" write them.
//
// A client presents one of the credentials with its key:
//
//	id, err := identity.Load("~/.aster-identity")
//	...
//	cred, err := id.Credential("") // the first consumer credential
//	...
//	c, err := aster.Dial(ctx, addr, aster.WithSecretKey(id.Key), aster.WithCredential(cred))
package identity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/internal/secretfile"
	"github.com/pelletier/go-toml/v2"
)

// Identity is the content of an .aster-identity file: a node's secret key
// ([node]) and the enrollment credentials issued to it ([[peers]]).
//
//	[node]
//	secret_key = "<base64 32-byte seed>"
//	endpoint_id = "<64 hex>"              # optional; checked against secret_key
//
//	[[peers]]
//	name = "edge-node-7"
//	role = "consumer"                     # or "producer"
//	type = "policy"                       # or "ott"
//	root_pubkey = "<64 hex>"
//	endpoint_id = "<64 hex>"              # optional when [node] is present
//	capabilities = ["ops.status", "ops.ingest"]
//	attributes = {}
//	issued_at = 1762300812                # Unix seconds; optional (0)
//	expires_at = 1764892812
//	nonce = "<32 hex>"                    # one-time tokens only
//	signature = "<128 hex>"
type Identity struct {
	// Key is the node's secret key; nil for a file with only [[peers]]
	// (as "aster trust sign" writes).
	Key trust.SecretKey
	// Peers are the credentials, in file order.
	Peers []*enroll.Credential
	// Warnings are problems worth telling the user that do not stop the
	// file from being used (e.g. a secret key readable by others).
	Warnings []string
}

// ID returns the node's endpoint id (zero without a key).
func (id *Identity) ID() trust.EndpointID {
	if id.Key == nil {
		return trust.EndpointID{}
	}
	return trust.IDOf(id.Key)
}

// Peer returns the credential named name, or, when name is "", the first
// one with role (any role if role is ""). It returns nil if none matches.
func (id *Identity) Peer(name string, role enroll.Role) *enroll.Credential {
	for _, c := range id.Peers {
		if (name == "" || c.Name == name) && (role == "" || c.Role == role) {
			return c
		}
	}
	return nil
}

// Credential returns the credential a client presents with Key: the one
// named name, or, when name is "", the first consumer credential (or else the
// first credential). It fails if the identity has no [node] secret key (the
// credential is bound to that key) or no matching entry.
func (id *Identity) Credential(name string) (*enroll.Credential, error) {
	if id.Key == nil {
		return nil, errors.New("trust: identity has no [node] secret_key")
	}
	c := id.Peer(name, "")
	if name == "" {
		if cc := id.Peer("", enroll.RoleConsumer); cc != nil {
			c = cc
		}
	}
	if c == nil {
		if name == "" {
			return nil, errors.New("trust: identity has no [[peers]] credential")
		}
		return nil, fmt.Errorf("trust: identity has no peer entry %q", name)
	}
	return c, nil
}

// SetPeer adds c, replacing an entry with the same name.
func (id *Identity) SetPeer(c *enroll.Credential) {
	for i, p := range id.Peers {
		if p.Name == c.Name {
			id.Peers[i] = c
			return
		}
	}
	id.Peers = append(id.Peers, c)
}

type identityTOML struct {
	Node  *nodeTOML  `toml:"node,omitempty"`
	Peers []peerTOML `toml:"peers,omitempty"`
}

type nodeTOML struct {
	SecretKey  *string `toml:"secret_key"`
	EndpointID *string `toml:"endpoint_id,omitempty"`
}

type peerTOML struct {
	Name         *string           `toml:"name"`
	Role         *string           `toml:"role"`
	Type         *string           `toml:"type"`
	RootPubKey   *string           `toml:"root_pubkey"`
	EndpointID   *string           `toml:"endpoint_id,omitempty"`
	Capabilities []string          `toml:"capabilities"`
	Attributes   map[string]string `toml:"attributes,inline"`
	IssuedAt     *int64            `toml:"issued_at"`
	ExpiresAt    *int64            `toml:"expires_at"`
	Nonce        *string           `toml:"nonce,omitempty"`
	Signature    *string           `toml:"signature"`
}

// Parse parses .aster-identity TOML. A missing or malformed field is
// an error naming it ("peers[1] (edge-node-7): missing field signature").
// Credentials are checked for form, not verified.
func Parse(data []byte) (*Identity, error) {
	var f identityTOML
	if err := toml.Unmarshal(data, &f); err != nil {
		// The parser's own rendering (DecodeError.String) quotes the
		// lines around the error, which hold secret keys: only the
		// position and the message, which quote nothing, are told.
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			where := fmt.Sprintf("line %d column %d", row, col)
			if k := keyOnLine(data, row); k != "" {
				where += " (" + k + ")"
			}
			return nil, fmt.Errorf("trust: identity file: %s: %s", where, strings.TrimPrefix(de.Error(), "toml: "))
		}
		return nil, errors.New("trust: identity file is not valid TOML")
	}
	id := &Identity{}
	if f.Node != nil {
		if f.Node.SecretKey == nil {
			return nil, errors.New("trust: identity file: [node]: missing field secret_key")
		}
		key, err := trust.ParseSecretKeyBase64(*f.Node.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("trust: identity file: [node] secret_key: %w", err)
		}
		if f.Node.EndpointID != nil {
			eid, err := trust.ParseEndpointID(*f.Node.EndpointID)
			if err != nil {
				return nil, fmt.Errorf("trust: identity file: [node] endpoint_id: %w", err)
			}
			if eid != trust.IDOf(key) {
				return nil, fmt.Errorf("trust: identity file: [node] endpoint_id %s does not match secret_key (whose id is %s)", eid.Short(), trust.IDOf(key).Short())
			}
		}
		id.Key = key
	}
	for i, p := range f.Peers {
		c, err := p.credential(id)
		if err != nil {
			where := fmt.Sprintf("peers[%d]", i)
			if p.Name != nil {
				where += fmt.Sprintf(" (%s)", *p.Name)
			}
			return nil, fmt.Errorf("trust: identity file: %s: %w", where, err)
		}
		id.Peers = append(id.Peers, c)
	}
	if id.Key == nil && len(id.Peers) == 0 {
		return nil, errors.New("trust: identity file has neither [node] nor [[peers]]")
	}
	return id, nil
}

// keyOnLine returns the bare key that line row (from 1) of data assigns
// ("expires_at" of "expires_at = 'soon'"), or "" if it is not such a line.
// Only the key is returned: the value may be a secret.
func keyOnLine(data []byte, row int) string {
	lines := bytes.Split(data, []byte("\n"))
	if row < 1 || row > len(lines) {
		return ""
	}
	k, _, ok := bytes.Cut(lines[row-1], []byte("="))
	k = bytes.TrimSpace(k)
	if !ok || len(k) == 0 || len(k) > 64 {
		return ""
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ""
		}
	}
	return string(k)
}

func (p *peerTOML) credential(id *Identity) (*enroll.Credential, error) {
	missing := func(f string) error { return fmt.Errorf("missing field %s", f) }
	switch {
	case p.Name == nil:
		return nil, missing("name")
	case p.Role == nil:
		return nil, missing("role")
	case p.Type == nil:
		return nil, missing("type")
	case p.RootPubKey == nil:
		return nil, missing("root_pubkey")
	case p.ExpiresAt == nil:
		return nil, missing("expires_at")
	case p.Signature == nil:
		return nil, missing("signature")
	case p.EndpointID == nil && id.Key == nil:
		return nil, missing("endpoint_id")
	}
	var issued int64 // absent: no lower bound (as the configuration reference's example)
	if p.IssuedAt != nil {
		issued = *p.IssuedAt
	}
	c := &enroll.Credential{
		Name: *p.Name, Role: enroll.Role(*p.Role), Type: enroll.CredentialType(*p.Type),
		Capabilities: p.Capabilities, Attributes: p.Attributes,
		IssuedAt: time.Unix(issued, 0).UTC(), ExpiresAt: time.Unix(*p.ExpiresAt, 0).UTC(),
	}
	if len(c.Attributes) == 0 {
		c.Attributes = nil
	}
	if len(c.Capabilities) == 0 {
		c.Capabilities = nil
	}
	var err error
	if c.RootPubKey, err = trust.ParseEndpointID(*p.RootPubKey); err != nil {
		return nil, fmt.Errorf("root_pubkey: %w", err)
	}
	if p.EndpointID != nil {
		if c.EndpointID, err = trust.ParseEndpointID(*p.EndpointID); err != nil {
			return nil, fmt.Errorf("endpoint_id: %w", err)
		}
	} else {
		c.EndpointID = id.ID()
	}
	if p.Nonce != nil && *p.Nonce != "" {
		if c.Nonce, err = hex.DecodeString(*p.Nonce); err != nil {
			return nil, fmt.Errorf("nonce: not hex: %w", err)
		}
	}
	if c.Signature, err = hex.DecodeString(*p.Signature); err != nil {
		return nil, fmt.Errorf("signature: not hex: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Marshal renders the identity as .aster-identity TOML.
func (id *Identity) Marshal() ([]byte, error) {
	var f identityTOML
	if id.Key != nil {
		sk, eid := trust.EncodeSecretKeyBase64(id.Key), id.ID().String()
		f.Node = &nodeTOML{SecretKey: &sk, EndpointID: &eid}
	}
	for _, c := range id.Peers {
		if err := c.Validate(); err != nil {
			return nil, err
		}
		p := peerTOML{
			Name: ptr(c.Name), Role: ptr(string(c.Role)), Type: ptr(string(c.Type)),
			RootPubKey: ptr(c.RootPubKey.String()), EndpointID: ptr(c.EndpointID.String()),
			Capabilities: c.Capabilities, Attributes: c.Attributes,
			IssuedAt: ptr(c.IssuedAt.Unix()), ExpiresAt: ptr(c.ExpiresAt.Unix()),
			Signature: ptr(hex.EncodeToString(c.Signature)),
		}
		if p.Capabilities == nil {
			p.Capabilities = []string{}
		}
		if p.Attributes == nil {
			p.Attributes = map[string]string{}
		}
		if len(c.Nonce) > 0 {
			p.Nonce = ptr(hex.EncodeToString(c.Nonce))
		}
		f.Peers = append(f.Peers, p)
	}
	var buf bytes.Buffer
	buf.WriteString("# aster identity: a node secret key ([node]) and its enrollment credentials ([[peers]]).\n# Keep this file secret.\n\n")
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("trust: encoding identity: %w", err)
	}
	return buf.Bytes(), nil
}

func ptr[T any](v T) *T { return &v }

// Load reads an .aster-identity file ("~" is expanded). A file that
// holds a secret key and is readable by group or others loads, with a
// warning in Warnings.
func Load(path string) (*Identity, error) {
	p, err := trust.ExpandHome(path)
	if err != nil {
		return nil, err
	}
	b, err := secretfile.Read(p)
	if err != nil {
		return nil, err
	}
	id, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if id.Key != nil {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o077 != 0 {
			id.Warnings = append(id.Warnings, fmt.Sprintf("%s holds a secret key but is readable by others (mode %#o); run: chmod 600 %s", path, st.Mode().Perm(), path))
		}
	}
	return id, nil
}

// Save writes id to path with mode 0600 ("~" is expanded),
// replacing the file atomically.
func Save(path string, id *Identity) error {
	p, err := trust.ExpandHome(path)
	if err != nil {
		return err
	}
	b, err := id.Marshal()
	if err != nil {
		return err
	}
	if dir := filepath.Dir(p); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("trust: %w", err)
		}
	}
	return secretfile.Write(p, b, true)
}

// LoadOrCreate loads the identity at path, or, if the file does not
// exist, creates it with a fresh secret key (so that the endpoint id stays
// the same across restarts). created reports which happened.
func LoadOrCreate(path string) (id *Identity, created bool, err error) {
	p, err := trust.ExpandHome(path)
	if err != nil {
		return nil, false, err
	}
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		id := &Identity{Key: trust.GenerateKey()}
		if err := Save(p, id); err != nil {
			return nil, false, err
		}
		return id, true, nil
	}
	id, err = Load(path)
	if err != nil {
		return nil, false, err
	}
	if id.Key == nil {
		return nil, false, fmt.Errorf("trust: %s has no [node] secret_key", path)
	}
	return id, false, nil
}
