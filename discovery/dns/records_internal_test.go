package dns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

func TestCheckName(t *testing.T) {
	for name, want := range map[string]string{
		"_mc._udp.Example.Internal":     "_mc._udp.example.internal.",
		"_mc._udp.example.internal.":    "_mc._udp.example.internal.",
		"mc.service.consul":             "mc.service.consul.",
		strings.Repeat("a.", 126) + "b": strings.Repeat("a.", 126) + "b.",
	} {
		got, err := checkName(name)
		if err != nil || got != want {
			t.Errorf("checkName(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"", ".", "..", "a..b", ".a", "a b", "a\x00b", "é.example", "a/b", "a\\.b",
		strings.Repeat("a", 64), strings.Repeat("a.", 127) + "bc"} {
		if got, err := checkName(name); err == nil {
			t.Errorf("checkName(%q) = %q, want an error", name, got)
		}
	}
}

func TestSystemServer(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{
		"# comment\nsearch example\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n": "10.0.0.2:53",
		"nameserver bogus\nnameserver ::1\n":                                    "[::1]:53",
		"options ndots:5\n":                                                     "",
		"":                                                                      "",
	} {
		p := filepath.Join(dir, "resolv.conf")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := systemServer(p)
		if want == "" {
			if err == nil || !strings.Contains(err.Error(), "no nameserver") {
				t.Errorf("systemServer(%q) = %q, %v; want no nameserver", content, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("systemServer(%q) = %q, %v; want %q", content, got, err, want)
		}
	}
	if _, err := systemServer(filepath.Join(dir, "missing")); err == nil {
		t.Error("systemServer of a missing file: no error")
	}
}

// FuzzParseTXT feeds arbitrary TXT records to the parser and the producer
// built from them: never a panic, and what is accepted is consistent.
func FuzzParseTXT(f *testing.F) {
	f.Add("addr=aster1abc", "cred=AAAA", "id=00")
	f.Add("id=3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29", "cred=o2Fy", "x=y")
	f.Add("id=", "cred=", "=")
	f.Add("cred=====", "addr=", "id=zz")
	f.Add("id=3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29", "cred=\r\n", "")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		var rrs []*mdns.TXT
		for _, v := range []string{a, b, c} {
			var strs []string
			for len(v) > 255 {
				strs, v = append(strs, v[:255]), v[255:]
			}
			rrs = append(rrs, &mdns.TXT{Txt: append(strs, v)})
		}
		fields, err := parseTXT(rrs)
		if err != nil {
			return
		}
		ea, err := fields.endpoint()
		if err != nil {
			return
		}
		if ea.ID.IsZero() {
			t.Fatalf("accepted a zero id from %q %q %q", a, b, c)
		}
		if fields.haveAddr {
			if err := ea.Validate(); err != nil {
				t.Fatalf("accepted an invalid address from %q: %v", fields.addr, err)
			}
		}
		if cred, err := fields.credential(); err == nil && fields.haveCred && len(cred) == 0 {
			t.Fatalf("accepted an empty credential from %q", fields.cred)
		}
	})
}
