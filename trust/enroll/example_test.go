package enroll_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Issue a credential with the root key and check it the way a server does.
func ExampleSign() {
	root := trust.GenerateKey() // kept offline; "aster trust keygen" writes one
	node := trust.GenerateKey() // the enrolled node's identity
	cred := &enroll.Credential{
		Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "edge-node-7",
		EndpointID:   trust.IDOf(node),
		Capabilities: []string{"ops.status", "ops.ingest"},
		IssuedAt:     time.Now(), ExpiresAt: time.Now().Add(30 * 24 * time.Hour),
	}
	if err := enroll.Sign(root, cred); err != nil {
		panic(err)
	}
	// The server knows the root's public key and the peer's proven id.
	fmt.Println(cred.Verify(trust.IDOf(root), trust.IDOf(node), time.Now(), enroll.DefaultClockSkew))
	// The same credential presented over another key is refused.
	err := cred.Verify(trust.IDOf(root), trust.IDOf(trust.GenerateKey()), time.Now(), enroll.DefaultClockSkew)
	fmt.Println(errors.Is(err, enroll.ErrEndpointMismatch))
	// Output:
	// <nil>
	// true
}

// A gate with a closed consumer gate admits enrolled peers with their
// capabilities and refuses the rest.
func ExampleGate_Admit() {
	root := trust.GenerateKey()
	rootPub := trust.IDOf(root)
	gate, err := enroll.NewGate(enroll.Policy{RootPubKey: &rootPub, AllowAllProducers: true}, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		panic(err)
	}
	node := trust.GenerateKey()
	cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "ops-team",
		EndpointID: trust.IDOf(node), Capabilities: []string{"ops.admin"},
		IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	enroll.Sign(root, cred)

	grant, err := gate.Admit(trust.IDOf(node), enroll.RoleConsumer, cred)
	fmt.Println(grant.Capabilities, grant.Unrestricted, err)

	_, err = gate.Admit(trust.IDOf(trust.GenerateKey()), enroll.RoleConsumer, nil)
	var refusal *enroll.Refusal
	if errors.As(err, &refusal) {
		fmt.Println(refusal.Status())
	}
	// Output:
	// [ops.admin] false <nil>
	// UNAUTHENTICATED: admission refused: this server requires an enrollment credential
}
