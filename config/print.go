package config

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aster-go/aster/trust"
)

// printed is one field as Print shows it.
type printed struct {
	name    string // key within its section
	text    string // value for the text form
	value   any    // value for the JSON form (nil when unset)
	source  string
	section string
}

// printedFields returns every field with its display value and source, in
// print order. Secrets are masked.
func (c *Config) printedFields() []printed {
	var out []printed
	for _, sec := range sectionOrder {
		for i := range fields {
			f := &fields[i]
			s, name, _ := strings.Cut(f.key, ".")
			if s != sec {
				continue
			}
			src, raw := c.origin(f)
			p := printed{name: name, source: src, section: sec}
			switch v := f.get(c).(type) {
			case bool:
				p.text, p.value = fmt.Sprint(v), v
			case int:
				if f.key == "network.hook_timeout_ms" && v == 0 {
					v = DefaultHookTimeoutMS
				}
				p.text, p.value = fmt.Sprint(v), v
			case time.Duration:
				if v == 0 {
					v = f.def.(time.Duration) // literal Config: zero means the default
				}
				p.text, p.value = v.String(), v.String()
			case ed25519.PublicKey:
				if v != nil {
					p.text = hex.EncodeToString(v)
					p.value = p.text
				}
			case trust.SecretKey:
				if v != nil {
					p.text = maskTail(hex.EncodeToString(v.Seed()))
					p.value = p.text
				}
			case string:
				if v == "" {
					if d, ok := f.def.(string); ok && d != "" {
						v = d // literal Config: empty means the default
					}
				}
				if v != "" {
					if f.kind == kPath && c.sources != nil && raw != "" {
						v = raw // as written, before ~ expansion
					}
					switch {
					case f.key == "discovery.password":
						v = "****" // no part of a password is shown
					case f.key == "network.proxy_url":
						v = maskProxyURL(v) // the password, as "xxxxx"
					case f.sensitive:
						v = maskTail(v)
					}
					p.text, p.value = v, v
				}
			}
			if p.value == nil {
				p.text = f.unset
			}
			out = append(out, p)
		}
	}
	return out
}

// maskTail hides all but the last 8 characters of s: "****...a1b2c3d4".
func maskTail(s string) string {
	if len(s) <= 8 {
		return "****"
	}
	return "****..." + s[len(s)-8:]
}

// Print writes the resolved configuration by section, each value with its
// source ("default", the TOML file's path, or the ASTER_* variable):
//
//	[trust]
//	root_pubkey                : <not set> (default)
//	allow_all_consumers        : true (ASTER_ALLOW_ALL_CONSUMERS)
//	...
//	[network]
//	secret_key                 : ****...a1b2c3d4 (ASTER_SECRET_KEY)
//
// The secret key shows only the last 8 hex characters of its seed; the
// enrollment credential path and IID token only their last 8 characters;
// the root public key is public and shown in full. Unset values read
// <not set>, <default>, <any> (bind_addr) or <in-memory> (storage path).
//
// With asJSON it writes one JSON object instead:
//
//	{"trust":{"root_pubkey":{"value":null,"source":"default"},...},...}
func (c *Config) Print(w io.Writer, asJSON bool) error {
	ps := c.printedFields()
	if asJSON {
		return printJSON(w, ps)
	}
	width := 0
	for _, p := range ps {
		width = max(width, len(p.name))
	}
	var b bytes.Buffer
	sec := ""
	for _, p := range ps {
		if p.section != sec {
			sec = p.section
			fmt.Fprintf(&b, "[%s]\n", sec)
		}
		fmt.Fprintf(&b, "%-*s : %s (%s)\n", width, p.name, p.text, p.source)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// printJSON writes the fields as {"section":{"name":{"value":..,"source":..}}}
// with sections and fields in print order.
func printJSON(w io.Writer, ps []printed) error {
	var b bytes.Buffer
	b.WriteString("{")
	sec := ""
	for i, p := range ps {
		if p.section != sec {
			if sec != "" {
				b.WriteString("},")
			}
			sec = p.section
			fmt.Fprintf(&b, "%q:{", sec)
		} else if i > 0 {
			b.WriteString(",")
		}
		entry, err := json.Marshal(struct {
			Value  any    `json:"value"`
			Source string `json:"source"`
		}{p.value, p.source})
		if err != nil {
			return err
		}
		name, _ := json.Marshal(p.name)
		b.Write(name)
		b.WriteString(":")
		b.Write(entry)
	}
	if sec != "" {
		b.WriteString("}")
	}
	b.WriteString("}")
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return err
	}
	out.WriteString("\n")
	_, err := w.Write(out.Bytes())
	return err
}
