package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/bench/internal/pb"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/trust"
)

// The probe server (asterbench probe-serve) is the server under test of
// asterbench probe, run in its own process so that SIGKILL, RSS and
// goroutine counts are real. It prints its address on the first line of
// standard output, then answers one command per line of standard input
// with one line: "stats" (a JSON probeStats, after a GC), "release" (lets
// the calls waiting on the gate or in hold go on), "shutdown" (starts a
// graceful Shutdown in the background). It exits when standard input
// closes.

// probeMsg is the message of the Probe service's methods.
type probeMsg struct {
	ID  uint64 `cbor:"id"`
	Seq int    `cbor:"seq"`
	Pad []byte `cbor:"pad,omitempty"`
}

// probeStreamReq asks Probe.stream for Count messages (0: until the call
// ends) of Size padding bytes, Interval apart; with Gate, the handler sends
// the first message and waits for "release" before the rest.
type probeStreamReq struct {
	Count      int  `cbor:"count"`
	Size       int  `cbor:"size"`
	IntervalMs int  `cbor:"interval_ms"`
	Gate       bool `cbor:"gate"`
}

// probeStats is what the probe server reports about itself.
type probeStats struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	Goroutines int    `json:"goroutines"`
	RSSKB      int64  `json:"rss_kb"`
	Conns      int64  `json:"conns"`    // open connections (aster: WithConnHook)
	Sessions   int64  `json:"sessions"` // open ProbeSession instances
	Holds      int64  `json:"holds"`    // Probe.hold calls in progress
	Streams    int64  `json:"streams"`  // Probe.stream calls in progress
	// Ended lists when unbounded Probe.stream handlers ended (Unix ns):
	// the server's notice that the call is gone.
	Ended []int64 `json:"ended"`
}

// probeState is the probe server's shared state.
type probeState struct {
	conns, sessions, holds, streams atomic.Int64

	mu    sync.Mutex
	gate  chan struct{}
	ended []int64
}

func newProbeState() *probeState { return &probeState{gate: make(chan struct{})} }

func (ps *probeState) currentGate() chan struct{} {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.gate
}

func (ps *probeState) release() {
	ps.mu.Lock()
	close(ps.gate)
	ps.gate = make(chan struct{})
	ps.mu.Unlock()
}

func (ps *probeState) noteEnded() {
	ps.mu.Lock()
	ps.ended = append(ps.ended, time.Now().UnixNano())
	ps.mu.Unlock()
}

func (ps *probeState) stats() probeStats {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	ps.mu.Lock()
	ended := append([]int64(nil), ps.ended...)
	ps.mu.Unlock()
	return probeStats{
		HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, Goroutines: runtime.NumGoroutine(),
		RSSKB: selfRSSKB(), Conns: ps.conns.Load(), Sessions: ps.sessions.Load(),
		Holds: ps.holds.Load(), Streams: ps.streams.Load(), Ended: ended,
	}
}

// selfRSSKB is this process's resident set (VmRSS) in KiB, or -1.
func selfRSSKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// probeSession is an instance of the session-scoped ProbeSession service.
type probeSession struct{ ps *probeState }

func (s *probeSession) touch(_ context.Context, m *probeMsg) (*probeMsg, error) { return m, nil }

// Close is called by the server when the session ends or its connection
// closes.
func (s *probeSession) Close() error { s.ps.sessions.Add(-1); return nil }

