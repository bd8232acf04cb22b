package aster_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec"
	cborcodec "github.com/aster-go/aster/codec/cbor"
	jsoncodec "github.com/aster-go/aster/codec/json"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// relayTransport runs the server behind an in-process relay (relay.Server
// on loopback TCP with a pinned self-signed certificate): the server
// registers with relay.Listen and clients dial with relay.Dialer.
var relayTransport = transportKind{"relay", func(t testing.TB, k trust.SecretKey) (transport.Listener, func(trust.SecretKey) transport.Dialer) {
	cert, err := relay.SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := relay.NewServer(relay.ServerConfig{Certificate: cert, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rs.Serve(tl) }()
	t.Cleanup(func() {
		rs.Close()
		if err := <-done; !errors.Is(err, relay.ErrServerClosed) {
			t.Errorf("relay Serve: %v", err)
		}
	})
	url := relay.PinnedURL(tl.Addr().String(), cert.Certificate[0])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Direct paths are off, so that every packet goes through the relay
	// (transport/relay tests the upgrade to a direct path).
	ln, err := relay.Listen(ctx, url, k, &relay.Config{Logger: quietLogger(), Direct: relay.DirectConfig{Disable: true}})
	if err != nil {
		t.Fatal(err)
	}
	return ln, func(ck trust.SecretKey) transport.Dialer {
		d := relay.NewDialer(ck, &relay.Config{Logger: quietLogger(), Direct: relay.DirectConfig{Disable: true}})
		t.Cleanup(func() { d.Close() })
		return d
	}
}}

// forAllTransports runs fn on mem, QUIC, WebTransport and through a relay,
// with ctxService registered next to the usual test services.
func forAllTransports(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, tk := range append(transports[:len(transports):len(transports)], relayTransport) {
		t.Run(tk.name, func(t *testing.T) {
			e := newEnv(t, tk)
			if err := e.srv.Register(ctxService()); err != nil {
				t.Fatal(err)
			}
			fn(t, e)
		})
	}
}

// ctxService's handlers use only the context API: they echo what they read
// from ctx and set response metadata and trailers through it.
func ctxService() *handler.Service {
	// whoami answers with the caller's id, the method and the request's
	// "x-req" metadata, and sets response metadata and a trailer.
	whoami := func(ctx context.Context, m *Msg) (*Msg, error) {
		p, ok := handler.PeerFromContext(ctx)
		if !ok {
			return nil, status.New(status.Internal, "no peer in ctx")
		}
		info := handler.MethodFromContext(ctx)
		req := handler.IncomingMetadata(ctx).Get("x-req")
		if m.N == 1 { // N=1: set response metadata
			if err := handler.SetHeader(ctx, "x-served-by", "srv:"+req); err != nil {
				return nil, err
			}
			if err := handler.SetHeader(ctx, "x-method", info.FullName()); err != nil {
				return nil, err
			}
		}
		if err := handler.SetTrailer(ctx, "x-trailer", "t:"+req); err != nil {
			return nil, err
		}
		return &Msg{Text: p.ID.String() + " " + info.FullName() + " " + req}, nil
	}
	return handler.NewService("Ctx", 1).
		Handle("whoami", handler.Unary(whoami)).
		Handle("count", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
			if err := handler.SetHeader(ctx, "x-count", fmt.Sprint(m.N)); err != nil {
				return err
			}
			for i := range m.N {
				if err := send(&Msg{N: i}); err != nil {
					return err
				}
			}
			// Too late now: the header went out with the first response.
			err := handler.SetHeader(ctx, "x-late", "1")
			return handler.SetTrailer(ctx, "late-header", status.CodeOf(err).String())
		})).
		Handle("sum", handler.ClientStream(func(ctx context.Context, in iter.Seq2[*Msg, error]) (*Msg, error) {
			total := 0
			for m, err := range in {
				if err != nil {
					return nil, err
				}
				total += m.N
			}
			// After reading the whole stream, before the response.
			if err := handler.SetHeader(ctx, "x-total", fmt.Sprint(total)); err != nil {
				return nil, err
			}
			return &Msg{N: total}, nil
		})).
		Handle("chat", handler.BidiStream(func(ctx context.Context, b *handler.Bidi[Msg, Msg]) error {
			if err := b.Stream().SetHeader("x-chat", "open"); err != nil {
				return err
			}
			for m, err := range b.All() {
				if err != nil {
					return err
				}
				if err := b.Send(&Msg{Text: "re:" + m.Text}); err != nil {
					return err
				}
			}
			return nil
		})).
		Handle("limits", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			// Bad pairs are refused one by one; the rest still go out.
			codes := []string{status.CodeOf(handler.SetHeader(ctx, "", "v")).String()}
			codes = append(codes, status.CodeOf(handler.SetHeader(ctx, "k", strings.Repeat("v", wire.MaxMetadataLen+1))).String())
			for i := range wire.MaxMetadataPairs {
				if err := handler.SetHeader(ctx, fmt.Sprint("k", i), strings.Repeat("v", m.N)); err != nil {
					return nil, err
				}
			}
			codes = append(codes, status.CodeOf(handler.SetHeader(ctx, "one-too-many", "v")).String())
			if err := handler.SetHeader(ctx, "k0", "replaced"); err != nil { // replacing is not adding
				return nil, err
			}
			return &Msg{Text: strings.Join(codes, " ")}, nil
		})).
		Handle("refuse", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			// Response metadata on a failed call: sent before the trailer.
			if err := handler.SetHeader(ctx, "x-why", "quota"); err != nil {
				return nil, err
			}
			return nil, status.New(status.ResourceExhausted, "over quota")
		}))
}

