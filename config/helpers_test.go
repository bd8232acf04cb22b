package config_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

var quiet = slog.New(slog.DiscardHandler)

// Msg is the test message.
type Msg struct {
	Text string `cbor:"text" json:"text"`
}

// opsService has methods guarded by capabilities, and wait, which blocks
// until release is closed (started receives once it runs).
func opsService(started chan<- struct{}, release <-chan struct{}) *handler.Service {
	echo := func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }
	return handler.NewService("Ops", 1).
		Handle("status", handler.Unary(echo), handler.Requires(trust.Cap("ops.status"))).
		Handle("open", handler.Unary(echo)).
		Handle("tail", handler.Unary(echo), handler.Requires(trust.Cap("ops.logs"))).
		Handle("wait", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			started <- struct{}{}
			select {
			case <-release:
				return m, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code status.Code) {
	t.Helper()
	if got := status.CodeOf(err); got != code {
		t.Fatalf("got %v (code %v), want code %v", err, got, code)
	}
}

// listen runs srv.ListenAndServe(addr) in the background and returns the
// address once it listens; the server is closed at the end of the test.
func listen(t *testing.T, srv *config.Server, addr string) aster.Address {
	t.Helper()
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe(addr, func(a aster.Address) { ready <- a }) }()
	select {
	case a := <-ready:
		t.Cleanup(func() {
			srv.Close()
			if err := <-errc; !errors.Is(err, aster.ErrServerClosed) {
				t.Errorf("ListenAndServe = %v", err)
			}
		})
		return a
	case err := <-errc:
		t.Fatalf("ListenAndServe: %v", err)
	}
	panic("unreachable")
}

// httpGet fetches url and returns the status code and body.
func httpGet(t *testing.T, url string) (int, string, error) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
