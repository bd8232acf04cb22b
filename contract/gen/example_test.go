package gen_test

import (
	"fmt"
	"strings"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/contract/gen"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
)

// Generate a typed client package from a contract (here built from the
// services; usually fetched from a server or read from a manifest).
func ExampleGo() {
	c, err := contract.Build([]*handler.Service{mission.NewMissionControl().Service()})
	if err != nil {
		panic(err)
	}
	src, err := gen.Go(c, gen.GoOptions{Package: "mcclient"})
	if err != nil {
		panic(err)
	}
	for _, line := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(line, "func (c *MissionControlClient)") {
			fmt.Println(line)
		}
	}
	// Output:
	// func (c *MissionControlClient) GetStatus(ctx context.Context, req *StatusRequest, opts ...aster.CallOption) (*StatusResponse, error) {
	// func (c *MissionControlClient) IngestMetrics(ctx context.Context, opts ...aster.CallOption) (*aster.ClientStreamCall[MetricPoint, IngestResult], error) {
	// func (c *MissionControlClient) SubmitLog(ctx context.Context, req *LogEntry, opts ...aster.CallOption) (*SubmitLogResult, error) {
	// func (c *MissionControlClient) TailLogs(ctx context.Context, req *TailRequest, opts ...aster.CallOption) (*aster.ServerStreamCall[LogEntry], error) {
}
