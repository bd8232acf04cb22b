package quic_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
)

// blackHole is a UDP socket that reads every packet and never answers, as
// an address behind a NAT that drops packets from outside looks.
type blackHole struct {
	addr    netip.AddrPort
	packets atomic.Int64
}

func newBlackHole(t *testing.T) *blackHole {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			b.packets.Add(1)
		}
	})
	t.Cleanup(func() { _ = pc.Close(); wg.Wait() })
	return b
}

// attempts records Dial's attempt starts through the test hook.
type attempts struct {
	mu     sync.Mutex
	starts [][2]int // {address index, attempts running}
}

func recordAttempts(t *testing.T) *attempts {
	a := &attempts{}
	quic.SetAttemptHook(func(i, running int) {
		a.mu.Lock()
		a.starts = append(a.starts, [2]int{i, running})
		a.mu.Unlock()
	})
	t.Cleanup(func() { quic.SetAttemptHook(nil) })
	return a
}

func (a *attempts) get() [][2]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([][2]int(nil), a.starts...)
}

func listen(t *testing.T, seed int) *quic.Listener {
	t.Helper()
	ln, err := quic.Listen("127.0.0.1:0", testutil.Key(t, seed), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func newDialer(t *testing.T, cfg *quic.Config) *quic.Dialer {
	d := quic.NewDialer(testutil.Key(t, 2), cfg)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// A first address that swallows packets delays the dial by the stagger,
// not by the handshake timeout: the second address is tried while the
// first is still pending, and wins.
func TestDialRaceBlackHoleFirst(t *testing.T) {
	ln := listen(t, 1)
	hole := newBlackHole(t)
	// Timeouts far above the stagger: trying the addresses one at a time
	// would take at least 10s.
	cfg := &quic.Config{HandshakeTimeout: 10 * time.Second, LoopbackDialTimeout: 10 * time.Second, DialStagger: 100 * time.Millisecond}
	d := newDialer(t, cfg)
	rec := recordAttempts(t)
	addr := ln.Addr()
	good := addr.Direct[0]
	addr.Direct = []netip.AddrPort{hole.addr, good}

	start := time.Now()
	c, err := d.Dial(t.Context(), addr)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close(transport.ConnNoError, "")
	t.Logf("dial with a black-holed first address took %v (stagger %v)", took, cfg.DialStagger)
	if got := c.RemoteAddr().(*net.UDPAddr).AddrPort(); got != good {
		t.Errorf("connected to %v, want %v", got, good)
	}
	if c.RemoteID() != addr.ID {
		t.Errorf("RemoteID %s, want %s", c.RemoteID().Short(), addr.ID.Short())
	}
	// The black hole was tried first and was still pending when the good
	// address started.
	if got := rec.get(); len(got) != 2 || got[0] != [2]int{0, 1} || got[1] != [2]int{1, 2} {
		t.Errorf("attempts (address, running) = %v, want [[0 1] [1 2]]", got)
	}
	if hole.packets.Load() == 0 {
		t.Error("the black-holed address received no packet")
	}
	if took >= cfg.HandshakeTimeout/2 {
		t.Errorf("Dial took %v: it waited for the black hole", took)
	}
}

// An attempt that fails starts the next address at once, without waiting
// out the stagger.
func TestDialRaceFailureStartsNext(t *testing.T) {
	wrong := listen(t, 3) // proves another key: fails at once
	ln := listen(t, 1)
	cfg := &quic.Config{DialStagger: time.Hour}
	d := newDialer(t, cfg)
	rec := recordAttempts(t)
	addr := ln.Addr()
	addr.Direct = []netip.AddrPort{wrong.Addr().Direct[0], addr.Direct[0]}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close(transport.ConnNoError, "")
	// The second attempt started with nothing else running: the first had
	// failed (a stagger of an hour cannot have passed).
	if got := rec.get(); len(got) != 2 || got[1] != [2]int{1, 1} {
		t.Errorf("attempts (address, running) = %v, want the second to start alone", got)
	}
}

// When every address fails, the error names each one and why, and the
// attempts ran side by side.
func TestDialRaceAllFail(t *testing.T) {
	holes := []*blackHole{newBlackHole(t), newBlackHole(t)}
	wrong := listen(t, 3)
	cfg := &quic.Config{HandshakeTimeout: 400 * time.Millisecond, LoopbackDialTimeout: 10 * time.Second, DialStagger: 50 * time.Millisecond}
	d := newDialer(t, cfg)
	rec := recordAttempts(t)
	addr := discovery.EndpointAddr{ID: testutil.ID(t, 1), Direct: []netip.AddrPort{holes[0].addr, holes[1].addr, wrong.Addr().Direct[0], {}}}
	start := time.Now()
	_, err := d.Dial(t.Context(), addr)
	took := time.Since(start)
	if err == nil {
		t.Fatal("Dial of dead addresses succeeded")
	}
	t.Logf("all failed after %v: %v", took, err)
	for _, ap := range addr.Direct {
		if !strings.Contains(err.Error(), ap.String()) {
			t.Errorf("error does not name %v", ap)
		}
	}
	for _, want := range []error{transport.ErrHandshakeTimeout, transport.ErrPeerMismatch, quic.ErrNoAddress} {
		if !errors.Is(err, want) {
			t.Errorf("error does not wrap %v", want)
		}
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != len(addr.Direct) {
		t.Errorf("error is not one joined error per address: %v", err)
	}
	got := rec.get()
	if len(got) != 3 || got[1][1] != 2 {
		t.Errorf("attempts (address, running) = %v, want three with the second beside the first", got)
	}
}

// MaxConcurrentDials bounds the handshakes in flight; later addresses
// wait for a slot and still get their turn.
func TestDialRaceBounded(t *testing.T) {
	ln := listen(t, 1)
	cfg := &quic.Config{HandshakeTimeout: 300 * time.Millisecond, LoopbackDialTimeout: 10 * time.Second, DialStagger: 10 * time.Millisecond, MaxConcurrentDials: 2}
	d := newDialer(t, cfg)
	rec := recordAttempts(t)
	addr := ln.Addr()
	addr.Direct = []netip.AddrPort{newBlackHole(t).addr, newBlackHole(t).addr, newBlackHole(t).addr, addr.Direct[0]}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close(transport.ConnNoError, "")
	got := rec.get()
	if len(got) != 4 {
		t.Fatalf("attempts = %v, want 4", got)
	}
	for i, a := range got {
		if a[0] != i || a[1] > 2 {
			t.Errorf("attempt %d: (address, running) = %v; want address %d with at most 2 running", i, a, i)
		}
	}
}

// Cancelling the context stops every attempt: Dial returns the context's
// error and the black holes stop hearing from the dialer.
func TestDialRaceCancel(t *testing.T) {
	holes := []*blackHole{newBlackHole(t), newBlackHole(t), newBlackHole(t)}
	cfg := &quic.Config{HandshakeTimeout: 10 * time.Second, LoopbackDialTimeout: 10 * time.Second, DialStagger: 20 * time.Millisecond}
	d := newDialer(t, cfg)
	rec := recordAttempts(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// Cancel once every black hole heard an attempt's first packet.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		defer cancel()
		for ctx.Err() == nil {
			heard := 0
			for _, h := range holes {
				if h.packets.Load() > 0 {
					heard++
				}
			}
			if heard == len(holes) {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	addr := discovery.EndpointAddr{ID: testutil.ID(t, 1)}
	for _, h := range holes {
		addr.Direct = append(addr.Direct, h.addr)
	}
	start := time.Now()
	_, err := d.Dial(ctx, addr)
	took := time.Since(start)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial after cancel: %v, want context.Canceled", err)
	}
	if took >= cfg.HandshakeTimeout/2 {
		t.Errorf("Dial returned %v after start: it did not stop at the cancel", took)
	}
	for _, ap := range addr.Direct {
		if !strings.Contains(err.Error(), ap.String()) {
			t.Errorf("error does not name %v: %v", ap, err)
		}
	}
	// No attempt keeps sending: quic-go would retransmit its Initial
	// within a second (its first probe timeout), so counts that stay put
	// over 1.5s mean the attempts are gone.
	time.Sleep(100 * time.Millisecond) // a close packet may still be on its way
	before := make([]int64, len(holes))
	for i, h := range holes {
		before[i] = h.packets.Load()
		if before[i] == 0 {
			t.Errorf("black hole %d heard nothing: the attempt never started", i)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	if got := rec.get(); len(got) != len(holes) || got[len(holes)-1][1] != len(holes) {
		t.Errorf("attempts (address, running) = %v, want all running at once", got)
	}
	for i, h := range holes {
		if n := h.packets.Load(); n != before[i] {
			t.Errorf("black hole %d received %d more packets after Dial returned", i, n-before[i])
		}
	}
}

// A connection that completes after another address won is closed before
// Dial returns. Two attempts at the same listener, started microseconds
// apart, often both complete; whether they do varies run to run, so the
// test dials several times and checks that only the winners stay open.
func TestDialRaceLoserClosed(t *testing.T) {
	ln := listen(t, 1)
	cfg := &quic.Config{DialStagger: time.Microsecond}
	d := newDialer(t, cfg)
	addr := ln.Addr()
	addr.Direct = []netip.AddrPort{addr.Direct[0], addr.Direct[0]}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const dials = 5
	for range dials {
		c, err := d.Dial(ctx, addr)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		defer c.Close(transport.ConnNoError, "")
	}
	var scs []transport.Conn
	for {
		actx, acancel := context.WithTimeout(ctx, 500*time.Millisecond)
		sc, err := ln.Accept(actx)
		acancel()
		if err != nil {
			break
		}
		defer sc.Close(transport.ConnNoError, "")
		scs = append(scs, sc)
	}
	// A loser was closed before its Dial returned; give its close packet
	// time to arrive.
	grace, stop := context.WithTimeout(ctx, 2*time.Second)
	defer stop()
	var open, closed int
	for _, sc := range scs {
		select {
		case <-sc.Done():
			closed++
			continue
		case <-grace.Done():
		}
		select {
		case <-sc.Done():
			closed++
		default:
			open++
		}
	}
	t.Logf("server saw %d connections still open and %d closed by the dialer", open, closed)
	if open != dials {
		t.Errorf("%d server connections stayed open, want %d (the winners)", open, dials)
	}
}
