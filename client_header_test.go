package aster_test

import (
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
)

// rawServer answers calls by writing frames by hand, to test how the
// client reads response HEADER frames. Methods of service Raw:
//
//	one, two   HEADER {h: 1}, one or two DATA frames, TRAILER OK {t: 2}
//	json       as one, with the HEADER encoded as JSON
//	fail       HEADER {h: 1}, TRAILER NOT_FOUND {t: 2}
//	none       one DATA frame, TRAILER OK (no HEADER)
//	late       DATA, then HEADER: a protocol error
//	twice      HEADER, HEADER: a protocol error
//
// The admission call gets NOT_FOUND (a server without admission).
func rawServer(t *testing.T) (aster.Address, transport.Dialer) {
	a, d, _ := rawServerCounting(t)
	return a, d
}

// rawServerCounting is rawServer that also counts the _aster.contract calls
// it refuses.
func rawServerCounting(t *testing.T) (aster.Address, transport.Dialer, *atomic.Int64) {
	contracts := new(atomic.Int64)
	t.Helper()
	nw := mem.NewNetwork()
	key := testutil.Key(t, 1)
	ln, err := nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					st, err := c.AcceptStream(ctx)
					if err != nil {
						return
					}
					go serveRaw(t, st, contracts)
				}
			}()
		}
	}()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return ln.Addr(), nw.Dialer(testutil.Key(t, 2)), contracts
}

func serveRaw(t *testing.T, st transport.Stream, contracts *atomic.Int64) {
	defer st.Close()
	r := wire.NewReader(st, 0)
	defer r.Release()
	_, payload, err := r.ReadFrame()
	if err != nil {
		return
	}
	h, err := wire.DecodeHeader(payload)
	if err != nil {
		return
	}
	for { // read the requests up to the client's FIN
		if _, _, err := r.ReadFrame(); err != nil {
			break
		}
	}
	data := func(text string) []byte {
		b, _ := cbor.Codec{}.Marshal(&Msg{Text: text})
		return wire.AppendFrame(nil, 0, b)
	}
	header := func(asJSON bool) []byte {
		b, err := wire.AppendResponseHeader(nil, map[string]string{"h": "1"}, asJSON)
		if err != nil {
			t.Error(err)
		}
		return b
	}
	trailer := func(code status.Code) []byte {
		b, _ := wire.AppendTrailer(nil, &wire.Trailer{Code: uint32(code), Message: "raw", Metadata: map[string]string{"t": "2"}}, false)
		return b
	}
	if h.Method == "contract" {
		contracts.Add(1)
	}
	var out []byte
	switch h.Method {
	case "one":
		out = concat(header(false), data("a"), trailer(status.OK))
	case "two":
		out = concat(header(false), data("a"), data("b"), trailer(status.OK))
	case "json":
		out = concat(header(true), data("a"), trailer(status.OK))
	case "fail":
		out = concat(header(false), trailer(status.NotFound))
	case "none":
		out = concat(data("a"), trailer(status.OK))
	case "late":
		out = concat(data("a"), header(false), trailer(status.OK))
	case "twice":
		out = concat(header(false), header(false), data("a"), trailer(status.OK))
	default:
		out = trailer(status.NotFound)
	}
	st.Write(out)
}

func concat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func rawClient(t *testing.T) *aster.Client {
	a, d := rawServer(t)
	c := aster.NewClient(a, aster.WithDialer(d))
	t.Cleanup(func() { c.Close() })
	return c
}

