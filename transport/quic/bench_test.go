package quic

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"

	quicgo "github.com/quic-go/quic-go"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
)

// The echo benchmarks measure one request per stream: open a stream, write
// 64 bytes, close the write direction, read the 64-byte echo to EOF. Both
// read to EOF so quic-go counts the stream as finished and returns its
// stream credit; a server that stops after the 64 bytes would exhaust
// MaxIncomingStreams after that many requests.
//
// BenchmarkRawQUICEcho uses quic-go directly (with the same quic.Config and
// TLS settings), BenchmarkStreamEcho goes through Listener, Dialer and
// transport.Stream, so the difference is the wrapper's overhead.

const echoSize = 64

// readToEOF reads r into buf until io.EOF and returns the byte count.
func readToEOF(r io.Reader, buf []byte) (int, error) {
	n := 0
	for {
		if n == len(buf) {
			return n, errors.New("echo too long")
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// runEcho runs the sequential and parallel variants of an echo benchmark.
// echo performs one request; it is called concurrently in the parallel
// variant.
func runEcho(b *testing.B, echo func() error) {
	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := echo(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("par32", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16) // 16 × GOMAXPROCS goroutines; 32 on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := echo(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkRawQUICEcho(b *testing.B) {
	cfg := (*Config)(nil).withDefaults()
	qcfg := cfg.quicConfig()
	key := testutil.Key(b, 1)
	cert, err := newCertificate(key, testutil.ID(b, 1))
	if err != nil {
		b.Fatal(err)
	}
	sudp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	str := &quicgo.Transport{Conn: sudp}
	ln, err := str.Listen(serverTLSConfig(cert), qcfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			qc, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				for {
					st, err := qc.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() {
						var buf [echoSize + 1]byte
						n, err := readToEOF(st, buf[:])
						if err != nil {
							st.CancelWrite(1)
							st.CancelRead(1)
							return
						}
						_, _ = st.Write(buf[:n])
						_ = st.Close()
					})
				}
			})
		}
	})

	ccert, err := newCertificate(testutil.Key(b, 2), testutil.ID(b, 2))
	if err != nil {
		b.Fatal(err)
	}
	ctls := baseTLSConfig(ccert)
	ctls.InsecureSkipVerify = true
	cudp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	ctr := &quicgo.Transport{Conn: cudp}
	qc, err := ctr.Dial(ctx, sudp.LocalAddr(), ctls, qcfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = qc.CloseWithError(0, "")
		cancel()
		_ = ln.Close()
		_ = ctr.Close()
		_ = str.Close()
		wg.Wait()
		_ = cudp.Close()
		_ = sudp.Close()
	})

	msg := make([]byte, echoSize)
	runEcho(b, func() error {
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			return err
		}
		if _, err := st.Write(msg); err != nil {
			return err
		}
		if err := st.Close(); err != nil {
			return err
		}
		var buf [echoSize + 1]byte
		n, err := readToEOF(st, buf[:])
		if err != nil {
			return err
		}
		if n != echoSize {
			return errors.New("short echo")
		}
		return nil
	})
}

func BenchmarkStreamEcho(b *testing.B) {
	ln, err := Listen("127.0.0.1:0", testutil.Key(b, 1), nil)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDialer(testutil.Key(b, 2), nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close(transport.ConnNoError, "")
				for {
					st, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					wg.Go(func() {
						var buf [echoSize + 1]byte
						n, err := readToEOF(st, buf[:])
						if err != nil {
							st.Reset(transport.CodeInternal)
							return
						}
						_, _ = st.Write(buf[:n])
						_ = st.CloseWrite()
					})
				}
			})
		}
	})
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close(transport.ConnNoError, "")
		cancel()
		_ = ln.Close()
		_ = d.Close()
		wg.Wait()
	})

	msg := make([]byte, echoSize)
	runEcho(b, func() error {
		st, err := c.OpenStream(ctx)
		if err != nil {
			return err
		}
		if _, err := st.Write(msg); err != nil {
			return err
		}
		if err := st.CloseWrite(); err != nil {
			return err
		}
		var buf [echoSize + 1]byte
		n, err := readToEOF(st, buf[:])
		if err != nil {
			return err
		}
		if n != echoSize {
			return errors.New("short echo")
		}
		return nil
	})
}
