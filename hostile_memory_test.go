package aster_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/transport/quic"
)

// strangerEnv names the server address a re-executed test binary attacks.
const strangerEnv = "ASTER_TEST_STRANGER_ADDR"

// What one stranger's connection makes a server with default options hold,
// measured in the server's process with the stranger in its own (this test
// binary re-executed, so that its streams are not counted): reusable
// streams left idle, streams stalled before their HEADER, and streams the
// server has not accepted, which wait in QUIC. It fails if the idle
// streams are not bounded (before, each of the 3,000 held ~10 KiB and a
// goroutine); the figures are logged (go test -run TestStrangerMemory -v).
func TestStrangerMemory(t *testing.T) {
	if addr := os.Getenv(strangerEnv); addr != "" {
		runStranger(t, addr)
		return
	}
	e := newEnv(t, transports[1])
	cmd := exec.Command(os.Args[0], "-test.run=^TestStrangerMemory$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), strangerEnv+"="+e.addr.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	out := bufio.NewScanner(stdout)
	// held is the server's heap and stacks in use, once the stream workers
	// left idle have exited (after workerIdle, 2 s).
	held := func() (int64, int) {
		// Wait for the workers to settle: at least workerIdle (2 s) and
		// until the goroutine count stops changing, at most 15 s.
		time.Sleep(2 * time.Second)
		for g, start := -1, time.Now(); g != runtime.NumGoroutine() && time.Since(start) < 15*time.Second; {
			g = runtime.NumGoroutine()
			time.Sleep(500 * time.Millisecond)
		}
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return int64(m.HeapInuse + m.StackInuse), runtime.NumGoroutine()
	}
	step := func(what string, n int) int {
		b0, g0 := held()
		fmt.Fprintln(stdin, what, n)
		for out.Scan() && out.Text() != "done" {
		}
		b1, g1 := held()
		t.Logf("%5d streams %-5s: server holds +%6d KiB (%.1f KiB per stream), +%d goroutines; %d idle", n, what, (b1-b0)>>10, float64(b1-b0)/1024/float64(n), g1-g0, e.srv.Metrics().IdleStreams)
		return g1 - g0
	}
	if g := step("idle", 3000); g > aster.DefaultMaxConcurrentStreams+50 {
		t.Errorf("3000 idle streams hold %d goroutines, want at most %d (the idle streams bounded)", g, aster.DefaultMaxConcurrentStreams)
	}
	step("stall", 1000)
	step("stall", 5000)
}

// runStranger is the stranger: it dials addr and, for each line "idle n"
// or "stall n" on stdin, opens n streams, each carrying a reusable call to
// a method that does not exist (which then waits idle) or 1 byte of a
// frame prefix, and prints "done".
func runStranger(t *testing.T, addr string) {
	a, err := aster.ParseAddress(addr)
	if err != nil {
		t.Fatal(err)
	}
	d := quic.NewDialer(testutil.Key(t, 99), nil)
	defer d.Close()
	c, err := d.Dial(ctxT(t), a)
	if err != nil {
		t.Fatal(err)
	}
	idle := append(header(t, wire.Header{Service: "No", Method: "such", Reuse: true}), wire.EndOfRequest...)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var what string
		var n int
		if _, err := fmt.Sscan(in.Text(), &what, &n); err != nil {
			t.Fatal(err)
		}
		raw := []byte{0x07}
		if what == "idle" {
			raw = idle
		}
		for range n {
			st, err := c.OpenStream(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write(raw); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond) // the last streams reach the server
		fmt.Println("done")
	}
}
