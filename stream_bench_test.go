package aster_test

import (
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
)

// BenchmarkServerStream streams 256 messages of 16 KiB per op from the
// server: the server's write batching and backpressure (wire.Writer).
func BenchmarkServerStream(b *testing.B) {
	for _, tk := range transports[:2] {
		b.Run(tk.name, func(b *testing.B) {
			key := testutil.Key(b, 1)
			srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()))
			srv.MustRegister(newTestService().service())
			ln, dialer := tk.setup(b, key)
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			e, err := aster.DialAddress(b.Context(), ln.Addr(), aster.WithDialer(dialer(testutil.Key(b, 2))))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { e.Close(); srv.Close(); <-done })
			req := &Msg{Text: strings.Repeat("x", 16<<10), N: 256}
			b.SetBytes(int64(len(req.Text) * req.N))
			b.ReportAllocs()
			for b.Loop() {
				s, err := aster.CallServerStream[Msg](b.Context(), e, "Test.count", req)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for _, err := range s.All() {
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != req.N {
					b.Fatalf("%d messages, want %d", n, req.N)
				}
			}
		})
	}
}
