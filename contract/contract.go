// Package contract describes what a server offers: its services, methods,
// call patterns, message types and capability requirements, as data.
//
// A server builds its Contract from its registered services (Build) and
// serves it on the reserved call _aster.contract in canonical CBOR; the
// SHA-256 of those bytes is the contract id. Clients, the CLI and the shell
// fetch it on connect, which is how they call any service with no generated
// code: JSON arguments are converted to the wire types the contract names
// (FromJSON) and responses back (ToJSON).
package contract

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	fxcbor "github.com/fxamacker/cbor/v2"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/trust"
)

// Contract is a server's self-description.
type Contract struct {
	Services []Service `cbor:"services" json:"services"`
	Types    []TypeDef `cbor:"types" json:"types"`
}

// Service describes one registered service version.
type Service struct {
	Name    string   `cbor:"name" json:"name"`
	Version uint32   `cbor:"version" json:"version"`
	Scope   string   `cbor:"scope" json:"scope"` // "shared" or "session"
	Methods []Method `cbor:"methods" json:"methods"`
}

// Method describes one method.
type Method struct {
	Name       string      `cbor:"name" json:"name"`
	Pattern    string      `cbor:"pattern" json:"pattern"` // unary, server_stream, client_stream, bidi_stream
	Request    string      `cbor:"request" json:"request"` // wire type name
	Response   string      `cbor:"response" json:"response"`
	Idempotent bool        `cbor:"idempotent,omitempty" json:"idempotent,omitempty"`
	Requires   *trust.Expr `cbor:"requires,omitempty" json:"requires,omitempty"`
}

// TypeDef describes a message type: a struct encoded as a map from field
// names to values.
type TypeDef struct {
	Name   string  `cbor:"name" json:"name"`
	Fields []Field `cbor:"fields" json:"fields"`
}

// Field is one field of a TypeDef.
type Field struct {
	Name string  `cbor:"name" json:"name"` // the key on the wire
	Type TypeRef `cbor:"type" json:"type"`
}

// Kinds of TypeRef.
const (
	KindString = "string"
	KindBool   = "bool"
	KindInt    = "int"   // signed integer
	KindUint   = "uint"  // unsigned integer
	KindFloat  = "float" // IEEE 754 double (or narrower)
	KindBytes  = "bytes"
	KindTime   = "time" // RFC 3339 string
	KindList   = "list" // Elem
	KindMap    = "map"  // Key, Elem
	KindRef    = "ref"  // Ref names a TypeDef
	KindAny    = "any"  // any value
)

// TypeRef is the type of a field or list/map element.
type TypeRef struct {
	Kind     string   `cbor:"kind" json:"kind"`
	Elem     *TypeRef `cbor:"elem,omitempty" json:"elem,omitempty"`
	Key      *TypeRef `cbor:"key,omitempty" json:"key,omitempty"`
	Ref      string   `cbor:"ref,omitempty" json:"ref,omitempty"`
	Optional bool     `cbor:"optional,omitempty" json:"optional,omitempty"` // may be null
}

// String renders the type as "list<map<string,float>>", "mission/Heartbeat", ...
// A missing element or key type (in a TypeRef not checked by Decode)
// renders as "?".
func (t TypeRef) String() string {
	var s string
	switch t.Kind {
	case KindList:
		s = "list<" + refString(t.Elem) + ">"
	case KindMap:
		s = "map<" + refString(t.Key) + "," + refString(t.Elem) + ">"
	case KindRef:
		s = t.Ref
	default:
		s = t.Kind
	}
	if t.Optional {
		s += "?"
	}
	return s
}

func refString(t *TypeRef) string {
	if t == nil {
		return "?"
	}
	return t.String()
}

