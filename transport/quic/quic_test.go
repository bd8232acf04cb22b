package quic_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	quicgo "github.com/quic-go/quic-go"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func setup(addr string, cfg *quic.Config) func(t *testing.T) testutil.Setup {
	return func(t *testing.T) testutil.Setup {
		ln, err := quic.Listen(addr, testutil.Key(t, 1), cfg)
		if err != nil {
			t.Fatal(err)
		}
		d := quic.NewDialer(testutil.Key(t, 2), cfg)
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("Dialer.Close: %v", err)
			}
		})
		return testutil.Setup{Dialer: d, DialerID: testutil.ID(t, 2), Listener: ln}
	}
}

func TestConformance(t *testing.T) {
	testutil.TestTransport(t, setup("127.0.0.1:0", nil))
}

// TestConformanceAllInterfaces listens on all interfaces, so dials use the
// enumerated interface addresses.
func TestConformanceAllInterfaces(t *testing.T) {
	testutil.TestTransport(t, setup(":0", nil))
}

func TestListenAddrs(t *testing.T) {
	for _, addr := range []string{":0", "0.0.0.0:0", "", "127.0.0.1:0"} {
		ln, err := quic.Listen(addr, testutil.Key(t, 1), nil)
		if err != nil {
			t.Fatalf("Listen(%q): %v", addr, err)
		}
		ea := ln.Addr()
		if ea.ID != testutil.ID(t, 1) {
			t.Errorf("Listen(%q): Addr().ID = %s", addr, ea.ID.Short())
		}
		if len(ea.Direct) == 0 || len(ea.Direct) > discovery.MaxDirectAddrs {
			t.Errorf("Listen(%q): %d direct addresses", addr, len(ea.Direct))
		} else if got := ea.Direct[0]; got.Addr() != netip.MustParseAddr("127.0.0.1") || got.Port() == 0 {
			t.Errorf("Listen(%q): first direct address %v, want 127.0.0.1:port", addr, got)
		}
		for _, ap := range ea.Direct {
			if !ap.IsValid() || ap.Addr().IsUnspecified() || ap.Addr().IsLinkLocalUnicast() {
				t.Errorf("Listen(%q): bad direct address %v", addr, ap)
			}
		}
		t.Logf("Listen(%q): %v", addr, ea.Direct)
		if err := ln.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestListenIPv6(t *testing.T) {
	probe, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	_ = probe.Close()
	testutil.TestTransport(t, setup("[::1]:0", nil))
}

func TestBadInput(t *testing.T) {
	if _, err := quic.Listen("127.0.0.1:0", trust.SecretKey{1, 2, 3}, nil); !errors.Is(err, quic.ErrInvalidKey) {
		t.Errorf("Listen with short key: %v", err)
	}
	bad := append(trust.SecretKey(nil), testutil.Key(t, 1)...)
	bad[40] ^= 1 // public half no longer matches the seed
	if _, err := quic.Listen("127.0.0.1:0", bad, nil); !errors.Is(err, quic.ErrInvalidKey) {
		t.Errorf("Listen with inconsistent key: %v", err)
	}
	if _, err := quic.Listen("no port", testutil.Key(t, 1), nil); err == nil {
		t.Error("Listen on a malformed address succeeded")
	}

	ln, err := quic.Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx := t.Context()

	d := quic.NewDialer(nil, nil)
	if _, err := d.Dial(ctx, ln.Addr()); !errors.Is(err, quic.ErrInvalidKey) {
		t.Errorf("Dial with nil key: %v", err)
	}
	_ = d.Close()

	// A key whose public half does not match its seed is found out while
	// the first handshake runs: that Dial, and every later one, fails
	// with ErrInvalidKey, whether the server answers or not, and the
	// server accepts no connection.
	d = quic.NewDialer(bad, nil)
	for range 2 {
		if _, err := d.Dial(ctx, ln.Addr()); !errors.Is(err, quic.ErrInvalidKey) {
			t.Errorf("Dial with inconsistent key: %v", err)
		}
	}
	_ = d.Close()
	d = quic.NewDialer(bad, &quic.Config{HandshakeTimeout: 100 * time.Millisecond})
	dead := discovery.EndpointAddr{ID: testutil.ID(t, 1), Direct: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}
	if _, err := d.Dial(ctx, dead); !errors.Is(err, quic.ErrInvalidKey) {
		t.Errorf("Dial with inconsistent key to a dead address: %v", err)
	}
	_ = d.Close()
	actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if c, err := ln.Accept(actx); err == nil {
		t.Errorf("server accepted a connection from %s, whose key is inconsistent", c.RemoteID().Short())
	}
	cancel()

	d = quic.NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	if _, err := d.Dial(ctx, discovery.EndpointAddr{ID: testutil.ID(t, 1)}); !errors.Is(err, quic.ErrNoAddress) {
		t.Errorf("Dial without addresses: %v", err)
	}
	if _, err := d.Dial(ctx, discovery.EndpointAddr{ID: testutil.ID(t, 1), Direct: []netip.AddrPort{{}}}); !errors.Is(err, quic.ErrNoAddress) {
		t.Errorf("Dial of an invalid address: %v", err)
	}
	_ = d.Close()
	if _, err := d.Dial(ctx, ln.Addr()); !errors.Is(err, quic.ErrDialerClosed) {
		t.Errorf("Dial after Close: %v", err)
	}
}

// TestDialFallthrough checks that a dead first address does not prevent
// reaching a later one, and that the loopback bound applies.
func TestDialFallthrough(t *testing.T) {
	ln, err := quic.Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dead, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().(*net.UDPAddr).AddrPort()
	_ = dead.Close()

	d := quic.NewDialer(testutil.Key(t, 2), &quic.Config{LoopbackDialTimeout: 200 * time.Millisecond})
	defer d.Close()
	addr := ln.Addr()
	addr.Direct = append([]netip.AddrPort{deadAddr}, addr.Direct...)
	start := time.Now()
	c, err := d.Dial(t.Context(), addr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Logf("dial with a dead first address took %v", time.Since(start))
	_ = c.Close(transport.ConnNoError, "")

	// Only dead addresses: a clear error after the handshake timeout.
	d2 := quic.NewDialer(testutil.Key(t, 2), &quic.Config{HandshakeTimeout: 300 * time.Millisecond})
	defer d2.Close()
	_, err = d2.Dial(t.Context(), discovery.EndpointAddr{ID: addr.ID, Direct: []netip.AddrPort{deadAddr}})
	if err == nil {
		t.Fatal("Dial of a dead address succeeded")
	}
	t.Logf("dead address: %v", err)
}

// TestErrorsHideQUICGo checks that errors reaching callers carry no quic-go
// types.
func TestErrorsHideQUICGo(t *testing.T) {
	ln, err := quic.Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := quic.NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	addr := ln.Addr()
	addr.ID = testutil.ID(t, 3)
	_, err = d.Dial(t.Context(), addr)
	var te *quicgo.TransportError
	if !errors.Is(err, transport.ErrPeerMismatch) || errors.As(err, &te) {
		t.Errorf("mismatch error %v: want ErrPeerMismatch without a quic-go TransportError inside", err)
	}
	t.Logf("mismatch: %v", err)
}

// TestIdleConnectionSurvives checks that keep-alives hold an idle
// connection open beyond a short idle timeout.
func TestIdleConnectionSurvives(t *testing.T) {
	// An idle timeout long enough that a loaded CI machine does not stall
	// past it, and a wait of twice that: without keep-alives the
	// connection would be gone.
	cfg := &quic.Config{MaxIdleTimeout: 2 * time.Second, KeepAlivePeriod: 100 * time.Millisecond}
	ln, err := quic.Listen("127.0.0.1:0", testutil.Key(t, 1), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := quic.NewDialer(testutil.Key(t, 2), cfg)
	defer d.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(transport.ConnNoError, "")
	select {
	case <-c.Done():
		t.Fatal("idle connection closed despite keep-alives")
	case <-time.After(2 * cfg.MaxIdleTimeout):
	}

	// Without keep-alives the idle timeout closes it with a ConnError.
	cfg2 := &quic.Config{MaxIdleTimeout: 200 * time.Millisecond, KeepAlivePeriod: -1}
	d2 := quic.NewDialer(testutil.Key(t, 4), cfg2)
	defer d2.Close()
	ln2, err := quic.Listen("127.0.0.1:0", testutil.Key(t, 5), cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	c2, err := d2.Dial(ctx, ln2.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := ln2.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(transport.ConnNoError, "")
	select {
	case <-c2.Done():
	case <-time.After(30 * time.Second): // generous: loaded CI machines stretch PTOs
		t.Fatal("idle connection without keep-alives still open")
	}
	_, err = c2.OpenStream(ctx)
	var ce *transport.ConnError
	if !errors.As(err, &ce) {
		t.Fatalf("OpenStream on idle-timed-out conn: %v (%T), want *transport.ConnError", err, err)
	}
	t.Logf("idle timeout: %v", err)
}

// TestOutOfRangeCodes checks that codes QUIC cannot carry and overlong close
// reasons neither panic nor break the connection.
func TestOutOfRangeCodes(t *testing.T) {
	ln, err := quic.Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := quic.NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(transport.ConnNoError, "")

	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	pst, err := s.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Reset(transport.StreamErrorCode(1 << 63))
	_ = pst.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8)
	for err == nil {
		_, err = pst.Read(buf)
	}
	var se *transport.StreamError
	if !errors.As(err, &se) || se.Code != transport.CodeInternal || !se.Remote {
		t.Errorf("peer Read after Reset(1<<63): %v, want StreamError{CodeInternal, Remote}", err)
	}

	long := strings.Repeat("é", 1000) // 2000 bytes
	if err := c.Close(transport.ConnErrorCode(1<<63), long); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("peer not closed")
	}
	_, err = s.AcceptStream(ctx)
	var ce *transport.ConnError
	if !errors.As(err, &ce) || ce.Code != transport.ConnProtocolError || !ce.Remote || len(ce.Reason) != 512 || !utf8.ValidString(ce.Reason) {
		t.Errorf("peer error after Close(1<<63, long reason): %v", err)
	}
}
