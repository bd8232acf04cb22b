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
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

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
func (t TypeRef) String() string {
	var s string
	switch t.Kind {
	case KindList:
		s = "list<" + t.Elem.String() + ">"
	case KindMap:
		s = "map<" + t.Key.String() + "," + t.Elem.String() + ">"
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

// Decode parses a CBOR-encoded contract and checks that every method's
// message types are defined.
func Decode(b []byte) (*Contract, error) {
	c := new(Contract)
	if err := cbor.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("contract: %w", err)
	}
	slices.SortFunc(c.Types, func(a, b TypeDef) int { return strings.Compare(a.Name, b.Name) })
	for _, s := range c.Services {
		for _, m := range s.Methods {
			if _, ok := handler.ParsePattern(m.Pattern); !ok {
				return nil, fmt.Errorf("contract: %s.%s: unknown pattern %q", s.Name, m.Name, m.Pattern)
			}
			for _, tn := range []string{m.Request, m.Response} {
				if c.Type(tn) == nil {
					return nil, fmt.Errorf("contract: %s.%s: type %q not defined", s.Name, m.Name, tn)
				}
			}
		}
	}
	return c, nil
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
