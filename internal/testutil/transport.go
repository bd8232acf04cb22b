package testutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

// Setup is one instance of a transport under test, as TestTransport needs it.
// TestTransport calls its make function once per subtest and closes the
// Listener and every connection it opens when the subtest ends; the make
// function registers (with t.Cleanup) whatever else must be released, such
// as a Dialer's socket.
type Setup struct {
	// Dialer dials Listener.
	Dialer transport.Dialer
	// DialerID is the endpoint id the Dialer proves to the peers it dials.
	DialerID trust.EndpointID
	// Listener accepts the Dialer's connections. Its Addr must be dialable
	// by Dialer.
	Listener transport.Listener
	// Impostor, if not nil, returns an address that claims the endpoint id
	// claimed but reaches an endpoint proving a different key, so dialing it
	// must fail with an error wrapping transport.ErrPeerMismatch. If nil,
	// TestTransport uses Listener.Addr() with its ID replaced by claimed,
	// which suits transports that route by network address.
	Impostor func(t *testing.T, claimed trust.EndpointID) discovery.EndpointAddr
}

// Timeouts of the conformance suite. They are generous so the suite passes
// under -race on slow machines; a hang shows up as a failure after
// suiteTimeout rather than a stuck test binary.
const (
	suiteTimeout = 60 * time.Second
	waitTimeout  = 15 * time.Second
)

// TestTransport runs the transport conformance suite. mk is called at the
// start of every subtest and returns a fresh Dialer/Listener pair.
//
// The suite checks: byte ordering in both directions and on streams opened by
// either side; half close; reset codes seen locally (Remote false) and by the
// peer (Remote true); Close of a stream; 200 concurrent streams on one
// connection (so the transport must allow at least 200 concurrently open
// incoming streams); an 8 MiB write read concurrently; read and write
// deadlines; Stream.Context; Conn.Close and Done on both sides; Listener.Close; endpoint ids
// on both sides; peer-mismatch detection; context cancellation of Dial,
// Accept, OpenStream and AcceptStream.
//
// Streams are only guaranteed to reach the peer's AcceptStream once the
// opener has written to them (QUIC announces a stream with its first frame),
// so the suite always writes before it expects an accept.
func TestTransport(t *testing.T, mk func(t *testing.T) Setup) {
	t.Helper()
	subtests := []struct {
		name string
		fn   func(t *testing.T, s Setup)
	}{
		{"Identity", testIdentity},
		{"Ordering", testOrdering},
		{"AcceptorOpens", testAcceptorOpens},
		{"HalfClose", testHalfClose},
		{"ResetByOpener", func(t *testing.T, s Setup) { testReset(t, s, true) }},
		{"ResetByAcceptor", func(t *testing.T, s Setup) { testReset(t, s, false) }},
		{"StreamClose", testStreamClose},
		{"StreamContext", testStreamContext},
		{"ConcurrentStreams", testConcurrentStreams},
		{"LargeWrite", testLargeWrite},
		{"ReadDeadline", testReadDeadline},
		{"WriteDeadline", testWriteDeadline},
		{"ConnCloseByDialer", func(t *testing.T, s Setup) { testConnClose(t, s, true) }},
		{"ConnCloseByAcceptor", func(t *testing.T, s Setup) { testConnClose(t, s, false) }},
		{"ListenerClose", testListenerClose},
		{"PeerMismatch", testPeerMismatch},
		{"ContextCancel", testContextCancel},
	}
	for _, st := range subtests {
		t.Run(st.name, func(t *testing.T) {
			s := mk(t)
			if s.Dialer == nil || s.Listener == nil {
				t.Fatal("testutil.TestTransport: make function returned a nil Dialer or Listener")
			}
			t.Cleanup(func() { _ = s.Listener.Close() })
			st.fn(t, s)
		})
	}
}

// suiteCtx returns a context that ends with the subtest or after suiteTimeout.
func suiteCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), suiteTimeout)
	t.Cleanup(cancel)
	return ctx
}

