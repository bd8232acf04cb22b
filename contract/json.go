package contract

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

// JSON conversion.
//
// FromJSON turns a JSON document into the value the wire expects for a
// contract type, and ToJSON turns a decoded wire value back into a value
// encoding/json prints as stable JSON. Together they let tools (aster call,
// aster shell) call any method with no generated code. The mapping per kind:
//
//	string  JSON string
//	bool    JSON true/false
//	int     JSON integer (int64); 1.0 and 1e3 are accepted, 1.5 is an error
//	uint    JSON integer >= 0 (uint64)
//	float   JSON number (float64; 1 is sent as the float 1.0); the strings
//	        "NaN", "Infinity" and "-Infinity" stand for the values JSON lacks
//	bytes   base64 string (standard alphabet; URL-safe and unpadded accepted)
//	time    RFC 3339 string
//	list    JSON array
//	map     JSON object; keys of int, uint, float and bool maps are written as
//	        their JSON text ("42", "true")
//	ref     JSON object with the type's fields; unknown fields are an error,
//	        missing fields are left out (the receiver's zero value applies)
//	any     any JSON value, passed through (numbers as int64, uint64 or
//	        float64 as written)
//
// null is accepted for optional types and for list, map, bytes and any (Go's
// nil slices and maps); for other types it is an error.

// JSONError is a JSON value that does not fit a contract type. Path locates
// the value: "" for the top level, else a field path such as
// "points[2].tags[env]".
type JSONError struct {
	Path string
	Msg  string
}

// Error returns `field "path": msg`, or msg for the top level.
func (e *JSONError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return fmt.Sprintf("field %q: %s", e.Path, e.Msg)
}

// FromJSON converts the JSON document raw into the wire value of the named
// message type: a map[string]any keyed by wire field names, holding values
// the codec encodes as the contract's kinds (int64, uint64, float64, string,
// bool, []byte, time.Time, []any, maps). Errors that concern the document are
// *JSONError (use errors.As), naming the offending field's path.
func FromJSON(c *Contract, typeName string, raw []byte) (any, error) {
	if c.Type(typeName) == nil {
		return nil, fmt.Errorf("contract: type %q not defined", typeName)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if err == io.EOF {
			return nil, &JSONError{Msg: "no JSON value"}
		}
		return nil, &JSONError{Msg: "malformed JSON: " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &JSONError{Msg: "malformed JSON: unexpected data after the top-level value"}
	}
	cv := converter{c: c}
	return cv.fromJSON(TypeRef{Kind: KindRef, Ref: typeName}, v, "")
}

// FromJSONValue is FromJSON for a value already decoded by encoding/json
// (with Decoder.UseNumber, so numbers are json.Number; float64 is accepted
// too but cannot tell 1 from 1.0).
func FromJSONValue(c *Contract, typeName string, v any) (any, error) {
	if c.Type(typeName) == nil {
		return nil, fmt.Errorf("contract: type %q not defined", typeName)
	}
	cv := converter{c: c}
	return cv.fromJSON(TypeRef{Kind: KindRef, Ref: typeName}, v, "")
}

// ToJSON converts v, a value of the named message type as the CBOR codec
// decodes it into an interface (maps, []any, uint64/int64, float64, []byte,
// strings, ...), into a value encoding/json prints as stable JSON: fields
// keyed by their wire names, bytes as base64, times as RFC 3339, map keys as
// strings, integers as integers and floats as floats. Fields the contract
// does not describe are kept, converted generically. A value that does not
// fit the type is a *JSONError naming its path.
func ToJSON(c *Contract, typeName string, v any) (any, error) {
	if c.Type(typeName) == nil {
		return nil, fmt.Errorf("contract: type %q not defined", typeName)
	}
	cv := converter{c: c}
	return cv.toJSON(TypeRef{Kind: KindRef, Ref: typeName}, v, "")
}

// AnyToJSON converts a decoded wire value of unknown type to a value
// encoding/json can print, the way ToJSON treats the "any" kind.
func AnyToJSON(v any) any { return anyToJSON(v) }

type converter struct {
	c     *Contract
	depth int
}

// maxDepth bounds recursion through self-referencing types.
const maxDepth = 100

func jsonKind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case json.Number, float64:
		return "number " + fmt.Sprint(v)
	case []any:
		return "list"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func typeErr(path string, t TypeRef, v any) error {
	want := t.Kind
	switch t.Kind {
	case KindRef:
		want = "object (" + t.Ref + ")"
	case KindList:
		want = "list"
	case KindMap:
		want = "object (map)"
	case KindInt:
		want = "integer"
	case KindUint:
		want = "unsigned integer"
	case KindFloat:
		want = "number"
	case KindBytes:
		want = "base64 string"
	case KindTime:
		want = "RFC 3339 time string"
	}
	return &JSONError{Path: path, Msg: fmt.Sprintf("expected %s, got %s", want, jsonKind(v))}
}

func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (cv *converter) fromJSON(t TypeRef, v any, path string) (any, error) {
	if v == nil {
		switch t.Kind {
		case KindList, KindMap, KindBytes, KindAny:
			return nil, nil
		}
		if t.Optional {
			return nil, nil
		}
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("null is not allowed for %s (not optional)", t.String())}
	}
	switch t.Kind {
	case KindString:
		s, ok := v.(string)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		return s, nil
	case KindBool:
		b, ok := v.(bool)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		return b, nil
	case KindInt, KindUint:
		s, ok := numberText(v)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		return parseInteger(s, t.Kind == KindUint, path)
	case KindFloat:
		switch v := v.(type) {
		case string:
			switch v {
			case "NaN":
				return math.NaN(), nil
			case "Infinity", "+Infinity":
				return math.Inf(1), nil
			case "-Infinity":
				return math.Inf(-1), nil
			}
			return nil, typeErr(path, t, v)
		case float64:
			return v, nil
		case json.Number:
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				return nil, &JSONError{Path: path, Msg: fmt.Sprintf("number %s out of range for float", v)}
			}
			return f, nil
		}
		return nil, typeErr(path, t, v)
	case KindBytes:
		s, ok := v.(string)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		b, err := decodeBase64(s)
		if err != nil {
			return nil, &JSONError{Path: path, Msg: "invalid base64: " + err.Error()}
		}
		return b, nil
	case KindTime:
		s, ok := v.(string)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, &JSONError{Path: path, Msg: fmt.Sprintf("invalid RFC 3339 time %q", s)}
		}
		return tm, nil
	case KindList:
		l, ok := v.([]any)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		if t.Elem == nil {
			return nil, &JSONError{Path: path, Msg: "contract: list type without an element type"}
		}
		out := make([]any, len(l))
		for i, e := range l {
			ev, err := cv.fromJSON(*t.Elem, e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	case KindMap:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		if t.Key == nil || t.Elem == nil {
			return nil, &JSONError{Path: path, Msg: "contract: map type without key or element type"}
		}
		return cv.mapFromJSON(t, m, path)
	case KindRef:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, typeErr(path, t, v)
		}
		return cv.structFromJSON(t.Ref, m, path)
	case KindAny:
		return anyFromJSON(v), nil
	}
	return nil, &JSONError{Path: path, Msg: fmt.Sprintf("contract: unknown kind %q", t.Kind)}
}

