package aster_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// reuseClient dials e with stream reuse on or off, whatever the default.
func reuseClient(t *testing.T, e *env, on bool) *aster.Client {
	t.Helper()
	c, err := aster.DialAddress(context.Background(), e.addr, aster.WithDialer(e.dialer(testutil.Key(t, 9))), aster.WithStreamReuse(on))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Calls one after the other share one stream, whatever their pattern and
// outcome (OK or an error status with its trailer), on every transport;
// both sides count it.
func TestStreamReuseSequential(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := reuseClient(t, e, true)
		before := c.Metrics()
		for i := range 10 {
			if r, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{N: i}); err != nil || r.N != i {
				t.Fatalf("call %d: %v, %v", i, r, err)
			}
			_, err := aster.CallUnary[Msg](ctx, c, "Test.fail", &Msg{Text: "x", N: 142})
			wantCode(t, err, 142)
		}
		ss, err := aster.CallServerStream[Msg](ctx, c, "Test.count", &Msg{N: 3})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, err := range ss.All() {
			if err != nil {
				t.Fatal(err)
			}
			n++
		}
		ss.Close()
		cs, err := aster.CallClientStream[Msg, Msg](ctx, c, "Test.sum")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if err := cs.Send(&Msg{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := cs.CloseAndRecv(); err != nil || r.N != 10 {
			t.Fatalf("sum: %v, %v", r, err)
		}
		var tr handler.Metadata
		bidi, err := aster.CallBidiStream[Msg, Msg](ctx, c, "Test.chat", aster.ResponseTrailer(&tr))
		if err != nil {
			t.Fatal(err)
		}
		if err := bidi.Send(&Msg{Text: "a", N: 2}); err != nil {
			t.Fatal(err)
		}
		bidi.CloseSend()
		if r, err := bidi.Recv(); err != nil || r.N != 4 {
			t.Fatalf("chat: %v, %v", r, err)
		}
		if _, err := bidi.Recv(); err != io.EOF {
			t.Fatalf("chat end: %v", err)
		}
		bidi.Close()
		if tr["chat-done"] != "yes" {
			t.Fatalf("chat trailer %v", tr)
		}
		got := c.Metrics()
		calls := uint64(20 + 3)
		if opened, reused := got.StreamsOpened-before.StreamsOpened, got.StreamsReused-before.StreamsReused; opened != 1 || reused != calls-1 {
			t.Fatalf("%d calls one after the other opened %d streams and reused %d, want 1 and %d", calls, opened, reused, calls-1)
		}
		if got.IdleStreams != 1 {
			t.Fatalf("%d idle streams, want 1", got.IdleStreams)
		}
		if m := e.srv.Metrics(); m.StreamsReused < calls-1 {
			t.Fatalf("server counted %d reused streams, want at least %d", m.StreamsReused, calls-1)
		}
	})
}

