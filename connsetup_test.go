package aster_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Connection set-up (PROTOCOL.md 17.6): over QUIC a client
// that dials for a call sends the call right behind its admission request
// instead of waiting for the verdict. These tests hold the security side of
// it: the server dispatches no call before admission succeeded, and a
// refused client's first call fails with the refusal.

// countingService counts the calls its handler ran.
func countingService(n *atomic.Int64) *handler.Service {
	return handler.NewService("Count", 1).
		Handle("hit", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) {
			n.Add(1)
			return m, nil
		}))
}

// A refused client's first call, sent before the verdict, is never
// dispatched and fails with the server's refusal.
func TestPipelinedFirstCallRefused(t *testing.T) {
	g := newGated(t, enroll.Policy{}) // consumers need a credential
	var hits atomic.Int64
	g.srv.MustRegister(countingService(&hits))
	for i := range 3 {
		c := aster.NewClient(g.addr, aster.WithSecretKey(trust.GenerateKey()))
		_, err := aster.CallUnary[Msg](ctxT(t), c, "Count.hit", &Msg{N: i})
		c.Close()
		wantCode(t, err, status.Unauthenticated)
		if !strings.Contains(err.Error(), "requires an enrollment credential") {
			t.Errorf("refused first call: %v, want the server's refusal", err)
		}
	}
	// An admitted client's call shows the handler is reachable, so that
	// the count above is not zero for another reason.
	id := g.enroll(t, "edge-node-7")
	c := aster.NewClient(g.addr, withIdentity(t, id, ""))
	defer c.Close()
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Count.hit", &Msg{}); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (refused clients' calls were dispatched)", n)
	}
}

// An admitted client's pipelined first call runs with the capabilities
// its credential grants: the server applied the verdict before it.
func TestPipelinedFirstCallCapabilities(t *testing.T) {
	g := newGated(t, enroll.Policy{})
	id := g.enroll(t, "edge-node-7", "ops.status")
	for _, tc := range []struct {
		method string
		want   status.Code
	}{
		{"Ops.status", status.OK},
		{"Ops.both", status.PermissionDenied}, // needs ops.ingest too
		{"Ops.open", status.OK},
	} {
		c := aster.NewClient(g.addr, withIdentity(t, id, ""))
		_, err := aster.CallUnary[Msg](ctxT(t), c, tc.method, &Msg{Text: "x"})
		c.Close()
		if got := status.CodeOf(err); got != tc.want {
			t.Errorf("first call %s: %v, want %v", tc.method, err, tc.want)
		}
	}
}