func (cv *converter) structFromJSON(name string, m map[string]any, path string) (any, error) {
	def := cv.c.Type(name)
	if def == nil {
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("contract: type %q not defined", name)}
	}
	if cv.depth++; cv.depth > maxDepth {
		return nil, &JSONError{Path: path, Msg: "value nested too deeply"}
	}
	defer func() { cv.depth-- }()
	out := make(map[string]any, len(m))
	// Visit keys in order so the first error reported is deterministic.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		f := def.field(k)
		fp := joinField(path, k)
		if f == nil {
			return nil, &JSONError{Path: fp, Msg: fmt.Sprintf("unknown field (%s has: %s)", name, def.fieldNames())}
		}
		fv, err := cv.fromJSON(f.Type, m[k], fp)
		if err != nil {
			return nil, err
		}
		out[k] = fv
	}
	return out, nil
}

func (cv *converter) mapFromJSON(t TypeRef, m map[string]any, path string) (any, error) {
	keys := slices.Sorted(maps.Keys(m))
	if t.Key.Kind == KindString {
		out := make(map[string]any, len(m))
		for _, k := range keys {
			ev, err := cv.fromJSON(*t.Elem, m[k], fmt.Sprintf("%s[%s]", path, k))
			if err != nil {
				return nil, err
			}
			out[k] = ev
		}
		return out, nil
	}
	out := make(map[any]any, len(m))
	for _, k := range keys {
		kp := fmt.Sprintf("%s[%s]", path, k)
		var kv any
		var err error
		switch t.Key.Kind {
		case KindInt, KindUint:
			kv, err = parseInteger(k, t.Key.Kind == KindUint, kp)
		case KindFloat:
			var f float64
			if f, err = strconv.ParseFloat(k, 64); err != nil {
				err = &JSONError{Path: kp, Msg: fmt.Sprintf("map key %q is not a number", k)}
			}
			kv = f
		case KindBool:
			var b bool
			if b, err = strconv.ParseBool(k); err != nil || (k != "true" && k != "false") {
				err = &JSONError{Path: kp, Msg: fmt.Sprintf("map key %q is not true or false", k)}
			}
			kv = b
		case KindTime:
			kv, err = cv.fromJSON(*t.Key, k, kp)
		default:
			err = &JSONError{Path: path, Msg: fmt.Sprintf("contract: map keys of kind %s are not supported", t.Key.Kind)}
		}
		if err != nil {
			return nil, err
		}
		ev, err := cv.fromJSON(*t.Elem, m[k], kp)
		if err != nil {
			return nil, err
		}
		out[kv] = ev
	}
	return out, nil
}

