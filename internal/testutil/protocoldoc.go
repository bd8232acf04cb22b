package testutil

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// ProtocolExample returns the body of the fenced block that follows the
// marker "<!-- example: name -->" in the repository's PROTOCOL.md (lines
// joined with "\n", no trailing newline), so that a package whose format
// PROTOCOL.md documents can check the document against its own code. The
// test fails if the example is missing or malformed.
func ProtocolExample(t testing.TB, name string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "PROTOCOL.md")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading PROTOCOL.md: %v", err)
	}
	lines := strings.Split(string(raw), "\n")
	marker := "<!-- example: " + name + " -->"
	for i, l := range lines {
		if l != marker {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j >= len(lines) || !strings.HasPrefix(lines[j], "```") {
			t.Fatalf("PROTOCOL.md:%d: example %q is not followed by a fenced block", i+1, name)
		}
		var body []string
		for j++; j < len(lines) && lines[j] != "```"; j++ {
			body = append(body, lines[j])
		}
		if j >= len(lines) {
			t.Fatalf("PROTOCOL.md:%d: example %q: unterminated block", i+1, name)
		}
		return strings.Join(body, "\n")
	}
	t.Fatalf("PROTOCOL.md has no example %q", name)
	return ""
}
