package aster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestConnGateDecideTimeout: gates that do not answer are refused when the
// timeout passes, not earlier and not later, whether they watch their ctx
// or not; a gate that answers in time decides.
func TestConnGateDecideTimeout(t *testing.T) {
	info := ConnInfo{ID: trust.IDOf(trust.GenerateKey())}
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		deaf := func(context.Context, ConnInfo) error { <-release; return nil }
		polite := func(ctx context.Context, _ ConnInfo) error { <-ctx.Done(); return ctx.Err() }
		slowOK := func(ctx context.Context, _ ConnInfo) error { time.Sleep(4 * time.Second); return nil }
		for _, c := range []struct {
			name  string
			gates []ConnGate
			want  error
			after time.Duration
		}{
			{"ignores ctx", []ConnGate{deaf}, errGateTimeout, DefaultConnGateTimeout},
			{"watches ctx", []ConnGate{polite}, errGateTimeout, DefaultConnGateTimeout},
			{"in time", []ConnGate{slowOK}, nil, 4 * time.Second},
			{"two slow gates", []ConnGate{slowOK, slowOK}, errGateTimeout, DefaultConnGateTimeout},
		} {
			start := time.Now()
			err, lost := decideConn(context.Background(), c.gates, DefaultConnGateTimeout, info, nil, discardLogger())
			if err != c.want || lost {
				t.Errorf("%s: decided %v (lost %v), want %v", c.name, err, lost, c.want)
			}
			if d := time.Since(start); d != c.after {
				t.Errorf("%s: decided after %v, want %v", c.name, d, c.after)
			}
		}
		close(release)
		time.Sleep(5 * time.Second) // the slow gates finish too
		synctest.Wait()             // and every gate goroutine has returned
	})
}

// TestConnGateDecideLost: a connection that ends while its gates decide is
// lost, not refused, and the gates' ctx ends.
func TestConnGateDecideLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		done := make(chan struct{})
		ctxDone := make(chan struct{})
		gate := func(ctx context.Context, _ ConnInfo) error { <-ctx.Done(); close(ctxDone); return ctx.Err() }
		go func() { time.Sleep(time.Second); close(done) }()
		_, lost := decideConn(context.Background(), []ConnGate{gate}, DefaultConnGateTimeout, ConnInfo{}, done, discardLogger())
		if !lost {
			t.Error("a closed connection was not reported lost")
		}
		<-ctxDone
	})
}

// TestConnGateDecidePanic: a panicking gate refuses with errGatePanic.
func TestConnGateDecidePanic(t *testing.T) {
	gate := func(context.Context, ConnInfo) error { panic("boom") }
	err, lost := decideConn(context.Background(), []ConnGate{gate}, time.Second, ConnInfo{}, nil, discardLogger())
	if err != errGatePanic || lost {
		t.Fatalf("decided %v, %v", err, lost)
	}
}

// TestConnGateRefusal: the close code and reason for each kind of refusal
// (PROTOCOL.md 3.3).
func TestConnGateRefusal(t *testing.T) {
	long := strings.Repeat("é", 300)
	for _, c := range []struct {
		err    error
		code   transport.ConnErrorCode
		reason string
	}{
		{errGateTimeout, transport.ConnShutdown, "connection gate timed out"},
		{errGatePanic, transport.ConnShutdown, "connection gate failed"},
		{errors.New("db password wrong"), transport.ConnDenied, "connection refused"},
		{fmt.Errorf("wrapped: %w", status.New(status.PermissionDenied, "not you")), transport.ConnDenied, "connection refused: not you"},
		{status.New(status.Unauthenticated, ""), transport.ConnDenied, "connection refused"},
		{status.New(status.ResourceExhausted, "slow down"), transport.ConnShutdown, "connection not served: slow down"},
		{status.New(status.Unavailable, "maintenance\r\n\x1b[31m"), transport.ConnShutdown, "connection not served: maintenance???[31m"},
		{status.New(status.PermissionDenied, "bad\xffutf8"), transport.ConnDenied, "connection refused: bad?utf8"},
		{status.New(status.PermissionDenied, long), transport.ConnDenied, "connection refused: " + strings.Repeat("é", MaxConnGateReason/2)},
	} {
		code, reason := gateRefusal(c.err)
		if code != c.code || reason != c.reason {
			t.Errorf("%v: %#x %q, want %#x %q", c.err, uint64(code), reason, uint64(c.code), c.reason)
		}
		if len(reason) > len(reasonGateLater)+2+MaxConnGateReason {
			t.Errorf("reason of %d bytes", len(reason))
		}
	}
}

