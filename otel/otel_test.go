package otel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/middleware"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// Msg is the test message.
type Msg struct {
	Text string `cbor:"1,keyasint" json:"text"`
	N    int    `cbor:"2,keyasint" json:"n"`
}

// echoService has one method per pattern. A request with Text "fail"
// (unary, server stream) or N < 0 fails the call with INTERNAL; Text
// "missing" fails with NOT_FOUND (a caller error, not a server fault).
func echoService() *handler.Service {
	fail := func(m *Msg) error {
		switch {
		case m.Text == "fail" || m.N < 0:
			return status.New(status.Internal, "asked to fail")
		case m.Text == "missing":
			return status.New(status.NotFound, "no such thing")
		}
		return nil
	}
	return handler.NewService("Echo", 1).
		Handle("say", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			if err := fail(m); err != nil {
				return nil, err
			}
			// Report the baggage that arrived, to prove it crossed.
			return &Msg{Text: m.Text + "|" + baggage.FromContext(ctx).Member("who").Value()}, nil
		})).
		Handle("count", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
			for i := range max(m.N, 1) {
				if err := send(&Msg{Text: m.Text, N: i}); err != nil {
					return err
				}
			}
			return fail(m)
		})).
		Handle("sum", handler.ClientStream(func(ctx context.Context, reqs iter.Seq2[*Msg, error]) (*Msg, error) {
			total := 0
			for m, err := range reqs {
				if err != nil {
					return nil, err
				}
				if err := fail(m); err != nil {
					return nil, err
				}
				total += m.N
			}
			return &Msg{N: total}, nil
		})).
		Handle("echo", handler.BidiStream(func(ctx context.Context, b *handler.Bidi[Msg, Msg]) error {
			for m, err := range b.All() {
				if err != nil {
					return err
				}
				if err := fail(m); err != nil {
					return err
				}
				if err := b.Send(m); err != nil {
					return err
				}
			}
			return nil
		}))
}

type tally struct{ n int }

func sessionService() *handler.Service {
	return handler.NewSessionService("Tally", 1, func(context.Context, handler.Peer) (*tally, error) { return &tally{}, nil }).
		Handle("add", handler.On(func(t *tally) handler.Def {
			return handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { t.n += m.N; return &Msg{N: t.n}, nil })
		}))
}

// rig is two servers (A calls B) on an in-memory network, instrumented with
// a span recorder and a manual metric reader.
type rig struct {
	sr     *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	opts   []asterotel.Option
	nw     *mem.Network
	a, b   *aster.Server
	idA    trust.EndpointID
	idB    trust.EndpointID
	// connEnded receives a value each time a server connection's ConnHook
	// end function has run (so active_connections is already decremented).
	connEnded chan struct{}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{sr: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), nw: mem.NewNetwork(),
		connEnded: make(chan struct{}, 16)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.sr))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() { tp.Shutdown(context.Background()); mp.Shutdown(context.Background()) })
	r.opts = []asterotel.Option{asterotel.WithTracerProvider(tp), asterotel.WithMeterProvider(mp)}

	// Server B: Echo and Tally.
	keyB := testutil.Key(t, 2)
	r.idB = trust.IDOf(keyB)
	r.b = r.serve(t, keyB, echoService(), sessionService())

	// Server A: Front.relay calls B's Echo.say with the handler's ctx.
	keyA := testutil.Key(t, 1)
	r.idA = trust.IDOf(keyA)
	toB := r.client(t, r.idB, 3)
	front := handler.NewService("Front", 1).
		Handle("relay", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			return aster.CallUnary[Msg](ctx, toB, "Echo.say", m)
		}))
	r.a = r.serve(t, keyA, front)
	return r
}

func (r *rig) serve(t *testing.T, key trust.SecretKey, svcs ...*handler.Service) *aster.Server {
	t.Helper()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quiet()),
		aster.WithMiddleware(asterotel.Server(r.opts...)), aster.WithConnHook(r.connHook()),
		aster.WithShutdownLinger(time.Millisecond))
	srv.MustRegister(svcs...)
	ln, err := r.nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}

