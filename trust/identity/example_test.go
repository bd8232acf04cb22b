package identity_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// Write an .aster-identity file the way "aster enroll node" does, then load
// it back and pick the credential a client presents with its key
// (aster.WithSecretKey(id.Key), aster.WithCredential(cred)).
func ExampleIdentity_Credential() {
	root, node := trust.GenerateKey(), trust.GenerateKey()
	cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "edge-node-7",
		EndpointID: trust.IDOf(node), Capabilities: []string{"ops.status"},
		IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := enroll.Sign(root, cred); err != nil {
		panic(err)
	}
	dir, _ := os.MkdirTemp("", "identity")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "edge-node-7.cred")
	if err := identity.Save(path, &identity.Identity{Key: node, Peers: []*enroll.Credential{cred}}); err != nil {
		panic(err)
	}

	id, err := identity.Load(path)
	if err != nil {
		panic(err)
	}
	c, err := id.Credential("")
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Name, c.Capabilities, id.ID() == trust.IDOf(node))
	// Output:
	// edge-node-7 [ops.status] true
}