// TestConnRateLimitBounded: addresses cycling past the table's size do
// not grow it; they share the overflow limiter while every tracked address
// is active, and replace addresses whose limiter has refilled.
func TestConnRateLimitBounded(t *testing.T) {
	const maxPeers = 16
	l := newConnRateLimiter(1, 1, maxPeers) // 1 connection per second each
	now := time.Now()
	key := func(i int) rateKey {
		return rateKey{ip: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
	}
	for i := range maxPeers {
		if !l.allow(key(i), now) {
			t.Fatalf("address %d refused on its first connection", i)
		}
	}
	// The table is full of active addresses: newcomers share one limiter.
	if !l.allow(key(1000), now) {
		t.Fatal("the first newcomer was refused")
	}
	for i := 1001; i < 1100; i++ {
		if l.allow(key(i), now) {
			t.Fatalf("newcomer %d was not limited by the shared limiter", i)
		}
	}
	if n := l.tracked(); n != maxPeers {
		t.Fatalf("%d addresses tracked, want %d", n, maxPeers)
	}
	// A tracked address is still limited on its own.
	if l.allow(key(3), now) {
		t.Fatal("a tracked address was allowed twice in a second")
	}
	// Two seconds on, every limiter is full again: newcomers replace the
	// least recently seen addresses.
	later := now.Add(2 * time.Second)
	for i := 2000; i < 2000+maxPeers; i++ {
		if !l.allow(key(i), later) {
			t.Fatalf("newcomer %d refused although old entries had refilled", i)
		}
	}
	if n := l.tracked(); n != maxPeers {
		t.Fatalf("%d addresses tracked, want %d", n, maxPeers)
	}
}

// TestConnRateLimitKeys: IPv4 addresses are keyed whole, IPv6 by /64, and
// addresses without an IP by endpoint id.
func TestConnRateLimitKeys(t *testing.T) {
	id := trust.IDOf(trust.GenerateKey())
	k := func(a net.Addr) rateKey { return rateKeyOf(ConnInfo{ID: id, Addr: a}) }
	udp := func(s string) net.Addr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	if k(udp("192.0.2.1:1000")) != k(udp("192.0.2.1:2000")) || k(udp("192.0.2.1:1000")) == k(udp("192.0.2.2:1000")) {
		t.Error("IPv4 addresses are not keyed by address")
	}
	if k(udp("[2001:db8::1]:1")) != k(udp("[2001:db8::ffff:2]:1")) || k(udp("[2001:db8::1]:1")) == k(udp("[2001:db8:0:1::1]:1")) {
		t.Error("IPv6 addresses are not keyed by /64")
	}
	if k(udp("[::ffff:192.0.2.1]:1")) != k(udp("192.0.2.1:1")) {
		t.Error("IPv4-mapped addresses differ from IPv4")
	}
	if got := k(fakeAddr("abc@https://relay")); got != (rateKey{id: id}) {
		t.Errorf("a relay address is keyed %v", got)
	}
	if got := k(nil); got != (rateKey{id: id}) {
		t.Errorf("no address is keyed %v", got)
	}
	// An address type the gate does not know but whose text is ip:port.
	if k(fakeAddr("192.0.2.1:5")) != k(udp("192.0.2.1:6")) {
		t.Error("an ip:port address of another type is not keyed by its IP")
	}
}

type fakeAddr string

func (fakeAddr) Network() string  { return "fake" }
func (a fakeAddr) String() string { return string(a) }

// TestConnGateRefusalsDocumented checks PROTOCOL.md 3.3's table of gate
// refusals against gateRefusal: each row's code and reasons.
func TestConnGateRefusalsDocumented(t *testing.T) {
	raw, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var rows [][]string
	for i, l := range lines {
		if l != "<!-- table: gate-refusals -->" {
			continue
		}
		for _, r := range lines[i+3:] { // after the header and separator rows
			if !strings.HasPrefix(r, "|") {
				break
			}
			var cells []string
			for _, c := range strings.Split(strings.Trim(r, "|"), "|") {
				cells = append(cells, strings.TrimSpace(c))
			}
			rows = append(rows, cells)
		}
	}
	// One error per row, in the table's order, and the message it carries.
	errs := []struct {
		err, withMsg error
	}{
		{errors.New("not listed"), status.New(status.PermissionDenied, "<message>")},
		{status.New(status.ResourceExhausted, ""), status.New(status.Unavailable, "<message>")},
		{errGateTimeout, nil},
		{errGatePanic, nil},
	}
	if len(rows) != len(errs) {
		t.Fatalf("PROTOCOL.md documents %d gate refusals, want %d", len(rows), len(errs))
	}
	for i, r := range rows {
		code, reason := gateRefusal(errs[i].err)
		if !strings.HasPrefix(r[1], fmt.Sprintf("%#x ", uint64(code))) {
			t.Errorf("row %q: code %#x", r, uint64(code))
		}
		if !strings.Contains(r[2], "`\""+reason+"\"`") {
			t.Errorf("row %q: reason %q not documented", r, reason)
		}
		if errs[i].withMsg != nil {
			if c, reason := gateRefusal(errs[i].withMsg); c != code || !strings.Contains(r[2], "`\""+reason+"\"`") {
				t.Errorf("row %q: %#x %q not documented", r, uint64(c), reason)
			}
		}
	}
}

// FuzzSanitizeReason: whatever a gate's message holds, the close reason
// made of it is valid UTF-8 without control characters and within its cap.
func FuzzSanitizeReason(f *testing.F) {
	f.Add("not on the list", 200)
	f.Add("bad\xff\x00\n\u0085é", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = n&0xfff + 1
		got := sanitizeReason(s, n)
		if len(got) > n || !utf8.ValidString(got) {
			t.Fatalf("sanitizeReason(%q, %d) = %q", s, n, got)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("sanitizeReason(%q, %d) = %q keeps %U", s, n, got, r)
			}
		}
	})
}
