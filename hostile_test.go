package aster_test

import (
	"context"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
)

// idleAttack opens n streams on c, each carrying one reusable call to a
// method that does not exist, ended by its end-of-request frame; it reads
// each call's TRAILER and leaves the stream open, idle. It returns the
// streams once all trailers arrived (or the stream was reset).
func idleAttack(t *testing.T, c transport.Conn, n int) []transport.Stream {
	t.Helper()
	raw := append(header(t, wire.Header{Service: "No", Method: "such", Reuse: true}), wire.EndOfRequest...)
	sts := make([]transport.Stream, n)
	var wg sync.WaitGroup
	for i := range sts {
		st, err := c.OpenStream(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		sts[i] = st
		if _, err := st.Write(raw); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			st.SetReadDeadline(time.Now().Add(20 * time.Second))
			r := wire.NewReader(st, 0)
			defer r.Release()
			_, _, _ = r.ReadFrame() // the trailer (NOT_FOUND), or a reset
		})
	}
	wg.Wait()
	return sts
}

// A stranger that leaves reusable streams idle cannot make one connection
// hold more of them than the server's per-connection stream limit
// (WithMaxConcurrentStreams, 1,000 by default): the oldest idle streams
// beyond it are reset. Before, only QUIC's stream limit (10,000) bounded
// them, each holding a goroutine for the idle timeout (30 s).
func TestIdleStreamsBounded(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	g0 := runtime.NumGoroutine()
	var m0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	const n = 2000
	sts := idleAttack(t, c, n)
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Metrics().IdleStreams > 1000 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m1)
	idle := e.srv.Metrics().IdleStreams
	t.Logf("%d idle streams: server idle %d, goroutines +%d, heap in use +%d KiB, stacks +%d KiB (client and server)", n, idle, runtime.NumGoroutine()-g0, (int64(m1.HeapInuse)-int64(m0.HeapInuse))>>10, (int64(m1.StackInuse)-int64(m0.StackInuse))>>10)
	if idle > 1000 {
		t.Fatalf("the server keeps %d idle streams of one connection, want at most 1000", idle)
	}
	// Old idle streams were reset; the most recent one, which a
	// conforming client takes first, still carries a call.
	raw := append(header(t, wire.Header{Service: "No", Method: "such", Reuse: true}), wire.EndOfRequest...)
	answered := func(st transport.Stream) bool {
		st.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = st.Write(raw)
		r := wire.NewReader(st, 0)
		defer r.Release()
		flags, _, err := r.ReadFrame()
		return err == nil && flags&wire.FlagTrailer != 0
	}
	if !answered(sts[n-1]) {
		t.Error("the most recently idle stream was reset")
	}
	reset := 0
	for _, st := range sts[:50] {
		if !answered(st) {
			reset++
		}
	}
	if reset < 40 {
		t.Errorf("%d of the 50 oldest idle streams were reset, want most", reset)
	}
	for _, st := range sts {
		st.Reset(0)
	}
}

// Fresh keys do not escape WithMaxConnsPerAddr: a connection from an
// address that holds the cap is refused (UNAVAILABLE, SHUTDOWN) whatever
// its key; the connections the address holds are served, and a slot
// freed is usable again. Before, only WithMaxConns (10,000) bounded what
// one host could open with new keys. The QUIC connections come from
// loopback, which is not counted; the listener here reports them as
// coming from 192.0.2.7, as a remote host's would.
func TestMaxConnsPerAddr(t *testing.T) {
	key := testutil.Key(t, 1)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()), aster.WithMaxConnsPerAddr(2))
	srv.MustRegister(newTestService().service())
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(remoteListener{ln}) }()
	t.Cleanup(func() { srv.Close(); <-serveErr })
	dial := func(i int) (*aster.Client, error) {
		d := quic.NewDialer(testutil.Key(t, 70+i), nil)
		t.Cleanup(func() { d.Close() })
		c, err := aster.DialAddress(ctxT(t), ln.Addr(), aster.WithDialer(d))
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Close() })
		_, err = aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{})
		return c, err
	}
	var held []*aster.Client
	for i := range 2 {
		c, err := dial(i)
		if err != nil {
			t.Fatalf("connection %d within the cap: %v", i+1, err)
		}
		held = append(held, c)
	}
	_, err = dial(2)
	wantCode(t, err, status.Unavailable)
	wantReason(t, err, "too many connections from this address")
	for _, c := range held {
		if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{}); err != nil {
			t.Fatalf("served connection after a refusal: %v", err)
		}
	}
	held[0].Close()
	waitFor(t, func() bool { return srv.Metrics().Connections == 1 }, "the closed connection to end")
	if _, err := dial(3); err != nil {
		t.Fatalf("connection after a slot was freed: %v", err)
	}
}

// Loopback connections are not counted against WithMaxConnsPerAddr.
func TestMaxConnsPerAddrLoopback(t *testing.T) {
	e := newEnv(t, transports[1], aster.WithMaxConnsPerAddr(1))
	// e.client holds one connection from 127.0.0.1.
	for i := range 3 {
		if _, err := dialCall(t, e, testutil.Key(t, 80+i)); err != nil {
			t.Fatalf("loopback connection %d: %v", i+2, err)
		}
	}
}

// remoteListener reports its connections as coming from 192.0.2.7, a
// remote host.
type remoteListener struct{ transport.Listener }

func (l remoteListener) Accept(ctx context.Context) (transport.Conn, error) {
	c, err := l.Listener.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

type remoteConn struct{ transport.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4433} }

// A compressed request of a few KiB that expands to most of the 16 MiB
// frame limit is refused with RESOURCE_EXHAUSTED before the handler runs;
// the same message compressed no more than MaxDecompressionRatio is
// served. Before, the server decompressed it (16 MiB for a few KiB
// received) and the handler got it.
func TestCompressionBombRequest(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	bomb, err := cbor.Marshal(Msg{Text: strings.Repeat("z", 15<<20)})
	if err != nil {
		t.Fatal(err)
	}
	z := wire.Compress(bomb)
	raw := append(header(t, wire.Header{Service: "Test", Method: "echo"}), wire.AppendFrame(nil, wire.FlagCompressed, z)...)
	err, frames := exchange(t, c, raw, true)
	t.Logf("%d bytes compressed to %d: %v", len(bomb), len(z), err)
	wantCode(t, err, status.ResourceExhausted)
	if len(frames) != 0 || e.svc.calls.Load() != 0 {
		t.Fatalf("the bomb reached the handler (%d responses)", len(frames))
	}
}
