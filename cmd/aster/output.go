package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
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
		enc.Encode(jsonError{Code: e.code.String(), CodeNum: uint32(e.code), Message: sanitize(e.msg), Exit: e.exit})
		return
	}
	fmt.Fprintln(w, sanitize(e.Error()))
}

// printer prints responses.
type printer interface {
	Write(v any) error
}

// newPrinter returns the printer of --format: "ndjson", "json" (each
// value indented), "pretty" (indented and coloured) or "" (pretty when w
// is a terminal, else ndjson).
func newPrinter(w io.Writer, format string) (printer, error) {
	if format == "" {
		format = "ndjson"
		if isTerminal(w) {
			format = "pretty"
		}
	}
	switch format {
	case "ndjson":
		return newJSONLines(w), nil
	case "json":
		return &indented{w: w}, nil
	case "pretty":
		return &indented{w: w, color: os.Getenv("NO_COLOR") == ""}, nil
	}
	return nil, usageErrorf("--format %q: want ndjson, json or pretty", format)
}

// isTerminal reports whether w is a terminal (a character device other
// than /dev/null).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(st, null)
}

// indented prints each value as indented JSON, optionally with ANSI
// colours (keys blue, strings green, numbers cyan, literals magenta).
type indented struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
	buf   bytes.Buffer
}

func (o *indented) Write(v any) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Reset()
	if !o.color {
		enc := json.NewEncoder(&o.buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("encoding output: %w", err)
		}
	} else {
		if err := writeColored(&o.buf, v, ""); err != nil {
			return fmt.Errorf("encoding output: %w", err)
		}
		o.buf.WriteByte('\n')
	}
	if _, err := o.w.Write(o.buf.Bytes()); err != nil {
		return fmt.Errorf("writing output: %w", err)
	}
	return nil
}

const (
	ansiKey    = "\x1b[34;1m"
	ansiString = "\x1b[32m"
	ansiNumber = "\x1b[36m"
	ansiLit    = "\x1b[35m"
	ansiReset  = "\x1b[0m"
)

// writeColored writes v as indented JSON with colours.
func writeColored(b *bytes.Buffer, v any, indent string) error {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteString("{\n")
		for i, k := range slices.Sorted(maps.Keys(x)) {
			kb, _ := marshalNoEscape(k)
			b.WriteString(indent + "  " + ansiKey)
			b.Write(kb)
			b.WriteString(ansiReset + ": ")
			if err := writeColored(b, x[k], indent+"  "); err != nil {
				return err
			}
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteString("[\n")
		for i, e := range x {
			b.WriteString(indent + "  ")
			if err := writeColored(b, e, indent+"  "); err != nil {
				return err
			}
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	default:
		vb, err := marshalNoEscape(x)
		if err != nil {
			return err
		}
		color := ansiNumber
		switch x.(type) {
		case string:
			color = ansiString
		case bool, nil:
			color = ansiLit
		}
		b.WriteString(color)
		b.Write(vb)
		b.WriteString(ansiReset)
	}
	return nil
}

// marshalNoEscape is json.Marshal without HTML escaping and newline.
func marshalNoEscape(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}

// sanitize makes s safe to print on a terminal: invalid UTF-8 and control
// characters (other than tab and newline) are escaped as Go does in
// quoted strings, so that a binary file's bytes never reach the terminal.
func sanitize(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || (unicode.IsControl(r) && r != '\t' && r != '\n') {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsControl(r) && r != '\t' && r != '\n':
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
