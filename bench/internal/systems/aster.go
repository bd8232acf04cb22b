package systems

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// TailRequest is mission.TailRequest with the number of entries to send:
// the benchmark's tailLogs streams count prepared entries instead of
// waiting for submitted ones (which would measure the fan-out, not the RPC).
type TailRequest struct {
	AgentID string `cbor:"agent_id"`
	Level   string `cbor:"level"`
	Count   int64  `cbor:"count"`
}

// EchoMessage is the echo bidi's message.
type EchoMessage struct {
	Payload []byte `cbor:"payload"`
}

// asterService is Mission Control's getStatus and ingestMetrics (the
// example's own handlers), the counting tailLogs and an echo bidi.
func asterService() *handler.Service {
	mc := mission.NewMissionControl()
	return handler.NewService("MissionControl", 1).
		Handle("getStatus", handler.Unary(mc.GetStatus), handler.Idempotent()).
		Handle("tailLogs", handler.ServerStream(func(ctx context.Context, req *TailRequest, send func(*mission.LogEntry) error) error {
			e := &mission.LogEntry{Timestamp: logTimestamp, Level: LogLevel, Message: LogMessage, AgentID: req.AgentID}
			for range req.Count {
				if err := send(e); err != nil {
					return err
				}
			}
			return nil
		})).
		Handle("ingestMetrics", handler.ClientStream(mc.IngestMetrics)).
		Handle("echo", handler.BidiStream(func(ctx context.Context, b *handler.Bidi[EchoMessage, EchoMessage]) error {
			for m, err := range b.All() {
				if err != nil {
					return err
				}
				if err := b.Send(m); err != nil {
					return err
				}
			}
			return nil
		}))
}

// asterSystem is aster over one transport; listen and dialer select it.
type asterSystem struct {
	name string
	// listen starts the server's listener; release, if not nil, frees
	// what it started besides the listener, after the server has closed.
	listen  func(key trust.SecretKey) (ln transport.Listener, release func(), err error)
	dialer  func(key trust.SecretKey) (d transport.Dialer, closeFn func())
	inProc  bool
	rssNote string
}

// benchHandshakes is the listeners' UnvalidatedHandshakes: the connection
// set-up benchmark opens connections back to back, faster than the
// default's 1,000 a second, and a set-up with an address-validating Retry
// (one more round trip) is not what it measures. grpc-go's and raw
// quic-go's listeners ask for no validation either.
const benchHandshakes = 1 << 30

func newAsterQUIC() *asterSystem {
	return &asterSystem{
		name: "aster-quic",
		listen: func(key trust.SecretKey) (transport.Listener, func(), error) {
			ln, err := quic.Listen(ListenHost+":0", key, &quic.Config{UnvalidatedHandshakes: benchHandshakes})
			return ln, nil, err
		},
		dialer: func(key trust.SecretKey) (transport.Dialer, func()) {
			d := quic.NewDialer(key, nil)
			return d, func() { d.Close() }
		},
	}
}

func newAsterMem() *asterSystem {
	nw := mem.NewNetwork()
	return &asterSystem{
		name:   "aster-mem",
		inProc: true,
		listen: func(key trust.SecretKey) (transport.Listener, func(), error) {
			ln, err := nw.Listen(key)
			return ln, nil, err
		},
		dialer: func(key trust.SecretKey) (transport.Dialer, func()) { return nw.Dialer(key), func() {} },
	}
}

func (s *asterSystem) Name() string        { return s.name }
func (s *asterSystem) RSSNote() string     { return s.rssNote }
func (s *asterSystem) Floor() string       { return "quic-stream" }
func (s *asterSystem) InProcessOnly() bool { return s.inProc }

func (s *asterSystem) MessageSize(w Workload) int {
	var m any
	switch w {
	case WorkloadTail:
		m = &mission.LogEntry{Timestamp: logTimestamp, Level: LogLevel, Message: LogMessage, AgentID: AgentID}
	case WorkloadIngest:
		m = &mission.MetricPoint{Name: MetricName, Value: 0.5, Timestamp: logTimestamp}
	default:
		m = &EchoMessage{Payload: echoPayload}
	}
	b, err := cbor.Codec{}.Marshal(m)
	if err != nil {
		return 0
	}
	return len(b)
}

type asterServer struct {
	srv     *aster.Server
	addr    string
	done    chan error
	release func()
}

