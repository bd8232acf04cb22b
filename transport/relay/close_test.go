package relay

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
)

// Close writes the datagrams queued before it to the relay, such as the
// QUIC CONNECTION_CLOSE a Dialer sends just before closing its packet
// connection, even when the writer is behind when Close is called.
func TestCloseFlushesQueuedDatagrams(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	a, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 1), clientCfg())
	if err != nil {
		t.Fatal(err)
	}
	b, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 2), clientCfg())
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	defer b.Close()

	// Hold a's writer before its first datagram, so that the datagrams
	// below are still queued when Close is called.
	release := make(chan struct{})
	held := make(chan struct{}, 1)
	SetBeforeWrite(a, func() {
		select {
		case held <- struct{}{}:
		default:
		}
		<-release
	})
	const n = 5
	to := &Addr{ID: testutil.ID(t, 2), Relay: r.url}
	for i := range n {
		if _, err := a.WriteTo(fmt.Appendf(nil, "datagram %d", i), to); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never took a datagram")
	}
	closed := make(chan struct{})
	go func() { a.Close(); close(closed) }()
	// Let Close start (it may also return at once, which loses the
	// datagrams), then let the writer go.
	select {
	case <-closed:
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(2 * CloseFlushTimeout):
		t.Fatal("Close did not return")
	}
	for i := range n {
		got, _, err := recvWithin(t, b, 5*time.Second)
		if want := fmt.Sprintf("datagram %d", i); err != nil || string(got) != want {
			t.Fatalf("b read %q, %v; want %q (a datagram queued before Close was lost)", got, err, want)
		}
	}
}

// With ConnectInBackground a relay that is down does not fail
// DialPacketConn: the connection is made once the relay is up.
func TestConnectInBackground(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	cert, err := SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	url := PinnedURL(addr, cert.Certificate[0])

	if _, err := DialPacketConn(ctxT(t), url, testutil.Key(t, 1), clientCfg()); err == nil {
		t.Fatal("DialPacketConn to a relay that is down succeeded without ConnectInBackground")
	}
	cfg := clientCfg()
	cfg.ConnectInBackground = true
	a, err := DialPacketConn(ctxT(t), url, testutil.Key(t, 1), cfg)
	if err != nil {
		t.Fatalf("DialPacketConn with ConnectInBackground: %v", err)
	}
	defer a.Close()

	r := startRelayOn(t, ServerConfig{Certificate: cert, Logger: quietLog}, addr)
	b := dialRelay(t, r, 2)
	// a reconnects within MaxReconnectDelay; until then its datagrams are
	// lost, so keep sending.
	deadline := time.Now().Add(4 * MaxReconnectDelay)
	for time.Now().Before(deadline) {
		if _, err := a.WriteTo([]byte("hello"), &Addr{ID: testutil.ID(t, 2), Relay: r.url}); err != nil {
			t.Fatal(err)
		}
		if got, _, err := recvWithin(t, b, 200*time.Millisecond); err == nil {
			if string(got) != "hello" {
				t.Fatalf("b read %q", got)
			}
			return
		}
	}
	t.Fatal("the packet connection never reached the relay once it was up")
}
