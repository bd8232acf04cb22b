package mcpgw

import (
	"fmt"
	"strings"

	"github.com/google/jsonschema-go/jsonschema"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
)

// JSON Schemas from the contract.
//
// A tool's input schema is generated from its method's request type, with
// the same mapping contract.FromJSON applies (see the table in
// contract/json.go): string, boolean, integer (uint: minimum 0), number,
// bytes as a base64 string, time as a date-time string, lists as arrays,
// maps as objects whose values share one schema, message types as objects
// with their fields as properties. Message types are inlined; a type that
// contains itself is defined once under $defs and referred to with $ref.
//
// Input schemas are as strict as the converter: unknown fields are refused
// (additionalProperties false), null only where the contract marks a type
// optional. No field is required: the contract has no notion of a required
// field (a missing field reaches the server as its zero value), and the
// contract carries no enums or documentation, so schemas have none either.
//
// Output schemas describe what contract.ToJSON produces and are lenient
// where it is: fields the contract does not describe are kept, lists, maps,
// bytes and optional values may be null, and floats may be the strings
// "NaN", "Infinity" and "-Infinity".

// maxSchemaNodes bounds the size of one generated schema, so that a hostile
// contract (types that each use the next several times) cannot make the
// gateway build an exponentially large schema.
const maxSchemaNodes = 20000

// errSchemaTooLarge is returned for a schema over maxSchemaNodes.
var errSchemaTooLarge = fmt.Errorf("schema larger than %d nodes", maxSchemaNodes)

type schemaGen struct {
	ct     *contract.Contract
	output bool
	defs   map[string]*jsonschema.Schema // generated $defs, by type name
	need   []string                      // types referred to by $ref, to define
	stack  map[string]bool               // types being inlined
	nodes  int
}

func newSchemaGen(ct *contract.Contract, output bool) *schemaGen {
	return &schemaGen{ct: ct, output: output, defs: map[string]*jsonschema.Schema{}, stack: map[string]bool{}}
}

// defRef is the $ref of a type defined under $defs: a JSON pointer, with
// "~" and "/" escaped (wire type names contain "/").
func defRef(name string) string {
	return "#/$defs/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(name)
}

// message returns the schema of the message type name as an object.
func (g *schemaGen) message(name string) (*jsonschema.Schema, error) {
	def := g.ct.Type(name)
	if def == nil {
		return nil, fmt.Errorf("type %q not defined", name)
	}
	g.stack[name] = true
	defer delete(g.stack, name)
	s := &jsonschema.Schema{Type: "object", Title: name, Properties: map[string]*jsonschema.Schema{}}
	for _, f := range def.Fields {
		fs, err := g.ref(f.Type)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", name, f.Name, err)
		}
		s.Properties[f.Name] = fs
		s.PropertyOrder = append(s.PropertyOrder, f.Name)
	}
	if !g.output {
		s.AdditionalProperties = &jsonschema.Schema{Not: &jsonschema.Schema{}}
	}
	return s, nil
}

