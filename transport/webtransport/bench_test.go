package webtransport

import (
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"

	wt "github.com/quic-go/webtransport-go"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
)

// BenchmarkEcho separates what WebTransport costs aster into what
// webtransport-go costs and what aster's wrapper adds, and compares both
// with direct QUIC in the same run. A request is 64 bytes echoed back.
//
//	go test -run NONE -bench Echo -benchmem -count 6 ./transport/webtransport
//
// Systems:
//   - quic: transport/quic's Conn and Stream (quic-go with aster's
//     configuration), the direct-QUIC reference;
//   - wt: transport/webtransport's Conn and Stream;
//   - wt-raw: the same WebTransport session, but the client and the
//     server use webtransport-go's *Session and *Stream directly, so
//     wt-raw / quic is the library's cost and wt / wt-raw aster's.
//
// Patterns:
//   - perstream: one stream per request (open, write, close the write
//     direction, read the echo to EOF), as aster makes one call today;
//   - persistent: one stream per caller, reused for request after request
//     (write 64 bytes, read 64 bytes), as calls on reused streams would be.
//
// "par32" runs 32 callers on the one connection, "seq" one.
func BenchmarkEcho(b *testing.B) {
	for _, sys := range []string{"quic", "wt", "wt-raw"} {
		b.Run(sys, func(b *testing.B) {
			e := newEchoEnv(b, sys)
			b.Run("perstream", func(b *testing.B) { runEchoPattern(b, e.perStream) })
			b.Run("persistent", func(b *testing.B) {
				runEchoPattern(b, func() func() error {
					var st echoStream
					return func() error {
						if st == nil {
							var err error
							if st, err = e.open(); err != nil {
								return err
							}
						}
						if _, err := st.Write(echoMsg[:]); err != nil {
							return err
						}
						var buf [echoSize]byte
						_, err := io.ReadFull(st, buf[:])
						return err
					}
				})
			})
		})
	}
}

const echoSize = 64

var echoMsg [echoSize]byte

// echoStream is what the echo loops need of a stream: transport.Stream
// and *wt.Stream both have it.
type echoStream interface {
	io.ReadWriter
	Close() error
}

// echoEnv is one connection to an echo server.
type echoEnv struct {
	open func() (echoStream, error) // opens a stream
	// closeWrite closes a stream's write direction.
	closeWrite func(echoStream) error
}

// perStream makes one request on a new stream.
func (e *echoEnv) perStream() func() error {
	return func() error {
		st, err := e.open()
		if err != nil {
			return err
		}
		if _, err := st.Write(echoMsg[:]); err != nil {
			return err
		}
		if err := e.closeWrite(st); err != nil {
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
	}
}

// runEchoPattern runs newCaller's requests with 1 and with 32 callers;
// newCaller is called once per caller.
func runEchoPattern(b *testing.B, newCaller func() func() error) {
	b.Run("seq", func(b *testing.B) {
		b.ReportAllocs()
		call := newCaller()
		for b.Loop() {
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("par32", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			call := newCaller()
			for pb.Next() {
				if err := call(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

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

// serveEcho echoes each stream: 64-byte requests, answered as they
// arrive, until the stream's end, which it answers with its own.
func serveEcho(st echoStream) {
	var buf [echoSize]byte
	for {
		n, err := io.ReadFull(st, buf[:])
		if n > 0 {
			if _, werr := st.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = st.Close()
			return
		}
	}
}

// newEchoEnv starts an echo server for sys and connects to it; the
// benchmark's cleanup stops both.
func newEchoEnv(b *testing.B, sys string) *echoEnv {
	var (
		ln transport.Listener
		d  transport.Dialer
	)
	switch sys {
	case "quic":
		qln, err := quic.Listen("127.0.0.1:0", testutil.Key(b, 1), nil)
		if err != nil {
			b.Fatal(err)
		}
		qd := quic.NewDialer(testutil.Key(b, 2), nil)
		b.Cleanup(func() { _ = qd.Close() })
		ln, d = qln, qd
	default:
		wln, err := Listen("127.0.0.1:0", testutil.Key(b, 1), nil)
		if err != nil {
			b.Fatal(err)
		}
		wd := NewDialer(testutil.Key(b, 2), nil)
		b.Cleanup(func() { _ = wd.Close() })
		ln, d = wln, wd
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		_ = ln.Close()
		wg.Wait()
	})
	raw := sys == "wt-raw"
	wg.Go(func() {
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close(transport.ConnNoError, "")
				for {
					var st echoStream
					if raw {
						st, err = c.(*conn).sess.AcceptStream(ctx)
					} else {
						st, err = c.AcceptStream(ctx)
					}
					if err != nil {
						return
					}
					wg.Go(func() { serveEcho(st) })
				}
			})
		}
	})
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close(transport.ConnNoError, "") })
	if raw {
		sess := c.(*conn).sess
		return &echoEnv{
			open:       func() (echoStream, error) { return sess.OpenStreamSync(ctx) },
			closeWrite: func(st echoStream) error { return st.(*wt.Stream).Close() },
		}
	}
	return &echoEnv{
		open:       func() (echoStream, error) { return c.OpenStream(ctx) },
		closeWrite: func(st echoStream) error { return st.(transport.Stream).CloseWrite() },
	}
}
