// Package bench compares aster with grpc-go, connect-go and the raw
// quic-go and TCP+TLS floors on the same service. It is its own module so
// that users of aster never pull grpc-go or connect-go. See
// cmd/asterbench for the whole suite and BENCHMARKS.md in the repository
// root for the recorded results; the benchmarks in this package are the go
// test form of the same figures.
package bench

import (
	"runtime"
	"strconv"
)

func procs() int { return runtime.GOMAXPROCS(0) }

func itoa(n int) string { return strconv.Itoa(n) }