// ref returns the schema of a field or element type.
func (g *schemaGen) ref(t contract.TypeRef) (*jsonschema.Schema, error) {
	if g.nodes++; g.nodes > maxSchemaNodes {
		return nil, errSchemaTooLarge
	}
	nullable := t.Optional
	if g.output {
		switch t.Kind {
		case contract.KindList, contract.KindMap, contract.KindBytes:
			nullable = true // nil slices and maps come back as null
		}
	}
	var s *jsonschema.Schema
	switch t.Kind {
	case contract.KindString:
		s = &jsonschema.Schema{Type: "string"}
	case contract.KindBool:
		s = &jsonschema.Schema{Type: "boolean"}
	case contract.KindInt:
		s = &jsonschema.Schema{Type: "integer"}
	case contract.KindUint:
		zero := 0.0
		s = &jsonschema.Schema{Type: "integer", Minimum: &zero}
	case contract.KindFloat:
		if g.output {
			s = &jsonschema.Schema{AnyOf: []*jsonschema.Schema{{Type: "number"}, {Enum: []any{"NaN", "Infinity", "-Infinity"}}}}
		} else {
			s = &jsonschema.Schema{Type: "number"}
		}
	case contract.KindBytes:
		s = &jsonschema.Schema{Type: "string", ContentEncoding: "base64"}
	case contract.KindTime:
		s = &jsonschema.Schema{Type: "string", Format: "date-time"}
	case contract.KindAny:
		return &jsonschema.Schema{}, nil // any JSON value, null included
	case contract.KindList:
		if t.Elem == nil {
			return nil, fmt.Errorf("list without an element type")
		}
		e, err := g.ref(*t.Elem)
		if err != nil {
			return nil, err
		}
		s = &jsonschema.Schema{Type: "array", Items: e}
	case contract.KindMap:
		if t.Key == nil || t.Elem == nil {
			return nil, fmt.Errorf("map without a key or element type")
		}
		e, err := g.ref(*t.Elem)
		if err != nil {
			return nil, err
		}
		s = &jsonschema.Schema{Type: "object", AdditionalProperties: e}
		switch t.Key.Kind {
		case contract.KindString:
		case contract.KindInt:
			s.PropertyNames = &jsonschema.Schema{Pattern: "^-?[0-9]+$"}
		case contract.KindUint:
			s.PropertyNames = &jsonschema.Schema{Pattern: "^[0-9]+$"}
		case contract.KindBool:
			s.PropertyNames = &jsonschema.Schema{Enum: []any{"true", "false"}}
		case contract.KindTime:
			s.PropertyNames = &jsonschema.Schema{Format: "date-time"}
		case contract.KindFloat:
		default:
			return nil, fmt.Errorf("map keys of kind %s are not supported", t.Key.Kind)
		}
	case contract.KindRef:
		if g.stack[t.Ref] {
			// A type that contains itself: define it once, refer to it.
			if _, ok := g.defs[t.Ref]; !ok {
				g.defs[t.Ref] = nil // placeholder until defined
				g.need = append(g.need, t.Ref)
			}
			s = &jsonschema.Schema{Ref: defRef(t.Ref)}
			if nullable {
				return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{s, {Type: "null"}}}, nil
			}
			return s, nil
		}
		var err error
		if s, err = g.message(t.Ref); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown kind %q", t.Kind)
	}
	if nullable {
		if s.Type != "" {
			s.Types, s.Type = []string{s.Type, "null"}, ""
		} else {
			s = &jsonschema.Schema{AnyOf: []*jsonschema.Schema{s, {Type: "null"}}}
		}
	}
	return s, nil
}

// root finishes a tool's schema: it defines the types referred to by $ref
// under $defs of root.
func (g *schemaGen) root(root *jsonschema.Schema) (*jsonschema.Schema, error) {
	for len(g.need) > 0 {
		name := g.need[0]
		g.need = g.need[1:]
		g.stack = map[string]bool{}
		s, err := g.message(name)
		if err != nil {
			return nil, err
		}
		g.defs[name] = s
	}
	if len(g.defs) > 0 {
		root.Defs = make(map[string]*jsonschema.Schema, len(g.defs))
		for name, s := range g.defs {
			root.Defs[name] = s
		}
	}
	return root, nil
}

// InputSchema returns the JSON Schema of the arguments of the tool for
// method m: its request type for unary and server-streaming methods; an
// object {"requests": [request, ...]} for client-streaming and bidi methods,
// with at most maxRequests requests (0: no limit in the schema).
func InputSchema(ct *contract.Contract, m *contract.Method, maxRequests int) (*jsonschema.Schema, error) {
	p, ok := handler.ParsePattern(m.Pattern)
	if !ok {
		return nil, fmt.Errorf("unknown pattern %q", m.Pattern)
	}
	g := newSchemaGen(ct, false)
	req, err := g.message(m.Request)
	if err != nil {
		return nil, err
	}
	if !p.ClientStreams() {
		return g.root(req)
	}
	list := &jsonschema.Schema{Type: "array", Items: req, Description: "the requests, sent in order on one stream"}
	if maxRequests > 0 {
		list.MaxItems = &maxRequests
	}
	return g.root(&jsonschema.Schema{
		Type:                 "object",
		Properties:           map[string]*jsonschema.Schema{"requests": list},
		Required:             []string{"requests"},
		AdditionalProperties: &jsonschema.Schema{Not: &jsonschema.Schema{}},
	})
}

// OutputSchema returns the JSON Schema of the structured result of the tool
// for method m: its response type for unary and client-streaming methods;
// {"items": [response, ...], "truncated": bool} for server-streaming and
// bidi methods.
func OutputSchema(ct *contract.Contract, m *contract.Method) (*jsonschema.Schema, error) {
	p, ok := handler.ParsePattern(m.Pattern)
	if !ok {
		return nil, fmt.Errorf("unknown pattern %q", m.Pattern)
	}
	g := newSchemaGen(ct, true)
	resp, err := g.message(m.Response)
	if err != nil {
		return nil, err
	}
	if !p.ServerStreams() {
		return g.root(resp)
	}
	return g.root(&jsonschema.Schema{
		Type: "object",
		Properties: map[string]*jsonschema.Schema{
			"items":     {Type: "array", Items: resp, Description: "the responses, in the order they arrived"},
			"truncated": {Type: "boolean", Description: "true if the stream was still open when the gateway stopped collecting (item, size or time limit)"},
		},
		PropertyOrder: []string{"items", "truncated"},
		Required:      []string{"items", "truncated"},
	})
}