// WithStreamReuse(false) gives every call its own stream, as does a server
// that does not offer reuse (WithStreamIdleTimeout(-1)).
func TestStreamReuseOff(t *testing.T) {
	check := func(t *testing.T, e *env, c *aster.Client) {
		for i := range 5 {
			if _, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		if m := c.Metrics(); m.StreamsReused != 0 || m.IdleStreams != 0 {
			t.Fatalf("client metrics %+v with reuse off", m)
		}
		if m := e.srv.Metrics(); m.StreamsReused != 0 {
			t.Fatalf("server reused %d streams with reuse off", m.StreamsReused)
		}
	}
	for _, tk := range transports {
		t.Run(tk.name+"/client", func(t *testing.T) {
			e := newEnv(t, tk)
			check(t, e, reuseClient(t, e, false))
		})
		t.Run(tk.name+"/server", func(t *testing.T) {
			e := newEnv(t, tk, aster.WithStreamIdleTimeout(-1))
			check(t, e, reuseClient(t, e, true))
		})
	}
}

// A call that did not end cleanly (deadline, cancellation, a stream closed
// before its end) discards its stream; the next call gets a new one and
// succeeds. A call whose oversized request the server refused skips the
// rest of it and keeps the stream.
func TestStreamReuseDiscardsUnclean(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := reuseClient(t, e, true)
		echo := func() {
			t.Helper()
			if _, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{N: 1}); err != nil {
				t.Fatal(err)
			}
		}
		echo()
		opened := func() uint64 { return c.Metrics().StreamsOpened }
		base := opened()

		dctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_, err := aster.CallUnary[Msg](dctx, c, "Test.sleep", &Msg{N: 10_000})
		cancel()
		wantCode(t, err, status.DeadlineExceeded)
		// The server's DEADLINE_EXCEEDED trailer may be read before the
		// client's own deadline fires, which ends the call cleanly: only
		// the two calls below are sure to discard their streams.
		echo()

		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := aster.CallUnary[Msg](cctx, c, "Test.hold", &Msg{})
			errc <- err
		}()
		waitEvent(t, e.svc.holding, "the call reached the handler")
		cancel()
		wantCode(t, <-errc, status.Canceled)
		echo()

		ss, err := aster.CallServerStream[Msg](ctx, c, "Test.count", &Msg{N: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ss.Recv(); err != nil {
			t.Fatal(err)
		}
		ss.Close() // before its end
		before := c.Metrics()
		echo()
		after := c.Metrics()
		if after.StreamsOpened != before.StreamsOpened+1 && after.StreamsReused != before.StreamsReused+1 {
			t.Fatalf("metrics %+v then %+v", before, after)
		}
		// Each unclean call above discarded the stream it used: the idle
		// pool never holds more than the one stream of the last clean call.
		if n := c.Metrics().IdleStreams; n != 1 {
			t.Fatalf("%d idle streams, want 1", n)
		}
		if opened() < base+2 {
			t.Fatalf("opened %d streams after two unclean calls, want at least 2", opened()-base)
		}
	})
}

// An oversized request the server refuses (RESOURCE_EXHAUSTED) is skipped
// to its end-of-request frame: the stream stays usable.
func TestStreamReuseSkipsRefusedRequest(t *testing.T) {
	forEachTransportOpts(t, []aster.ServerOption{aster.WithMaxFrameSize(64 << 10)}, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := reuseClient(t, e, true)
		for range 3 {
			_, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{Data: make([]byte, 200<<10)})
			wantCode(t, err, status.ResourceExhausted)
			if _, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{Text: "ok"}); err != nil {
				t.Fatal(err)
			}
		}
		if m := c.Metrics(); m.StreamsReused != 5 {
			t.Fatalf("client metrics %+v, want 5 reused", m)
		}
	})
}

// Concurrent calls each have their own stream; the idle pool never holds
// more streams than there were calls at once.
func TestStreamReuseConcurrent(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := reuseClient(t, e, true)
		var wg sync.WaitGroup
		for g := range 100 {
			wg.Go(func() {
				for i := range 10 {
					r, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{N: g*100 + i})
					if err != nil || r.N != g*100+i {
						t.Errorf("call %d/%d: %v, %v", g, i, r, err)
						return
					}
				}
			})
		}
		wg.Wait()
		m := c.Metrics()
		if m.IdleStreams > 100 || m.StreamsReused == 0 { // never more idle than the callers
			t.Fatalf("client metrics %+v", m)
		}
		if m.StreamsOpened+m.StreamsReused != 1000+1 { // and the admission call
			t.Fatalf("client metrics %+v: opened+reused != calls", m)
		}
	})
}

// Session calls (pinned to the session's connection) reuse streams too and
// reach the same instance; ending the session works on a reused stream.
func TestStreamReuseSession(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := reuseClient(t, e, true)
		s := c.NewSession()
		for i := range 5 {
			r, err := aster.CallUnary[Msg](ctx, s, "Counter.add", &Msg{N: 1})
			if err != nil || r.N != i+1 {
				t.Fatalf("add %d: %+v, %v", i, r, err)
			}
		}
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, e.closes, "the session instance closed")
		if m := c.Metrics(); m.StreamsReused < 5 {
			t.Fatalf("client metrics %+v", m)
		}
	})
}

