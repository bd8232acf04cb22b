package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's CLI chapter, between the "readme-test: cli" markers, runs
// as written: every ```sh block is run by bash (-e -o pipefail) against the
// Mission Control example, with ADDR set to its address, the built aster
// first on PATH and an agent submitting warn log entries, in one working
// directory (blocks may use what earlier ones wrote). A block must exit 0,
// and its standalone "# ..." lines are output it must print (stdout and
// stderr together), each on one line, in order; "…" stands for any text.

const (
	readmeBegin = "<!-- readme-test: cli begin -->"
	readmeEnd   = "<!-- readme-test: cli end -->"
)

// readmeBlock is one ```sh block: its script and the output it promises.
type readmeBlock struct {
	line   int // of the opening fence
	script string
	want   []string
}

// readmeBlocks extracts the sh blocks between the markers of README.md.
func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	i, j := strings.Index(text, readmeBegin), strings.Index(text, readmeEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", readmeBegin, readmeEnd)
	}
	first := strings.Count(text[:i], "\n") + 1
	var blocks []readmeBlock
	var cur *readmeBlock
	var script []string
	for n, l := range strings.Split(text[i:j], "\n") {
		switch {
		case cur == nil && strings.HasPrefix(l, "```sh"):
			cur = &readmeBlock{line: first + n}
			script = nil
		case cur == nil && strings.HasPrefix(l, "```") && l != "```" && !strings.HasPrefix(l, "```text") && !strings.HasPrefix(l, "```go"):
			t.Fatalf("README.md:%d: a %s block in the tested chapter (use sh, or text for what does not run)", first+n, l)
		case cur != nil && l == "```":
			cur.script = strings.Join(script, "\n") + "\n"
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			script = append(script, l)
			if strings.HasPrefix(l, "#") {
				cur.want = append(cur.want, strings.TrimPrefix(strings.TrimPrefix(l, "#"), " "))
			}
		}
	}
	return blocks
}

// outputPattern turns a promised output line into a regexp: "…" matches
// any text.
func outputPattern(want string) *regexp.Regexp {
	parts := strings.Split(want, "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(strings.Join(parts, ".*"))
}

func TestREADMECLIChapter(t *testing.T) {
	t.Parallel()
	blocks := readmeBlocks(t)
	if len(blocks) < 7 {
		t.Fatalf("found %d sh blocks in the README's CLI chapter; the markers are misplaced", len(blocks))
	}
	addr := startServer(t)
	pushLogs(t, addr, "warn")
	asterBin, _ := binaries(t)
	work, home := t.TempDir(), t.TempDir()
	env := append(os.Environ(), "ADDR="+addr, "HOME="+home, "ASTER_CACHE_DIR="+filepath.Join(home, "cache"),
		"PATH="+filepath.Dir(asterBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	for _, b := range blocks {
		cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", b.script)
		cmd.Dir, cmd.Env = work, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(90*time.Second, func() { cmd.Process.Kill() })
		err := cmd.Wait()
		timer.Stop()
		if err != nil {
			t.Errorf("README.md:%d: the block failed: %v\n%s\noutput:\n%s", b.line, err, b.script, out.String())
			continue
		}
		lines := strings.Split(out.String(), "\n")
		k := 0
		for _, w := range b.want {
			re := outputPattern(w)
			for k < len(lines) && !re.MatchString(lines[k]) {
				k++
			}
			if k == len(lines) {
				t.Errorf("README.md:%d: the block did not print %q (in this order)\n%s\noutput:\n%s", b.line, w, b.script, out.String())
				break
			}
			k++
		}
	}
}
