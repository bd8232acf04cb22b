package handler_test

import (
	"context"
	"errors"
	"io"
	"iter"
	"reflect"
	"slices"
	"testing"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

type Req struct{ N int }
type Resp struct{ N int }

func (Resp) WireType() string { return "test/Resp" }

// fakeStream is a handler.Stream over in-memory messages: Recv hands out
// reqs (then io.EOF, or recvErr), Send records responses.
type fakeStream struct {
	info    *handler.MethodInfo
	peer    handler.Peer
	md      handler.Metadata
	reqs    []Req
	recvErr error
	sent    []Resp
	header  map[string]string
	trailer map[string]string
}

func (f *fakeStream) Method() *handler.MethodInfo { return f.info }
func (f *fakeStream) Peer() handler.Peer          { return f.peer }
func (f *fakeStream) Header() handler.Metadata    { return f.md }
func (f *fakeStream) SetHeader(k, v string) error {
	if len(f.sent) > 0 {
		return errors.New("after first response")
	}
	if f.header == nil {
		f.header = map[string]string{}
	}
	f.header[k] = v
	return nil
}
func (f *fakeStream) SetTrailer(k, v string) {
	if f.trailer == nil {
		f.trailer = map[string]string{}
	}
	f.trailer[k] = v
}
func (f *fakeStream) Recv(msg any) error {
	if len(f.reqs) == 0 {
		if f.recvErr != nil {
			return f.recvErr
		}
		return io.EOF
	}
	if msg != nil {
		*msg.(*Req) = f.reqs[0]
	}
	f.reqs = f.reqs[1:]
	return nil
}
func (f *fakeStream) Send(msg any) error { f.sent = append(f.sent, *msg.(*Resp)); return nil }

func serve(t *testing.T, d handler.Def, s *fakeStream) error {
	t.Helper()
	return d.Handler.ServeRPC(handler.NewContext(context.Background(), s), s)
}

func TestUnary(t *testing.T) {
	d := handler.Unary(func(_ context.Context, r *Req) (*Resp, error) { return &Resp{N: r.N * 2}, nil })
	if d.Pattern != handler.PatternUnary || d.Request != reflect.TypeFor[Req]() || d.Response != reflect.TypeFor[Resp]() {
		t.Fatalf("Def %+v", d)
	}
	s := &fakeStream{reqs: []Req{{N: 21}, {N: 99}}}
	if err := serve(t, d, s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.sent, []Resp{{N: 42}}) {
		t.Fatalf("sent %v", s.sent)
	}
	if len(s.reqs) != 1 {
		t.Fatalf("the server read %d requests, want only the first", 2-len(s.reqs))
	}
	// No request: INVALID_ARGUMENT; a receive error passes through; a
	// handler error is returned as is and nothing is sent.
	if err := serve(t, d, &fakeStream{}); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("missing request: %v", err)
	}
	broken := status.New(status.Unavailable, "gone")
	if err := serve(t, d, &fakeStream{recvErr: broken}); !errors.Is(err, broken) {
		t.Fatalf("receive error: %v", err)
	}
	fail := handler.Unary(func(context.Context, *Req) (*Resp, error) { return nil, status.New(status.NotFound, "no") })
	s = &fakeStream{reqs: []Req{{}}}
	if err := serve(t, fail, s); status.CodeOf(err) != status.NotFound || len(s.sent) != 0 {
		t.Fatalf("handler error: %v, sent %v", err, s.sent)
	}
}

func TestServerStream(t *testing.T) {
	d := handler.ServerStream(func(_ context.Context, r *Req, send func(*Resp) error) error {
		for i := range r.N {
			if err := send(&Resp{N: i}); err != nil {
				return err
			}
		}
		return nil
	})
	if d.Pattern != handler.PatternServerStream {
		t.Fatalf("pattern %v", d.Pattern)
	}
	s := &fakeStream{reqs: []Req{{N: 3}}}
	if err := serve(t, d, s); err != nil || !slices.Equal(s.sent, []Resp{{0}, {1}, {2}}) {
		t.Fatalf("err %v, sent %v", err, s.sent)
	}
	if err := serve(t, d, &fakeStream{}); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("missing request: %v", err)
	}
}

