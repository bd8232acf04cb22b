package quic

import (
	"net"
	"testing"

	"github.com/aster-go/aster/trust"
)

// Benchmarks of the per-dial costs of a new Dialer (connection set-up,
// issue 16): run with
//
//	go test -run=NONE -bench='^Benchmark(BuildCertificate|CheckKey|GenerateKey|ListenUDP)$' -benchmem ./transport/quic
//
// BenchmarkBuildCertificate is the cost of a key's first certificate (a
// new Dialer or Listener with a key not in the cache).
func BenchmarkBuildCertificate(b *testing.B) {
	key := trust.GenerateKey()
	id := trust.IDOf(key)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := buildCertificate(key, id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckKey(b *testing.B) {
	key := trust.GenerateKey()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := checkKey(key); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGenerateKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		trust.GenerateKey()
	}
}

func BenchmarkListenUDP(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		u, err := net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			b.Fatal(err)
		}
		u.Close()
	}
}
