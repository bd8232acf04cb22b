package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aster-go/aster/bench/internal/systems"
)

// The loss test (asterbench loss, as root): client and server in two
// network namespaces joined by two TUN devices and a forwarder in this
// process that delays every IP packet and drops some at random, as netem
// would (this kernel has no netem). 32 callers then make unary calls for a
// while, and the table shows the latency percentiles per system: over one
// TCP connection a lost segment stalls every call behind it until it is
// retransmitted (head-of-line blocking); over QUIC only its own stream.

const (
	nsClient = "asterbench-cli"
	nsServer = "asterbench-srv"
	tunCli   = "abtun-cli"
	tunSrv   = "abtun-srv"
	ipCli    = "10.77.0.1"
	ipSrv    = "10.77.0.2"
)

// lossResult is what lossclient prints (JSON) for one system.
type lossResult struct {
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
	P50     int64   `json:"p50_ns"`
	P99     int64   `json:"p99_ns"`
	P999    int64   `json:"p999_ns"`
	Max     int64   `json:"max_ns"`
}

func lossMain(args []string) error {
	fs := flag.NewFlagSet("loss", flag.ContinueOnError)
	names := fs.String("systems", "aster-quic,grpc,quic-stream,tcp-tls", "systems to test")
	loss := fs.Float64("loss", 0.01, "probability of dropping a packet, each direction")
	delay := fs.Duration("delay", 10*time.Millisecond, "delay of every packet, each direction (RTT is twice this)")
	callers := fs.Int("callers", 32, "concurrent unary callers")
	duration := fs.Duration("duration", 10*time.Second, "how long the callers run per system")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var syss []systems.System
	for n := range strings.SplitSeq(*names, ",") {
		s := systems.ByName(n)
		if s == nil || s.InProcessOnly() {
			return fmt.Errorf("system %q cannot run across namespaces", n)
		}
		syss = append(syss, s)
	}
	net, err := setupLossNet(*loss, *delay)
	if err != nil {
		return err
	}
	defer net.close()
	fmt.Printf("### Unary under loss: %d callers, %.1f%% loss and %s delay each way (RTT %s), %s per system\n\n",
		*callers, *loss*100, *delay, 2**delay, *duration)
	fmt.Println("| system | calls/s | p50 | p99 | p99.9 | max |\n|---|--:|--:|--:|--:|--:|")
	ctx := context.Background()
	var failed []string
	for _, sys := range syss {
		r, err := runLossSystem(ctx, sys, *callers, *duration)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", sys.Name(), err))
			fmt.Printf("| %s | failed | | | | |\n", sys.Name())
			continue
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", sys.Name(), human(float64(r.Calls)/r.Seconds),
			us(float64(r.P50)), us(float64(r.P99)), us(float64(r.P999)), us(float64(r.Max)))
	}
	d, l := net.counts()
	fmt.Printf("\nforwarder: %d packets delivered, %d dropped\n", d, l)
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func runLossSystem(ctx context.Context, sys systems.System, callers int, d time.Duration) (*lossResult, error) {
	p, err := startServerCmd(ctx, []string{"ip", "netns", "exec", nsServer}, sys, []string{"-host", ipSrv})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", nsClient, exe, "lossclient",
		"-system", sys.Name(), "-addr", p.addr, "-callers", fmt.Sprint(callers), "-duration", d.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	var r lossResult
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("client output %q: %w", out, err)
	}
	return &r, nil
}