func TestClientStream(t *testing.T) {
	d := handler.ClientStream(func(_ context.Context, reqs iter.Seq2[*Req, error]) (*Resp, error) {
		sum := 0
		for r, err := range reqs {
			if err != nil {
				return nil, err
			}
			sum += r.N
		}
		return &Resp{N: sum}, nil
	})
	if d.Pattern != handler.PatternClientStream {
		t.Fatalf("pattern %v", d.Pattern)
	}
	s := &fakeStream{reqs: []Req{{1}, {2}, {3}}}
	if err := serve(t, d, s); err != nil || !slices.Equal(s.sent, []Resp{{6}}) {
		t.Fatalf("err %v, sent %v", err, s.sent)
	}
	// A receive error is yielded once and stops the iteration.
	broken := status.New(status.DataLoss, "torn")
	s = &fakeStream{reqs: []Req{{1}}, recvErr: broken}
	if err := serve(t, d, s); !errors.Is(err, broken) || len(s.sent) != 0 {
		t.Fatalf("err %v, sent %v", err, s.sent)
	}
}

func TestBidiStream(t *testing.T) {
	d := handler.BidiStream(func(_ context.Context, b *handler.Bidi[Req, Resp]) error {
		first, err := b.Recv()
		if err != nil {
			return err
		}
		if err := b.Send(&Resp{N: -first.N}); err != nil {
			return err
		}
		for r, err := range b.All() {
			if err != nil {
				return err
			}
			if err := b.Send(&Resp{N: r.N + 100}); err != nil {
				return err
			}
		}
		b.Stream().SetTrailer("done", "yes")
		_, err = b.Recv()
		if err != io.EOF {
			return errors.New("Recv after the end is not io.EOF")
		}
		return nil
	})
	if d.Pattern != handler.PatternBidiStream {
		t.Fatalf("pattern %v", d.Pattern)
	}
	s := &fakeStream{reqs: []Req{{1}, {2}, {3}}}
	if err := serve(t, d, s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.sent, []Resp{{-1}, {102}, {103}}) || s.trailer["done"] != "yes" {
		t.Fatalf("sent %v trailer %v", s.sent, s.trailer)
	}
}

// TestContextAccessors: typed handlers reach the call through ctx.
func TestContextAccessors(t *testing.T) {
	info := &handler.MethodInfo{Service: "S", Name: "m", Version: 1, Pattern: handler.PatternUnary}
	peer := handler.Peer{ID: trust.IDOf(trust.GenerateKey()), Capabilities: []string{"ops.read"}, Attributes: map[string]string{"site": "lab"}}
	s := &fakeStream{info: info, peer: peer, md: handler.Metadata{"x-req": "r-1"}, reqs: []Req{{N: 1}}}
	d := handler.Unary(func(ctx context.Context, r *Req) (*Resp, error) {
		if got := handler.IncomingMetadata(ctx).Get("x-req"); got != "r-1" {
			t.Errorf("IncomingMetadata: %q", got)
		}
		p, ok := handler.PeerFromContext(ctx)
		if !ok || p.ID != peer.ID || p.Attributes["site"] != "lab" || !slices.Equal(p.Capabilities, peer.Capabilities) {
			t.Errorf("PeerFromContext: %+v, %v", p, ok)
		}
		if m := handler.MethodFromContext(ctx); m != info || m.FullName() != "S.m" {
			t.Errorf("MethodFromContext: %v", m)
		}
		if err := handler.SetHeader(ctx, "x-served-by", "node-1"); err != nil {
			t.Errorf("SetHeader: %v", err)
		}
		if err := handler.SetTrailer(ctx, "x-cost", "3"); err != nil {
			t.Errorf("SetTrailer: %v", err)
		}
		if st, ok := handler.StreamFromContext(ctx); !ok || st != handler.Stream(s) {
			t.Errorf("StreamFromContext: %v %v", st, ok)
		}
		return &Resp{N: r.N}, nil
	})
	if err := serve(t, d, s); err != nil {
		t.Fatal(err)
	}
	if s.header["x-served-by"] != "node-1" || s.trailer["x-cost"] != "3" {
		t.Fatalf("header %v trailer %v", s.header, s.trailer)
	}

	// Outside a call: empty answers, and the setters fail.
	ctx := context.Background()
	if handler.IncomingMetadata(ctx) != nil || handler.MethodFromContext(ctx) != nil {
		t.Error("metadata or method outside a call")
	}
	if _, ok := handler.PeerFromContext(ctx); ok {
		t.Error("peer outside a call")
	}
	if _, ok := handler.StreamFromContext(handler.NewContext(ctx, nil)); ok {
		t.Error("a nil stream counts as a call")
	}
	if err := handler.SetHeader(ctx, "k", "v"); status.CodeOf(err) != status.Internal {
		t.Errorf("SetHeader outside a call: %v", err)
	}
	if err := handler.SetTrailer(ctx, "k", "v"); status.CodeOf(err) != status.Internal {
		t.Errorf("SetTrailer outside a call: %v", err)
	}
}