func (d *TypeDef) field(name string) *Field {
	for i := range d.Fields {
		if d.Fields[i].Name == name {
			return &d.Fields[i]
		}
	}
	return nil
}

func (d *TypeDef) fieldNames() string {
	if len(d.Fields) == 0 {
		return "no fields"
	}
	names := make([]string, len(d.Fields))
	for i, f := range d.Fields {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}

// numberText returns the text of a JSON number.
func numberText(v any) (string, bool) {
	switch v := v.(type) {
	case json.Number:
		return string(v), true
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), true
	}
	return "", false
}

// parseInteger parses the text of a JSON number as an int64 (or uint64),
// accepting integral forms such as 1.0 and 1e3 exactly.
func parseInteger(s string, unsigned bool, path string) (any, error) {
	kind := "int"
	if unsigned {
		kind = "uint"
	}
	if unsigned {
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return n, nil
		}
	} else if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok || strings.ContainsAny(s, "/ \t") {
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("expected integer, got %q", s)}
	}
	if !r.IsInt() {
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("expected integer, got %s", s)}
	}
	n := r.Num()
	switch {
	case unsigned && n.Sign() < 0:
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("expected unsigned integer, got %s", s)}
	case unsigned && n.IsUint64():
		return n.Uint64(), nil
	case !unsigned && n.IsInt64():
		return n.Int64(), nil
	}
	return nil, &JSONError{Path: path, Msg: fmt.Sprintf("%s out of range for %s", s, kind)}
}

func decodeBase64(s string) ([]byte, error) {
	var firstErr error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// anyFromJSON converts a decoded JSON value for the "any" kind: numbers
// become int64, uint64 or float64 as written.
func anyFromJSON(v any) any {
	switch v := v.(type) {
	case json.Number:
		s := string(v)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return n
		}
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return n
		}
		f, _ := strconv.ParseFloat(s, 64)
		return f
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = anyFromJSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = anyFromJSON(e)
		}
		return out
	}
	return v
}

// ----- wire value → JSON -----

