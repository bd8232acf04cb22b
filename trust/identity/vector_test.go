package identity

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// The credential test vector of PROTOCOL.md ("Credential signing bytes"),
// as trust/enroll's tests build it: RFC 8032 test 1 is the root, RFC 8032
// test 2 the endpoint.
const (
	vecRootSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	vecEPSeed   = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
)

func seedKey(t testing.TB, h string) trust.SecretKey {
	t.Helper()
	b, _ := hex.DecodeString(h)
	k, err := trust.KeyFromSeed(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func vectorCredential(t testing.TB) (*enroll.Credential, trust.SecretKey, trust.SecretKey) {
	root, ep := seedKey(t, vecRootSeed), seedKey(t, vecEPSeed)
	c := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "edge-node-7", EndpointID: trust.IDOf(ep),
		Capabilities: []string{"ops.status", "ops.ingest"}, Attributes: map[string]string{"site": "eu-west"},
		IssuedAt: time.Unix(1767225600, 0).UTC(), ExpiresAt: time.Unix(1769817600, 0).UTC()}
	if err := enroll.Sign(root, c); err != nil {
		t.Fatal(err)
	}
	return c, root, ep
}