// connHook is otel.ConnHook, reporting on r.connEnded when a connection's
// end has been counted.
func (r *rig) connHook() func(handler.Peer) func() {
	hook := asterotel.ConnHook(r.opts...)
	return func(p handler.Peer) func() {
		end := hook(p)
		return func() {
			end()
			select {
			case r.connEnded <- struct{}{}:
			default: // nobody waits for this one
			}
		}
	}
}

func (r *rig) client(t *testing.T, id trust.EndpointID, keyN int) *aster.Client {
	t.Helper()
	c := aster.NewClient(aster.Address{ID: id}, aster.WithDialer(r.nw.Dialer(testutil.Key(t, keyN))),
		aster.WithClientMiddleware(asterotel.Client(r.opts...)))
	t.Cleanup(func() { c.Close() })
	return c
}

// spans returns the ended spans named name, by kind.
func (r *rig) span(t *testing.T, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range r.sr.Ended() {
		if s.Name() == name && s.SpanKind() == kind {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one ended %v span %q, got %d (all: %v)", kind, name, len(found), names(r.sr.Ended()))
	}
	return found[0]
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.SpanKind().String()+":"+s.Name())
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func wantAttr(t *testing.T, s sdktrace.ReadOnlySpan, key attribute.Key, want any) {
	t.Helper()
	v, ok := attrs(s)[key]
	if !ok {
		t.Errorf("%v span %s: no attribute %s", s.SpanKind(), s.Name(), key)
		return
	}
	if got := v.AsInterface(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%v span %s: %s = %v, want %v", s.SpanKind(), s.Name(), key, got, want)
	}
}

func intAttr(t *testing.T, s sdktrace.ReadOnlySpan, key attribute.Key) int64 {
	t.Helper()
	v, ok := attrs(s)[key]
	if !ok {
		t.Fatalf("%v span %s: no attribute %s", s.SpanKind(), s.Name(), key)
	}
	return v.AsInt64()
}

// messageEvents counts the span's message events by type and checks their
// sizes add up to the byte attribute.
func messageEvents(t *testing.T, s sdktrace.ReadOnlySpan) (sent, recv int) {
	t.Helper()
	var sentB, recvB int64
	for _, e := range s.Events() {
		if e.Name != "message" {
			continue
		}
		var typ string
		var size, id int64 = -1, 0
		for _, kv := range e.Attributes {
			switch kv.Key {
			case asterotel.KeyMessageType:
				typ = kv.Value.AsString()
			case asterotel.KeyMessageUncompBytes:
				size = kv.Value.AsInt64()
			case asterotel.KeyMessageID:
				id = kv.Value.AsInt64()
			}
		}
		if size <= 0 {
			t.Errorf("%v span %s: message event without a size", s.SpanKind(), s.Name())
		}
		switch typ {
		case "SENT":
			sent++
			sentB += size
			if id != int64(sent) {
				t.Errorf("sent message id %d, want %d", id, sent)
			}
		case "RECEIVED":
			recv++
			recvB += size
			if id != int64(recv) {
				t.Errorf("received message id %d, want %d", id, recv)
			}
		default:
			t.Errorf("message event type %q", typ)
		}
	}
	if got := intAttr(t, s, asterotel.KeyBytesSent); got != sentB {
		t.Errorf("%v span %s: bytes_sent %d, events sum %d", s.SpanKind(), s.Name(), got, sentB)
	}
	if got := intAttr(t, s, asterotel.KeyBytesReceived); got != recvB {
		t.Errorf("%v span %s: bytes_received %d, events sum %d", s.SpanKind(), s.Name(), got, recvB)
	}
	return sent, recv
}

// checkPair checks the client and server spans of one call: names, kinds,
// parent link, attributes, status and message counts.
func checkPair(t *testing.T, r *rig, name, pattern string, code status.Code, reqs, resps int) {
	t.Helper()
	cs := r.span(t, name, trace.SpanKindClient)
	ss := r.span(t, name, trace.SpanKindServer)
	if ss.Parent().SpanID() != cs.SpanContext().SpanID() || ss.SpanContext().TraceID() != cs.SpanContext().TraceID() {
		t.Errorf("%s: server span parent %v/%v, want client span %v/%v", name,
			ss.SpanContext().TraceID(), ss.Parent().SpanID(), cs.SpanContext().TraceID(), cs.SpanContext().SpanID())
	}
	if !ss.Parent().IsRemote() {
		t.Errorf("%s: server span's parent is not remote", name)
	}
	service, method, _ := strings.Cut(name, "/")
	for _, s := range []sdktrace.ReadOnlySpan{cs, ss} {
		wantAttr(t, s, asterotel.KeyRPCSystem, "aster")
		wantAttr(t, s, asterotel.KeyRPCService, service)
		wantAttr(t, s, asterotel.KeyRPCMethod, method)
		wantAttr(t, s, asterotel.KeyPattern, pattern)
		wantAttr(t, s, asterotel.KeyStatusName, code.String())
		wantAttr(t, s, asterotel.KeyStatusCode, int64(code))
	}
	wantAttr(t, cs, asterotel.KeyPeerID, r.idB.String())
	wantAttr(t, ss, asterotel.KeyVersion, 1)
	if _, ok := attrs(ss)[asterotel.KeyPeerID]; !ok {
		t.Errorf("server span has no peer id")
	}

	// Status: every failure on the client; only server faults on the server.
	wantClient, wantServer := codes.Unset, codes.Unset
	if code != status.OK {
		wantClient = codes.Error
		if code == status.Internal {
			wantServer = codes.Error
		}
	}
	if cs.Status().Code != wantClient {
		t.Errorf("%s client span status %v, want %v", name, cs.Status(), wantClient)
	}
	if ss.Status().Code != wantServer {
		t.Errorf("%s server span status %v, want %v", name, ss.Status(), wantServer)
	}
	if wantClient == codes.Error && !strings.HasPrefix(cs.Status().Description, code.String()) {
		t.Errorf("client span status description %q does not start with the code", cs.Status().Description)
	}

	// Messages: what one side sent, the other received, byte for byte.
	cSent, cRecv := messageEvents(t, cs)
	sSent, sRecv := messageEvents(t, ss)
	if cSent != reqs || sRecv != reqs || cRecv != resps || sSent != resps {
		t.Errorf("%s messages: client sent %d received %d, server received %d sent %d; want %d requests, %d responses",
			name, cSent, cRecv, sRecv, sSent, reqs, resps)
	}
	if intAttr(t, cs, asterotel.KeyMessagesSent) != int64(reqs) || intAttr(t, ss, asterotel.KeyMessagesReceived) != int64(reqs) {
		t.Errorf("%s: message count attributes do not match %d requests", name, reqs)
	}
	if intAttr(t, cs, asterotel.KeyBytesSent) != intAttr(t, ss, asterotel.KeyBytesReceived) ||
		intAttr(t, cs, asterotel.KeyBytesReceived) != intAttr(t, ss, asterotel.KeyBytesSent) {
		t.Errorf("%s: bytes sent by one side differ from bytes received by the other", name)
	}
}

func TestPatterns(t *testing.T) {
	ctx := t.Context()
	for _, tc := range []struct {
		name    string
		pattern string
		code    status.Code
		reqs    int
		resps   int
		call    func(c aster.Caller) error
	}{
		{"unary ok", "unary", status.OK, 1, 1, func(c aster.Caller) error {
			_, err := aster.CallUnary[Msg](ctx, c, "Echo.say", &Msg{Text: "hi"})
			return err
		}},
		{"unary internal", "unary", status.Internal, 1, 0, func(c aster.Caller) error {
			_, err := aster.CallUnary[Msg](ctx, c, "Echo.say", &Msg{Text: "fail"})
			return err
		}},
		{"unary not found", "unary", status.NotFound, 1, 0, func(c aster.Caller) error {
			_, err := aster.CallUnary[Msg](ctx, c, "Echo.say", &Msg{Text: "missing"})
			return err
		}},
		{"server stream ok", "server_stream", status.OK, 1, 5, func(c aster.Caller) error {
			s, err := aster.CallServerStream[Msg](ctx, c, "Echo.count", &Msg{N: 5})
			if err != nil {
				return err
			}
			defer s.Close()
			for _, err := range s.All() {
				if err != nil {
					return err
				}
			}
			return nil
		}},
		{"server stream internal", "server_stream", status.Internal, 1, 3, func(c aster.Caller) error {
			s, err := aster.CallServerStream[Msg](ctx, c, "Echo.count", &Msg{Text: "fail", N: 3})
			if err != nil {
				return err
			}
			defer s.Close()
			for _, err := range s.All() {
				if err != nil {
					return err
				}
			}
			return nil
		}},
		{"client stream ok", "client_stream", status.OK, 4, 1, func(c aster.Caller) error {
			s, err := aster.CallClientStream[Msg, Msg](ctx, c, "Echo.sum")
			if err != nil {
				return err
			}
			for i := range 4 {
				if err := s.Send(&Msg{N: i}); err != nil {
					return err
				}
			}
			_, err = s.CloseAndRecv()
			return err
		}},
		{"client stream internal", "client_stream", status.Internal, 2, 0, func(c aster.Caller) error {
			s, err := aster.CallClientStream[Msg, Msg](ctx, c, "Echo.sum")
			if err != nil {
				return err
			}
			s.Send(&Msg{N: 1})
			s.Send(&Msg{N: -1})
			_, err = s.CloseAndRecv()
			return err
		}},
		{"bidi ok", "bidi_stream", status.OK, 3, 3, func(c aster.Caller) error {
			s, err := aster.CallBidiStream[Msg, Msg](ctx, c, "Echo.echo")
			if err != nil {
				return err
			}
			defer s.Close()
			for i := range 3 {
				if err := s.Send(&Msg{N: i}); err != nil {
					return err
				}
				if _, err := s.Recv(); err != nil {
					return err
				}
			}
			s.CloseSend()
			if _, err := s.Recv(); err != io.EOF {
				return fmt.Errorf("want io.EOF, got %v", err)
			}
			return nil
		}},
		{"bidi internal", "bidi_stream", status.Internal, 2, 1, func(c aster.Caller) error {
			s, err := aster.CallBidiStream[Msg, Msg](ctx, c, "Echo.echo")
			if err != nil {
				return err
			}
			defer s.Close()
			s.Send(&Msg{N: 1})
			if _, err := s.Recv(); err != nil {
				return err
			}
			s.Send(&Msg{N: -1})
			s.CloseSend()
			_, err = s.Recv()
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			c := r.client(t, r.idB, 4)
			err := tc.call(c)
			if got := status.CodeOf(err); got != tc.code {
				t.Fatalf("call: %v (code %v), want %v", err, got, tc.code)
			}
			method := map[string]string{"unary": "say", "server_stream": "count", "client_stream": "sum", "bidi_stream": "echo"}[tc.pattern]
			checkPair(t, r, "Echo/"+method, tc.pattern, tc.code, tc.reqs, tc.resps)
		})
	}
}

// TestTwoHops follows one trace from a client through server A, whose
// handler calls server B: four spans, each the child of the one before,
// and the caller's baggage reaches B.
func TestTwoHops(t *testing.T) {
	r := newRig(t)
	c := r.client(t, r.idA, 4)
	member, _ := baggage.NewMember("who", "tester")
	bag, _ := baggage.New(member)
	ctx := baggage.ContextWithBaggage(t.Context(), bag)
	resp, err := aster.CallUnary[Msg](ctx, c, "Front.relay", &Msg{Text: "hop"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Text != "hop|tester" {
		t.Errorf("B saw baggage %q, want who=tester", resp.Text)
	}
	chain := []sdktrace.ReadOnlySpan{
		r.span(t, "Front/relay", trace.SpanKindClient),
		r.span(t, "Front/relay", trace.SpanKindServer),
		r.span(t, "Echo/say", trace.SpanKindClient),
		r.span(t, "Echo/say", trace.SpanKindServer),
	}
	if chain[0].Parent().IsValid() {
		t.Errorf("the first client span has a parent: %v", chain[0].Parent())
	}
	for i := 1; i < len(chain); i++ {
		p, s := chain[i-1], chain[i]
		if s.SpanContext().TraceID() != p.SpanContext().TraceID() {
			t.Errorf("span %d (%s) is in trace %v, want %v", i, s.Name(), s.SpanContext().TraceID(), p.SpanContext().TraceID())
		}
		if s.Parent().SpanID() != p.SpanContext().SpanID() {
			t.Errorf("span %d (%v %s) has parent %v, want %v", i, s.SpanKind(), s.Name(), s.Parent().SpanID(), p.SpanContext().SpanID())
		}
	}
	// The inner call happens within the outer server span.
	if chain[2].StartTime().Before(chain[1].StartTime()) || chain[2].EndTime().After(chain[1].EndTime()) {
		t.Errorf("inner client span is not within the outer server span")
	}
}

// TestSession checks session calls carry their session id and are traced
// like any other call.
func TestSession(t *testing.T) {
	r := newRig(t)
	c := r.client(t, r.idB, 4)
	s := c.NewSession()
	for i := 1; i <= 2; i++ {
		if _, err := aster.CallUnary[Msg](t.Context(), s, "Tally.add", &Msg{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	var clients, servers int
	for _, sp := range r.sr.Ended() {
		if sp.Name() != "Tally/add" {
			t.Errorf("unexpected span %q (ending a session is not a traced call)", sp.Name())
			continue
		}
		switch sp.SpanKind() {
		case trace.SpanKindClient:
			clients++
			wantAttr(t, sp, asterotel.KeySessionID, int64(s.ID()))
		case trace.SpanKindServer:
			servers++
		}
		wantAttr(t, sp, asterotel.KeyStatusName, "OK")
	}
	if clients != 2 || servers != 2 {
		t.Errorf("got %d client and %d server spans, want 2 and 2", clients, servers)
	}
}

// TestClientCloseEarly: a caller that stops reading a server stream and
// closes it ends its span as CANCELED.
func TestClientCloseEarly(t *testing.T) {
	r := newRig(t)
	c := r.client(t, r.idB, 4)
	s, err := aster.CallServerStream[Msg](t.Context(), c, "Echo.count", &Msg{N: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	cs := r.span(t, "Echo/count", trace.SpanKindClient)
	wantAttr(t, cs, asterotel.KeyStatusName, "CANCELED")
	if cs.Status().Code != codes.Error {
		t.Errorf("status %v, want Error", cs.Status())
	}
}

// TestDialFailure: a call that cannot start still gets a client span with
// its error.
func TestDialFailure(t *testing.T) {
	r := newRig(t)
	c := r.client(t, testutil.ID(t, 9), 4) // nobody listens there
	_, err := aster.CallUnary[Msg](t.Context(), c, "Echo.say", &Msg{})
	if err == nil {
		t.Fatal("call to a missing endpoint succeeded")
	}
	cs := r.span(t, "Echo/say", trace.SpanKindClient)
	wantAttr(t, cs, asterotel.KeyStatusName, status.CodeOf(err).String())
	if cs.Status().Code != codes.Error {
		t.Errorf("status %v, want Error", cs.Status())
	}
}

// TestMetrics checks the instruments after known calls.
func TestMetrics(t *testing.T) {
	r := newRig(t)
	c := r.client(t, r.idB, 4)
	ctx := t.Context()
	for range 3 {
		if _, err := aster.CallUnary[Msg](ctx, c, "Echo.say", &Msg{Text: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := aster.CallUnary[Msg](ctx, c, "Echo.say", &Msg{Text: "missing"}); status.CodeOf(err) != status.NotFound {
		t.Fatalf("want NOT_FOUND, got %v", err)
	}
	s, err := aster.CallServerStream[Msg](ctx, c, "Echo.count", &Msg{N: 7})
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	m := collect(t, r.reader)
	server := func(method string, extra ...attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append([]attribute.KeyValue{asterotel.KeyRPCSystem.String("aster"), asterotel.KeyRPCService.String("Echo"),
			asterotel.KeyRPCMethod.String(method), asterotel.KeySide.String("server")}, extra...)...)
	}
	client := func(method string, extra ...attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append([]attribute.KeyValue{asterotel.KeyRPCSystem.String("aster"), asterotel.KeyRPCService.String("Echo"),
			asterotel.KeyRPCMethod.String(method), asterotel.KeySide.String("client")}, extra...)...)
	}
	ok := asterotel.KeyStatusName.String("OK")
	nf := asterotel.KeyStatusName.String("NOT_FOUND")

	wantSum(t, m, "aster.rpc.started", server("say"), 4)
	wantSum(t, m, "aster.rpc.started", client("say"), 4)
	wantSum(t, m, "aster.rpc.completed", server("say", ok), 3)
	wantSum(t, m, "aster.rpc.completed", server("say", nf), 1)
	wantSum(t, m, "aster.rpc.completed", client("say", nf), 1)
	wantSum(t, m, "aster.rpc.active_streams", server("say"), 0)
	wantSum(t, m, "aster.rpc.active_streams", client("count"), 0)
	if h := histogram[float64](t, m, "aster.rpc.duration", server("say", ok)); h.Count != 3 || h.Sum <= 0 {
		t.Errorf("duration: count %d sum %v, want 3 and > 0", h.Count, h.Sum)
	}
	if h := histogram[int64](t, m, "aster.rpc.messages_sent", server("count", ok)); h.Count != 1 || h.Sum != 7 {
		t.Errorf("server messages_sent for count: count %d sum %d, want 1 and 7", h.Count, h.Sum)
	}
	if h := histogram[int64](t, m, "aster.rpc.messages_received", client("count", ok)); h.Count != 1 || h.Sum != 7 {
		t.Errorf("client messages_received for count: count %d sum %d, want 1 and 7", h.Count, h.Sum)
	}
	sent := histogram[int64](t, m, "aster.rpc.bytes_sent", server("count", ok))
	recv := histogram[int64](t, m, "aster.rpc.bytes_received", client("count", ok))
	if sent.Sum <= 0 || sent.Sum != recv.Sum {
		t.Errorf("bytes: server sent %d, client received %d", sent.Sum, recv.Sum)
	}
	conns := attribute.NewSet(asterotel.KeyRPCSystem.String("aster"), asterotel.KeySide.String("server"))
	wantSum(t, m, "aster.rpc.active_connections", conns, 1)

	// Closing the client ends the connection; the gauge returns to 0.
	c.Close()
	select {
	case <-r.connEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not end the connection after the client closed")
	}
	wantSum(t, collect(t, r.reader), "aster.rpc.active_connections", conns, 0)
}

func collect(t *testing.T, r *sdkmetric.ManualReader) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

func find(rm metricdata.ResourceMetrics, name string) *metricdata.Metrics {
	for _, sm := range rm.ScopeMetrics {
		for i := range sm.Metrics {
			if sm.Metrics[i].Name == name {
				return &sm.Metrics[i]
			}
		}
	}
	return nil
}

func sum(rm metricdata.ResourceMetrics, name string, set attribute.Set) (int64, bool) {
	m := find(rm, name)
	if m == nil {
		return 0, false
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		return 0, false
	}
	for _, dp := range s.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp.Value, true
		}
	}
	return 0, false
}

func wantSum(t *testing.T, rm metricdata.ResourceMetrics, name string, set attribute.Set, want int64) {
	t.Helper()
	got, ok := sum(rm, name, set)
	if !ok {
		t.Errorf("%s{%s}: no data point", name, set.Encoded(attribute.DefaultEncoder()))
		return
	}
	if got != want {
		t.Errorf("%s{%s} = %d, want %d", name, set.Encoded(attribute.DefaultEncoder()), got, want)
	}
}

func histogram[N int64 | float64](t *testing.T, rm metricdata.ResourceMetrics, name string, set attribute.Set) metricdata.HistogramDataPoint[N] {
	t.Helper()
	m := find(rm, name)
	if m == nil {
		t.Fatalf("no metric %s", name)
	}
	h, ok := m.Data.(metricdata.Histogram[N])
	if !ok {
		t.Fatalf("%s is %T, not a histogram", name, m.Data)
	}
	for _, dp := range h.DataPoints {
		if dp.Attributes.Equals(&set) {
			return dp
		}
	}
	t.Fatalf("%s{%s}: no data point", name, set.Encoded(attribute.DefaultEncoder()))
	return metricdata.HistogramDataPoint[N]{}
}

// TestWithoutMessageEvents: no events, but counts are still attributes.
func TestWithoutMessageEvents(t *testing.T) {
	r := newRig(t)
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	c := aster.NewClient(aster.Address{ID: r.idB}, aster.WithDialer(r.nw.Dialer(testutil.Key(t, 5))),
		aster.WithClientMiddleware(asterotel.Client(asterotel.WithTracerProvider(tp), asterotel.WithoutMessageEvents())))
	defer c.Close()
	if _, err := aster.CallUnary[Msg](t.Context(), c, "Echo.say", &Msg{Text: "q"}); err != nil {
		t.Fatal(err)
	}
	spans := sr.Ended()
	if len(spans) != 1 {
		t.Fatalf("want 1 span, got %d", len(spans))
	}
	if n := len(spans[0].Events()); n != 0 {
		t.Errorf("%d events with WithoutMessageEvents", n)
	}
	wantAttr(t, spans[0], asterotel.KeyMessagesSent, 1)
	wantAttr(t, spans[0], asterotel.KeyMessagesReceived, 1)
}

// TestUnsampled: with a never-sampling provider the middleware records no
// span but the call still carries a (not sampled) trace context and works.
func TestUnsampled(t *testing.T) {
	r := newRig(t)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	var seen atomic.Value
	peek := func(next aster.Caller) aster.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			seen.Store(call.Metadata.Get("traceparent"))
			return next.NewStream(ctx, call)
		})
	}
	c := aster.NewClient(aster.Address{ID: r.idB}, aster.WithDialer(r.nw.Dialer(testutil.Key(t, 5))),
		aster.WithClientMiddleware(asterotel.Client(asterotel.WithTracerProvider(tp)), peek))
	defer c.Close()
	if _, err := aster.CallUnary[Msg](t.Context(), c, "Echo.say", &Msg{Text: "q"}); err != nil {
		t.Fatal(err)
	}
	tpHeader, _ := seen.Load().(string)
	if !strings.HasPrefix(tpHeader, "00-") || !strings.HasSuffix(tpHeader, "-00") {
		t.Errorf("traceparent %q, want a not-sampled W3C trace context", tpHeader)
	}
	// The server follows the caller's decision (parent-based sampling).
	for _, s := range r.sr.Ended() {
		t.Errorf("span recorded for an unsampled trace: %s", s.Name())
	}
}

// manyKeys is a propagator that injects more pairs than the carrier holds
// inline.
type manyKeys struct{}

func (manyKeys) Inject(_ context.Context, c propagation.TextMapCarrier) {
	for i := range 6 {
		c.Set(fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
}
func (manyKeys) Extract(ctx context.Context, _ propagation.TextMapCarrier) context.Context {
	return ctx
}
func (manyKeys) Fields() []string { return nil }

// TestPropagatorAllPairs: every pair a propagator injects reaches the
// server, and the caller's own metadata is kept and not modified.
func TestPropagatorAllPairs(t *testing.T) {
	r := newRig(t)
	var got handler.Metadata
	var mu sync.Mutex
	spy := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			mu.Lock()
			got = maps.Clone(s.Header())
			mu.Unlock()
			return next.ServeRPC(ctx, s)
		})
	}
	key := testutil.Key(t, 7)
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quiet()), aster.WithMiddleware(spy))
	srv.MustRegister(echoService())
	ln, err := r.nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(r.nw.Dialer(testutil.Key(t, 8))),
		aster.WithClientMiddleware(asterotel.Client(append(r.opts, asterotel.WithPropagator(manyKeys{}))...)))
	defer c.Close()
	if _, err := aster.CallUnary[Msg](t.Context(), c, "Echo.say", &Msg{}, aster.WithHeader("own", "yes")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range 6 {
		if got[fmt.Sprintf("k%d", i)] != fmt.Sprint(i) {
			t.Errorf("pair k%d missing at the server: %v", i, got)
		}
	}
	if got["own"] != "yes" {
		t.Errorf("caller's metadata lost: %v", got)
	}
}
