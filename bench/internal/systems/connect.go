package systems

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/aster-go/aster/bench/internal/pb"
	"github.com/aster-go/aster/bench/internal/pb/pbconnect"
)

// connectSystem is connect-go (Connect protocol, protobuf) over HTTP/2 with
// TLS, default options. The server's HTTP/2 stream limit is raised from
// net/http's 250 so that 256 concurrent callers and the open-streams test
// share one connection as with the other systems.
type connectSystem struct{}

func newConnect() *connectSystem { return &connectSystem{} }

func (*connectSystem) Name() string               { return "connect" }
func (*connectSystem) Floor() string              { return "tcp-tls" }
func (*connectSystem) InProcessOnly() bool        { return false }
func (*connectSystem) MessageSize(w Workload) int { return proto.Size(pbMessage(w)) }

// connectService implements the benchmark service for connect-go.
type connectService struct {
	pbconnect.UnimplementedMissionControlHandler
}

func (connectService) GetStatus(_ context.Context, req *connect.Request[pb.StatusRequest]) (*connect.Response[pb.StatusResponse], error) {
	return connect.NewResponse(pbStatus(req.Msg)), nil
}

func (connectService) TailLogs(_ context.Context, req *connect.Request[pb.TailRequest], s *connect.ServerStream[pb.LogEntry]) error {
	e := &pb.LogEntry{Timestamp: logTimestamp, Level: LogLevel, Message: LogMessage, AgentId: req.Msg.GetAgentId()}
	for range req.Msg.GetCount() {
		if err := s.Send(e); err != nil {
			return err
		}
	}
	return nil
}

func (connectService) IngestMetrics(_ context.Context, s *connect.ClientStream[pb.MetricPoint]) (*connect.Response[pb.IngestResult], error) {
	var res pb.IngestResult
	for s.Receive() {
		res.Accepted++
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return connect.NewResponse(&res), nil
}

func (connectService) Echo(_ context.Context, s *connect.BidiStream[pb.EchoMessage, pb.EchoMessage]) error {
	for {
		m, err := s.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(m); err != nil {
			return err
		}
	}
}

type connectServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

func (*connectSystem) Serve() (Server, error) {
	ln, err := net.Listen("tcp", ListenHost+":0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(pbconnect.NewMissionControlHandler(connectService{}))
	srv := &http.Server{
		Handler:   mux,
		TLSConfig: serverTLS("h2"),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: 1 << 20},
	}
	s := &connectServer{srv: srv, ln: ln, done: make(chan struct{})}
	go func() { _ = srv.ServeTLS(ln, "", ""); close(s.done) }()
	return s, nil
}

func (s *connectServer) Addr() string { return s.ln.Addr().String() }

func (s *connectServer) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}

type connectClient struct {
	tr *http.Transport
	c  pbconnect.MissionControlClient
}

func (*connectSystem) Dial(ctx context.Context, addr string) (Client, error) {
	tr := &http.Transport{TLSClientConfig: clientTLS("h2"), ForceAttemptHTTP2: true}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP2(true)
	hc := &http.Client{Transport: tr}
	return &connectClient{tr: tr, c: pbconnect.NewMissionControlClient(hc, "https://"+addr)}, nil
}

func (c *connectClient) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}

func (c *connectClient) Unary(ctx context.Context) error {
	resp, err := c.c.GetStatus(ctx, connect.NewRequest(&pb.StatusRequest{AgentId: AgentID}))
	if err != nil {
		return err
	}
	if resp.Msg.GetAgentId() != AgentID || resp.Msg.GetStatus() != "running" {
		return fmt.Errorf("getStatus: unexpected response %v", resp.Msg)
	}
	return nil
}

func (c *connectClient) Tail(ctx context.Context, n int) error {
	s, err := c.c.TailLogs(ctx, connect.NewRequest(&pb.TailRequest{AgentId: AgentID, Level: LogLevel, Count: int64(n)}))
	if err != nil {
		return err
	}
	defer s.Close()
	got := 0
	for s.Receive() {
		if s.Msg().GetMessage() != LogMessage {
			return fmt.Errorf("tailLogs: unexpected entry %v", s.Msg())
		}
		got++
	}
	if err := s.Err(); err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("tailLogs: got %d entries, want %d", got, n)
	}
	return nil
}

func (c *connectClient) Ingest(ctx context.Context, n int) error {
	s := c.c.IngestMetrics(ctx)
	p := &pb.MetricPoint{Name: MetricName, Value: 0.5, Timestamp: logTimestamp}
	for range n {
		if err := s.Send(p); err != nil {
			break // the status comes from CloseAndReceive
		}
	}
	res, err := s.CloseAndReceive()
	if err != nil {
		return err
	}
	if res.Msg.GetAccepted() != int64(n) {
		return fmt.Errorf("ingestMetrics: server accepted %d, want %d", res.Msg.GetAccepted(), n)
	}
	return nil
}

func (c *connectClient) Echo(ctx context.Context, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := c.c.Echo(ctx)
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		m := &pb.EchoMessage{Payload: echoPayload}
		for range n {
			if sendErr = s.Send(m); sendErr != nil {
				return
			}
		}
		sendErr = s.CloseRequest()
	})
	got := 0
	var recvErr error
	for {
		m, err := s.Receive()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			recvErr = err
			cancel()
			break
		}
		if len(m.GetPayload()) != EchoSize {
			recvErr = fmt.Errorf("echo: %d-byte payload", len(m.GetPayload()))
			cancel()
			break
		}
		got++
	}
	wg.Wait()
	_ = s.CloseResponse()
	if recvErr != nil {
		return recvErr
	}
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return sendErr
	}
	if got != n {
		return fmt.Errorf("echo: got %d, want %d", got, n)
	}
	return nil
}

func (c *connectClient) OpenStream(ctx context.Context) (io.Closer, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := c.c.Echo(ctx)
	fail := func(err error) (io.Closer, error) {
		cancel()
		_ = s.CloseResponse()
		return nil, err
	}
	if err := s.Send(&pb.EchoMessage{Payload: echoPayload}); err != nil {
		return fail(err)
	}
	if _, err := s.Receive(); err != nil {
		return fail(err)
	}
	return closerFunc(func() error {
		cancel()
		_ = s.CloseRequest()
		_ = s.CloseResponse()
		return nil
	}), nil
}
