package middleware_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

func TestRequireCapabilities(t *testing.T) {
	ok := handler.HandlerFunc(func(context.Context, handler.Stream) error { return nil })
	h := middleware.RequireCapabilities()(ok)
	cases := []struct {
		name string
		req  trust.Requirement
		peer handler.Peer
		want status.Code
	}{
		{"no requirement", nil, handler.Peer{}, status.OK},
		{"granted", trust.Cap("a"), handler.Peer{Capabilities: []string{"a"}}, status.OK},
		{"missing", trust.Cap("a"), handler.Peer{Capabilities: []string{"b"}}, status.PermissionDenied},
		{"all of, one missing", trust.AllOf(trust.Cap("a"), trust.Cap("b")), handler.Peer{Capabilities: []string{"a"}}, status.PermissionDenied},
		{"open gate", trust.Cap("a"), handler.Peer{Unrestricted: true}, status.OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeStream("S", "m")
			s.info.Requires, s.peer = tc.req, tc.peer
			err := h.ServeRPC(context.Background(), s)
			wantCode(t, err, tc.want)
			if err != nil && err.Error() != "PERMISSION_DENIED: permission denied" {
				t.Fatalf("denial leaks detail: %v", err)
			}
		})
	}
}

type principalKey struct{}

func TestBearerAuth(t *testing.T) {
	ctx := context.Background()
	var sawPrincipal any
	probe := func(next handler.Handler) handler.Handler {
		return handler.HandlerFunc(func(ctx context.Context, s handler.Stream) error {
			sawPrincipal = ctx.Value(principalKey{})
			return next.ServeRPC(ctx, s)
		})
	}
	validate := func(ctx context.Context, token string, s handler.Stream) (context.Context, error) {
		if _, err := middleware.StaticTokens("t0k3n")(ctx, token, s); err != nil {
			return nil, err
		}
		return context.WithValue(ctx, principalKey{}, "ops-bot"), nil
	}
	auth := middleware.BearerAuth(middleware.BearerOptions{
		Validate: validate,
		Skip:     func(m *handler.MethodInfo) bool { return m.Name == "deadline" },
	})
	e := newEnv(t, envConfig{svcMW: []handler.Middleware{auth, probe}})
	token := func(tok string, err error) middleware.Client {
		return middleware.BearerToken(func(context.Context) (string, error) { return tok, err })
	}
	_, err := unary(ctx, e.client(t), "get", &Msg{})
	wantCode(t, err, status.Unauthenticated)
	_, err = unary(ctx, e.client(t, token("wrong", nil)), "get", &Msg{})
	wantCode(t, err, status.Unauthenticated)
	_, err = unary(ctx, e.client(t, token("", errors.New("no token source"))), "get", &Msg{})
	wantCode(t, err, status.Unauthenticated)
	good := e.client(t, token("t0k3n", nil))
	if _, err := unary(ctx, good, "get", &Msg{}); err != nil || sawPrincipal != "ops-bot" {
		t.Fatalf("%v, principal %v", err, sawPrincipal)
	}
	if _, err := chat(ctx, good, []*Msg{{N: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := unary(ctx, e.client(t), "deadline", &Msg{}); err != nil {
		t.Fatalf("skipped method: %v", err)
	}
}