// Build describes services. It fails if two different Go types claim the
// same wire type name or a message type cannot be described.
func Build(services []*handler.Service) (*Contract, error) {
	b := &builder{types: map[string]reflect.Type{}, defs: map[string]TypeDef{}}
	c := &Contract{}
	for _, s := range services {
		cs := Service{Name: s.Name(), Version: s.Version(), Scope: s.Scope().String()}
		for _, m := range s.Methods() {
			req, err := b.named(m.Info.Request)
			if err != nil {
				return nil, fmt.Errorf("contract: %s request: %w", m.Info.FullName(), err)
			}
			resp, err := b.named(m.Info.Response)
			if err != nil {
				return nil, fmt.Errorf("contract: %s response: %w", m.Info.FullName(), err)
			}
			cm := Method{Name: m.Info.Name, Pattern: m.Info.Pattern.String(), Request: req, Response: resp, Idempotent: m.Info.Idempotent}
			if m.Info.Requires != nil {
				e := m.Info.Requires.Expr()
				cm.Requires = &e
			}
			cs.Methods = append(cs.Methods, cm)
		}
		slices.SortFunc(cs.Methods, func(a, b Method) int { return strings.Compare(a.Name, b.Name) })
		c.Services = append(c.Services, cs)
	}
	slices.SortFunc(c.Services, func(a, b Service) int {
		if n := strings.Compare(a.Name, b.Name); n != 0 {
			return n
		}
		return int(a.Version) - int(b.Version)
	})
	for _, d := range b.defs {
		c.Types = append(c.Types, d)
	}
	slices.SortFunc(c.Types, func(a, b TypeDef) int { return strings.Compare(a.Name, b.Name) })
	return c, nil
}

type builder struct {
	types map[string]reflect.Type
	defs  map[string]TypeDef
}

var timeType = reflect.TypeFor[time.Time]()

// named registers a struct message type and returns its wire name.
func (b *builder) named(t reflect.Type) (string, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == timeType {
		return "", fmt.Errorf("message type %s is not a struct", t)
	}
	name := handler.TypeName(t)
	if prev, ok := b.types[name]; ok {
		if prev != t {
			return "", fmt.Errorf("wire type name %q used by both %s and %s", name, prev, t)
		}
		return name, nil
	}
	b.types[name] = t
	def := TypeDef{Name: name, Fields: []Field{}}
	if err := b.fields(t, &def); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	b.defs[name] = def
	return name, nil
}

func (b *builder) fields(t reflect.Type, def *TypeDef) error {
	for i := range t.NumField() {
		f := t.Field(i)
		name, skip := fieldName(f)
		if skip {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if err := b.fields(ft, def); err != nil {
					return err
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		ref, err := b.ref(f.Type)
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		def.Fields = append(def.Fields, Field{Name: name, Type: ref})
	}
	slices.SortFunc(def.Fields, func(a, b Field) int { return strings.Compare(a.Name, b.Name) })
	return nil
}

// fieldName returns the wire key of a struct field ("" for untagged; the
// caller uses the Go name) and whether the field is skipped.
func fieldName(f reflect.StructField) (string, bool) {
	if !f.IsExported() && !f.Anonymous {
		return "", true
	}
	tag, ok := f.Tag.Lookup("cbor")
	if !ok {
		tag = f.Tag.Get("json")
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return "", true
	}
	if !f.IsExported() && name == "" {
		return "", true
	}
	return name, false
}

func (b *builder) ref(t reflect.Type) (TypeRef, error) {
	if t.Kind() == reflect.Pointer {
		r, err := b.ref(t.Elem())
		r.Optional = true
		return r, err
	}
	if t == timeType {
		return TypeRef{Kind: KindTime}, nil
	}
	switch t.Kind() {
	case reflect.String:
		return TypeRef{Kind: KindString}, nil
	case reflect.Bool:
		return TypeRef{Kind: KindBool}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return TypeRef{Kind: KindInt}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return TypeRef{Kind: KindUint}, nil
	case reflect.Float32, reflect.Float64:
		return TypeRef{Kind: KindFloat}, nil
	case reflect.Interface:
		return TypeRef{Kind: KindAny}, nil
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return TypeRef{Kind: KindBytes}, nil
		}
		e, err := b.ref(t.Elem())
		if err != nil {
			return TypeRef{}, err
		}
		return TypeRef{Kind: KindList, Elem: &e}, nil
	case reflect.Map:
		k, err := b.ref(t.Key())
		if err != nil {
			return TypeRef{}, err
		}
		e, err := b.ref(t.Elem())
		if err != nil {
			return TypeRef{}, err
		}
		return TypeRef{Kind: KindMap, Key: &k, Elem: &e}, nil
	case reflect.Struct:
		n, err := b.named(t)
		if err != nil {
			return TypeRef{}, err
		}
		return TypeRef{Kind: KindRef, Ref: n}, nil
	}
	return TypeRef{}, fmt.Errorf("unsupported type %s", t)
}

// Encode returns the canonical CBOR encoding of c.
func (c *Contract) Encode() ([]byte, error) { return cbor.Marshal(c) }

// ID returns the contract id of canonical bytes: lowercase hex SHA-256.
func ID(canonical []byte) string {
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:])
}