// Response metadata and trailers reach the caller of every pattern.
func TestResponseHeaderAndTrailer(t *testing.T) {
	c := rawClient(t)
	ctx := ctxT(t)
	want := func(t *testing.T, what string, hdr, tr handler.Metadata) {
		t.Helper()
		if hdr["h"] != "1" || tr["t"] != "2" {
			t.Fatalf("%s: header %v, trailer %v; want h=1 and t=2", what, hdr, tr)
		}
	}
	for _, m := range []string{"Raw.one", "Raw.json"} {
		var hdr, tr handler.Metadata
		r, err := aster.CallUnary[Msg](ctx, c, m, &Msg{}, aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr))
		if err != nil || r.Text != "a" {
			t.Fatalf("%s: %+v, %v", m, r, err)
		}
		want(t, m, hdr, tr)
	}

	var hdr, tr handler.Metadata
	ss, err := aster.CallServerStream[Msg](ctx, c, "Raw.two", &Msg{}, aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Recv(); err != nil {
		t.Fatal(err)
	}
	if ss.Header()["h"] != "1" {
		t.Fatalf("Header after the first message: %v", ss.Header())
	}
	n := 1
	for _, err := range ss.All() {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d messages", n)
	}
	want(t, "server stream", hdr, tr)
	want(t, "server stream methods", ss.Header(), ss.Trailer())
	ss.Close()

	hdr, tr = nil, nil
	cs, err := aster.CallClientStream[Msg, Msg](ctx, c, "Raw.one", aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr))
	if err != nil {
		t.Fatal(err)
	}
	cs.Send(&Msg{})
	if r, err := cs.CloseAndRecv(); err != nil || r.Text != "a" {
		t.Fatalf("client stream: %+v, %v", r, err)
	}
	want(t, "client stream", hdr, tr)
	want(t, "client stream methods", cs.Header(), cs.Trailer())

	hdr, tr = nil, nil
	bs, err := aster.CallBidiStream[Msg, Msg](ctx, c, "Raw.two", aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr))
	if err != nil {
		t.Fatal(err)
	}
	bs.Send(&Msg{})
	bs.CloseSend()
	for _, err := range bs.All() {
		if err != nil {
			t.Fatal(err)
		}
	}
	want(t, "bidi", hdr, tr)
	bs.Close()

	// A failed call: the header came before the trailer; the trailer is
	// also in the error.
	hdr, tr = nil, nil
	_, err = aster.CallUnary[Msg](ctx, c, "Raw.fail", &Msg{}, aster.ResponseHeader(&hdr), aster.ResponseTrailer(&tr))
	wantCode(t, err, status.NotFound)
	want(t, "failed call", hdr, tr)

	// No HEADER frame: no response metadata.
	hdr = handler.Metadata{"stale": "x"}
	if _, err := aster.CallUnary[Msg](ctx, c, "Raw.none", &Msg{}, aster.ResponseHeader(&hdr)); err != nil || hdr != nil {
		t.Fatalf("no header frame: header %v, err %v", hdr, err)
	}
}

// DynamicCall has Header too, and ResponseHeader works with CallDynamic.
func TestResponseHeaderDynamic(t *testing.T) {
	c := rawClient(t)
	ct := &contract.Contract{
		Services: []contract.Service{{Name: "Raw", Version: 1, Scope: "shared", Methods: []contract.Method{
			{Name: "one", Pattern: "unary", Request: "test/Msg", Response: "test/Msg"},
		}}},
		Types: []contract.TypeDef{{Name: "test/Msg", Fields: []contract.Field{{Name: "text", Type: contract.TypeRef{Kind: contract.KindString}}}}},
	}
	var hdr handler.Metadata
	d, err := aster.CallDynamic(ctxT(t), c, ct, "Raw.one", aster.ResponseHeader(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.SendJSON([]byte(`{"text":"x"}`)); err != nil {
		t.Fatal(err)
	}
	d.CloseSend()
	if _, err := d.Recv(); err != nil {
		t.Fatal(err)
	}
	if d.Header()["h"] != "1" {
		t.Fatalf("Header: %v", d.Header())
	}
	if _, err := d.Recv(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if hdr["h"] != "1" {
		t.Fatalf("ResponseHeader: %v", hdr)
	}
}

// A HEADER frame after data, or a second one, is a protocol error.
func TestResponseHeaderProtocolErrors(t *testing.T) {
	c := rawClient(t)
	for _, m := range []string{"Raw.late", "Raw.twice"} {
		_, err := aster.CallUnary[Msg](ctxT(t), c, m, &Msg{})
		wantCode(t, err, status.Internal)
		if !strings.Contains(err.Error(), "header") {
			t.Errorf("%s: %v does not say what went wrong", m, err)
		}
	}
}

// A server that gives no contract is asked once per connection, not once
// per call, by Retry looking for the idempotent flag.
func TestNoContractAskedOncePerConnection(t *testing.T) {
	a, d, contracts := rawServerCounting(t)
	c := aster.NewClient(a, aster.WithDialer(d), aster.WithClientMiddleware(middleware.Retry(middleware.RetryOptions{})))
	defer c.Close()
	for range 3 {
		if _, err := aster.CallUnary[Msg](ctxT(t), c, "Raw.one", &Msg{}); err != nil {
			t.Fatal(err)
		}
	}
	if n := contracts.Load(); n != 1 {
		t.Fatalf("contract asked %d times, want 1", n)
	}
	if _, _, err := c.Contract(ctxT(t)); status.CodeOf(err) != status.NotFound {
		t.Fatalf("Contract: %v, want the server's NOT_FOUND", err)
	}
}