// streamBody sends what req asks for; it is shared by aster and grpc.
func (ps *probeState) streamBody(ctx context.Context, req *probeStreamReq, send func(seq int, pad []byte) error) error {
	ps.streams.Add(1)
	defer ps.streams.Add(-1)
	if req.Count == 0 {
		defer ps.noteEnded()
	}
	pad := make([]byte, max(req.Size, 0))
	gate := ps.currentGate()
	var tick *time.Ticker
	if req.IntervalMs > 0 {
		tick = time.NewTicker(time.Duration(req.IntervalMs) * time.Millisecond)
		defer tick.Stop()
	}
	for i := 0; req.Count == 0 || i < req.Count; i++ {
		if err := send(i, pad); err != nil {
			return err
		}
		if i == 0 && req.Gate {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		} else if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// hold blocks until release or the end of the call.
func (ps *probeState) hold(ctx context.Context) error {
	ps.holds.Add(1)
	defer ps.holds.Add(-1)
	select {
	case <-ps.currentGate():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// probeServices is the aster side of the probe server: Probe (echo,
// stream, hold) and the session-scoped ProbeSession (touch).
func probeServices(ps *probeState) []*handler.Service {
	probe := handler.NewService("Probe", 1).
		Handle("echo", handler.Unary(func(_ context.Context, m *probeMsg) (*probeMsg, error) { return m, nil })).
		Handle("hold", handler.Unary(func(ctx context.Context, m *probeMsg) (*probeMsg, error) {
			if err := ps.hold(ctx); err != nil {
				return nil, err
			}
			return m, nil
		})).
		Handle("stream", handler.ServerStream(func(ctx context.Context, req *probeStreamReq, send func(*probeMsg) error) error {
			return ps.streamBody(ctx, req, func(seq int, pad []byte) error { return send(&probeMsg{Seq: seq, Pad: pad}) })
		}))
	sess := handler.NewSessionService("ProbeSession", 1, func(context.Context, handler.Peer) (*probeSession, error) {
		ps.sessions.Add(1)
		return &probeSession{ps: ps}, nil
	}).Handle("touch", handler.On(func(s *probeSession) handler.Def { return handler.Unary(s.touch) }))
	return []*handler.Service{probe, sess}
}

// probeServe is the probe-serve subcommand.
func probeServe(args []string) error {
	fs := flag.NewFlagSet("probe-serve", flag.ContinueOnError)
	system := fs.String("system", "aster", "aster or grpc")
	relayURL := fs.String("relay", "", "aster: serve only through this home relay (no direct QUIC)")
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (UDP for aster, TCP for grpc)")
	seed := fs.String("seed", "", "aster: hex ed25519 seed of the server's key (default a new key)")
	maxStreams := fs.Int("max-streams", 0, "aster: WithMaxConcurrentStreams (default: the server's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *system != "aster" && (*relayURL != "" || *seed != "" || *maxStreams != 0) {
		return fmt.Errorf("-relay, -seed and -max-streams apply to aster only")
	}
	ps := newProbeState()
	var shutdown func()
	switch *system {
	case "aster":
		opts := []aster.ServerOption{
			aster.WithLogger(slog.New(slog.DiscardHandler)),
			aster.WithConnHook(func(handler.Peer) func() {
				ps.conns.Add(1)
				return func() { ps.conns.Add(-1) }
			}),
		}
		if *maxStreams != 0 {
			opts = append(opts, aster.WithMaxConcurrentStreams(*maxStreams))
		}
		if *relayURL != "" {
			// Every packet through the relay: no direct path (the
			// probes measure the relay).
			opts = append(opts, aster.WithHomeRelay(*relayURL), aster.WithIPTransports(false), aster.WithDirectPaths(false))
		}
		if *seed != "" {
			b, err := hex.DecodeString(*seed)
			if err != nil {
				return fmt.Errorf("-seed: %w", err)
			}
			key, err := trust.KeyFromSeed(b)
			if err != nil {
				return err
			}
			opts = append(opts, aster.WithSecretKey(key))
		}
		srv := aster.NewServer(opts...)
		if err := srv.Register(probeServices(ps)...); err != nil {
			return err
		}
		ready := make(chan string, 1)
		failed := make(chan error, 1)
		go func() {
			failed <- srv.ListenAndServe(*listen, func(a aster.Address) { ready <- a.String() })
		}()
		select {
		case a := <-ready:
			fmt.Println(a)
		case err := <-failed:
			return err
		}
		shutdown = func() {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				_ = srv.Shutdown(ctx)
			}()
		}
	case "grpc":
		gs, addr, err := serveGRPCProbe(ps, *listen)
		if err != nil {
			return err
		}
		fmt.Println(addr)
		shutdown = func() { go gs.GracefulStop() }
	default:
		return fmt.Errorf("unknown system %q (aster or grpc)", *system)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		switch sc.Text() {
		case "stats":
			b, err := json.Marshal(ps.stats())
			if err != nil {
				return err
			}
			fmt.Println(string(b))
		case "release":
			ps.release()
			fmt.Println("ok")
		case "shutdown":
			shutdown()
			fmt.Println("ok")
		default:
			fmt.Println("error: unknown command")
		}
	}
	// Standard input closed: the probe is over. Exit without waiting for
	// handlers a probe may have left blocked.
	os.Exit(0)
	return nil
}

// The grpc side of the probe server: a hand-written service descriptor
// over the bench's protobuf messages (StatusRequest.agent_id carries the
// call id; TailRequest.count is the stream's message count, 0 for
// unbounded; EchoMessage carries the stream's padding).
const (
	grpcEcho   = "/probe.Probe/Echo"
	grpcHold   = "/probe.Probe/Hold"
	grpcStream = "/probe.Probe/Stream"
)

func serveGRPCProbe(ps *probeState, listen string) (*grpc.Server, string, error) {
	cert, err := relay.SelfSignedCertificate("127.0.0.1")
	if err != nil {
		return nil, "", err
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: "probe.Probe",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Echo", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(pb.StatusRequest)
				if err := dec(in); err != nil {
					return nil, err
				}
				return &pb.StatusResponse{AgentId: in.AgentId}, nil
			}},
			{MethodName: "Hold", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(pb.StatusRequest)
				if err := dec(in); err != nil {
					return nil, err
				}
				if err := ps.hold(ctx); err != nil {
					return nil, grpcstatus.FromContextError(err).Err()
				}
				return &pb.StatusResponse{AgentId: in.AgentId}, nil
			}},
		},
		Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, Handler: func(_ any, st grpc.ServerStream) error {
			in := new(pb.TailRequest)
			if err := st.RecvMsg(in); err != nil {
				return err
			}
			req := &probeStreamReq{Count: int(in.Count), Size: 1024, IntervalMs: 10}
			return ps.streamBody(st.Context(), req, func(_ int, pad []byte) error {
				return st.SendMsg(&pb.EchoMessage{Payload: pad})
			})
		}}},
	}, struct{}{})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", err
	}
	go func() { _ = gs.Serve(ln) }()
	return gs, ln.Addr().String(), nil
}

