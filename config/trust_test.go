package config_test

import (
	"crypto/ed25519"
	"path/filepath"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// Config's [trust] and [identity] fields drive admission on both sides.
func TestConfigTrust(t *testing.T) {
	dir := t.TempDir()
	root := trust.GenerateKey()
	serverID := filepath.Join(dir, "server.aster-identity")
	if _, _, err := identity.LoadOrCreate(serverID); err != nil {
		t.Fatal(err)
	}
	node := trust.GenerateKey()
	cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "edge-node-7", EndpointID: trust.IDOf(node),
		Capabilities: []string{"ops.status"}, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := enroll.Sign(root, cred); err != nil {
		t.Fatal(err)
	}
	credFile := filepath.Join(dir, "edge-node-7.cred")
	if err := identity.Save(credFile, &identity.Identity{Key: node, Peers: []*enroll.Credential{cred}}); err != nil {
		t.Fatal(err)
	}

	scfg := config.Config{RootPubkey: ed25519.PublicKey(trust.IDOf(root).PublicKey()), AllowAllProducers: true, IdentityFile: serverID, LogLevel: "error"}
	p, err := scfg.TrustPolicy()
	if err != nil || p.RootPubKey == nil || *p.RootPubKey != trust.IDOf(root) || p.AllowAllConsumers || !p.AllowAllProducers {
		t.Fatalf("TrustPolicy = %+v, %v", p, err)
	}
	srv, err := scfg.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	srv.MustRegister(opsService(nil, nil))
	id, _ := identity.Load(serverID)
	if srv.ID() != id.ID() {
		t.Fatalf("server id %s, identity file %s", srv.ID().Short(), id.ID().Short())
	}
	addr := listen(t, srv, "127.0.0.1:0")

	ccfg := config.Config{EnrollmentCredentialFile: credFile, AllowAllProducers: true}
	copts, err := ccfg.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	c, err := aster.DialAddress(ctxT(t), addr, copts...)
	if err != nil {
		t.Fatalf("enrolled client refused: %v", err)
	}
	defer c.Close()
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); err != nil {
		t.Fatal(err)
	}
	_, err = aster.CallUnary[Msg](ctxT(t), c, "Ops.tail", &Msg{})
	wantCode(t, err, status.PermissionDenied)

	// No credential in the config: refused.
	none := config.Config{AllowAllProducers: true}
	copts, _ = none.ClientOptions()
	_, err = aster.DialAddress(ctxT(t), addr, copts...)
	wantCode(t, err, status.Unauthenticated)

	// An identity file without a key cannot serve.
	bad := filepath.Join(dir, "peers-only.cred")
	identity.Save(bad, &identity.Identity{Peers: []*enroll.Credential{cred}})
	_, err = (&config.Config{IdentityFile: bad}).NewServer()
	checkConfigErr(t, err, nil, "identity.identity_file", "Config", "no [node] secret_key")
	// Dev mode: no root key.
	if p, err := (&config.Config{}).TrustPolicy(); err != nil || p.RootPubKey != nil {
		t.Errorf("dev TrustPolicy = %+v, %v", p, err)
	}
}
