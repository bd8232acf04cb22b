package enroll

import (
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

func BenchmarkVerify(b *testing.B) {
	c, root, ep := vectorCredential(b)
	now := t0.Add(time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Verify(trust.IDOf(root), trust.IDOf(ep), now, DefaultClockSkew); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeCredential(b *testing.B) {
	c, _, _ := vectorCredential(b)
	enc, _ := c.Encode()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}
