package systems

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/aster-go/aster/bench/internal/pb"
)

// grpcSystem is grpc-go over TCP+TLS with the generated protobuf code and
// default options (one HTTP/2 connection per client).
type grpcSystem struct{}

func newGRPC() *grpcSystem { return &grpcSystem{} }

func (*grpcSystem) Name() string        { return "grpc" }
func (*grpcSystem) Floor() string       { return "tcp-tls" }
func (*grpcSystem) InProcessOnly() bool { return false }

// pbMessage returns the protobuf message of a workload (also used by
// connect-go).
func pbMessage(w Workload) proto.Message {
	switch w {
	case WorkloadTail:
		return &pb.LogEntry{Timestamp: logTimestamp, Level: LogLevel, Message: LogMessage, AgentId: AgentID}
	case WorkloadIngest:
		return &pb.MetricPoint{Name: MetricName, Value: 0.5, Timestamp: logTimestamp}
	default:
		return &pb.EchoMessage{Payload: echoPayload}
	}
}

func (*grpcSystem) MessageSize(w Workload) int { return proto.Size(pbMessage(w)) }

// pbService implements the benchmark service for grpc-go.
type pbService struct {
	pb.UnimplementedMissionControlServer
}

func pbStatus(req *pb.StatusRequest) *pb.StatusResponse {
	return &pb.StatusResponse{AgentId: req.GetAgentId(), Status: "running", UptimeSecs: 3600}
}

func (pbService) GetStatus(_ context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	return pbStatus(req), nil
}

func (pbService) TailLogs(req *pb.TailRequest, s grpc.ServerStreamingServer[pb.LogEntry]) error {
	e := &pb.LogEntry{Timestamp: logTimestamp, Level: LogLevel, Message: LogMessage, AgentId: req.GetAgentId()}
	for range req.GetCount() {
		if err := s.Send(e); err != nil {
			return err
		}
	}
	return nil
}

func (pbService) IngestMetrics(s grpc.ClientStreamingServer[pb.MetricPoint, pb.IngestResult]) error {
	var res pb.IngestResult
	for {
		_, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&res)
		}
		if err != nil {
			return err
		}
		res.Accepted++
	}
}

func (pbService) Echo(s grpc.BidiStreamingServer[pb.EchoMessage, pb.EchoMessage]) error {
	for {
		m, err := s.Recv()
		if err == io.EOF {
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

type grpcServer struct {
	srv  *grpc.Server
	ln   net.Listener
	done chan struct{}
}

func (*grpcSystem) Serve() (Server, error) {
	ln, err := net.Listen("tcp", ListenHost+":0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS())))
	pb.RegisterMissionControlServer(srv, pbService{})
	s := &grpcServer{srv: srv, ln: ln, done: make(chan struct{})}
	go func() { _ = srv.Serve(ln); close(s.done) }()
	return s, nil
}

func (s *grpcServer) Addr() string { return s.ln.Addr().String() }

func (s *grpcServer) Close() error {
	s.srv.Stop()
	<-s.done
	return nil
}

type grpcClient struct {
	cc *grpc.ClientConn
	c  pb.MissionControlClient
}

func (*grpcSystem) Dial(ctx context.Context, addr string) (Client, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS())))
	if err != nil {
		return nil, err
	}
	return &grpcClient{cc: cc, c: pb.NewMissionControlClient(cc)}, nil
}

func (c *grpcClient) Close() error { return c.cc.Close() }

func (c *grpcClient) Unary(ctx context.Context) error {
	resp, err := c.c.GetStatus(ctx, &pb.StatusRequest{AgentId: AgentID})
	if err != nil {
		return err
	}
	if resp.GetAgentId() != AgentID || resp.GetStatus() != "running" {
		return fmt.Errorf("getStatus: unexpected response %v", resp)
	}
	return nil
}

func (c *grpcClient) Tail(ctx context.Context, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.c.TailLogs(ctx, &pb.TailRequest{AgentId: AgentID, Level: LogLevel, Count: int64(n)})
	if err != nil {
		return err
	}
	got := 0
	for {
		e, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if e.GetMessage() != LogMessage {
			return fmt.Errorf("tailLogs: unexpected entry %v", e)
		}
		got++
	}
	if got != n {
		return fmt.Errorf("tailLogs: got %d entries, want %d", got, n)
	}
	return nil
}

func (c *grpcClient) Ingest(ctx context.Context, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.c.IngestMetrics(ctx)
	if err != nil {
		return err
	}
	p := &pb.MetricPoint{Name: MetricName, Value: 0.5, Timestamp: logTimestamp}
	for range n {
		if err := s.Send(p); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	res, err := s.CloseAndRecv()
	if err != nil {
		return err
	}
	if res.GetAccepted() != int64(n) {
		return fmt.Errorf("ingestMetrics: server accepted %d, want %d", res.GetAccepted(), n)
	}
	return nil
}

func (c *grpcClient) Echo(ctx context.Context, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.c.Echo(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		m := &pb.EchoMessage{Payload: echoPayload}
		for range n {
			if sendErr = s.Send(m); sendErr != nil {
				return
			}
		}
		sendErr = s.CloseSend()
	})
	got := 0
	var recvErr error
	for {
		m, err := s.Recv()
		if err == io.EOF {
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

func (c *grpcClient) OpenStream(ctx context.Context) (io.Closer, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := c.c.Echo(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if err := s.Send(&pb.EchoMessage{Payload: echoPayload}); err != nil {
		cancel()
		return nil, err
	}
	if _, err := s.Recv(); err != nil {
		cancel()
		return nil, err
	}
	return closerFunc(func() error { cancel(); return nil }), nil
}
