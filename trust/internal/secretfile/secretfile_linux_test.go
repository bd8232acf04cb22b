//go:build linux

package secretfile

import (
	"bytes"
	"testing"
)

// Read returns the whole file even when its size is not known in advance:
// /proc files stat as 0 bytes (so does a file growing meanwhile), and a
// read sized by Stat returned nothing of them.
func TestReadSizeNotKnown(t *testing.T) {
	b, err := Read("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("Name:")) {
		t.Fatalf("Read returned %d bytes without the file's content: %q", len(b), b)
	}
}