// lossClient runs in the client namespace: callers make unary calls for
// the duration; it prints a lossResult.
func lossClient(args []string) error {
	fs := flag.NewFlagSet("lossclient", flag.ContinueOnError)
	name := fs.String("system", "", "system")
	addr := fs.String("addr", "", "server address")
	callers := fs.Int("callers", 32, "concurrent callers")
	duration := fs.Duration("duration", 10*time.Second, "how long to run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sys := systems.ByName(*name)
	if sys == nil {
		return fmt.Errorf("unknown system %q", *name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *duration+2*time.Minute)
	defer cancel()
	c, err := sys.Dial(ctx, *addr)
	if err != nil {
		return err
	}
	defer c.Close()
	for range 20 { // warm up: handshake, congestion window
		if err := c.Unary(ctx); err != nil {
			return err
		}
	}
	if w, ok := c.(systems.Warmer); ok {
		if err := w.Warm(ctx, *callers); err != nil {
			return err
		}
	}
	calls, elapsed, lats, err := runUnary(ctx, c, *callers, *duration)
	if err != nil {
		return err
	}
	r := lossResult{Calls: calls, Seconds: elapsed.Seconds(),
		P50: int64(percentile(lats, 0.5)), P99: int64(percentile(lats, 0.99)),
		P999: int64(percentile(lats, 0.999)), Max: int64(percentile(lats, 1))}
	return json.NewEncoder(os.Stdout).Encode(&r)
}

// lossNet is the two namespaces and the forwarder between their TUNs.
type lossNet struct {
	cli, srv  *os.File
	wg        sync.WaitGroup
	mu        sync.Mutex
	delivered int
	dropped   int
}

func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

func setupLossNet(loss float64, delay time.Duration) (*lossNet, error) {
	for _, ns := range []string{nsClient, nsServer} {
		_ = exec.Command("ip", "netns", "del", ns).Run() // leftovers of a killed run
		if err := runCmd("ip", "netns", "add", ns); err != nil {
			return nil, fmt.Errorf("%w (the loss test needs root and network namespaces)", err)
		}
	}
	n := &lossNet{}
	var err error
	if n.cli, err = openTUN(tunCli); err == nil {
		n.srv, err = openTUN(tunSrv)
	}
	if err != nil {
		n.close()
		return nil, err
	}
	for _, c := range [][]string{
		{"link", "set", tunCli, "netns", nsClient},
		{"link", "set", tunSrv, "netns", nsServer},
		{"-n", nsClient, "addr", "add", ipCli + "/24", "dev", tunCli},
		{"-n", nsServer, "addr", "add", ipSrv + "/24", "dev", tunSrv},
		{"-n", nsClient, "link", "set", tunCli, "up"},
		{"-n", nsServer, "link", "set", tunSrv, "up"},
		{"-n", nsClient, "link", "set", "lo", "up"},
		{"-n", nsServer, "link", "set", "lo", "up"},
	} {
		if err := runCmd("ip", c...); err != nil {
			n.close()
			return nil, err
		}
	}
	n.wg.Go(func() { n.forward(n.cli, n.srv, loss, delay) })
	n.wg.Go(func() { n.forward(n.srv, n.cli, loss, delay) })
	return n, nil
}

// openTUN creates a TUN device (IP packets, no extra header) and returns
// its file, registered with Go's poller so that Close stops a Read.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// forward copies packets from src to dst, each delayed by delay and
// dropped with probability loss. The delay is constant, so a FIFO keeps
// the packets' order as a real link would.
func (n *lossNet) forward(src, dst *os.File, loss float64, delay time.Duration) {
	type pkt struct {
		b   []byte
		due time.Time
	}
	q := make(chan pkt, 1<<16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for p := range q {
			if d := time.Until(p.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(p.b); err != nil && errors.Is(err, os.ErrClosed) {
				return
			}
		}
	})
	buf := make([]byte, 1<<16)
	for {
		k, err := src.Read(buf)
		if err != nil {
			break
		}
		if rand.Float64() < loss {
			n.mu.Lock()
			n.dropped++
			n.mu.Unlock()
			continue
		}
		select {
		case q <- pkt{b: append([]byte(nil), buf[:k]...), due: time.Now().Add(delay)}:
			n.mu.Lock()
			n.delivered++
			n.mu.Unlock()
		default: // queue full: dropped, as by a full router buffer
			n.mu.Lock()
			n.dropped++
			n.mu.Unlock()
		}
	}
	close(q)
	wg.Wait()
}

func (n *lossNet) counts() (delivered, dropped int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.delivered, n.dropped
}

func (n *lossNet) close() {
	for _, ns := range []string{nsClient, nsServer} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	if n.cli != nil {
		n.cli.Close()
	}
	if n.srv != nil {
		n.srv.Close()
	}
	n.wg.Wait()
}
