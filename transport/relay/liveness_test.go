package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/transport/relay"
)

// A server behind a relay that vanishes without a QUIC CONNECTION_CLOSE
// (its packet connection closed under it, as when its process is killed)
// is noticed by a client streaming from it within the idle timeout: the
// stream fails with UNAVAILABLE, not after a minute.
func TestKilledServerBehindRelayNoticed(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	key := testutil.Key(t, 1)
	pc, err := relay.DialPacketConn(ctxT(t), r.url, key, &relay.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenPacketConn(pc, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(quiet))
	if err := srv.Register(testService()); err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-serveErr }()

	c, err := aster.DialAddress(ctxT(t), aster.Address{ID: ln.Addr().ID, Relay: r.url})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := aster.CallServerStream[Msg](context.Background(), c, "T.tick", &Msg{N: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	pc.Close() // the server is gone from the relay; QUIC sent nothing

	done := make(chan error, 1)
	t0 := time.Now()
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	bound := 4 * quic.DefaultMaxIdleTimeout
	select {
	case err := <-done:
		if status.CodeOf(err) != status.Unavailable {
			t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
		}
		t.Logf("stream failed after %v: %v", time.Since(t0), err)
	case <-time.After(bound):
		t.Fatalf("stream from a killed server still open after %v", bound)
	}
}

// A dial through a relay to an endpoint not registered there fails with
// UNAVAILABLE within the handshake bound (the relay drops the packets),
// though the caller's context is live.
func TestDialUnregisteredThroughRelay(t *testing.T) {
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	a := aster.Address{ID: testutil.ID(t, 5), Relay: r.url}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		c, err := aster.DialAddress(ctx, a, aster.WithSecretKey(testutil.Key(t, 2)))
		if err == nil {
			c.Close()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		if status.CodeOf(err) != status.Unavailable || !errors.Is(err, transport.ErrHandshakeTimeout) {
			t.Fatalf("dial: %v; want UNAVAILABLE wrapping transport.ErrHandshakeTimeout", err)
		}
	case <-time.After(4 * quic.DefaultHandshakeTimeout):
		t.Fatalf("dial of an unregistered endpoint still waiting after %v", 4*quic.DefaultHandshakeTimeout)
	}
}
