// Package json is aster's JSON codec (encoding/json), used by the CLI,
// browsers and for debugging. Numbers decoded into interface values stay
// json.Number so integers are not turned into floats.
package json

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Name is the codec's wire name.
const Name = "json"

// Codec is the JSON codec. The zero value is ready to use.
type Codec struct{}

// Name returns "json".
func (Codec) Name() string { return Name }

// Marshal encodes v as compact JSON.
func (Codec) Marshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json: encode %T: %w", v, err)
	}
	return b, nil
}

// AppendMarshal encodes v after buf.
func (c Codec) AppendMarshal(buf []byte, v any) ([]byte, error) {
	b, err := c.Marshal(v)
	if err != nil {
		return buf, err
	}
	return append(buf, b...), nil
}

// Unmarshal decodes one JSON value from data into v. Numbers decoded into
// interface values become json.Number; trailing non-space data is an error.
func (Codec) Unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("json: decode %T: %w", v, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("json: decode %T: trailing data after value", v)
	}
	return nil
}