// rawResult is what a raw client read: the server's frames, decoded.
type rawResult struct {
	flags   []byte            // frame flags in order
	header  map[string]string // response metadata, if a HEADER frame came
	msgs    []Msg             // responses
	trailer *wire.Trailer
}

// rawCall makes one call at the wire level, on a connection of its own: it
// writes the HEADER, the requests and FIN, and reads and decodes every
// frame the server sends until FIN. It is the reference the typed API's
// response metadata is checked against until the Go client reads it.
func rawCall(t *testing.T, e *env, key trust.SecretKey, h wire.Header, reqs ...any) rawResult {
	t.Helper()
	ctx := ctxT(t)
	conn, err := e.dialer(key).Dial(ctx, e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(transport.ConnNoError, "")
	st, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	asJSON := h.SerializationMode == jsoncodec.Name
	var cd codec.Codec = cborcodec.Codec{}
	if asJSON {
		cd = jsoncodec.Codec{}
	}
	buf, err := wire.AppendHeader(nil, &h, asJSON)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		b, err := cd.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		buf = wire.AppendFrame(buf, 0, b)
	}
	// The server may stop reading once it has what it needs (a unary
	// request), so writing can fail; the outcome is still read from the
	// server's frames (PROTOCOL.md 8.4).
	if _, err := st.Write(buf); err == nil {
		st.CloseWrite()
	}
	r := wire.NewReader(st, 0)
	defer r.Release()
	var res rawResult
	for {
		flags, p, err := r.ReadFrame()
		if err == io.EOF {
			return res
		}
		if err != nil {
			t.Fatalf("reading frame %d: %v", len(res.flags), err)
		}
		res.flags = append(res.flags, flags)
		switch {
		case flags&wire.FlagHeader != 0:
			if wire.IsJSON(p) != asJSON {
				t.Errorf("response header JSON=%v in a call whose header is JSON=%v", wire.IsJSON(p), asJSON)
			}
			if res.header, err = wire.DecodeResponseHeader(p); err != nil {
				t.Fatal(err)
			}
		case flags&wire.FlagTrailer != 0:
			if res.trailer, err = wire.DecodeTrailer(p); err != nil {
				t.Fatal(err)
			}
		default:
			var m Msg
			if err := cd.Unmarshal(p, &m); err != nil {
				t.Fatal(err)
			}
			res.msgs = append(res.msgs, m)
		}
	}
}

// wantFlags checks the order of the server's frames: H(EADER), D(ATA),
// T(RAILER).
func wantFlags(t *testing.T, got []byte, want string) {
	t.Helper()
	var b bytes.Buffer
	for _, f := range got {
		switch {
		case f&wire.FlagHeader != 0:
			b.WriteByte('H')
		case f&wire.FlagTrailer != 0:
			b.WriteByte('T')
		default:
			b.WriteByte('D')
		}
	}
	if b.String() != want {
		t.Fatalf("server sent frames %s, want %s", b.String(), want)
	}
}