// The server waits for the next call on an idle stream for its idle
// timeout, holding no call in flight, then resets it; the client retires
// streams idle for longer than ClientStreamIdleTimeout before the server
// does, so the next call opens a new stream and succeeds.
func TestStreamReuseIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type msg struct {
			N int `cbor:"n"`
		}
		key := trust.GenerateKey()
		srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(slog.New(slog.DiscardHandler)))
		srv.MustRegister(handler.NewService("T", 1).
			Handle("echo", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) { return m, nil })))
		c, stop := memReuseClient(t, srv, key)
		defer stop()
		call := func() {
			t.Helper()
			if _, err := aster.CallUnary[msg](context.Background(), c, "T.echo", &msg{N: 1}); err != nil {
				t.Fatal(err)
			}
		}
		call()
		call()
		synctest.Wait()
		if m := srv.Metrics(); m.IdleStreams != 1 || m.ActiveCalls != 0 || m.StreamsReused != 1 {
			t.Fatalf("server metrics %+v after two calls", m)
		}
		time.Sleep(aster.ClientStreamIdleTimeout) // virtual time
		call()                                    // the client retired the idle stream
		if m := c.Metrics(); m.StreamsReused != 1 || m.StreamsOpened != 3 {
			t.Fatalf("client metrics %+v", m)
		}
		time.Sleep(aster.DefaultStreamIdleTimeout * 5 / 4) // the sweeper's precision
		synctest.Wait()
		if m := srv.Metrics(); m.IdleStreams != 0 {
			t.Fatalf("server metrics %+v after its idle timeout", m)
		}
	})
}

