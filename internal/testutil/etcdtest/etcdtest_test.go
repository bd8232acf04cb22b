package etcdtest_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/etcdtest"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func client(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRestartKeepsData stops the server and starts it again: the same
// endpoint serves the keys written before.
func TestRestartKeepsData(t *testing.T) {
	s := etcdtest.StartServer(t)
	ep := s.Endpoint()
	if !strings.HasPrefix(ep, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q", ep)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := client(t, ep)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	s.Stop() // a second Stop does nothing
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(ep, "http://"), time.Second); err == nil {
		conn.Close()
		t.Fatal("the endpoint still accepts connections after Stop")
	}

	s.Start()
	if s.Endpoint() != ep {
		t.Fatalf("endpoint changed across restart: %s, then %s", ep, s.Endpoint())
	}
	resp, err := c.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after restart: %v", resp.Kvs)
	}
}

// TestStart is the short form: an endpoint that serves, and a stop that
// ends it.
func TestStart(t *testing.T) {
	ep, stop := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c := client(t, ep)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	stop()
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(ep, "http://"), time.Second); err == nil {
		conn.Close()
		t.Fatal("the endpoint still accepts connections after stop")
	}
}