// connect dials s.Listener and returns both ends. Both are closed when the
// test ends.
func connect(t *testing.T, s Setup) (client, server transport.Conn) {
	t.Helper()
	ctx := suiteCtx(t)
	type result struct {
		c   transport.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := s.Listener.Accept(ctx)
		accepted <- result{c, err}
	}()
	client, err := s.Dialer.Dial(ctx, s.Listener.Addr())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { _ = client.Close(transport.ConnNoError, "test done") })
	r := <-accepted
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	t.Cleanup(func() { _ = r.c.Close(transport.ConnNoError, "test done") })
	return client, r.c
}

// streamPair opens a stream on opener, announces it with one byte and
// accepts it on acceptor (consuming that byte).
func streamPair(t *testing.T, opener, acceptor transport.Conn) (opened, accepted transport.Stream) {
	t.Helper()
	ctx := suiteCtx(t)
	opened, err := opener.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	if _, err := opened.Write([]byte{'h'}); err != nil {
		t.Fatalf("Write hello: %v", err)
	}
	accepted, err = acceptor.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("AcceptStream: %v", err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(accepted, b); err != nil || b[0] != 'h' {
		t.Fatalf("reading hello: %q, %v", b, err)
	}
	return opened, accepted
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x6173746572))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// writeChunks writes data in pseudo-random chunk sizes and then closes the
// write direction.
func writeChunks(s transport.Stream, data []byte, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 7))
	for len(data) > 0 {
		n := min(1+r.IntN(8192), len(data))
		w, err := s.Write(data[:n])
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if w != n {
			return fmt.Errorf("short write: %d of %d", w, n)
		}
		data = data[n:]
	}
	if err := s.CloseWrite(); err != nil {
		return fmt.Errorf("CloseWrite: %w", err)
	}
	return nil
}

// readAllWithin reads s to EOF, failing after waitTimeout.
func readAllWithin(s transport.Stream) ([]byte, error) {
	if err := s.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		return nil, fmt.Errorf("SetReadDeadline: %w", err)
	}
	defer func() { _ = s.SetReadDeadline(time.Time{}) }()
	return io.ReadAll(s)
}

// checkStreamError reports whether err is a *transport.StreamError with code
// and remote, and records a test error if not.
func checkStreamError(t *testing.T, what string, err error, code transport.StreamErrorCode, remote bool) {
	t.Helper()
	var se *transport.StreamError
	if !errors.As(err, &se) {
		t.Errorf("%s: got error %v (%T), want *transport.StreamError{Code: %#x, Remote: %v}", what, err, err, uint64(code), remote)
		return
	}
	if se.Code != code || se.Remote != remote {
		t.Errorf("%s: got StreamError{Code: %#x, Remote: %v}, want {Code: %#x, Remote: %v}", what, uint64(se.Code), se.Remote, uint64(code), remote)
	}
}

// checkConnError records a test error unless err is a *transport.ConnError
// with the given code and remote flag; reason is checked when not empty.
func checkConnError(t *testing.T, what string, err error, code transport.ConnErrorCode, reason string, remote bool) {
	t.Helper()
	var ce *transport.ConnError
	if !errors.As(err, &ce) {
		t.Errorf("%s: got error %v (%T), want *transport.ConnError", what, err, err)
		return
	}
	if ce.Code != code || ce.Remote != remote || (reason != "" && ce.Reason != reason) {
		t.Errorf("%s: got ConnError{Code: %#x, Reason: %q, Remote: %v}, want {Code: %#x, Reason: %q, Remote: %v}",
			what, uint64(ce.Code), ce.Reason, ce.Remote, uint64(code), reason, remote)
	}
}

// waitDone fails the test unless ch is closed within waitTimeout.
func waitDone(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitTimeout):
		t.Errorf("%s: not closed after %v", what, waitTimeout)
	}
}