func TestRecvOne(t *testing.T) {
	var r Req
	// Requests: the first message, further ones are not read.
	s := &fakeStream{reqs: []Req{{N: 5}, {N: 6}}}
	if err := handler.RecvOne(s, &r, handler.Requests); err != nil || r.N != 5 || len(s.reqs) != 1 {
		t.Fatalf("requests: %v %v, %d left", err, r, len(s.reqs))
	}
	if err := handler.RecvOne(&fakeStream{}, &r, handler.Requests); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("missing request: %v", err)
	}
	// Responses: exactly one, read to the end.
	s = &fakeStream{reqs: []Req{{N: 7}}}
	if err := handler.RecvOne(s, &r, handler.Responses); err != nil || r.N != 7 {
		t.Fatalf("one response: %v %v", err, r)
	}
	if err := handler.RecvOne(&fakeStream{}, &r, handler.Responses); status.CodeOf(err) != status.Internal {
		t.Fatalf("no response: %v", err)
	}
	if err := handler.RecvOne(&fakeStream{reqs: []Req{{}, {}}}, &r, handler.Responses); status.CodeOf(err) != status.Internal {
		t.Fatalf("two responses: %v", err)
	}
	failed := status.New(status.PermissionDenied, "no")
	if err := handler.RecvOne(&fakeStream{recvErr: failed}, &r, handler.Responses); !errors.Is(err, failed) {
		t.Fatalf("failed call: %v", err)
	}
	if err := handler.RecvOne(&fakeStream{reqs: []Req{{}}, recvErr: failed}, &r, handler.Responses); !errors.Is(err, failed) {
		t.Fatalf("failure after the response: %v", err)
	}
}

func TestServiceBuilding(t *testing.T) {
	unary := handler.Unary(func(context.Context, *Req) (*Resp, error) { return &Resp{}, nil })
	own := trust.Cap("ops.own")
	svc := handler.NewService("Svc", 2).
		Handle("a", unary, handler.Idempotent()).
		Handle("b", unary, handler.Requires(own))
	svc.Require(trust.Cap("ops.admin")) // after Handle: still applies to a
	svc.Handle("c", unary, handler.Requires(nil))

	if svc.Name() != "Svc" || svc.Version() != 2 || svc.Scope() != handler.ScopeShared {
		t.Fatalf("service %s v%d %v", svc.Name(), svc.Version(), svc.Scope())
	}
	ms := svc.Methods()
	if len(ms) != 3 || ms[0].Info.Name != "a" || ms[1].Info.Name != "b" || ms[2].Info.Name != "c" {
		t.Fatalf("methods %v", ms)
	}
	for _, m := range ms {
		if m.Info.Service != "Svc" || m.Info.Version != 2 || m.Info.Pattern != handler.PatternUnary || m.Handler == nil {
			t.Fatalf("method info %+v", m.Info)
		}
	}
	if !ms[0].Info.Idempotent || ms[1].Info.Idempotent {
		t.Error("Idempotent not recorded per method")
	}
	// The service requirement reaches a method added before Require and
	// one added after; a method's own requirement wins.
	if r := ms[0].Info.Requires; r == nil || r.Satisfied([]string{"ops.own"}) || !r.Satisfied([]string{"ops.admin"}) {
		t.Errorf("a (Handle before Require) requires %v", r)
	}
	if r := ms[1].Info.Requires; r == nil || !r.Satisfied([]string{"ops.own"}) || r.Satisfied([]string{"ops.admin"}) {
		t.Errorf("b (own requirement) requires %v", r)
	}
	if r := ms[2].Info.Requires; r == nil || !r.Satisfied([]string{"ops.admin"}) {
		t.Errorf("c (Handle after Require, Requires(nil)) requires %v", r)
	}
	if ms[0].Info.Response != reflect.TypeFor[Resp]() || handler.TypeName(ms[0].Info.Response) != "test/Resp" {
		t.Errorf("response type %v named %q", ms[0].Info.Response, handler.TypeName(ms[0].Info.Response))
	}
	if got := handler.TypeName(reflect.TypeFor[*Req]()); got != "github.com/aster-go/aster/handler_test.Req" {
		t.Errorf("TypeName(*Req) = %q", got)
	}
}

