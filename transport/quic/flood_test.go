package quic

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
)

// blackhole is a client socket that sends but never delivers what it
// receives: a client at a forged source address, which never sees the
// server's answers.
type blackhole struct {
	net.PacketConn
	closed chan struct{}
	once   sync.Once
}

func (b *blackhole) ReadFrom([]byte) (int, net.Addr, error) {
	<-b.closed
	return 0, nil, net.ErrClosed
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers.
func (b *blackhole) SetReadBuffer(n int) error  { return b.PacketConn.(*net.UDPConn).SetReadBuffer(n) }
func (b *blackhole) SetWriteBuffer(n int) error { return b.PacketConn.(*net.UDPConn).SetWriteBuffer(n) }

func (b *blackhole) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.PacketConn.Close()
}

// handshaking counts the listener's connections in their handshake: the
// goroutines quic-go runs a new server connection on.
func handshaking() int {
	buf := make([]byte, 1<<24)
	buf = buf[:runtime.Stack(buf, true)]
	return bytes.Count(buf, []byte("(*baseServer).handleNewConn("))
}

// Initial packets from addresses that never answer (forged sources) make
// the listener hold a handshake each only up to UnvalidatedHandshakes per
// second; beyond, it asks for address validation (a Retry) and holds
// nothing. Well-behaved clients still connect meanwhile, one round trip
// later. Before, each forged Initial held a connection, its TLS state and
// a goroutine for the handshake timeout (2.5 s).
func TestForgedInitialsHoldLittle(t *testing.T) {
	const allowed = 10
	ln, err := Listen("127.0.0.1:0", testutil.Key(t, 1), &Config{UnvalidatedHandshakes: allowed})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	bh := &blackhole{PacketConn: udp, closed: make(chan struct{})}
	tr := &quicgo.Transport{Conn: bh}
	defer tr.Close()
	defer bh.Close() // first: tr.Close waits for its reader, which bh holds
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	const n = 100
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, _ = tr.Dial(ctx, ln.udp.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{transport.ALPN}}, &quicgo.Config{})
		})
	}
	// The most handshakes held at once over 0.5 s (or longer, when
	// dumping the stacks is slow).
	held := 0
	for range 25 {
		time.Sleep(20 * time.Millisecond)
		held = max(held, handshaking())
	}
	t.Logf("%d connection attempts from a forged address: the listener holds %d handshakes", n, held)
	// The burst, and the rate for the time since the first attempt.
	if want := allowed + int(allowed*time.Since(start).Seconds()) + 2; held > want {
		t.Errorf("the listener holds %d handshakes for %d attempts whose address was never validated, want at most %d", held, n, want)
	}

	// A real client connects meanwhile.
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	c, err := d.Dial(context.Background(), ln.Addr())
	if err != nil {
		t.Fatalf("a real client during the flood: %v", err)
	}
	c.Close(transport.ConnNoError, "")
	cancel()
	wg.Wait()
}