// async runs fn in a goroutine and returns a channel that yields its error.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

// await returns the error from ch, or a timeout error after waitTimeout.
func await(ch <-chan error) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(waitTimeout):
		return fmt.Errorf("no result after %v", waitTimeout)
	}
}

func testIdentity(t *testing.T, s Setup) {
	client, server := connect(t, s)
	listenerID := s.Listener.Addr().ID
	if got := client.LocalID(); got != s.DialerID {
		t.Errorf("client LocalID = %s, want dialer id %s", got.Short(), s.DialerID.Short())
	}
	if got := client.RemoteID(); got != listenerID {
		t.Errorf("client RemoteID = %s, want listener id %s", got.Short(), listenerID.Short())
	}
	if got := server.LocalID(); got != listenerID {
		t.Errorf("server LocalID = %s, want listener id %s", got.Short(), listenerID.Short())
	}
	if got := server.RemoteID(); got != s.DialerID {
		t.Errorf("server RemoteID = %s, want dialer id %s", got.Short(), s.DialerID.Short())
	}
	if client.RemoteAddr() == nil || server.RemoteAddr() == nil {
		t.Errorf("RemoteAddr: client %v, server %v; want non-nil", client.RemoteAddr(), server.RemoteAddr())
	}
	select {
	case <-client.Done():
		t.Error("client Done closed on an open connection")
	case <-server.Done():
		t.Error("server Done closed on an open connection")
	default:
	}
}

// exchange sends distinct data both ways on a stream pair at the same time
// and checks that each side receives exactly what the other sent.
func exchange(t *testing.T, a, b transport.Stream, size int) {
	t.Helper()
	dataA, dataB := pattern(1, size), pattern(2, size+17)
	writeA := async(func() error { return writeChunks(a, dataA, 11) })
	writeB := async(func() error { return writeChunks(b, dataB, 12) })
	var gotAtB, gotAtA []byte
	readB := async(func() (err error) { gotAtB, err = readAllWithin(b); return err })
	readA := async(func() (err error) { gotAtA, err = readAllWithin(a); return err })
	for what, ch := range map[string]<-chan error{"write a->b": writeA, "write b->a": writeB, "read at b": readB, "read at a": readA} {
		if err := await(ch); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	if !bytes.Equal(gotAtB, dataA) {
		t.Errorf("a->b: received %d bytes that differ from the %d sent", len(gotAtB), len(dataA))
	}
	if !bytes.Equal(gotAtA, dataB) {
		t.Errorf("b->a: received %d bytes that differ from the %d sent", len(gotAtA), len(dataB))
	}
}

func testOrdering(t *testing.T, s Setup) {
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	exchange(t, cs, ss, 1<<20)
}

func testAcceptorOpens(t *testing.T, s Setup) {
	client, server := connect(t, s)
	ss, cs := streamPair(t, server, client)
	exchange(t, ss, cs, 64<<10)
}

func testHalfClose(t *testing.T, s Setup) {
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	if _, err := cs.Write([]byte("ping")); err != nil {
		t.Fatalf("client Write: %v", err)
	}
	if err := cs.CloseWrite(); err != nil {
		t.Fatalf("client CloseWrite: %v", err)
	}
	if _, err := cs.Write([]byte("more")); err == nil {
		t.Error("client Write after CloseWrite succeeded, want an error")
	}
	got, err := readAllWithin(ss)
	if err != nil || string(got) != "ping" {
		t.Fatalf("server read %q, %v; want \"ping\" then EOF", got, err)
	}
	if n, err := ss.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Errorf("server Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
	// The reverse direction still works after the client's half close.
	if _, err := ss.Write([]byte("pong")); err != nil {
		t.Fatalf("server Write after peer's CloseWrite: %v", err)
	}
	if err := ss.CloseWrite(); err != nil {
		t.Fatalf("server CloseWrite: %v", err)
	}
	got, err = readAllWithin(cs)
	if err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v; want \"pong\" then EOF", got, err)
	}
}

