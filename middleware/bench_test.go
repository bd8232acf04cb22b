package middleware_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// The overhead of the standard chains per unary call, without a transport:
// the handler and the caller below do nothing.

func serverChain(logger *slog.Logger) middleware.Server {
	return middleware.Chain(
		middleware.Recover(middleware.RecoverOptions{Logger: logger}),
		middleware.Logging(middleware.LogOptions{Logger: logger}),
		middleware.Deadline(middleware.DeadlineOptions{Default: 30 * time.Second}),
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: middleware.Limit{Rate: 1e9, Burst: 1e9}}),
	)
}

func clientChain(logger *slog.Logger) middleware.Client {
	return middleware.Chain(
		middleware.ClientLogging(middleware.LogOptions{Logger: logger}),
		middleware.ClientDeadline(middleware.DeadlineOptions{Default: 30 * time.Second}),
		middleware.Retry(middleware.RetryOptions{}),
		middleware.CircuitBreaker(middleware.BreakerOptions{}),
	)
}

// warnOnly drops the per-call INFO records, as a production logger at WARN.
func warnOnly() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func BenchmarkServerChain(b *testing.B) {
	unary := handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }).Handler
	run := func(b *testing.B, h handler.Handler) {
		s := newFakeStream("MissionControl", "getStatus")
		s.peer.ID = trust.EndpointID{1}
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			s.recvd = false
			if err := h.ServeRPC(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, unary) })
	b.Run("default-chain", func(b *testing.B) { run(b, serverChain(warnOnly())(unary)) })
	b.Run("default-chain+info-logs", func(b *testing.B) {
		run(b, serverChain(slog.New(slog.NewTextHandler(io.Discard, nil)))(unary))
	})
}

// nopStream is a ClientStream that answers one response and then io.EOF.
type nopStream struct{ n int }

func (s *nopStream) Send(any) error            { return nil }
func (s *nopStream) CloseSend() error          { return nil }
func (s *nopStream) Header() handler.Metadata  { return nil }
func (s *nopStream) Trailer() handler.Metadata { return nil }
func (s *nopStream) Close()                    {}
func (s *nopStream) Recv(any) error {
	if s.n > 0 {
		return io.EOF
	}
	s.n++
	return nil
}

// watchingStream is a nopStream that, like the client's transport, watches
// the call's context with context.AfterFunc until the call ends.
type watchingStream struct {
	nopStream
	stop func() bool
}

func (s *watchingStream) cancel() {}

func (s *watchingStream) Recv(m any) error {
	err := s.nopStream.Recv(m)
	if err != nil {
		s.stop()
	}
	return err
}

func (s *watchingStream) Close() { s.stop() }

func BenchmarkClientChain(b *testing.B) {
	transport := middleware.CallerFunc(func(context.Context, *middleware.Call) (middleware.ClientStream, error) {
		return &nopStream{}, nil
	})
	watching := middleware.CallerFunc(func(ctx context.Context, _ *middleware.Call) (middleware.ClientStream, error) {
		s := &watchingStream{}
		s.stop = context.AfterFunc(ctx, s.cancel)
		return s, nil
	})
	run := func(b *testing.B, c middleware.Caller) {
		ctx := context.Background()
		call := &middleware.Call{Service: "MissionControl", Method: "getStatus", Pattern: handler.PatternUnary,
			Idempotent: true, Peer: trust.EndpointID{1}}
		var req, resp Msg
		b.ReportAllocs()
		for b.Loop() {
			cs, err := c.NewStream(ctx, call)
			if err != nil {
				b.Fatal(err)
			}
			cs.Send(&req)
			cs.CloseSend()
			if err := cs.Recv(&resp); err != nil {
				b.Fatal(err)
			}
			if err := cs.Recv(&resp); err != io.EOF {
				b.Fatal(err)
			}
			cs.Close()
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, transport) })
	b.Run("default-chain", func(b *testing.B) { run(b, clientChain(warnOnly())(transport)) })
	// A transport that watches the context, as aster's does, makes the
	// deadline arm its timer.
	b.Run("bare-watched", func(b *testing.B) { run(b, watching) })
	b.Run("default-chain-watched", func(b *testing.B) { run(b, clientChain(warnOnly())(watching)) })
}

// A real unary call over the in-memory transport, with and without both
// default chains: the chains' share of a whole call.
func BenchmarkUnaryMem(b *testing.B) {
	run := func(b *testing.B, srvMW middleware.Server, cliMW middleware.Client) {
		key := trust.GenerateKey()
		opts := []aster.ServerOption{aster.WithSecretKey(key), aster.WithLogger(quietLogger())}
		if srvMW != nil {
			opts = append(opts, aster.WithMiddleware(srvMW))
		}
		srv := aster.NewServer(opts...)
		srv.MustRegister(newSvc().service("T", exposeStream))
		nw := mem.NewNetwork()
		ln, err := nw.Listen(key)
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(ln)
		defer srv.Close()
		var copts []aster.ClientOption
		if cliMW != nil {
			copts = append(copts, aster.WithClientMiddleware(cliMW))
		}
		c := aster.NewClient(ln.Addr(), append(copts, aster.WithDialer(nw.Dialer(trust.GenerateKey())))...)
		defer c.Close()
		ctx := context.Background()
		req := &Msg{Key: "k", N: 1}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := aster.CallUnary[Msg](ctx, c, "T.put", req, aster.Idempotent()); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, nil, nil) })
	b.Run("default-chains", func(b *testing.B) { run(b, serverChain(warnOnly()), clientChain(warnOnly())) })
}