func TestServicePanics(t *testing.T) {
	unary := handler.Unary(func(context.Context, *Req) (*Resp, error) { return &Resp{}, nil })
	type session struct{}
	bound := handler.On(func(*session) handler.Def { return unary })
	for name, fn := range map[string]func(){
		"bad service name": func() { handler.NewService("_x", 1) },
		"version 0":        func() { handler.NewService("S", 0) },
		"bad method name":  func() { handler.NewService("S", 1).Handle("a b", unary) },
		"duplicate":        func() { handler.NewService("S", 1).Handle("m", unary).Handle("m", unary) },
		"empty Def":        func() { handler.NewService("S", 1).Handle("m", handler.Def{}) },
		"On on shared":     func() { handler.NewService("S", 1).Handle("m", bound) },
		"no On on session": func() {
			handler.NewSessionService("S", 1, func(context.Context, handler.Peer) (*session, error) { return &session{}, nil }).Handle("m", unary)
		},
		// A capability nobody can be granted: the method would be unusable
		// and its contract entry unreadable.
		"bad capability":          func() { handler.NewService("S", 1).Handle("m", unary, handler.Requires(trust.Cap("ops status"))) },
		"empty capability":        func() { handler.NewService("S", 1).Require(trust.Cap("")) },
		"bad capability in AnyOf": func() { handler.NewService("S", 1).Require(trust.AnyOf(trust.Cap("a"), trust.Cap("b\x00"))) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			fn()
		}()
	}
}

func TestSessionService(t *testing.T) {
	type counter struct{ n int }
	svc := handler.NewSessionService("Counter", 1, func(_ context.Context, p handler.Peer) (*counter, error) {
		return &counter{n: len(p.Capabilities)}, nil
	}).Handle("get", handler.On(func(c *counter) handler.Def {
		return handler.Unary(func(context.Context, *Req) (*Resp, error) { return &Resp{N: c.n}, nil })
	}))
	if svc.Scope() != handler.ScopeSession || svc.Methods()[0].Info.Scope != handler.ScopeSession {
		t.Fatal("not session-scoped")
	}
	inst, err := svc.NewInstance(context.Background(), handler.Peer{Capabilities: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	h := svc.Methods()[0].Bind(inst)
	s := &fakeStream{reqs: []Req{{}}}
	if err := h.ServeRPC(context.Background(), s); err != nil || !slices.Equal(s.sent, []Resp{{N: 2}}) {
		t.Fatalf("bound handler: %v, sent %v", err, s.sent)
	}
	// An instance of the wrong type is INTERNAL, not a panic.
	s = &fakeStream{reqs: []Req{{}}}
	if err := svc.Methods()[0].Bind("not a counter").ServeRPC(context.Background(), s); status.CodeOf(err) != status.Internal {
		t.Fatalf("wrong instance: %v", err)
	}
	if _, err := handler.NewService("Shared", 1).NewInstance(context.Background(), handler.Peer{}); err == nil {
		t.Fatal("NewInstance on a shared service succeeded")
	}
}

func TestPatternsAndScopes(t *testing.T) {
	for _, p := range []handler.Pattern{handler.PatternUnary, handler.PatternServerStream, handler.PatternClientStream, handler.PatternBidiStream} {
		got, ok := handler.ParsePattern(p.String())
		if !ok || got != p {
			t.Errorf("ParsePattern(%q) = %v, %v", p.String(), got, ok)
		}
	}
	if _, ok := handler.ParsePattern("invalid"); ok {
		t.Error(`ParsePattern("invalid") succeeded`)
	}
	if handler.Pattern(9).String() != "invalid" {
		t.Error("out-of-range pattern has a name")
	}
	if !handler.PatternBidiStream.ClientStreams() || !handler.PatternBidiStream.ServerStreams() ||
		handler.PatternUnary.ClientStreams() || handler.PatternUnary.ServerStreams() ||
		!handler.PatternClientStream.ClientStreams() || !handler.PatternServerStream.ServerStreams() {
		t.Error("ClientStreams/ServerStreams wrong")
	}
	if handler.ScopeSession.String() != "session" || handler.ScopeShared.String() != "shared" {
		t.Error("scope names")
	}
	if handler.ValidName("ok.name-1_x") != nil || handler.ValidName("") == nil || handler.ValidName("_r") == nil || handler.ValidName("a/b") == nil {
		t.Error("ValidName")
	}
}