func (s *asterSystem) Serve() (Server, error) {
	key := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(key), aster.WithLogger(slog.New(slog.DiscardHandler)))
	if err := srv.Register(asterService()); err != nil {
		return nil, err
	}
	ln, release, err := s.listen(key)
	if err != nil {
		return nil, err
	}
	as := &asterServer{srv: srv, addr: ln.Addr().String(), done: make(chan error, 1), release: release}
	go func() { as.done <- srv.Serve(ln) }()
	return as, nil
}

func (s *asterServer) Addr() string { return s.addr }

func (s *asterServer) Close() error {
	s.srv.Close()
	<-s.done
	if s.release != nil {
		s.release()
	}
	return nil
}

type asterClient struct {
	c       *aster.Client
	closeFn func()
}

func (s *asterSystem) Dial(ctx context.Context, addr string) (Client, error) {
	a, err := aster.ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	key := trust.GenerateKey()
	d, closeFn := s.dialer(key)
	c, err := aster.DialAddress(ctx, a, aster.WithDialer(d))
	if err != nil {
		closeFn()
		return nil, err
	}
	return &asterClient{c: c, closeFn: closeFn}, nil
}

func (c *asterClient) Close() error {
	c.c.Close()
	c.closeFn()
	return nil
}

func (c *asterClient) Unary(ctx context.Context) error {
	resp, err := aster.CallUnary[mission.StatusResponse](ctx, c.c, "MissionControl.getStatus", &mission.StatusRequest{AgentID: AgentID})
	if err != nil {
		return err
	}
	if resp.AgentID != AgentID || resp.Status != "running" {
		return fmt.Errorf("getStatus: unexpected response %+v", resp)
	}
	return nil
}

func (c *asterClient) Tail(ctx context.Context, n int) error {
	s, err := aster.CallServerStream[mission.LogEntry](ctx, c.c, "MissionControl.tailLogs", &TailRequest{AgentID: AgentID, Level: LogLevel, Count: int64(n)})
	if err != nil {
		return err
	}
	defer s.Close()
	got := 0
	for e, err := range s.All() {
		if err != nil {
			return err
		}
		if e.Message != LogMessage {
			return fmt.Errorf("tailLogs: unexpected entry %+v", e)
		}
		got++
	}
	if got != n {
		return fmt.Errorf("tailLogs: got %d entries, want %d", got, n)
	}
	return nil
}

func (c *asterClient) Ingest(ctx context.Context, n int) error {
	s, err := aster.CallClientStream[mission.MetricPoint, mission.IngestResult](ctx, c.c, "MissionControl.ingestMetrics")
	if err != nil {
		return err
	}
	defer s.Close()
	p := &mission.MetricPoint{Name: MetricName, Value: 0.5, Timestamp: logTimestamp}
	for range n {
		if err := s.Send(p); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	res, err := s.CloseAndRecv()
	if err != nil {
		return err
	}
	if res.Accepted != int64(n) {
		return fmt.Errorf("ingestMetrics: server accepted %d, want %d", res.Accepted, n)
	}
	return nil
}

func (c *asterClient) Echo(ctx context.Context, n int) error {
	s, err := aster.CallBidiStream[EchoMessage, EchoMessage](ctx, c.c, "MissionControl.echo")
	if err != nil {
		return err
	}
	defer s.Close()
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		m := &EchoMessage{Payload: echoPayload}
		for range n {
			if sendErr = s.Send(m); sendErr != nil {
				return
			}
		}
		sendErr = s.CloseSend()
	})
	got := 0
	var recvErr error
	for m, err := range s.All() {
		if err != nil {
			recvErr = err
			break
		}
		if len(m.Payload) != EchoSize {
			recvErr = fmt.Errorf("echo: %d-byte payload", len(m.Payload))
			break
		}
		got++
	}
	if recvErr != nil {
		s.Close() // unblocks the sender
	}
	wg.Wait()
	if recvErr != nil {
		return recvErr
	}
	if sendErr != nil {
		return sendErr
	}
	if got != n {
		return fmt.Errorf("echo: got %d, want %d", got, n)
	}
	return nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func (c *asterClient) OpenStream(ctx context.Context) (io.Closer, error) {
	s, err := aster.CallBidiStream[EchoMessage, EchoMessage](ctx, c.c, "MissionControl.echo")
	if err != nil {
		return nil, err
	}
	if err := s.Send(&EchoMessage{Payload: echoPayload}); err != nil {
		s.Close()
		return nil, err
	}
	if _, err := s.Recv(); err != nil {
		s.Close()
		return nil, err
	}
	return closerFunc(func() error { s.Close(); return nil }), nil
}
