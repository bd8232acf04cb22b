package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// jsonLines writes one JSON value per line (NDJSON). Each value is written
// with a single Write so lines arrive whole, as they are produced.
type jsonLines struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
}

func newJSONLines(w io.Writer) *jsonLines { return &jsonLines{w: w} }

// Write encodes v as one line.
func (o *jsonLines) Write(v any) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Reset()
	enc := json.NewEncoder(&o.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	if _, err := o.w.Write(o.buf.Bytes()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

// jsonError is the --json-errors form of an error.
type jsonError struct {
	Code    string `json:"code"`
	CodeNum uint32 `json:"code_num"`
	Message string `json:"message"`
	Exit    int    `json:"exit"`
}

// printError reports err on w, as text ("CODE_NAME: message") or as one JSON
// object.
func printError(w io.Writer, e *cliError, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.Encode(jsonError{Code: e.code.String(), CodeNum: uint32(e.code), Message: e.msg, Exit: e.exit})
		return
	}
	fmt.Fprintln(w, e.Error())
}
