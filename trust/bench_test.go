package trust

import (
	"testing"
	"time"
)

func BenchmarkVerify(b *testing.B) {
	c, root, ep := vectorCredential(b)
	now := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Verify(IDOf(root), IDOf(ep), now, DefaultClockSkew); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCredential(b *testing.B) {
	c, _, _ := vectorCredential(b)
	enc, _ := c.Encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeCredential(enc); err != nil {
			b.Fatal(err)
		}
	}
}
