package contract_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/examples/missioncontrol/mission"
	"github.com/aster-go/aster/handler"
)

// A manifest can be written from Go code, without a running server: build
// the contract of the services (as a server does) and save it, for example
// from a go:generate program or a test. Commit the file; a server started
// with aster.WithContractManifest refuses to serve a different contract.
func ExampleWriteManifest() {
	c, err := contract.Build([]*handler.Service{
		mission.NewMissionControl().Service(),
		mission.NewAgentSessionService(nil),
	})
	if err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "manifest")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, ".aster", "manifest.json")
	m, err := contract.WriteManifest(path, c)
	if err != nil {
		panic(err)
	}
	back, err := contract.ReadManifest(path)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(back.Contract.Services), "services, same id:", back.ContractID == m.ContractID)
	// Output: 2 services, same id: true
}
