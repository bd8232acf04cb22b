package webtransport

import (
	"context"
	"crypto/tls"
	"errors"
	"runtime"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
)

// strangerConn dials ln's UDP socket as a bare HTTP/3 client that never
// sends CONNECT: a stranger's connection. It keeps the connection alive
// with keep-alives, as any QUIC stack does.
func strangerConn(t *testing.T, ctx context.Context, ln *Listener) *quicgo.Conn {
	t.Helper()
	qc, err := quicgo.DialAddr(ctx, ln.LocalAddr().String(),
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}},
		&quicgo.Config{KeepAlivePeriod: 100 * time.Millisecond, MaxIdleTimeout: 5 * time.Second, EnableDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
	return qc
}

// A QUIC connection that never identifies a session is closed after twice
// the handshake timeout (at least 5 s), with what its stalled streams held: each stream
// that sends the first byte of a two-byte stream type holds a goroutine
// of the HTTP/3 server, which waits for the rest without a deadline.
// Before, the connection and its goroutines stayed as long as the peer
// answered keep-alives.
func TestStrangerConnClosed(t *testing.T) {
	const hs = 300 * time.Millisecond
	ln, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{HandshakeTimeout: hs})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	g0 := runtime.NumGoroutine()
	qc := strangerConn(t, ctx, ln)
	start := time.Now()
	const n = 200
	for range n {
		st, err := qc.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte{0x40}); err != nil { // a two-byte varint, cut short
			t.Fatal(err)
		}
	}
	// The server holds a goroutine per stream meanwhile.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() < g0+n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	held := runtime.NumGoroutine() - g0
	select {
	case <-qc.Context().Done():
	case <-time.After(3 * ln.cfg.setupTimeout()):
		t.Fatalf("a connection with no session still open after %v (%d goroutines held for %d stalled streams)", time.Since(start), held, n)
	}
	var ae *quicgo.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || !ae.Remote {
		t.Fatalf("connection ended with %v, want the server's close", err)
	}
	if d, want := time.Since(start), ln.cfg.setupTimeout(); d < want*8/10 {
		t.Fatalf("closed after %v, before the set-up bound %v", d, want)
	}
	deadline = time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > g0+5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d stalled streams: %d goroutines held, closed after %v; %d goroutines left", n, held, time.Since(start), runtime.NumGoroutine()-g0)
	if left := runtime.NumGoroutine() - g0; left > 5 {
		t.Fatalf("%d goroutines left after the connection was closed", left)
	}

	// A well-behaved client is unaffected.
	d := NewDialer(testutil.Key(t, 2), &Config{HandshakeTimeout: hs})
	defer d.Close()
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ln.cfg.setupTimeout() + hs) // past the set-up bound: an identified connection stays
	select {
	case <-c.Done():
		t.Fatal("an identified connection was closed")
	default:
	}
	c.Close(transport.ConnNoError, "")
	sc.Close(transport.ConnNoError, "")
}

// At most MaxPendingConns connections wait to identify a session; a
// further one is closed at once with H3_EXCESSIVE_LOAD, and a new one is
// accepted again once a waiting one is gone.
func TestMaxPendingConns(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{MaxPendingConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a := strangerConn(t, ctx, ln)
	strangerConn(t, ctx, ln)
	third := strangerConn(t, ctx, ln)
	select {
	case <-third.Context().Done():
	case <-time.After(2 * time.Second):
		t.Fatal("a connection beyond MaxPendingConns was kept")
	}
	var ae *quicgo.ApplicationError
	if err := context.Cause(third.Context()); !errors.As(err, &ae) || ae.ErrorCode != quicgo.ApplicationErrorCode(http3.ErrCodeExcessiveLoad) {
		t.Fatalf("the third connection ended with %v, want H3_EXCESSIVE_LOAD", err)
	}
	_ = a.CloseWithError(0, "")
	time.Sleep(100 * time.Millisecond) // the server sees a's close
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatalf("dial once a pending connection left: %v", err)
	}
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Close(transport.ConnNoError, "")
	sc.Close(transport.ConnNoError, "")
}
