package contract

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Manifest is a contract saved to a file (conventionally
// .aster/manifest.json, committed with the code): the contract in its JSON
// form and its id. A server can refuse to start when its live contract
// differs from the committed one (aster.WithContractManifest), which catches
// wire-breaking changes before they ship; "aster contract verify" checks a
// running server against it; "aster contract gen-client" generates a typed
// client from it without a running server.
type Manifest struct {
	// ContractID is the id of Contract: the SHA-256 of its canonical CBOR
	// encoding, lowercase hex (see ID).
	ContractID string `json:"contract_id"`
	// Contract is the contract itself.
	Contract *Contract `json:"contract"`
}

// NewManifest returns the manifest of c, computing its id.
func NewManifest(c *Contract) (*Manifest, error) {
	b, err := c.Encode()
	if err != nil {
		return nil, fmt.Errorf("contract: encoding: %w", err)
	}
	return &Manifest{ContractID: ID(b), Contract: c}, nil
}

// MarshalIndent returns the manifest as indented JSON with a final newline,
// the form WriteManifest writes.
func (m *Manifest) MarshalIndent() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("contract: manifest: %w", err)
	}
	return b.Bytes(), nil
}

// WriteManifest writes the manifest of c to path (creating its directory)
// and returns it.
func WriteManifest(path string, c *Contract) (*Manifest, error) {
	m, err := NewManifest(c)
	if err != nil {
		return nil, err
	}
	b, err := m.MarshalIndent()
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("contract: %w", err)
		}
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	return m, nil
}

// maxManifestSize bounds a manifest file read by ReadManifest.
const maxManifestSize = 64 << 20

// ParseManifest parses a manifest. It checks that the recorded id is the
// id of the contract (a hand-edited manifest fails) and that every method's
// types are defined.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("contract: manifest: %w", err)
	}
	if m.Contract == nil {
		return nil, fmt.Errorf("contract: manifest has no contract")
	}
	enc, err := m.Contract.Encode()
	if err != nil {
		return nil, fmt.Errorf("contract: manifest: %w", err)
	}
	// Decode the canonical bytes back: it sorts and checks the contract the
	// way a fetched one is.
	c, err := Decode(enc)
	if err != nil {
		return nil, fmt.Errorf("contract: manifest: %w", err)
	}
	if id := ID(enc); id != m.ContractID {
		return nil, fmt.Errorf("contract: manifest records id %s but its contract has id %s (edited by hand?)", m.ContractID, id)
	}
	m.Contract = c
	return &m, nil
}

// ReadManifest reads and parses the manifest file at path.
func ReadManifest(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxManifestSize {
		return nil, fmt.Errorf("contract: manifest %s is larger than %d bytes", path, maxManifestSize)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	m, err := ParseManifest(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Diff lists the differences between an old and a new contract, one line
// each: "+" added, "-" removed, "~" changed. It is empty when they have the
// same services, methods and types.
func Diff(old, new *Contract) []string {
	var out []string
	svcKey := func(s *Service) string { return fmt.Sprintf("%s v%d", s.Name, s.Version) }
	oldSvcs, newSvcs := map[string]*Service{}, map[string]*Service{}
	for i := range old.Services {
		oldSvcs[svcKey(&old.Services[i])] = &old.Services[i]
	}
	for i := range new.Services {
		newSvcs[svcKey(&new.Services[i])] = &new.Services[i]
	}
	for _, k := range sortedKeys(oldSvcs, newSvcs) {
		o, n := oldSvcs[k], newSvcs[k]
		switch {
		case n == nil:
			out = append(out, "- service "+k)
			continue
		case o == nil:
			out = append(out, "+ service "+k)
			continue
		}
		if o.Scope != n.Scope {
			out = append(out, fmt.Sprintf("~ service %s: scope %s → %s", k, o.Scope, n.Scope))
		}
		om, nm := map[string]*Method{}, map[string]*Method{}
		for i := range o.Methods {
			om[o.Methods[i].Name] = &o.Methods[i]
		}
		for i := range n.Methods {
			nm[n.Methods[i].Name] = &n.Methods[i]
		}
		for _, mk := range sortedKeys(om, nm) {
			a, b := om[mk], nm[mk]
			name := o.Name + "." + mk
			switch {
			case b == nil:
				out = append(out, "- method "+name)
			case a == nil:
				out = append(out, "+ method "+name)
			default:
				if d := methodDiff(a, b); d != "" {
					out = append(out, "~ method "+name+": "+d)
				}
			}
		}
	}
	ot, nt := map[string]*TypeDef{}, map[string]*TypeDef{}
	for i := range old.Types {
		ot[old.Types[i].Name] = &old.Types[i]
	}
	for i := range new.Types {
		nt[new.Types[i].Name] = &new.Types[i]
	}
	for _, k := range sortedKeys(ot, nt) {
		a, b := ot[k], nt[k]
		switch {
		case b == nil:
			out = append(out, "- type "+k)
		case a == nil:
			out = append(out, "+ type "+k)
		default:
			out = append(out, typeDiff(a, b)...)
		}
	}
	return out
}

func methodDiff(a, b *Method) string {
	var d []string
	if a.Pattern != b.Pattern {
		d = append(d, "pattern "+a.Pattern+" → "+b.Pattern)
	}
	if a.Request != b.Request {
		d = append(d, "request "+a.Request+" → "+b.Request)
	}
	if a.Response != b.Response {
		d = append(d, "response "+a.Response+" → "+b.Response)
	}
	if a.Idempotent != b.Idempotent {
		d = append(d, fmt.Sprintf("idempotent %v → %v", a.Idempotent, b.Idempotent))
	}
	ar, br := exprJSON(a), exprJSON(b)
	if ar != br {
		d = append(d, "requires "+ar+" → "+br)
	}
	return strings.Join(d, ", ")
}

func exprJSON(m *Method) string {
	if m.Requires == nil {
		return "nothing"
	}
	b, _ := json.Marshal(m.Requires)
	return string(b)
}

func typeDiff(a, b *TypeDef) []string {
	var out []string
	af, bf := map[string]*Field{}, map[string]*Field{}
	for i := range a.Fields {
		af[a.Fields[i].Name] = &a.Fields[i]
	}
	for i := range b.Fields {
		bf[b.Fields[i].Name] = &b.Fields[i]
	}
	for _, k := range sortedKeys(af, bf) {
		x, y := af[k], bf[k]
		switch {
		case y == nil:
			out = append(out, fmt.Sprintf("~ type %s: - field %s %s", a.Name, k, x.Type.String()))
		case x == nil:
			out = append(out, fmt.Sprintf("~ type %s: + field %s %s", a.Name, k, y.Type.String()))
		case x.Type.String() != y.Type.String():
			out = append(out, fmt.Sprintf("~ type %s: field %s %s → %s", a.Name, k, x.Type.String(), y.Type.String()))
		}
	}
	return out
}

func sortedKeys[V any](a, b map[string]V) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