// The server side of reuse on the wire (PROTOCOL.md 23.2): two calls on
// one raw stream, the second HEADER sent right behind the first call's
// end-of-request frame, before its trailer was read. A client that never
// marks its calls (a browser, an earlier build) gets FIN after each
// trailer, and a TRAILER frame from it is a protocol error.
func TestStreamReuseWire(t *testing.T) {
	for _, tk := range transports {
		t.Run(tk.name, func(t *testing.T) {
			e := newEnv(t, tk)
			conn, err := e.dialer(testutil.Key(t, 7)).Dial(ctxT(t), e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(transport.ConnNoError, "")
			call := func(id uint64, reuse bool, n int) []byte {
				method := "echo"
				if n == 4 {
					method = "sum" // reads its requests to their end
				}
				h := wire.Header{Service: "Test", Method: method, CallID: id, Reuse: reuse}
				b, err := wire.AppendHeader(nil, &h, false)
				if err != nil {
					t.Fatal(err)
				}
				body := []byte{0xa1, 0x61, 'n', byte(n)} // {"n": n}
				b = wire.AppendFrame(b, 0, body)
				if reuse {
					b = append(b, wire.EndOfRequest...)
				}
				return b
			}
			st, err := conn.OpenStream(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(append(call(1, true, 1), call(2, true, 2)...)); err != nil {
				t.Fatal(err)
			}
			r := wire.NewReader(st, 0)
			defer r.Release()
			for want := 1; want <= 2; want++ {
				flags, p, err := r.ReadFrame()
				if err != nil || flags != 0 {
					t.Fatalf("response %d: flags %x, %v", want, flags, err)
				}
				if !bytes.Contains(p, []byte{0x61, 'n', byte(want)}) {
					t.Fatalf("response %d: %x", want, p)
				}
				if flags, _, err := r.ReadFrame(); err != nil || flags != wire.FlagTrailer {
					t.Fatalf("trailer %d: flags %x, %v", want, flags, err)
				}
			}
			// The client retires the stream: FIN, and the server ends its side.
			st.CloseWrite()
			if _, _, err := r.ReadFrame(); err == nil {
				t.Fatal("a frame after the client retired the stream")
			}

			// Without the mark: FIN after the trailer, as ever.
			st2, err := conn.OpenStream(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			st2.Write(call(3, false, 3))
			st2.CloseWrite()
			b, err := io.ReadAll(st2)
			if err != nil {
				t.Fatal(err)
			}
			fs := wire.NewReader(bytes.NewReader(b), 0)
			if flags, _, err := fs.ReadFrame(); err != nil || flags != 0 {
				t.Fatalf("unmarked call: %x, %v", flags, err)
			}
			if flags, _, err := fs.ReadFrame(); err != nil || flags != wire.FlagTrailer {
				t.Fatalf("unmarked call's trailer: %x, %v", flags, err)
			}
			if _, _, err := fs.ReadFrame(); err != io.EOF {
				t.Fatalf("after the unmarked call's trailer: %v, want its end", err)
			}
			fs.Release()

			// An end-of-request frame on an unmarked call is refused.
			st3, err := conn.OpenStream(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			st3.Write(append(call(4, false, 4), wire.EndOfRequest...))
			st3.CloseWrite()
			b, _ = io.ReadAll(st3)
			fs = wire.NewReader(bytes.NewReader(b), 0)
			defer fs.Release()
			var last []byte
			for {
				flags, p, err := fs.ReadFrame()
				if err != nil {
					break
				}
				if flags == wire.FlagTrailer {
					last = append([]byte(nil), p...)
				}
			}
			tr, err := wire.DecodeTrailer(last)
			if err != nil || status.Code(tr.Code) != status.InvalidArgument {
				t.Fatalf("trailer %+v, %v; want INVALID_ARGUMENT", tr, err)
			}
		})
	}
}

// A lazy client over QUIC sends its first call behind the admission
// request (PROTOCOL.md 17.6), before the verdict that offers reuse: the
// offer still takes effect for the connection when the verdict arrives, so
// later calls reuse streams.
func TestStreamReuseAfterPipelinedAdmission(t *testing.T) {
	forEachTransport(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		c := aster.NewClient(e.addr, aster.WithDialer(e.dialer(testutil.Key(t, 9))), aster.WithStreamReuse(true))
		defer c.Close()
		for i := range 20 {
			if r, err := aster.CallUnary[Msg](ctx, c, "Test.echo", &Msg{N: i}); err != nil || r.N != i {
				t.Fatalf("call %d: %v, %v", i, r, err)
			}
		}
		if m := c.Metrics(); m.StreamsReused == 0 {
			t.Fatalf("no stream reused after 20 sequential calls on a lazily dialled client: %+v", m)
		}
	})
}

// A reused stream stays listed for the server's idle sweeper while its
// call runs, but the sweeper resets only streams idle for the idle
// timeout: a call that runs for several idle timeouts on a reused stream
// succeeds, and its stream is swept once idle for the timeout after it.
func TestStreamReuseLongCallNotSwept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type msg struct {
			N int `cbor:"n"`
		}
		const idle = time.Second
		key := trust.GenerateKey()
		srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(slog.New(slog.DiscardHandler)),
			aster.WithStreamIdleTimeout(idle))
		srv.MustRegister(handler.NewService("T", 1).
			Handle("echo", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) { return m, nil })).
			Handle("slow", handler.Unary(func(ctx context.Context, m *msg) (*msg, error) {
				time.Sleep(3 * idle) // virtual time
				return m, nil
			})))
		c, stop := memReuseClient(t, srv, key)
		defer stop()
		for _, m := range []string{"T.echo", "T.slow", "T.echo"} {
			if _, err := aster.CallUnary[msg](context.Background(), c, m, &msg{N: 1}); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
		}
		synctest.Wait()
		if m := srv.Metrics(); m.StreamsReused != 2 || m.IdleStreams != 1 {
			t.Fatalf("server metrics %+v after three calls on one stream", m)
		}
		time.Sleep(idle * 5 / 4) // the sweeper's precision
		synctest.Wait()
		if m := srv.Metrics(); m.IdleStreams != 0 {
			t.Fatalf("server metrics %+v after its idle timeout", m)
		}
	})
}

// memReuseClient serves srv (whose key is key) on an in-memory network and
// returns a client of it with stream reuse on; stop closes both and waits
// for Serve to return.
func memReuseClient(t *testing.T, srv *aster.Server, key trust.SecretKey) (c *aster.Client, stop func()) {
	t.Helper()
	nw := mem.NewNetwork()
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c, err = aster.DialAddress(context.Background(), ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())), aster.WithStreamReuse(true))
	if err != nil {
		srv.Close()
		<-served
		t.Fatal(err)
	}
	return c, func() { c.Close(); srv.Close(); <-served }
}