func testReset(t *testing.T, s Setup, byOpener bool) {
	const code = transport.StreamErrorCode(0x2a)
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	resetter, peer := cs, ss
	if !byOpener {
		resetter, peer = ss, cs
	}

	// A Read pending on the resetting side is unblocked by the reset.
	pending := async(func() error {
		_, err := resetter.Read(make([]byte, 16))
		return err
	})
	time.Sleep(20 * time.Millisecond)
	resetter.Reset(code)
	checkStreamError(t, "pending local Read", await(pending), code, false)
	_, err := resetter.Read(make([]byte, 16))
	checkStreamError(t, "local Read after Reset", err, code, false)
	_, err = resetter.Write([]byte("x"))
	checkStreamError(t, "local Write after Reset", err, code, false)

	// The peer's Read fails with the code once the reset arrives.
	_ = peer.SetReadDeadline(time.Now().Add(waitTimeout))
	for {
		_, err = peer.Read(make([]byte, 16))
		if err != nil {
			break
		}
	}
	checkStreamError(t, "peer Read after Reset", err, code, true)

	// The peer's Write fails with the code once the stop arrives.
	_ = peer.SetWriteDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 1024)
	for {
		if _, err = peer.Write(buf); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	checkStreamError(t, "peer Write after Reset", err, code, true)

	resetter.Reset(code + 1) // second Reset is a no-op
	if err := resetter.Close(); err != nil {
		t.Errorf("Close after Reset: %v", err)
	}
	_ = peer.Close()
	_, err = resetter.Read(make([]byte, 16))
	checkStreamError(t, "local Read after Reset and Close", err, code, false)
}

