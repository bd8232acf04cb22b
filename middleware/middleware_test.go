package middleware_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
)

func TestChainOrder(t *testing.T) {
	var got []string
	srvMW := func(name string) middleware.Server {
		return func(next handler.Handler) handler.Handler {
			return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
				got = append(got, name+">")
				err := next.ServeRPC(ctx, s)
				got = append(got, "<"+name)
				return err
			})
		}
	}
	h := middleware.Chain(srvMW("a"), srvMW("b"), srvMW("c"))(handler.HandlerFunc(func(context.Context, handler.Stream) error {
		got = append(got, "handler")
		return nil
	}))
	h.ServeRPC(context.Background(), newFakeStream("S", "m"))
	if want := []string{"a>", "b>", "c>", "handler", "<c", "<b", "<a"}; !slices.Equal(got, want) {
		t.Fatalf("server order %v", got)
	}

	got = nil
	cliMW := func(name string) middleware.Client {
		return func(next middleware.Caller) middleware.Caller {
			return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
				got = append(got, name)
				return next.NewStream(ctx, call)
			})
		}
	}
	c := middleware.Chain(cliMW("a"), cliMW("b"))(middleware.CallerFunc(func(context.Context, *middleware.Call) (middleware.ClientStream, error) {
		got = append(got, "transport")
		return nil, nil
	}))
	c.NewStream(context.Background(), &middleware.Call{})
	if want := []string{"a", "b", "transport"}; !slices.Equal(got, want) {
		t.Fatalf("client order %v", got)
	}
	if middleware.Chain[middleware.Server]()(handler.HandlerFunc(nil)) == nil {
		t.Fatal("empty chain")
	}
}

// Hooks see every message of every pattern on both sides; stats are found
// through the wrappers.
func TestMessageHooks(t *testing.T) {
	ctx := context.Background()
	type counts struct{ sent, recvd, eof int }
	var mu sync.Mutex
	srvCounts := map[string]*counts{}
	cliCounts := map[string]*counts{}
	var srvStats []middleware.StreamStats
	hook := func(c *counts) middleware.MessageHooks {
		return middleware.MessageHooks{
			OnSend: func(_ any, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					c.sent++
				}
			},
			OnRecv: func(_ any, err error) {
				mu.Lock()
				defer mu.Unlock()
				switch err {
				case nil:
					c.recvd++
				case io.EOF:
					c.eof++
				}
			},
		}
	}
	observeSrv := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			c := &counts{}
			mu.Lock()
			srvCounts[s.Method().Name] = c
			mu.Unlock()
			ws := middleware.WrapServerStream(s, hook(c))
			err := next.ServeRPC(ctx, ws)
			st, ok := middleware.StatsOf(ws)
			if !ok {
				t.Error("no stats through the server wrapper")
			}
			mu.Lock()
			srvStats = append(srvStats, st)
			mu.Unlock()
			return err
		})
	}
	observeCli := func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			cs, err := next.NewStream(ctx, call)
			if err != nil {
				return nil, err
			}
			c := &counts{}
			mu.Lock()
			cliCounts[call.Method] = c
			mu.Unlock()
			return middleware.WrapClientStream(cs, hook(c)), nil
		})
	}
	var lastStream middleware.ClientStream
	grab := func(next middleware.Caller) middleware.Caller {
		return middleware.CallerFunc(func(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
			cs, err := next.NewStream(ctx, call)
			lastStream = cs
			return cs, err
		})
	}
	e := newEnv(t, envConfig{svcMW: []handler.Middleware{observeSrv}})
	c := e.client(t, grab, observeCli)
	if _, err := unary(ctx, c, "get", &Msg{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := list(ctx, c, &Msg{N: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := sum(ctx, c, []*Msg{{N: 1}, {N: 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := chat(ctx, c, []*Msg{{N: 1}, {N: 2}, {N: 3}, {N: 4}}); err != nil {
		t.Fatal(err)
	}
	if st, ok := middleware.StatsOf(lastStream); !ok || st.SentMessages != 4 || st.ReceivedMessages != 4 || st.SentBytes <= 0 {
		t.Fatalf("client stats %+v %v", st, ok)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string][2]int{"get": {1, 1}, "list": {1, 3}, "sum": {2, 1}, "chat": {4, 4}}
	for m, w := range want {
		s, c := srvCounts[m], cliCounts[m]
		if s == nil || c == nil || s.recvd != w[0] || s.sent != w[1] || c.sent != w[0] || c.recvd != w[1] || c.eof != 1 {
			t.Errorf("%s: server %+v client %+v, want requests %d responses %d", m, s, c, w[0], w[1])
		}
	}
	if len(srvStats) != 4 || srvStats[3].ReceivedMessages != 4 || srvStats[3].SentMessages != 4 {
		t.Errorf("server stats %+v", srvStats)
	}
}
