package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/rig"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

// Msg is the test message. Fail > 0 asks flaky handlers to fail that many
// times with Code (per Key) before succeeding; a failing list call first
// sends Sent messages; After is a retry-after hint (ms) to attach.
type Msg struct {
	Key   string `cbor:"key" json:"key"`
	N     int    `cbor:"n" json:"n"`
	Fail  int    `cbor:"fail,omitempty" json:"fail,omitempty"`
	Code  uint32 `cbor:"code,omitempty" json:"code,omitempty"`
	Sent  int    `cbor:"sent,omitempty" json:"sent,omitempty"`
	After int    `cbor:"after,omitempty" json:"after,omitempty"`
	// NotProcessed marks the injected failures not processed.
	NotProcessed bool `cbor:"np,omitempty" json:"np,omitempty"`
}

func (Msg) WireType() string { return "mwtest/Msg" }

// svc is a test service whose handlers inject failures.
type svc struct {
	mu       sync.Mutex
	attempts map[string]int      // calls seen per Key
	headers  map[string][]string // aster-attempt values seen per Key
	panics   atomic.Int64
}

func newSvc() *svc { return &svc{attempts: map[string]int{}, headers: map[string][]string{}} }

// seen records a call for key and returns how many came before it.
func (s *svc) seen(key string, md handler.Metadata) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.attempts[key]
	s.attempts[key]++
	s.headers[key] = append(s.headers[key], md.Get(middleware.AttemptKey))
	return n
}

func (s *svc) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[key]
}

func (s *svc) attemptHeaders(key string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.headers[key]...)
}

// fail returns the injected error for m's prior-th call, if any.
func fail(m *Msg, prior int) error {
	if prior < m.Fail {
		e := status.Errorf(status.Code(m.Code), "injected failure %d of %d", prior+1, m.Fail)
		if m.After > 0 {
			e = e.WithMetadata(middleware.RetryAfterKey, fmt.Sprint(m.After))
		}
		if m.NotProcessed {
			e = e.WithNotProcessed()
		}
		return e
	}
	return nil
}

func (s *svc) service(name string, mw ...handler.Middleware) *handler.Service {
	unaryFlaky := func(ctx context.Context, m *Msg) (*Msg, error) {
		st := streamOf(ctx)
		if err := fail(m, s.seen(m.Key, st)); err != nil {
			return nil, err
		}
		return &Msg{Key: m.Key, N: m.N}, nil
	}
	return handler.NewService(name, 1).Use(mw...).
		Handle("get", handler.Unary(unaryFlaky), handler.Idempotent()).
		Handle("put", handler.Unary(unaryFlaky)).
		Handle("panic", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			s.panics.Add(1)
			panic("boom " + m.Key)
		})).
		Handle("wait", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})).
		Handle("deadline", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			_, ok := ctx.Deadline()
			return &Msg{Key: fmt.Sprint(ok)}, nil
		})).
		// list sends N messages; with Fail, the first Fail calls fail after
		// sending Sent messages.
		Handle("list", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
			prior := s.seen(m.Key, streamOf(ctx))
			if err := fail(m, prior); err != nil {
				for i := range m.Sent {
					if err := send(&Msg{Key: m.Key, N: i}); err != nil {
						return err
					}
				}
				return err
			}
			for i := range m.N {
				if err := send(&Msg{Key: m.Key, N: i}); err != nil {
					return err
				}
			}
			return nil
		}), handler.Idempotent()).
		// sum adds the N of every request; the first Fail calls (by the
		// first request's Key) fail after reading everything.
		Handle("sum", handler.ClientStream(func(ctx context.Context, in iter.Seq2[*Msg, error]) (*Msg, error) {
			total, n := 0, 0
			var first *Msg
			for m, err := range in {
				if err != nil {
					return nil, err
				}
				if first == nil {
					first = m
				}
				total += m.N
				n++
			}
			if first != nil {
				if err := fail(first, s.seen(first.Key, streamOf(ctx))); err != nil {
					return nil, err
				}
			}
			return &Msg{Key: fmt.Sprint(n), N: total}, nil
		}), handler.Idempotent()).
		// chat answers each request with N*2; with Fail, the first Fail
		// calls fail on the first request before answering.
		Handle("chat", handler.BidiStream(func(ctx context.Context, b *handler.Bidi[Msg, Msg]) error {
			checked := false
			for m, err := range b.All() {
				if err != nil {
					return err
				}
				if !checked {
					checked = true
					if err := fail(m, s.seen(m.Key, streamOf(ctx))); err != nil {
						return err
					}
				}
				if err := b.Send(&Msg{Key: m.Key, N: m.N * 2}); err != nil {
					return err
				}
			}
			return nil
		}), handler.Idempotent())
}

// Handlers reach their stream's metadata through the context; this server
// middleware puts it there.
type streamKey struct{}