func testStreamClose(t *testing.T, s Setup) {
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	if _, err := cs.Write([]byte("bye")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := cs.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := cs.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Close sends everything written before it, then EOF.
	got, err := readAllWithin(ss)
	if err != nil || string(got) != "bye" {
		t.Fatalf("peer read %q, %v; want \"bye\" then EOF", got, err)
	}
	// Close stopped reading, so the peer's writes fail with CodeNoError.
	_ = ss.SetWriteDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, 1024)
	for {
		if _, err = ss.Write(buf); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	checkStreamError(t, "peer Write after Close", err, transport.CodeNoError, true)
	_ = ss.Close()
}

// checkNotDone records a test error if ctx is already done.
func checkNotDone(t *testing.T, what string, ctx context.Context) {
	t.Helper()
	if err := ctx.Err(); err != nil {
		t.Errorf("%s: context done (%v, cause %v) on an unfinished write direction", what, err, context.Cause(ctx))
	}
}

func testStreamContext(t *testing.T, s Setup) {
	client, server := connect(t, s)

	// CloseWrite finishes the local write direction only.
	cs, ss := streamPair(t, client, server)
	checkNotDone(t, "fresh stream", cs.Context())
	checkNotDone(t, "fresh accepted stream", ss.Context())
	if err := cs.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	waitDone(t, "Context after CloseWrite", cs.Context().Done())
	if _, err := readAllWithin(ss); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	checkNotDone(t, "peer after reading EOF", ss.Context())

	// Reset finishes the local write direction and, once the peer learns
	// that reading stopped, the peer's.
	cs, ss = streamPair(t, client, server)
	cs.Reset(transport.CodeCancel)
	waitDone(t, "Context after Reset", cs.Context().Done())
	waitDone(t, "peer Context after Reset", ss.Context().Done())

	// Close before reading everything stops the peer's write direction.
	cs, ss = streamPair(t, client, server)
	if err := ss.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitDone(t, "Context after Close", ss.Context().Done())
	waitDone(t, "peer Context after Close without reading", cs.Context().Done())

	// Closing the connection finishes every stream on both ends.
	cs, ss = streamPair(t, client, server)
	ctxC, ctxS := cs.Context(), ss.Context()
	checkNotDone(t, "stream before Conn.Close", ctxC)
	_ = client.Close(transport.ConnNoError, "done")
	waitDone(t, "Context after Conn.Close", ctxC.Done())
	waitDone(t, "peer Context after Conn.Close", ctxS.Done())
}

func testConcurrentStreams(t *testing.T, s Setup) {
	const streams = 200
	client, server := connect(t, s)
	ctx, cancel := context.WithCancel(suiteCtx(t))
	defer cancel()

	var serverWG sync.WaitGroup
	serverWG.Go(func() {
		for {
			st, err := server.AcceptStream(ctx)
			if err != nil {
				return
			}
			serverWG.Go(func() {
				_, err := io.Copy(st, st)
				if err != nil {
					t.Errorf("server echo: %v", err)
					st.Reset(transport.CodeInternal)
					return
				}
				if err := st.CloseWrite(); err != nil {
					t.Errorf("server CloseWrite: %v", err)
				}
			})
		}
	})

	// All streams are opened before any data flows, so all 200 are open at
	// the same time.
	var opened, done sync.WaitGroup
	opened.Add(streams)
	start := make(chan struct{})
	for i := range streams {
		done.Go(func() {
			st, err := client.OpenStream(ctx)
			opened.Done()
			if err != nil {
				t.Errorf("stream %d: OpenStream: %v", i, err)
				return
			}
			<-start
			data := pattern(uint64(1000+i), 1024+i*61)
			write := async(func() error { return writeChunks(st, data, uint64(i)) })
			got, err := readAllWithin(st)
			if werr := await(write); werr != nil {
				t.Errorf("stream %d: %v", i, werr)
			}
			if err != nil {
				t.Errorf("stream %d: read echo: %v", i, err)
			} else if !bytes.Equal(got, data) {
				t.Errorf("stream %d: echo of %d bytes differs (got %d bytes)", i, len(data), len(got))
			}
			_ = st.Close()
		})
	}
	opened.Wait()
	close(start)
	done.Wait()
	cancel()
	serverWG.Wait()
}

func testLargeWrite(t *testing.T, s Setup) {
	const size = 8 << 20
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	data := pattern(42, size)
	var got []byte
	read := async(func() (err error) { got, err = readAllWithin(ss); return err })
	n, err := cs.Write(data)
	if err != nil || n != size {
		t.Fatalf("Write of %d bytes = %d, %v", size, n, err)
	}
	if err := cs.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if err := await(read); err != nil {
		t.Fatalf("peer read: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("peer received %d bytes that differ from the %d written", len(got), size)
	}
}

// checkTimeout records a test error unless err is a timeout error.
func checkTimeout(t *testing.T, what string, err error) {
	t.Helper()
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("%s: no error, want a timeout", what)
	case !os.IsTimeout(err):
		t.Errorf("%s: os.IsTimeout(%v (%T)) = false", what, err, err)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("%s: %v (%T) is not a net.Error with Timeout() true", what, err, err)
	}
}

func testReadDeadline(t *testing.T, s Setup) {
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	buf := make([]byte, 16)

	// A deadline in the future expires during the Read.
	if err := ss.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	start := time.Now()
	_, err := ss.Read(buf)
	checkTimeout(t, "Read past deadline", err)
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("Read timed out after %v, before the 50ms deadline", d)
	}

	// A deadline in the past fails Reads at once.
	_ = ss.SetReadDeadline(time.Now().Add(-time.Second))
	_, err = ss.Read(buf)
	checkTimeout(t, "Read with past deadline", err)

	// Setting a deadline unblocks a pending Read.
	_ = ss.SetReadDeadline(time.Time{})
	pending := async(func() error { _, err := ss.Read(buf); return err })
	time.Sleep(30 * time.Millisecond)
	_ = ss.SetReadDeadline(time.Now())
	checkTimeout(t, "pending Read after SetReadDeadline(now)", await(pending))

	// Clearing the deadline makes the stream readable again.
	if err := ss.SetReadDeadline(time.Time{}); err != nil {
		t.Fatalf("clearing the read deadline: %v", err)
	}
	if _, err := cs.Write([]byte("b")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got := async(func() error {
		n, err := ss.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != "b" {
			return fmt.Errorf("read %q, want \"b\"", buf[:n])
		}
		return nil
	})
	if err := await(got); err != nil {
		t.Fatalf("Read after clearing the deadline: %v", err)
	}
	// The other direction was not affected.
	if _, err := ss.Write([]byte("c")); err != nil {
		t.Fatalf("server Write: %v", err)
	}
	_ = cs.SetReadDeadline(time.Now().Add(waitTimeout))
	if n, err := cs.Read(buf); err != nil || string(buf[:n]) != "c" {
		t.Fatalf("client Read = %q, %v; want \"c\"", buf[:n], err)
	}
}

func testWriteDeadline(t *testing.T, s Setup) {
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	// The peer does not read, so flow control eventually blocks the writer
	// and the deadline fires.
	if err := cs.SetWriteDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatalf("SetWriteDeadline: %v", err)
	}
	chunk := make([]byte, 64<<10)
	var err error
	for written := 0; written < 256<<20; written += len(chunk) {
		if _, err = cs.Write(chunk); err != nil {
			break
		}
	}
	checkTimeout(t, "Write past deadline with a peer that does not read", err)
	// Clearing the deadline lets writes continue once the peer reads.
	if err := cs.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatalf("clearing the write deadline: %v", err)
	}
	drain := async(func() error {
		_, err := readAllWithin(ss)
		return err
	})
	if _, err := cs.Write([]byte("after")); err != nil {
		t.Fatalf("Write after clearing the deadline: %v", err)
	}
	if err := cs.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if err := await(drain); err != nil {
		t.Fatalf("peer drain: %v", err)
	}
}

