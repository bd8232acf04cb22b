package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// The hostile-input probes speak the wire protocol (PROTOCOL.md §4)
// directly over a QUIC connection from transport/quic's Dialer: no
// admission (the probe server is ungated, as a server without trust
// settings is) and no client-side checks.

// rawConn dials the probe server with a bare transport connection.
func rawConn(ctx context.Context, addr string) (transport.Conn, func(), error) {
	a, err := aster.ParseAddress(addr)
	if err != nil {
		return nil, nil, err
	}
	d := quic.NewDialer(trust.GenerateKey(), nil)
	c, err := d.Dial(ctx, a)
	if err != nil {
		d.Close()
		return nil, nil, err
	}
	return c, func() { c.Close(transport.ConnNoError, "probe done"); d.Close() }, nil
}

// frame is one wire frame: little-endian length (flags + payload), flags,
// payload.
func frame(flags byte, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)+1))
	return append(append(b, flags), payload...)
}

// echoHeader is a valid HEADER frame for Probe.echo.
func echoHeader() []byte {
	h, err := cbor.Marshal(map[string]any{"callId": 1, "method": "echo", "service": "Probe", "version": 1})
	if err != nil {
		panic(err) // a constant map: cannot fail
	}
	return frame(0x04, h)
}

// readTrailer reads frames until the TRAILER and returns its status code
// and message; DATA payloads are skipped (at most 1 MiB each).
func readTrailer(st transport.Stream, timeout time.Duration) (status.Code, string, error) {
	if err := st.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return 0, "", err
	}
	br := bufio.NewReader(st)
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return 0, "", err
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if n == 0 || n > 1<<20 {
			return 0, "", fmt.Errorf("server sent a frame of length %d", n)
		}
		payload := make([]byte, n-1)
		if _, err := io.ReadFull(br, payload); err != nil {
			return 0, "", err
		}
		if hdr[4]&0x02 == 0 {
			continue
		}
		var t struct {
			Code    uint64 `cbor:"code"`
			Message string `cbor:"message"`
		}
		if err := cbor.Unmarshal(payload, &t); err != nil {
			return 0, "", fmt.Errorf("trailer: %w", err)
		}
		return status.Code(t.Code), t.Message, nil
	}
}

