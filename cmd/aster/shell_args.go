package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aster-go/aster/contract"
)

// shellWord is one word of a shell line with its byte offset.
type shellWord struct {
	text  string // the word with quotes and escapes removed
	start int    // offset of its first byte in the line
}

// errUnterminated is a line whose last quote is not closed.
var errUnterminated = errors.New("unterminated quote")

// splitWords splits a shell line into words the way a POSIX shell does for
// quoting: white space separates words, '...' quotes literally, "..." quotes
// with \" and \\ escapes, and a backslash outside quotes escapes the next
// character. An unterminated quote returns the words so far (the last one
// unfinished) with errUnterminated, which completion uses.
func splitWords(line string) ([]shellWord, error) {
	var words []shellWord
	var b strings.Builder
	in := false // inside a word
	start := 0
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		if quote != 0 {
			switch {
			case c == quote:
				quote = 0
			case quote == '"' && c == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\'):
				i++
				b.WriteByte(line[i])
			default:
				b.WriteByte(c)
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			if in {
				words = append(words, shellWord{b.String(), start})
				b.Reset()
				in = false
			}
			continue
		}
		if !in {
			in, start = true, i
		}
		switch c {
		case '\'', '"':
			quote = c
		case '\\':
			if i+1 < len(line) {
				i++
				b.WriteByte(line[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	if in || quote != 0 {
		if !in {
			start = len(line)
		}
		words = append(words, shellWord{b.String(), start})
	}
	if quote != 0 {
		return words, errUnterminated
	}
	return words, nil
}

// argError is a request argument that cannot be used; the shell prints it
// as INVALID_ARGUMENT.
type argError struct{ msg string }

func (e *argError) Error() string { return e.msg }

func argErrorf(format string, args ...any) error {
	return &argError{fmt.Sprintf(format, args...)}
}

// parseKV turns key=value arguments into a JSON-like request value for the
// contract type typeName, typing each value from the field's type:
//
//	string, bytes, time   the text as is (agent_id=edge-7)
//	bool                  true or false
//	int, uint, float      a JSON number (uptime=30, value=0.5)
//	list, map, object     JSON (capabilities='["gpu"]'); a list of strings
//	                      also takes comma-separated words (capabilities=gpu,arm64)
//	any                   JSON, else the text as a string
//	optional types        null for absent
//
// A dotted key sets a field of a nested object or an entry of a map
// (tags.env=prod). The result holds json.Number for numbers, as
// contract.FromJSONValue wants; that function then checks the whole value.
func parseKV(c *contract.Contract, typeName string, args []string) (map[string]any, error) {
	out := map[string]any{}
	for _, a := range args {
		key, val, ok := strings.Cut(a, "=")
		if !ok || key == "" {
			return nil, argErrorf("argument %q: want key=value, or one JSON object", a)
		}
		if err := setKV(c, typeName, out, key, val); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// setKV sets the dotted key in the object m of type typeName.
func setKV(c *contract.Contract, typeName string, m map[string]any, key, val string) error {
	parts := strings.Split(key, ".")
	t := contract.TypeRef{Kind: contract.KindRef, Ref: typeName}
	for i, p := range parts {
		if p == "" {
			return argErrorf("argument %s: empty name in key", key)
		}
		var ft contract.TypeRef
		switch t.Kind {
		case contract.KindRef:
			def := c.Type(t.Ref)
			if def == nil {
				return argErrorf("argument %s: type %s is not in the contract", key, t.Ref)
			}
			f := findField(def, p)
			if f == nil {
				return argErrorf("unknown field %q (%s has: %s)", strings.Join(parts[:i+1], "."), def.Name, fieldList(def))
			}
			ft = f.Type
		case contract.KindMap:
			if t.Key == nil || t.Elem == nil || t.Key.Kind != contract.KindString {
				return argErrorf("argument %s: %s has no string keys; give the map as JSON", key, strings.Join(parts[:i], "."))
			}
			ft = *t.Elem
		default:
			return argErrorf("argument %s: %s is a %s, not an object", key, strings.Join(parts[:i], "."), t.String())
		}
		if i == len(parts)-1 {
			if _, dup := m[p]; dup {
				return argErrorf("field %q given twice", key)
			}
			v, err := kvValue(ft, val)
			if err != nil {
				return argErrorf("field %q: %v", key, err)
			}
			m[p] = v
			return nil
		}
		next, ok := m[p].(map[string]any)
		if !ok {
			if _, set := m[p]; set {
				return argErrorf("field %q given twice", strings.Join(parts[:i+1], "."))
			}
			next = map[string]any{}
			m[p] = next
		}
		m, t = next, ft
	}
	return nil
}

// kvValue types the text of one key=value argument.
func kvValue(t contract.TypeRef, val string) (any, error) {
	if val == "null" && (t.Optional || t.Kind == contract.KindAny) {
		return nil, nil
	}
	switch t.Kind {
	case contract.KindString, contract.KindBytes, contract.KindTime:
		return val, nil
	case contract.KindBool:
		switch val {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("expected true or false, got %q", val)
	case contract.KindInt, contract.KindUint, contract.KindFloat:
		v, err := decodeJSONText(val)
		if _, num := v.(json.Number); err != nil || !num {
			if t.Kind == contract.KindFloat && (val == "NaN" || val == "Infinity" || val == "-Infinity") {
				return val, nil
			}
			return nil, fmt.Errorf("expected a number (%s), got %q", t.String(), val)
		}
		return v, nil
	case contract.KindAny:
		if v, err := decodeJSONText(val); err == nil {
			return v, nil
		}
		return val, nil
	case contract.KindList:
		v, err := decodeJSONText(val)
		if err == nil {
			return v, nil
		}
		if t.Elem != nil && t.Elem.Kind == contract.KindString {
			var l []any
			for _, s := range strings.Split(val, ",") {
				l = append(l, strings.TrimSpace(s))
			}
			if val == "" {
				l = []any{}
			}
			return l, nil
		}
		return nil, fmt.Errorf("want a JSON list (%s): %v", t.String(), err)
	default: // map, ref
		v, err := decodeJSONText(val)
		if err != nil {
			return nil, fmt.Errorf("want a JSON object (%s): %v", t.String(), err)
		}
		return v, nil
	}
}

// decodeJSONText decodes exactly one JSON value, numbers as json.Number.
func decodeJSONText(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if err == io.EOF {
			return nil, errors.New("no JSON value")
		}
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

func findField(d *contract.TypeDef, name string) *contract.Field {
	for i := range d.Fields {
		if d.Fields[i].Name == name {
			return &d.Fields[i]
		}
	}
	return nil
}

func fieldList(d *contract.TypeDef) string {
	if len(d.Fields) == 0 {
		return "no fields"
	}
	names := make([]string, len(d.Fields))
	for i, f := range d.Fields {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}

// requestItems turns the arguments of a call into request values: none (nil),
// one JSON object, a JSON array of objects (for methods that take a stream
// of requests), or key=value pairs for one object.
func requestItems(c *contract.Contract, typeName string, args []string, streaming bool) ([]any, error) {
	if len(args) == 0 {
		return nil, nil
	}
	first := strings.TrimSpace(args[0])
	if strings.HasPrefix(first, "{") || strings.HasPrefix(first, "[") {
		v, err := decodeJSONText(strings.Join(args, " "))
		if err != nil {
			return nil, argErrorf("malformed JSON argument: %v", err)
		}
		if l, ok := v.([]any); ok {
			if !streaming {
				return nil, argErrorf("this method takes one request; give one JSON object, not a list")
			}
			return l, nil
		}
		return []any{v}, nil
	}
	m, err := parseKV(c, typeName, args)
	if err != nil {
		return nil, err
	}
	return []any{m}, nil
}