func testConnClose(t *testing.T, s Setup, byDialer bool) {
	const (
		code   = transport.ConnErrorCode(0x17)
		reason = "closing for the test"
	)
	client, server := connect(t, s)
	cs, ss := streamPair(t, client, server)
	closer, peer := client, server
	closerStream, peerStream := cs, ss
	if !byDialer {
		closer, peer = server, client
		closerStream, peerStream = ss, cs
	}
	ctx := suiteCtx(t)
	peerAccept := async(func() error { _, err := peer.AcceptStream(ctx); return err })
	peerRead := async(func() error { _, err := peerStream.Read(make([]byte, 16)); return err })
	time.Sleep(20 * time.Millisecond)

	if err := closer.Close(code, reason); err != nil {
		t.Errorf("Close: %v", err)
	}
	waitDone(t, "closer Done", closer.Done())
	waitDone(t, "peer Done", peer.Done())

	checkConnError(t, "peer AcceptStream", await(peerAccept), code, reason, true)
	checkConnError(t, "peer stream Read", await(peerRead), code, "", true)
	_, err := closerStream.Read(make([]byte, 16))
	checkConnError(t, "closer stream Read", err, code, "", false)
	_, err = closerStream.Write([]byte("x"))
	checkConnError(t, "closer stream Write", err, code, "", false)
	_, err = closer.OpenStream(ctx)
	checkConnError(t, "closer OpenStream", err, code, "", false)
	_, err = peer.OpenStream(ctx)
	checkConnError(t, "peer OpenStream", err, code, "", true)
	_, err = closer.AcceptStream(ctx)
	checkConnError(t, "closer AcceptStream", err, code, "", false)

	_ = closer.Close(transport.ConnNoError, "again") // no-op, must not panic
	_ = peer.Close(transport.ConnNoError, "again")
	closerStream.Reset(transport.CodeCancel)
	_ = peerStream.Close()
}