// latencies makes sequential echo calls on c until stop closes (or n calls
// when stop is nil) and returns their latencies.
func latencies(ctx context.Context, c *aster.Client, n int, stop <-chan struct{}) ([]time.Duration, int) {
	var out []time.Duration
	failed := 0
	for i := 0; stop != nil || i < n; i++ {
		if stop != nil {
			select {
			case <-stop:
				return out, failed
			default:
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t := time.Now()
		_, err := aster.CallUnary[probeMsg](cctx, c, "Probe.echo", &probeMsg{ID: uint64(i)})
		cancel()
		if err != nil {
			failed++
			continue
		}
		out = append(out, time.Since(t))
	}
	return out, failed
}

func p99max(l []time.Duration) string {
	if len(l) == 0 {
		return "no calls"
	}
	return fmt.Sprintf("p99 %s ms, max %s ms (%d calls)", ms(percentile(l, 0.99)), ms(slices.Max(l)), len(l))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// claims are the inputs of probeClaimed: each stream sends these bytes
// and stalls.
var claims = []struct {
	name, what string
	bytes      func() []byte
}{
	{"first-data", "a first frame's prefix claiming 16 MiB (00 00 00 01 00)", func() []byte { return []byte{0x00, 0x00, 0x00, 0x01, 0x00} }},
	{"first-header", "a HEADER prefix claiming 64 KiB (01 00 01 00 04)", func() []byte { return []byte{0x01, 0x00, 0x01, 0x00, 0x04} }},
	{"after-header", "a valid echo HEADER, then a DATA prefix claiming 16 MiB", func() []byte { return append(echoHeader(), 0x00, 0x00, 0x00, 0x01, 0x00) }},
	{"after-header-64k", "a valid echo HEADER, then a DATA prefix claiming 16 MiB and 64 KiB of its payload", func() []byte {
		return append(append(echoHeader(), 0x00, 0x00, 0x00, 0x01, 0x00), make([]byte, 64<<10)...)
	}},
}

// probeClaimed: K streams on one connection each send a frame prefix that
// claims more than it sends (see claims) and stall. The server's heap and
// RSS growth per stream, and the latency of a legitimate unary caller on
// another connection before and during.
func probeClaimed(ctx context.Context, e *probeEnv, system string) error {
	for _, c := range claims {
		if err := probeClaim(ctx, e, system, c.name, c.what, c.bytes()); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func probeClaim(ctx context.Context, e *probeEnv, system, name, what string, claim []byte) error {
	k := e.n(100, 8)
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	legit, err := dialAster(ctx, p.addr)
	if err != nil {
		return err
	}
	defer legit.Close()
	latencies(ctx, legit, 300, nil) // warm up
	before, _ := latencies(ctx, legit, 1000, nil)
	base, err := p.stats()
	if err != nil {
		return err
	}
	conn, closeConn, err := rawConn(ctx, p.addr)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var during []time.Duration
	var duringFailed int
	var wg sync.WaitGroup
	wg.Go(func() { during, duringFailed = latencies(ctx, legit, 0, stop) })
	var streams []transport.Stream
	for range k {
		st, err := conn.OpenStream(ctx)
		if err != nil {
			close(stop)
			wg.Wait()
			closeConn()
			return err
		}
		if _, err := st.Write(claim); err != nil {
			close(stop)
			wg.Wait()
			closeConn()
			return err
		}
		streams = append(streams, st)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	held, err := p.stats()
	// Did the server end the first stream (with a trailer or a reset)?
	open := "still open"
	if code, msg, err := readTrailer(streams[0], 200*time.Millisecond); err == nil {
		open = fmt.Sprintf("answered %s %q", code, msg)
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		open = "ended: " + err.Error()
	}
	if err != nil {
		closeConn()
		return err
	}
	closeConn()
	time.Sleep(time.Second)
	after, err := p.stats()
	if err != nil {
		return err
	}
	perStream := delta(held.HeapInuse, base.HeapInuse) / float64(k)
	e.report("hostile-claimed", system, kibOf(perStream), "KiB/stream",
		fmt.Sprintf("%s: %d streams, each %s (%d bytes sent, unauthenticated): first stream after 2 s %s; server heap %s -> %s MiB (+%s MiB), RSS %s -> %s MiB; legit unary on another connection before: %s; during: %s, %d failed; after the connection closed heap %s MiB",
			name, k, what, len(claim)*k, open, mib(float64(base.HeapInuse)), mib(float64(held.HeapInuse)), mib(delta(held.HeapInuse, base.HeapInuse)),
			mib(float64(base.RSSKB)*1024), mib(float64(held.RSSKB)*1024), p99max(before), p99max(during), duringFailed,
			mib(float64(after.HeapInuse))))
	return nil
}

// probeStalled: K streams on one connection each send one byte and stop.
// After the settle time: goroutines and heap held per stream, and whether
// the server has given up on them; then the same once the server's
// default header timeout (10 s) has passed.
func probeStalled(ctx context.Context, e *probeEnv, system string) error {
	k := e.n(2000, 100) // twice the server's default cap on streams awaiting a header
	settle := time.Duration(e.n(2, 1)) * time.Second
	// The server takes 1,000 of the streams at a time (its default cap on
	// streams awaiting a header), and resets each 10 s (the default
	// header timeout) after taking it: both halves are gone after 20 s,
	// and the idle stream workers after 2 s more. 0: not in quick mode.
	late := time.Duration(e.n(25, 0)) * time.Second
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	base, err := p.stats()
	if err != nil {
		return err
	}
	conn, closeConn, err := rawConn(ctx, p.addr)
	if err != nil {
		return err
	}
	defer closeConn()
	var streams []transport.Stream
	for range k {
		st, err := conn.OpenStream(ctx)
		if err != nil {
			return err
		}
		if _, err := st.Write([]byte{0x05}); err != nil {
			return err
		}
		streams = append(streams, st)
	}
	start := time.Now()
	for i, wait := range []time.Duration{settle, late} {
		if i > 0 && wait == 0 {
			break
		}
		time.Sleep(time.Until(start.Add(wait)))
		held, err := p.stats()
		if err != nil {
			return err
		}
		// Has the server ended stream i? A read that times out means it
		// is still open.
		open := "still open"
		_ = streams[i].SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := streams[i].Read(make([]byte, 64)); err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, os.ErrDeadlineExceeded) {
				open = "ended by the server: " + err.Error()
			}
		} else {
			open = "server answered"
		}
		perStream := delta(held.HeapInuse, base.HeapInuse) / float64(k)
		e.report("hostile-stalled", system, kibOf(perStream), "KiB/stream",
			fmt.Sprintf("%d streams x 1 byte on one connection, after %s: %.2f goroutines/stream (%d -> %d), heap +%s MiB, RSS %s -> %s MiB; a stream %s",
				k, wait, float64(held.Goroutines-base.Goroutines)/float64(k), base.Goroutines, held.Goroutines,
				mib(delta(held.HeapInuse, base.HeapInuse)), mib(float64(base.RSSKB)*1024), mib(float64(held.RSSKB)*1024), open))
	}
	return nil
}

// probeUnread: a client opens two unbounded server streams (64 KiB
// messages) and never reads them, then makes unary calls on the SAME
// connection: do they complete? And what does the server hold?
func probeUnread(ctx context.Context, e *probeEnv, system string) error {
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	c, err := dialAster(ctx, p.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := aster.CallUnary[probeMsg](ctx, c, "Probe.echo", &probeMsg{ID: 1}); err != nil {
		return err
	}
	base, err := p.stats()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const unread = 2
	for range unread {
		s, err := aster.CallServerStream[probeMsg](sctx, c, "Probe.stream", &probeStreamReq{Size: 64 << 10})
		if err != nil {
			return err
		}
		defer s.Close()
	}
	time.Sleep(2 * time.Second)
	held, err := p.stats()
	if err != nil {
		return err
	}
	bound := 5 * time.Second
	t0 := time.Now()
	cctx, ccancel := capCtx(ctx, bound)
	_, err = aster.CallUnary[probeMsg](cctx, c, "Probe.echo", &probeMsg{ID: 2})
	ccancel()
	el := time.Since(t0)
	var figure, unit, note string
	switch {
	case err == nil:
		figure, unit = secs(el)
		note = "completed"
	case el >= bound-100*time.Millisecond:
		figure, unit, note = "≥5", "s", "hung ≥5 s (cut off by the probe)"
	default:
		figure, unit = secs(el)
		note = "failed: " + asterCode(err)
	}
	other, err := dialAster(ctx, p.addr)
	otherNote := ""
	if err == nil {
		cctx, ccancel := capCtx(ctx, bound)
		t := time.Now()
		_, err = aster.CallUnary[probeMsg](cctx, other, "Probe.echo", &probeMsg{ID: 3})
		ccancel()
		other.Close()
		otherNote = fmt.Sprintf("%s ms", ms(time.Since(t)))
	}
	if err != nil {
		otherNote = "failed: " + err.Error()
	}
	e.report("hostile-unread", system, figure, unit,
		fmt.Sprintf("unary call on the same connection as %d unread server streams (64 KiB messages): %s; a call on another connection: %s; server heap +%s MiB (%s MiB per unread stream), %d streams still sending",
			unread, note, otherNote, mib(delta(held.HeapInuse, base.HeapInuse)), mib(delta(held.HeapInuse, base.HeapInuse)/unread), held.Streams))
	return probeUnreadMany(ctx, e, system, p)
}

// probeUnreadMany: one more client opens K unread server streams (64 KiB
// messages) on one connection, for two values of K: the server heap they
// make it hold, which the per-connection send budget bounds whatever K.
// Each handler's own 64 KiB message (allocated by the probe's handler) is
// counted apart: it is the application's memory, not the framework's.
func probeUnreadMany(ctx context.Context, e *probeEnv, system string, p *probeProc) error {
	for _, k := range []int{e.n(200, 20), e.n(1000, 100)} {
		if err := probeUnreadK(ctx, e, system, p, k); err != nil {
			return err
		}
	}
	return nil
}

func probeUnreadK(ctx context.Context, e *probeEnv, system string, p *probeProc, k int) error {
	const size = 64 << 10
	c, err := dialAster(ctx, p.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := aster.CallUnary[probeMsg](ctx, c, "Probe.echo", &probeMsg{ID: 1}); err != nil {
		return err
	}
	base, err := p.stats()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for range k {
		s, err := aster.CallServerStream[probeMsg](sctx, c, "Probe.stream", &probeStreamReq{Size: size})
		if err != nil {
			return err
		}
		defer s.Close()
	}
	time.Sleep(3 * time.Second)
	held, err := p.stats()
	if err != nil {
		return err
	}
	d := delta(held.HeapInuse, base.HeapInuse)
	app := float64(k * size)
	e.report("hostile-unread", system, mib(d), "MiB",
		fmt.Sprintf("%d unread server streams (64 KiB messages) on one connection: server heap +%s MiB (%s KiB per stream), of which the handlers' own messages %s MiB and the rest %s MiB (%s KiB per stream); %d streams open; RSS %s -> %s MiB",
			k, mib(d), kibOf(d/float64(k)), mib(app), mib(d-app), kibOf((d-app)/float64(k)), held.Streams, mib(float64(base.RSSKB)*1024), mib(float64(held.RSSKB)*1024)))
	return nil
}

// probeGarbage: malformed and oversized frames, each on its own stream of
// one bare connection; the TRAILER's status and how long it took; then a
// legitimate call must still work.
func probeGarbage(ctx context.Context, e *probeEnv, system string) error {
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	conn, closeConn, err := rawConn(ctx, p.addr)
	if err != nil {
		return err
	}
	defer closeConn()
	cases := []struct {
		name string
		b    []byte
	}{
		{"zero length", []byte{0, 0, 0, 0, 0}},
		{"reserved flag bits", frame(0xF8, nil)},
		{"HEADER and TRAILER both set", frame(0x06, []byte{0xa0})},
		{"first frame not a HEADER", frame(0x00, []byte{0xa0})},
		{"HEADER not CBOR", frame(0x04, []byte{0xff, 0xff, 0xff})},
		{"truncated frame then FIN", []byte{0x10, 0, 0, 0, 0x04, 0xa1}},
		{"HEADER claiming 64 KiB + 2", []byte{0x02, 0x00, 0x01, 0x00, 0x04}},
		{"message over 16 MiB (claimed)", append(echoHeader(), 0x01, 0x00, 0x00, 0x01, 0x00)},
	}
	bound := 5 * time.Second
	for _, tc := range cases {
		st, err := conn.OpenStream(ctx)
		if err != nil {
			return err
		}
		t := time.Now()
		if _, err := st.Write(tc.b); err != nil {
			return err
		}
		_ = st.CloseWrite()
		code, msg, err := readTrailer(st, bound)
		el := time.Since(t)
		st.Close()
		f, u := secs(el)
		switch {
		case err == nil:
			e.report("hostile-garbage", system, f, u, fmt.Sprintf("%s: %s %q", tc.name, code, msg))
		case errors.Is(err, os.ErrDeadlineExceeded):
			e.report("hostile-garbage", system, "≥5", "s", tc.name+": no answer within 5 s")
		default:
			e.report("hostile-garbage", system, f, u, fmt.Sprintf("%s: no TRAILER: %v", tc.name, err))
		}
	}
	c, err := dialAster(ctx, p.addr)
	if err != nil {
		return fmt.Errorf("after the garbage: %w", err)
	}
	defer c.Close()
	// A header over 64 KiB built by the Go client itself: 70 KiB of
	// metadata in ten values of 7 KiB (each within the 8 KiB per-value
	// limit, so only the header's total is over).
	var big []aster.CallOption
	for i := range 10 {
		big = append(big, aster.WithHeader(fmt.Sprintf("x-big-%d", i), strings.Repeat("a", 7<<10)))
	}
	t := time.Now()
	cctx, cancel := capCtx(ctx, bound)
	_, err = aster.CallUnary[probeMsg](cctx, c, "Probe.echo", &probeMsg{ID: 8}, big...)
	cancel()
	f, u := secs(time.Since(t))
	e.report("hostile-garbage", system, f, u, "Go client builds a HEADER over 64 KiB (10 values of 7 KiB): "+asterCode(err))
	if _, err := aster.CallUnary[probeMsg](ctx, c, "Probe.echo", &probeMsg{ID: 9}); err != nil {
		return fmt.Errorf("after the garbage, a legitimate call failed: %w", err)
	}
	return nil
}

// probeRelayClose: N clients reach the server through a relay in this
// process; each opens a session (one call) and closes the client. How many
// session instances and connections the server still has open shortly
// after (a close that never arrived leaves them until the idle timeout).
func probeRelayClose(ctx context.Context, e *probeEnv, system string) error {
	n := e.n(200, 20)
	cert, err := relay.SelfSignedCertificate("127.0.0.1")
	if err != nil {
		return err
	}
	rs, err := relay.NewServer(relay.ServerConfig{Certificate: cert, BytesPerSecond: -1, MaxConnsPerIP: 8192, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan struct{})
	go func() { _ = rs.Serve(tl); close(served) }()
	defer func() { rs.Close(); <-served }()
	url := relay.PinnedURL(tl.Addr().String(), cert.Certificate[0])
	p, err := startProbeServer(system, "-relay", url)
	if err != nil {
		return err
	}
	defer p.stop()
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := dialAster(cctx, p.addr)
			if err == nil {
				s := c.NewSession()
				_, err = aster.CallUnary[probeMsg](cctx, s, "ProbeSession.touch", &probeMsg{ID: uint64(i)})
				c.Close()
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		})
	}
	wg.Wait()
	var s *probeStats
	settle := 3 * time.Second
	for end := time.Now().Add(settle); ; {
		if s, err = p.stats(); err != nil {
			return err
		}
		if (s.Sessions == 0 && s.Conns == 0) || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	notes := fmt.Sprintf("%d clients through a relay (TCP+TLS, this process), each: dial, one session call, Client.Close: %d failed; %s later the server still has %d session instances and %d connections open",
		n, failed.Load(), settle, s.Sessions, s.Conns)
	if v := firstErr.Load(); v != nil {
		notes += "; first error: " + v.(string)
	}
	e.report("relay-close", system, fmt.Sprint(s.Sessions), "closes lost", notes)
	return nil
}