func (cv *converter) toJSON(t TypeRef, v any, path string) (any, error) {
	if v == nil {
		return nil, nil // absent optional values and nil containers
	}
	switch t.Kind {
	case KindString:
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		}
	case KindBool:
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case KindInt, KindUint:
		switch n := v.(type) {
		case uint64, int64, int, uint, int32, uint32, int16, uint16, int8, uint8:
			return n, nil
		case *big.Int:
			return json.Number(n.String()), nil
		case big.Int:
			return json.Number(n.String()), nil
		case float64:
			if n == math.Trunc(n) && !math.IsInf(n, 0) && math.Abs(n) < 1<<63 {
				return int64(n), nil
			}
		}
	case KindFloat:
		switch n := v.(type) {
		case float64:
			return floatJSON(n), nil
		case float32:
			return floatJSON(float64(n)), nil
		case uint64, int64, int, uint, int32, uint32:
			return n, nil
		case *big.Int:
			return json.Number(n.String()), nil
		}
	case KindBytes:
		switch b := v.(type) {
		case []byte:
			return base64.StdEncoding.EncodeToString(b), nil
		case string:
			return base64.StdEncoding.EncodeToString([]byte(b)), nil
		}
	case KindTime:
		switch tm := v.(type) {
		case time.Time:
			return tm.Format(time.RFC3339Nano), nil
		case string:
			if p, err := time.Parse(time.RFC3339Nano, tm); err == nil {
				return p.Format(time.RFC3339Nano), nil
			}
			return nil, &JSONError{Path: path, Msg: fmt.Sprintf("invalid RFC 3339 time %q", tm)}
		case uint64:
			return time.Unix(int64(tm), 0).UTC().Format(time.RFC3339Nano), nil
		case int64:
			return time.Unix(tm, 0).UTC().Format(time.RFC3339Nano), nil
		case float64:
			sec, frac := math.Modf(tm)
			return time.Unix(int64(sec), int64(frac*1e9)).UTC().Format(time.RFC3339Nano), nil
		}
	case KindList:
		l, ok := v.([]any)
		if !ok || t.Elem == nil {
			break
		}
		out := make([]any, len(l))
		for i, e := range l {
			ev, err := cv.toJSON(*t.Elem, e, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out[i] = ev
		}
		return out, nil
	case KindMap:
		if t.Elem == nil {
			break
		}
		switch m := v.(type) {
		case map[string]any:
			out := make(map[string]any, len(m))
			for k, e := range m {
				ev, err := cv.toJSON(*t.Elem, e, fmt.Sprintf("%s[%s]", path, k))
				if err != nil {
					return nil, err
				}
				out[k] = ev
			}
			return out, nil
		case map[any]any:
			out := make(map[string]any, len(m))
			for k, e := range m {
				ks := keyString(k)
				ev, err := cv.toJSON(*t.Elem, e, fmt.Sprintf("%s[%s]", path, ks))
				if err != nil {
					return nil, err
				}
				out[ks] = ev
			}
			return out, nil
		}
	case KindRef:
		return cv.structToJSON(t.Ref, v, path)
	case KindAny:
		return anyToJSON(v), nil
	default:
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("contract: unknown kind %q", t.Kind)}
	}
	return nil, &JSONError{Path: path, Msg: fmt.Sprintf("expected %s, got %s", t.String(), wireKind(v))}
}

func (cv *converter) structToJSON(name string, v any, path string) (any, error) {
	def := cv.c.Type(name)
	if def == nil {
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("contract: type %q not defined", name)}
	}
	if cv.depth++; cv.depth > maxDepth {
		return nil, &JSONError{Path: path, Msg: "value nested too deeply"}
	}
	defer func() { cv.depth-- }()
	var m map[string]any
	switch x := v.(type) {
	case map[string]any:
		m = x
	case map[any]any:
		m = make(map[string]any, len(x))
		for k, e := range x {
			m[keyString(k)] = e
		}
	default:
		return nil, &JSONError{Path: path, Msg: fmt.Sprintf("expected %s, got %s", name, wireKind(v))}
	}
	out := make(map[string]any, len(m))
	for k, e := range m {
		f := def.field(k)
		if f == nil {
			out[k] = anyToJSON(e) // a field this contract does not describe
			continue
		}
		fv, err := cv.toJSON(f.Type, e, joinField(path, k))
		if err != nil {
			return nil, err
		}
		out[k] = fv
	}
	return out, nil
}

func wireKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "bool"
	case uint64, int64, int, uint, *big.Int:
		return "integer"
	case float64, float32:
		return "float"
	case []byte:
		return "bytes"
	case []any:
		return "list"
	case map[string]any, map[any]any:
		return "map"
	}
	return fmt.Sprintf("%T", v)
}

// floatJSON returns f, or a string for the values JSON cannot represent.
func floatJSON(f float64) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	return f
}

// keyString renders a map key as a JSON object key.
func keyString(k any) string {
	switch k := k.(type) {
	case string:
		return k
	case []byte:
		return base64.StdEncoding.EncodeToString(k)
	case float64:
		return strconv.FormatFloat(k, 'g', -1, 64)
	case time.Time:
		return k.Format(time.RFC3339Nano)
	}
	if b, err := json.Marshal(anyToJSON(k)); err == nil {
		return string(b)
	}
	return fmt.Sprint(k)
}

// anyToJSON converts a decoded wire value of unknown type.
func anyToJSON(v any) any {
	switch v := v.(type) {
	case nil, string, bool, uint64, int64, int, uint, int32, uint32:
		return v
	case float64:
		return floatJSON(v)
	case float32:
		return floatJSON(float64(v))
	case []byte:
		return base64.StdEncoding.EncodeToString(v)
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case *big.Int:
		return json.Number(v.String())
	case big.Int:
		return json.Number(v.String())
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = anyToJSON(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = anyToJSON(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[keyString(k)] = anyToJSON(e)
		}
		return out
	}
	// Tags, simple values and other exotic decodings: whatever
	// encoding/json makes of them, else their printed form.
	if _, err := json.Marshal(v); err == nil {
		return v
	}
	return fmt.Sprint(v)
}
