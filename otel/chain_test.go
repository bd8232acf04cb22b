package otel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/middleware"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/trust"
)

// TestOutermostOverStandardChains: otel installed outermost over the
// standard middleware chains on both sides still sizes every message (from
// the framework's stream counts through the chains' wrappers), and a
// handler that receives and sends from two goroutines at once is traced
// without a data race (run with -race).
func TestOutermostOverStandardChains(t *testing.T) {
	r := newRig(t)
	key := testutil.Key(t, 5)
	logger := quiet()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(logger), aster.WithShutdownLinger(time.Millisecond),
		aster.WithMiddleware(
			asterotel.Server(r.opts...),
			middleware.Recover(middleware.RecoverOptions{Logger: logger}),
			middleware.Logging(middleware.LogOptions{Logger: logger}),
			middleware.Deadline(middleware.DeadlineOptions{Default: time.Minute}),
			middleware.RateLimit(middleware.RateLimitOptions{PerPeer: middleware.Limit{Rate: 1000, Burst: 1000}}),
		))
	const n = 20
	srv.MustRegister(handler.NewService("Duplex", 1).
		Handle("both", handler.BidiStream(func(ctx context.Context, b *handler.Bidi[Msg, Msg]) error {
			// Receive everything on another goroutine while sending.
			got := make(chan error, 1)
			go func() {
				for _, err := range b.All() {
					if err != nil {
						got <- err
						return
					}
				}
				got <- nil
			}()
			for i := range n {
				if err := b.Send(&Msg{Text: "from the server", N: i}); err != nil {
					<-got
					return err
				}
			}
			return <-got
		})))
	ln, err := r.nw.Listen(key)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-done; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()

	c := aster.NewClient(aster.Address{ID: trust.IDOf(key)}, aster.WithDialer(r.nw.Dialer(testutil.Key(t, 6))),
		aster.WithClientMiddleware(
			asterotel.Client(r.opts...),
			middleware.ClientLogging(middleware.LogOptions{Logger: logger}),
			middleware.ClientDeadline(middleware.DeadlineOptions{Default: time.Minute}),
			middleware.Retry(middleware.RetryOptions{}),
			middleware.CircuitBreaker(middleware.BreakerOptions{}),
		))
	defer c.Close()

	ctx := t.Context()
	s, err := aster.CallBidiStream[Msg, Msg](ctx, c, "Duplex.both")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sendErr := make(chan error, 1)
	go func() {
		for i := range n {
			if err := s.Send(&Msg{Text: "from the client", N: i}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- s.CloseSend()
	}()
	got := 0
	for _, err := range s.All() {
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("received %d messages, want %d", got, n)
	}
	cs := r.span(t, "Duplex/both", trace.SpanKindClient)
	ss := r.span(t, "Duplex/both", trace.SpanKindServer)
	if ss.Parent().SpanID() != cs.SpanContext().SpanID() {
		t.Errorf("server span is not the client span's child")
	}
	for _, sp := range []sdktrace.ReadOnlySpan{cs, ss} {
		sent, recv := messageEvents(t, sp) // every event sized, sizes add up to the byte attributes
		if sent != n || recv != n {
			t.Errorf("%v span: %d sent and %d received message events, want %d each", sp.SpanKind(), sent, recv, n)
		}
	}
	if intAttr(t, cs, asterotel.KeyBytesSent) != intAttr(t, ss, asterotel.KeyBytesReceived) ||
		intAttr(t, cs, asterotel.KeyBytesReceived) != intAttr(t, ss, asterotel.KeyBytesSent) {
		t.Errorf("bytes sent by one side differ from bytes received by the other")
	}
}