// MaxEncodedSize is the largest encoded contract Decode accepts: 1 MiB.
// A contract comes from a server the client may not trust, and decoding
// into Go structs takes up to about 80 times the encoded size in memory,
// so the limit bounds that to about 80 MiB. Real contracts are a few
// kilobytes (Mission Control's is about 2 KiB).
const MaxEncodedSize = 1 << 20

// maxItems bounds the length of every list and map in a decoded contract
// (services, methods, types, fields, capability lists).
const maxItems = 1 << 16

// decMode decodes contracts: as codec/cbor does (duplicate map keys
// rejected, unknown keys ignored), with tighter list bounds.
var decMode = func() fxcbor.DecMode {
	dm, err := fxcbor.DecOptions{
		MaxNestedLevels:  64,
		MaxArrayElements: maxItems,
		MaxMapPairs:      maxItems,
		DupMapKey:        fxcbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// Decode parses a CBOR-encoded contract, which may come from an untrusted
// server, and checks it as PROTOCOL.md §13.1 describes: every method has a
// known pattern and defined message types, every type reference is
// well-formed (a known kind; list with elem; map with key and elem; ref to
// a defined type), capability requirements are valid expressions, names
// are well-formed (service and method names as handler.ValidName; type and
// field names without control or format characters, see MaxNameLen), and no
// name (service version, method, type, field) appears twice. Contracts
// larger than MaxEncodedSize are refused before decoding.
func Decode(b []byte) (*Contract, error) {
	if len(b) > MaxEncodedSize {
		return nil, fmt.Errorf("contract: %d bytes, more than the %d allowed", len(b), MaxEncodedSize)
	}
	c := new(Contract)
	if err := decMode.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	slices.SortFunc(c.Types, func(a, b TypeDef) int { return strings.Compare(a.Name, b.Name) })
	for i := range c.Types {
		d := &c.Types[i]
		if i > 0 && c.Types[i-1].Name == d.Name {
			return nil, fmt.Errorf("contract: type %q defined twice", d.Name)
		}
		if err := checkText(d.Name); err != nil {
			return nil, fmt.Errorf("contract: type name %q: %w", d.Name, err)
		}
		seen := make(map[string]bool, len(d.Fields))
		for _, f := range d.Fields {
			if err := checkText(f.Name); err != nil {
				return nil, fmt.Errorf("contract: type %q: field name %q: %w", d.Name, f.Name, err)
			}
			if seen[f.Name] {
				return nil, fmt.Errorf("contract: type %q: field %q defined twice", d.Name, f.Name)
			}
			seen[f.Name] = true
			if err := c.checkRef(&f.Type); err != nil {
				return nil, fmt.Errorf("contract: type %q field %q: %w", d.Name, f.Name, err)
			}
		}
	}
	type sv struct {
		name    string
		version uint32
	}
	services := make(map[sv]bool, len(c.Services))
	for _, s := range c.Services {
		if services[sv{s.Name, s.Version}] {
			return nil, fmt.Errorf("contract: service %s version %d described twice", s.Name, s.Version)
		}
		services[sv{s.Name, s.Version}] = true
		if err := handler.ValidName(s.Name); err != nil {
			return nil, fmt.Errorf("contract: service name: %w", err)
		}
		if s.Scope != handler.ScopeShared.String() && s.Scope != handler.ScopeSession.String() {
			return nil, fmt.Errorf("contract: service %s: unknown scope %q", s.Name, s.Scope)
		}
		methods := make(map[string]bool, len(s.Methods))
		for _, m := range s.Methods {
			if methods[m.Name] {
				return nil, fmt.Errorf("contract: %s.%s described twice", s.Name, m.Name)
			}
			methods[m.Name] = true
			if err := handler.ValidName(m.Name); err != nil {
				return nil, fmt.Errorf("contract: %s: method name: %w", s.Name, err)
			}
			if _, ok := handler.ParsePattern(m.Pattern); !ok {
				return nil, fmt.Errorf("contract: %s.%s: unknown pattern %q", s.Name, m.Name, m.Pattern)
			}
			for _, tn := range []string{m.Request, m.Response} {
				if c.Type(tn) == nil {
					return nil, fmt.Errorf("contract: %s.%s: type %q not defined", s.Name, m.Name, tn)
				}
			}
			if m.Requires != nil {
				if _, err := m.Requires.Requirement(); err != nil {
					return nil, fmt.Errorf("contract: %s.%s requires: %w", s.Name, m.Name, err)
				}
			}
		}
	}
	return c, nil
}

// MaxNameLen is the longest type or field name a contract may carry, in
// bytes.
const MaxNameLen = 256

// checkText checks a type or field name (PROTOCOL.md §13.1): 1 to
// MaxNameLen bytes of UTF-8 without control or format characters, so that
// a server's contract cannot put terminal escapes or bidirectional
// overrides on an operator's screen through the CLI.
func checkText(n string) error {
	if n == "" || len(n) > MaxNameLen {
		return fmt.Errorf("must be 1-%d bytes", MaxNameLen)
	}
	if !utf8.ValidString(n) {
		return errors.New("not valid UTF-8")
	}
	for i, r := range n {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("control or format character %U at %d", r, i)
		}
	}
	return nil
}

// checkRef checks that t is well-formed: a known kind with exactly the
// parts that kind has, and a ref to a defined type.
func (c *Contract) checkRef(t *TypeRef) error {
	switch t.Kind {
	case KindString, KindBool, KindInt, KindUint, KindFloat, KindBytes, KindTime, KindAny:
		if t.Elem != nil || t.Key != nil || t.Ref != "" {
			return fmt.Errorf("kind %q takes no elem, key or ref", t.Kind)
		}
		return nil
	case KindList:
		if t.Elem == nil || t.Key != nil || t.Ref != "" {
			return fmt.Errorf("kind list takes an elem and no key or ref")
		}
		return c.checkRef(t.Elem)
	case KindMap:
		if t.Elem == nil || t.Key == nil || t.Ref != "" {
			return fmt.Errorf("kind map takes a key and an elem and no ref")
		}
		if err := c.checkRef(t.Key); err != nil {
			return err
		}
		return c.checkRef(t.Elem)
	case KindRef:
		if t.Elem != nil || t.Key != nil {
			return fmt.Errorf("kind ref takes no elem or key")
		}
		if c.Type(t.Ref) == nil {
			return fmt.Errorf("type %q not defined", t.Ref)
		}
		return nil
	}
	return fmt.Errorf("unknown kind %q", t.Kind)
}

// Type returns the definition of a type name, or nil.
func (c *Contract) Type(name string) *TypeDef {
	i, ok := slices.BinarySearchFunc(c.Types, name, func(d TypeDef, n string) int { return strings.Compare(d.Name, n) })
	if !ok {
		return nil
	}
	return &c.Types[i]
}

// Service returns the named service at version (0: the highest), or nil.
func (c *Contract) Service(name string, version uint32) *Service {
	var best *Service
	for i := range c.Services {
		s := &c.Services[i]
		if s.Name != name {
			continue
		}
		if version != 0 && s.Version == version {
			return s
		}
		if version == 0 && (best == nil || s.Version > best.Version) {
			best = s
		}
	}
	return best
}

// Method returns the named method, or nil.
func (s *Service) Method(name string) *Method {
	for i := range s.Methods {
		if s.Methods[i].Name == name {
			return &s.Methods[i]
		}
	}
	return nil
}
