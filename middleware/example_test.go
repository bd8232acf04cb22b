package middleware_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

// Writing your own middleware: on the server it is a func(handler.Handler)
// handler.Handler, exactly as in net/http; on the client it wraps the
// Caller, like an http.RoundTripper wrapper, and may wrap the stream to see
// each message.
func Example() {
	// Server side: read a metadata key, echo it in the trailer, time the call.
	requestID := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			id := s.Header().Get("request-id")
			s.SetTrailer("request-id", id)
			err := next.ServeRPC(ctx, s)
			fmt.Printf("server: %s request-id=%s code=%v\n", s.Method().FullName(), id, aster.CodeOf(err))
			return err
		})
	}
	// Client side: add the metadata key and count the responses received.
	var n int
	tagCalls := func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			n++
			if call.Metadata == nil {
				call.Metadata = handler.Metadata{}
			}
			call.Metadata["request-id"] = fmt.Sprintf("req-%d", n)
			cs, err := next.NewStream(ctx, call)
			if err != nil {
				return nil, err
			}
			received := 0
			return middleware.WrapClientStream(cs, middleware.MessageHooks{
				OnRecv: func(_ any, err error) {
					if err == nil {
						received++
						return
					}
					fmt.Printf("client: %s got %d message(s), trailer request-id=%s\n", call.FullName(), received, cs.Trailer()["request-id"])
				},
			}), nil
		})
	}

	mc := mission.NewMissionControl()
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quietLogger()), aster.WithMiddleware(requestID))
	srv.MustRegister(mc.Service())
	nw := mem.NewNetwork()
	ln, _ := nw.Listen(key)
	go srv.Serve(ln)
	defer srv.Close()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())), aster.WithClientMiddleware(tagCalls))
	defer c.Close()

	st, err := aster.CallUnary[mission.StatusResponse](context.Background(), c, "MissionControl.getStatus", &mission.StatusRequest{AgentID: "edge-node-7"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.AgentID, st.Status)
	// Output:
	// server: MissionControl.getStatus request-id=req-1 code=OK
	// client: MissionControl.getStatus got 1 message(s), trailer request-id=req-1
	// edge-node-7 running
}

// Hardening the Mission Control server and client for production takes a
// chain on each side; the order is the one the package documents.
func Example_hardening() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(logger), aster.WithMiddleware(
		middleware.Recover(middleware.RecoverOptions{Logger: logger}),
		middleware.Logging(middleware.LogOptions{Logger: logger}),
		middleware.Deadline(middleware.DeadlineOptions{Default: 30 * time.Second, Max: 5 * time.Minute,
			PerMethod: map[string]time.Duration{"MissionControl.tailLogs": time.Hour}}),
		middleware.RateLimit(middleware.RateLimitOptions{PerPeer: middleware.Limit{Rate: 100, Burst: 200}}),
	))
	srv.MustRegister(mission.NewMissionControl().Service(), mission.NewAgentSessionService(nil))

	nw := mem.NewNetwork() // aster.Dial(ctx, "aster1…", ...) in production
	ln, _ := nw.Listen(key)
	go srv.Serve(ln)
	defer srv.Close()

	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())), aster.WithClientMiddleware(
		middleware.ClientLogging(middleware.LogOptions{Logger: logger}),
		middleware.ClientDeadline(middleware.DeadlineOptions{Default: 10 * time.Second}),
		middleware.Retry(middleware.RetryOptions{}),
		middleware.CircuitBreaker(middleware.BreakerOptions{}),
	))
	defer c.Close()
	ctx := context.Background()
	c.Contract(ctx) // learn which methods are idempotent (getStatus is): Retry retries only those

	st, err := aster.CallUnary[mission.StatusResponse](ctx, c, "MissionControl.getStatus", &mission.StatusRequest{AgentID: "edge-node-7"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.AgentID, st.Status)
	// Output: edge-node-7 running
}