// TestHandlerContext runs the handler context API on all four transports:
// request metadata, peer and method read from ctx; response metadata
// (SetHeader) and trailers (SetTrailer) set through it, on every pattern.
func TestHandlerContext(t *testing.T) {
	forAllTransports(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		// The Go client: metadata in, peer and method seen by the handler.
		key := testutil.Key(t, 40)
		c, err := aster.DialAddress(ctx, e.addr, aster.WithDialer(e.dialer(key)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r, err := aster.CallUnary[Msg](ctx, c, "Ctx.whoami", &Msg{}, aster.WithHeader("x-req", "go"))
		if err != nil {
			t.Fatal(err)
		}
		if want := trust.IDOf(key).String() + " Ctx.whoami go"; r.Text != want {
			t.Fatalf("handler saw %q, want %q", r.Text, want)
		}

		// Raw: unary with response metadata: HEADER, DATA, TRAILER.
		rawKey := testutil.Key(t, 41)
		h := wire.Header{Service: "Ctx", Method: "whoami", Metadata: map[string]string{"x-req": "raw"}}
		res := rawCall(t, e, rawKey, h, &Msg{N: 1})
		wantFlags(t, res.flags, "HDT")
		if res.header["x-served-by"] != "srv:raw" || res.header["x-method"] != "Ctx.whoami" || len(res.header) != 2 {
			t.Errorf("response metadata %v", res.header)
		}
		if want := trust.IDOf(rawKey).String() + " Ctx.whoami raw"; res.msgs[0].Text != want {
			t.Errorf("response %q, want %q", res.msgs[0].Text, want)
		}
		if res.trailer.Code != 0 || res.trailer.Metadata["x-trailer"] != "t:raw" {
			t.Errorf("trailer %+v", res.trailer)
		}

		// Without SetHeader there is no HEADER frame: clients that do not
		// know it see the calls they always did.
		res = rawCall(t, e, rawKey, h, &Msg{N: 0})
		wantFlags(t, res.flags, "DT")

		// JSON call: the response header is JSON too.
		hj := h
		hj.SerializationMode = jsoncodec.Name
		res = rawCall(t, e, rawKey, hj, &Msg{N: 1})
		wantFlags(t, res.flags, "HDT")
		if res.header["x-served-by"] != "srv:raw" {
			t.Errorf("JSON response metadata %v", res.header)
		}

		// Server stream: the header precedes the first response; SetHeader
		// after it is FAILED_PRECONDITION.
		res = rawCall(t, e, rawKey, wire.Header{Service: "Ctx", Method: "count"}, &Msg{N: 3})
		wantFlags(t, res.flags, "HDDDT")
		if res.header["x-count"] != "3" || res.trailer.Metadata["late-header"] != "FAILED_PRECONDITION" {
			t.Errorf("header %v trailer %+v", res.header, res.trailer)
		}
		// No responses: the header still comes, before the trailer.
		res = rawCall(t, e, rawKey, wire.Header{Service: "Ctx", Method: "count"}, &Msg{N: 0})
		wantFlags(t, res.flags, "HT")

		// Client stream: header set after the requests were read.
		res = rawCall(t, e, rawKey, wire.Header{Service: "Ctx", Method: "sum"}, &Msg{N: 2}, &Msg{N: 5})
		wantFlags(t, res.flags, "HDT")
		if res.header["x-total"] != "7" || res.msgs[0].N != 7 {
			t.Errorf("header %v msgs %v", res.header, res.msgs)
		}

		// Bidi, through the Stream.
		res = rawCall(t, e, rawKey, wire.Header{Service: "Ctx", Method: "chat"}, &Msg{Text: "a"}, &Msg{Text: "b"})
		wantFlags(t, res.flags, "HDDT")
		if res.header["x-chat"] != "open" || res.msgs[1].Text != "re:b" {
			t.Errorf("header %v msgs %v", res.header, res.msgs)
		}

		// A failed call carries its response metadata before the trailer.
		res = rawCall(t, e, rawKey, wire.Header{Service: "Ctx", Method: "refuse"}, &Msg{})
		wantFlags(t, res.flags, "HT")
		if res.header["x-why"] != "quota" || status.Code(res.trailer.Code) != status.ResourceExhausted {
			t.Errorf("header %v trailer %+v", res.header, res.trailer)
		}
	})
}

// Response metadata limits: bad pairs are refused by SetHeader; a header
// over the 64 KiB frame limit fails the call with RESOURCE_EXHAUSTED.
func TestResponseHeaderLimits(t *testing.T) {
	e := newEnv(t, transports[0])
	if err := e.srv.Register(ctxService()); err != nil {
		t.Fatal(err)
	}
	key := testutil.Key(t, 42)
	res := rawCall(t, e, key, wire.Header{Service: "Ctx", Method: "limits"}, &Msg{N: 10})
	wantFlags(t, res.flags, "HDT")
	if res.msgs[0].Text != "INTERNAL INTERNAL INTERNAL" {
		t.Errorf("SetHeader refusals: %q", res.msgs[0].Text)
	}
	if len(res.header) != wire.MaxMetadataPairs || res.header["k0"] != "replaced" {
		t.Errorf("%d pairs, k0=%q", len(res.header), res.header["k0"])
	}
	// 64 values of 2 KiB: over the 64 KiB HEADER limit.
	res = rawCall(t, e, key, wire.Header{Service: "Ctx", Method: "limits"}, &Msg{N: 2 << 10})
	wantFlags(t, res.flags, "T")
	if status.Code(res.trailer.Code) != status.ResourceExhausted {
		t.Errorf("oversized response header: trailer %+v", res.trailer)
	}
}

// The peer a handler reads from ctx carries the admitted credential's
// capabilities and attributes.
func TestPeerCredentialAttributes(t *testing.T) {
	g := newGated(t, enroll.Policy{})
	who := handler.NewService("Who", 1).Handle("am", handler.Unary(func(ctx context.Context, _ *Msg) (*Msg, error) {
		p, _ := handler.PeerFromContext(ctx)
		return &Msg{Text: fmt.Sprintf("%s %v %v %v", p.ID.Short(), p.Capabilities, p.Attributes, p.Unrestricted)}, nil
	}))
	if err := g.srv.Register(who); err != nil {
		t.Fatal(err)
	}
	id := g.enroll(t, "edge-7", "ops.status")
	id.Peers[0].Attributes = map[string]string{"site": "eu-west"}
	if err := enroll.Sign(g.root, id.Peers[0]); err != nil {
		t.Fatal(err)
	}
	c, err := g.dial(t, withIdentity(t, id, ""))
	if err != nil {
		t.Fatal(err)
	}
	r, err := aster.CallUnary[Msg](ctxT(t), c, "Who.am", &Msg{})
	if err != nil {
		t.Fatal(err)
	}
	if want := trust.IDOf(id.Key).Short() + " [ops.status] map[site:eu-west] false"; r.Text != want {
		t.Fatalf("handler saw peer %q, want %q", r.Text, want)
	}
}

// The Go client reads what handlers set through the context API — response
// metadata and trailers — on every call pattern and every transport, with
// the call options and with the stream types' Header and Trailer.
func TestResponseMetadataEndToEnd(t *testing.T) {
	forAllTransports(t, func(t *testing.T, e *env) {
		ctx := ctxT(t)
		var hdr, tr handler.Metadata
		resp, err := aster.CallUnary[Msg](ctx, e.client, "Ctx.whoami", &Msg{N: 1},
			aster.WithHeader("x-req", "r1"), aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr))
		if err != nil {
			t.Fatal(err)
		}
		if hdr["x-served-by"] != "srv:r1" || hdr["x-method"] != "Ctx.whoami" || tr["x-trailer"] != "t:r1" {
			t.Fatalf("unary: header %v trailer %v", hdr, tr)
		}
		if !strings.HasSuffix(resp.Text, " Ctx.whoami r1") {
			t.Fatalf("unary: %q", resp.Text)
		}

		// No SetHeader: no response metadata, the trailer still arrives.
		hdr, tr = nil, nil
		if _, err := aster.CallUnary[Msg](ctx, e.client, "Ctx.whoami", &Msg{},
			aster.WithHeader("x-req", "r2"), aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr)); err != nil {
			t.Fatal(err)
		}
		if len(hdr) != 0 || tr["x-trailer"] != "t:r2" {
			t.Fatalf("unary without header: header %v trailer %v", hdr, tr)
		}

		ss, err := aster.CallServerStream[Msg](ctx, e.client, "Ctx.count", &Msg{N: 3})
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
		if n != 3 || ss.Header()["x-count"] != "3" || ss.Trailer()["late-header"] != "FAILED_PRECONDITION" {
			t.Fatalf("server stream: %d messages, header %v trailer %v", n, ss.Header(), ss.Trailer())
		}

		hdr = nil
		cs, err := aster.CallClientStream[Msg, Msg](ctx, e.client, "Ctx.sum", aster.ResponseHeader(&hdr))
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 4; i++ {
			if err := cs.Send(&Msg{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := cs.CloseAndRecv()
		if err != nil || sum.N != 10 || hdr["x-total"] != "10" {
			t.Fatalf("client stream: %+v, %v, header %v", sum, err, hdr)
		}

		bs, err := aster.CallBidiStream[Msg, Msg](ctx, e.client, "Ctx.chat")
		if err != nil {
			t.Fatal(err)
		}
		if err := bs.Send(&Msg{Text: "hi"}); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Recv()
		if err != nil || m.Text != "re:hi" || bs.Header()["x-chat"] != "open" {
			t.Fatalf("bidi: %+v, %v, header %v", m, err, bs.Header())
		}
		bs.CloseSend()
		if _, err := bs.Recv(); err != io.EOF {
			t.Fatalf("bidi end: %v", err)
		}

		// A failed call: its response metadata still reaches the caller.
		hdr = nil
		_, err = aster.CallUnary[Msg](ctx, e.client, "Ctx.refuse", &Msg{}, aster.ResponseHeader(&hdr))
		wantCode(t, err, status.ResourceExhausted)
		if hdr["x-why"] != "quota" {
			t.Fatalf("failed call: header %v", hdr)
		}
	})
}
