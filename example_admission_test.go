package aster_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Admission: the server trusts a root key; a node enrolled by that root
// calls what its capabilities allow, a stranger is not let in.
func ExampleWithGate() {
	root := trust.GenerateKey() // "aster trust keygen"
	rootPub := trust.IDOf(root)
	gate, err := enroll.NewGate(enroll.Policy{RootPubKey: &rootPub, AllowAllProducers: true}, quietLogger())
	if err != nil {
		log.Fatal(err)
	}
	echo := handler.Unary(func(_ context.Context, m *GreetRequest) (*GreetResponse, error) {
		return &GreetResponse{Greeting: "hello, " + m.Name}, nil
	})
	svc := handler.NewService("Ops", 1).
		Handle("status", echo, handler.Requires(trust.Cap("ops.status"))).
		Handle("admin", echo, handler.Requires(trust.Cap("ops.admin")))
	serverKey := trust.GenerateKey()
	srv := aster.NewServer(aster.WithSecretKey(serverKey), aster.WithGate(gate), aster.WithLogger(quietLogger()))
	srv.MustRegister(svc)
	nw := mem.NewNetwork()
	ln, _ := nw.Listen(serverKey)
	go srv.Serve(ln)
	defer srv.Close()

	// "aster enroll node --name edge-node-7 --capabilities ops.status"
	node := trust.GenerateKey()
	cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "edge-node-7",
		EndpointID: trust.IDOf(node), Capabilities: []string{"ops.status"},
		IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	enroll.Sign(root, cred)

	ctx := context.Background()
	c, err := aster.DialAddress(ctx, ln.Addr(), aster.WithDialerFor(nw.Dialer),
		aster.WithSecretKey(node), aster.WithCredential(cred))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resp, err := aster.CallUnary[GreetResponse](ctx, c, "Ops.status", &GreetRequest{Name: "ops"})
	fmt.Println(resp.Greeting, err)
	_, err = aster.CallUnary[GreetResponse](ctx, c, "Ops.admin", &GreetRequest{Name: "ops"})
	fmt.Println(err)

	stranger := trust.GenerateKey()
	_, err = aster.DialAddress(ctx, ln.Addr(), aster.WithDialer(nw.Dialer(stranger)))
	fmt.Println(err)
	// Output:
	// hello, ops <nil>
	// PERMISSION_DENIED: permission denied
	// UNAUTHENTICATED: admission refused: this server requires an enrollment credential
}