func testListenerClose(t *testing.T, s Setup) {
	client, server := connect(t, s)
	ctx := suiteCtx(t)
	pending := async(func() error { _, err := s.Listener.Accept(ctx); return err })
	time.Sleep(20 * time.Millisecond)
	if err := s.Listener.Close(); err != nil {
		t.Errorf("Listener.Close: %v", err)
	}
	if err := await(pending); !errors.Is(err, transport.ErrListenerClosed) {
		t.Errorf("pending Accept after Close: %v, want an error wrapping ErrListenerClosed", err)
	}
	if _, err := s.Listener.Accept(ctx); !errors.Is(err, transport.ErrListenerClosed) {
		t.Errorf("Accept after Close: %v, want an error wrapping ErrListenerClosed", err)
	}
	_ = s.Listener.Close() // second Close must not panic

	// Connections accepted before the Close keep working.
	select {
	case <-server.Done():
		t.Fatal("accepted connection closed by Listener.Close")
	default:
	}
	cs, ss := streamPair(t, client, server)
	exchange(t, cs, ss, 1024)

	// New dials fail (quickly or at the context deadline).
	dctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if c, err := s.Dialer.Dial(dctx, s.Listener.Addr()); err == nil {
		_ = c.Close(transport.ConnNoError, "")
		t.Error("Dial after Listener.Close succeeded")
	}
}

func testPeerMismatch(t *testing.T, s Setup) {
	claimed := trust.IDOf(Key(t, 0x5eed))
	var addr discovery.EndpointAddr
	if s.Impostor != nil {
		addr = s.Impostor(t, claimed)
	} else {
		addr = s.Listener.Addr()
		addr.ID = claimed
	}
	ctx, cancel := context.WithTimeout(suiteCtx(t), waitTimeout)
	defer cancel()
	c, err := s.Dialer.Dial(ctx, addr)
	if err == nil {
		_ = c.Close(transport.ConnNoError, "")
		t.Fatal("Dial of an address whose id another key answers succeeded")
	}
	if !errors.Is(err, transport.ErrPeerMismatch) {
		t.Fatalf("Dial error %v does not wrap ErrPeerMismatch", err)
	}
	// The listener is still usable afterwards.
	connect(t, s)
}

func testContextCancel(t *testing.T, s Setup) {
	client, server := connect(t, s)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	if c, err := s.Dialer.Dial(canceled, s.Listener.Addr()); !errors.Is(err, context.Canceled) {
		if err == nil {
			_ = c.Close(transport.ConnNoError, "")
		}
		t.Errorf("Dial with canceled context: %v, want an error wrapping context.Canceled", err)
	}
	if _, err := client.OpenStream(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("OpenStream with canceled context: %v, want an error wrapping context.Canceled", err)
	}
	if _, err := server.AcceptStream(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("AcceptStream with canceled context: %v, want an error wrapping context.Canceled", err)
	}
	if _, err := s.Listener.Accept(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("Accept with canceled context: %v, want an error wrapping context.Canceled", err)
	}

	// Cancellation while blocked.
	for name, fn := range map[string]func(ctx context.Context) error{
		"AcceptStream": func(ctx context.Context) error { _, err := server.AcceptStream(ctx); return err },
		"client AcceptStream": func(ctx context.Context) error {
			_, err := client.AcceptStream(ctx)
			return err
		},
		"Accept": func(ctx context.Context) error { _, err := s.Listener.Accept(ctx); return err },
	} {
		ctx, cancel := context.WithCancel(context.Background())
		res := async(func() error { return fn(ctx) })
		time.Sleep(20 * time.Millisecond)
		cancel()
		if err := await(res); !errors.Is(err, context.Canceled) {
			t.Errorf("%s canceled while blocked: %v, want an error wrapping context.Canceled", name, err)
		}
	}

	// The connection is unaffected by the canceled calls.
	cs, ss := streamPair(t, client, server)
	exchange(t, cs, ss, 1024)
}