func exposeStream(next handler.Handler) handler.Handler {
	return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
		return next.ServeRPC(context.WithValue(ctx, streamKey{}, s.Header()), s)
	})
}

func streamOf(ctx context.Context) handler.Metadata {
	md, _ := ctx.Value(streamKey{}).(handler.Metadata)
	return md
}

// env is a server with the test service (on the in-memory transport, or
// QUIC) and a way to make clients for it.
type env struct {
	*rig.Server // the server; Restart serves again after Close
	svc         *svc
}

type envConfig struct {
	quic    bool
	srvOpts []aster.ServerOption
	svcMW   []handler.Middleware // around the test service
}

func quietLogger() *slog.Logger { return rig.QuietLogger() }

func newEnv(t *testing.T, cfg envConfig) *env {
	t.Helper()
	e := &env{svc: newSvc()}
	tr := rig.Mem
	if cfg.quic {
		tr = rig.QUIC
	}
	svc := e.svc.service("T", append([]handler.Middleware{exposeStream}, cfg.svcMW...)...)
	e.Server = rig.Start(t, tr, []*handler.Service{svc}, cfg.srvOpts...)
	return e
}

// client returns a new client (with its own key) using mw.
func (e *env) client(t *testing.T, mw ...middleware.Client) *aster.Client {
	t.Helper()
	return e.Client(t, aster.WithClientMiddleware(mw...))
}

// fetched fetches c's contract, so that c knows which methods the server
// marks idempotent, and returns c.
func fetched(t *testing.T, c *aster.Client) *aster.Client {
	t.Helper()
	if _, _, err := c.Contract(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// logBuffer is a JSON slog sink whose records tests can read.
type logBuffer struct{ testutil.SyncBuffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// records returns the logged records with the given message.
func (b *logBuffer) records(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// Call helpers for the four patterns.

func unary(ctx context.Context, c aster.Caller, method string, m *Msg, opts ...aster.CallOption) (*Msg, error) {
	return aster.CallUnary[Msg](ctx, c, "T."+method, m, opts...)
}

func list(ctx context.Context, c aster.Caller, m *Msg, opts ...aster.CallOption) ([]int, handler.Metadata, error) {
	s, err := aster.CallServerStream[Msg](ctx, c, "T.list", m, opts...)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	var got []int
	for r, err := range s.All() {
		if err != nil {
			return got, s.Trailer(), err
		}
		got = append(got, r.N)
	}
	return got, s.Trailer(), nil
}

func sum(ctx context.Context, c aster.Caller, msgs []*Msg, opts ...aster.CallOption) (*Msg, error) {
	s, err := aster.CallClientStream[Msg, Msg](ctx, c, "T.sum", opts...)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	for _, m := range msgs {
		if err := s.Send(m); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return s.CloseAndRecv()
}

func chat(ctx context.Context, c aster.Caller, msgs []*Msg, opts ...aster.CallOption) ([]int, error) {
	s, err := aster.CallBidiStream[Msg, Msg](ctx, c, "T.chat", opts...)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	for _, m := range msgs {
		if err := s.Send(m); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
	}
	if err := s.CloseSend(); err != nil && err != io.EOF {
		return nil, err
	}
	var got []int
	for r, err := range s.All() {
		if err != nil {
			return got, err
		}
		got = append(got, r.N)
	}
	return got, nil
}

func wantCode(t *testing.T, err error, want status.Code) {
	t.Helper()
	if got := status.CodeOf(err); got != want {
		t.Fatalf("got %v (%v), want %v", got, err, want)
	}
}

// fakeStream is a handler.Stream for unit tests and benchmarks: no
// transport, one request, responses counted.
type fakeStream struct {
	info    *handler.MethodInfo
	peer    handler.Peer
	md      handler.Metadata
	trailer map[string]string
	recvd   bool
	sent    int
}

func newFakeStream(service, method string) *fakeStream {
	return &fakeStream{info: &handler.MethodInfo{Service: service, Name: method, Version: 1, Pattern: handler.PatternUnary}}
}

func (f *fakeStream) Method() *handler.MethodInfo { return f.info }
func (f *fakeStream) Peer() handler.Peer          { return f.peer }
func (f *fakeStream) Header() handler.Metadata    { return f.md }
func (f *fakeStream) SetHeader(k, v string) error {
	return errors.New("fakeStream: no response metadata")
}
func (f *fakeStream) SetTrailer(k, v string) {
	if f.trailer == nil {
		f.trailer = map[string]string{}
	}
	f.trailer[k] = v
}
func (f *fakeStream) Recv(msg any) error {
	if f.recvd {
		return io.EOF
	}
	f.recvd = true
	return nil
}
func (f *fakeStream) Send(msg any) error { f.sent++; return nil }