// dialGRPCProbe connects to a grpc probe server (TLS, the certificate not
// verified: loopback only).
func dialGRPCProbe(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})))
}

// grpcCode is the name of err's grpc status code.
func grpcCode(err error) string {
	if err == nil {
		return "OK"
	}
	if errors.Is(err, context.Canceled) {
		return "CANCELLED(probe)"
	}
	return strings.ToUpper(grpcCodeName(grpcstatus.Code(err)))
}

func grpcCodeName(c codes.Code) string {
	s := c.String()
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// probeClient is the probe-client subcommand: the client process of the
// kill-client probe. It opens one unbounded server stream, prints "ready"
// after the first message and reads until it is killed.
func probeClient(args []string) error {
	fs := flag.NewFlagSet("probe-client", flag.ContinueOnError)
	system := fs.String("system", "aster", "aster or grpc")
	addr := fs.String("addr", "", "server address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	switch *system {
	case "aster":
		c, err := aster.Dial(ctx, *addr, aster.WithSecretKey(trust.GenerateKey()))
		if err != nil {
			return err
		}
		s, err := aster.CallServerStream[probeMsg](ctx, c, "Probe.stream", &probeStreamReq{Size: 1024, IntervalMs: 10})
		if err != nil {
			return err
		}
		first := true
		for _, err := range s.All() {
			if err != nil {
				return err
			}
			if first {
				fmt.Println("ready")
				first = false
			}
		}
	case "grpc":
		cc, err := dialGRPCProbe(*addr)
		if err != nil {
			return err
		}
		st, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, grpcStream)
		if err != nil {
			return err
		}
		if err := st.SendMsg(&pb.TailRequest{}); err != nil {
			return err
		}
		if err := st.CloseSend(); err != nil {
			return err
		}
		first := true
		for {
			var m pb.EchoMessage
			if err := st.RecvMsg(&m); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if first {
				fmt.Println("ready")
				first = false
			}
		}
	default:
		return fmt.Errorf("unknown system %q", *system)
	}
	return nil
}
