package wire

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkReadFrame reads a stream of frames of one payload size: the small
// sizes take the buffered path, the large ones the path that reads into
// the Reader's own buffer.
func BenchmarkReadFrame(b *testing.B) {
	for _, size := range []int{64, 4 << 10, 64 << 10, 1 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			const frames = 16
			var in []byte
			for range frames {
				in = AppendFrame(in, 0, bytes.Repeat([]byte{1}, size))
			}
			src := bytes.NewReader(in)
			r := NewReader(src, 0)
			defer r.Release()
			b.SetBytes(int64(size * frames))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(in)
				r.Reset(src, 0)
				for range frames {
					if _, _, err := r.ReadFrame(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkCall reads the frames of one unary call as the server does with
// a fresh Reader: the HEADER, then one DATA frame.
func BenchmarkCall(b *testing.B) {
	hdr := AppendFrame(nil, FlagHeader, bytes.Repeat([]byte{0xa0}, 40))
	for _, size := range []int{64, 100 << 10} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			in := AppendFrame(bytes.Clone(hdr), 0, bytes.Repeat([]byte{1}, size))
			src := bytes.NewReader(in)
			var r Reader
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(in)
				r.Reset(src, 0)
				for range 2 {
					if _, _, err := r.ReadFrame(); err != nil {
						b.Fatal(err)
					}
				}
				r.Release()
			}
		})
	}
}
