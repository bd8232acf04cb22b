package middleware_test

import (
	"context"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

func TestLogging(t *testing.T) {
	ctx := context.Background()
	var srvLogs, cliLogs logBuffer
	e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{aster.WithMiddleware(
		middleware.Logging(middleware.LogOptions{Logger: srvLogs.logger(), Metadata: true}))}})
	c := e.client(t, middleware.ClientLogging(middleware.LogOptions{Logger: cliLogs.logger(), Metadata: true}))
	hdr := []aster.CallOption{aster.WithHeader("authorization", "Bearer s3cr3t"), aster.WithHeader("x-api-key", "k"), aster.WithHeader("tenant", "acme")}

	if _, err := unary(ctx, c, "get", &Msg{Key: "k"}, hdr...); err != nil {
		t.Fatal(err)
	}
	if _, _, err := list(ctx, c, &Msg{N: 3}, hdr...); err != nil {
		t.Fatal(err)
	}
	if _, err := sum(ctx, c, []*Msg{{N: 1}, {N: 2}}, hdr...); err != nil {
		t.Fatal(err)
	}
	if _, err := chat(ctx, c, []*Msg{{N: 1}, {N: 2}, {N: 3}, {N: 4}}, hdr...); err != nil {
		t.Fatal(err)
	}
	_, err := unary(ctx, c, "put", &Msg{Key: "f", Fail: 1, Code: uint32(status.NotFound)}, hdr...)
	wantCode(t, err, status.NotFound)
	sess := c.NewSession()
	_, err = unary(ctx, sess, "get", &Msg{})
	wantCode(t, err, status.FailedPrecondition)
	sess.Close(ctx)

	type want struct {
		method          string
		code, level     string
		in, out         float64
		pattern         string
		clientOnlyCheck bool
	}
	wants := []want{
		{"get", "OK", "INFO", 1, 1, "unary", false},
		{"list", "OK", "INFO", 1, 3, "server_stream", false},
		{"sum", "OK", "INFO", 2, 1, "client_stream", false},
		{"chat", "OK", "INFO", 4, 4, "bidi_stream", false},
		{"put", "NOT_FOUND", "WARN", 1, 0, "unary", false},
		{"get", "FAILED_PRECONDITION", "WARN", 0, 0, "unary", true},
	}
	srv := srvLogs.records(t, "aster: call")
	cli := cliLogs.records(t, "aster: call")
	if len(srv) != 5 || len(cli) != 6 {
		t.Fatalf("%d server and %d client records, want 5 and 6", len(srv), len(cli))
	}
	for i, w := range wants {
		cr := cli[i]
		if cr["method"] != w.method || cr["code"] != w.code || cr["level"] != w.level || cr["pattern"] != w.pattern || cr["peer"] != e.Addr.ID.Short() {
			t.Errorf("client record %d: %v, want %+v", i, cr, w)
		}
		if w.clientOnlyCheck {
			if cr["session"] != float64(sess.ID()) {
				t.Errorf("session call record %v", cr)
			}
			continue
		}
		if cr["msgs_out"] != w.in || cr["msgs_in"] != w.out {
			t.Errorf("client record %d counts: %v, want out %v in %v", i, cr, w.in, w.out)
		}
		r := srv[i]
		if r["service"] != "T" || r["method"] != w.method || r["code"] != w.code || r["level"] != w.level || r["pattern"] != w.pattern {
			t.Errorf("server record %d: %v, want %+v", i, r, w)
		}
		if r["msgs_in"] != w.in || r["msgs_out"] != w.out || r["bytes_in"].(float64) <= 0 {
			t.Errorf("server record %d counts: %v, want in %v out %v", i, r, w.in, w.out)
		}
		if _, ok := r["duration"]; !ok {
			t.Errorf("no duration in %v", r)
		}
		md := r["metadata"].(map[string]any)
		if md["authorization"] != "***" || md["x-api-key"] != "***" || md["tenant"] != "acme" {
			t.Errorf("metadata not masked: %v", md)
		}
		cmd := cr["metadata"].(map[string]any)
		if cmd["authorization"] != "***" {
			t.Errorf("client metadata not masked: %v", cmd)
		}
	}
	if srv[4]["error"] != "injected failure 1 of 1" {
		t.Errorf("error not logged: %v", srv[4])
	}
}

func TestAudit(t *testing.T) {
	ctx := context.Background()
	var logs logBuffer
	admit := func(ctx context.Context, c transport.Conn) (handler.Peer, error) {
		return handler.Peer{ID: c.RemoteID(), Capabilities: []string{"ops.read"}}, nil
	}
	req := trust.AnyOf(trust.Cap("ops.read"), trust.Cap("ops.admin"))
	svc := handler.NewService("Audited", 1).
		Handle("read", handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }), handler.Requires(req))
	e := newEnv(t, envConfig{srvOpts: []aster.ServerOption{
		aster.WithAdmission(admit),
		aster.WithMiddleware(middleware.Audit(middleware.AuditOptions{Logger: logs.logger()})),
	}})
	if err := e.Server.Register(svc); err != nil {
		t.Fatal(err)
	}
	c := e.client(t)
	if _, err := aster.CallUnary[Msg](ctx, c, "Audited.read", &Msg{}); err != nil {
		t.Fatal(err)
	}
	recs := logs.records(t, "aster: audit")
	if len(recs) != 1 {
		t.Fatalf("%d records", len(recs))
	}
	r := recs[0]
	caps, _ := r["capabilities"].([]any)
	if r["method"] != "Audited.read" || len(caps) != 1 || caps[0] != "ops.read" || r["unrestricted"] != false ||
		r["requires"] != "any_of(ops.read, ops.admin)" || r["code"] != "OK" || len(r["peer"].(string)) != 64 {
		t.Fatalf("audit record %v", r)
	}
}

func TestMasked(t *testing.T) {
	for key, want := range map[string]bool{
		"authorization": true, "Authorization": true, "x-api-key": true, "session-token": true,
		"db_password": true, "tenant": false, "trace-id": false,
	} {
		if got := middleware.Masked(key, middleware.DefaultMaskedKeys); got != want {
			t.Errorf("Masked(%q) = %v", key, got)
		}
	}
}