// Against a server without a gate the first call and the contract fetch go
// out with the admission request too.
func TestPipelinedFirstCallNoGate(t *testing.T) {
	srv := aster.NewServer(aster.WithLogger(quietLogger()))
	var hits atomic.Int64
	srv.MustRegister(countingService(&hits))
	ln, err := quic.Listen("127.0.0.1:0", srv.SecretKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	c := aster.NewClient(ln.Addr())
	defer c.Close()
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Count.hit", &Msg{}); err != nil {
		t.Fatal(err)
	}
	c2 := aster.NewClient(ln.Addr())
	defer c2.Close()
	if _, _, err := c2.Contract(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), c2, "Count.hit", &Msg{}); err != nil {
		t.Fatal(err)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

// rawQUICServer accepts one QUIC connection and hands it to the test, which
// plays the server byte by byte.
func rawQUICServer(t *testing.T) (aster.Address, <-chan transport.Conn) {
	t.Helper()
	key := testutil.Key(t, 41)
	ln, err := quic.Listen("127.0.0.1:0", key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan transport.Conn, 1)
	go func() {
		conn, err := ln.Accept(context.Background())
		if err == nil {
			conns <- conn
		}
		close(conns)
	}()
	return ln.Addr(), conns
}

func readHeader(t *testing.T, r *wire.Reader) *wire.Header {
	t.Helper()
	flags, payload, err := r.ReadFrame()
	if err != nil {
		t.Fatalf("reading a call header: %v", err)
	}
	if flags&wire.FlagHeader == 0 {
		t.Fatalf("first frame has flags %s, want HEADER", wire.FlagString(flags))
	}
	h, err := wire.DecodeHeader(payload)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// On the wire: the client's first call stream arrives while its admission
// request is still unanswered, on the next stream; a refusal sent then
// fails that call with the refusal, and the client closes the connection
// itself without waiting for the server to.
func TestFirstCallTravelsWithAdmission(t *testing.T) {
	addr, conns := rawQUICServer(t)
	c := aster.NewClient(addr)
	defer c.Close()
	type result struct{ err error }
	res := make(chan result, 1)
	go func() {
		_, err := aster.CallUnary[Msg](context.Background(), c, "Test.echo", &Msg{N: 7})
		res <- result{err}
	}()

	var conn transport.Conn
	select {
	case conn = <-conns:
	case <-time.After(20 * time.Second):
		t.Fatal("no connection")
	}
	defer conn.Close(transport.ConnNoError, "")
	ctx := ctxT(t)
	admit, err := conn.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ar := wire.NewReader(admit, 1<<20)
	defer ar.Release()
	if h := readHeader(t, ar); h.Service != wire.ControlService || h.Method != wire.MethodAdmit {
		t.Fatalf("first stream calls %s.%s, want the admission", h.Service, h.Method)
	}
	if flags, _, err := ar.ReadFrame(); err != nil || flags != 0 {
		t.Fatalf("admission request: flags %d, %v", flags, err)
	}
	if _, _, err := ar.ReadFrame(); err != io.EOF {
		t.Fatalf("admission request not ended: %v", err)
	}

	// Unanswered admission; the call is already here.
	call, err := conn.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("the first call did not come with the admission request: %v", err)
	}
	cr := wire.NewReader(call, 1<<20)
	defer cr.Release()
	if h := readHeader(t, cr); h.Service != "Test" || h.Method != "echo" {
		t.Fatalf("second stream calls %s.%s", h.Service, h.Method)
	}

	refusal, err := wire.AppendTrailer(nil, &wire.Trailer{Code: uint32(status.Unauthenticated), Message: "admission refused: not you"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admit.Write(refusal); err != nil {
		t.Fatal(err)
	}
	admit.Close()

	select {
	case r := <-res:
		wantCode(t, r.err, status.Unauthenticated)
		if !strings.Contains(r.err.Error(), "not you") {
			t.Errorf("call error %v, want the refusal", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the call did not end after the refusal")
	}
	select {
	case <-conn.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the client kept the refused connection open")
	}
}

// DialAddress still reports a refusal itself: it waits for the verdict.
func TestDialAddressWaitsForVerdict(t *testing.T) {
	addr, conns := rawQUICServer(t)
	dialed := make(chan error, 1)
	go func() {
		c, err := aster.DialAddress(context.Background(), addr)
		if err == nil {
			c.Close()
		}
		dialed <- err
	}()
	var conn transport.Conn
	select {
	case conn = <-conns:
	case <-time.After(20 * time.Second):
		t.Fatal("no connection")
	}
	defer conn.Close(transport.ConnNoError, "")
	admit, err := conn.AcceptStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	ar := wire.NewReader(admit, 1<<20)
	defer ar.Release()
	readHeader(t, ar)
	select {
	case err := <-dialed:
		t.Fatalf("DialAddress returned %v before the verdict", err)
	default:
	}
	refusal, _ := wire.AppendTrailer(nil, &wire.Trailer{Code: uint32(status.Unauthenticated), Message: "admission refused: not you"}, false)
	admit.Write(refusal)
	admit.Close()
	select {
	case err := <-dialed:
		wantCode(t, err, status.Unauthenticated)
	case <-time.After(20 * time.Second):
		t.Fatal("DialAddress did not return after the refusal")
	}
}
