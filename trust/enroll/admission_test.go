package enroll

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster/trust"
)

func TestGate(t *testing.T) {
	c, root, ep := vectorCredential(t)
	rootPub := trust.IDOf(root)
	now := func() time.Time { return t0.Add(time.Hour) }
	logs := &bytes.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	closed, err := NewGate(Policy{RootPubKey: &rootPub, AllowAllProducers: true, Now: now}, logger)
	if err != nil {
		t.Fatal(err)
	}
	g, err := closed.Admit(trust.IDOf(ep), "", c)
	if err != nil || g.Unrestricted || g.Name != "edge-node-7" || len(g.Capabilities) != 2 || g.Role != RoleConsumer {
		t.Fatalf("valid credential: %+v %v", g, err)
	}
	var rf *Refusal
	_, err = closed.Admit(trust.IDOf(ep), RoleConsumer, nil)
	if !errors.As(err, &rf) || rf.Message != MsgCredentialRequired || rf.Code.String() != "UNAUTHENTICATED" {
		t.Fatalf("no credential: %v", err)
	}
	thief := trust.IDOf(trust.GenerateKey())
	if _, err = closed.Admit(thief, RoleConsumer, c); !errors.Is(err, ErrEndpointMismatch) || !errors.As(err, &rf) || rf.Message != MsgCredentialRejected {
		t.Fatalf("stolen credential: %v", err)
	}
	if strings.Contains(rf.Status().Message(), thief.Short()) {
		t.Error("refusal message leaks the reason")
	}
	// An open producer gate does not let unenrolled producers past a closed consumer gate.
	if _, err = closed.Admit(thief, RoleProducer, nil); err == nil {
		t.Fatal("anonymous producer admitted through a closed consumer gate")
	}
	if _, err = closed.Admit(trust.IDOf(ep), RoleProducer, c); !errors.Is(err, ErrMalformed) {
		t.Fatalf("role mismatch: %v", err)
	}

	open, _ := NewGate(Policy{RootPubKey: &rootPub, AllowAllConsumers: true, Now: now}, logger)
	if g, err := open.Admit(thief, "", nil); err != nil || !g.Unrestricted {
		t.Fatalf("open gate: %+v %v", g, err)
	}
	if _, err := open.Admit(thief, RoleProducer, nil); err == nil {
		t.Fatal("producer admitted without credential with allow_all_producers=false")
	}
	if logs.Len() != 0 {
		t.Errorf("unexpected log: %s", logs)
	}

	if g, err := NewGate(Policy{AllowAllProducers: true}, logger); !errors.Is(err, ErrNoRoot) || g != nil {
		t.Fatalf("NewGate without a root key or DevMode: %v, %v; want ErrNoRoot", g, err)
	}
	dev, _ := NewGate(Policy{DevMode: true}, logger)
	if !dev.DevMode() || !strings.Contains(logs.String(), DevModeWarning) {
		t.Errorf("dev mode: %v log %q", dev.DevMode(), logs)
	}
	if g, err := dev.Admit(thief, "", nil); err != nil || !g.Unrestricted {
		t.Fatalf("dev gate: %+v %v", g, err)
	}
}

func TestGateOneTimeToken(t *testing.T) {
	root, ep := trust.GenerateKey(), trust.GenerateKey()
	rootPub := trust.IDOf(root)
	c := &Credential{Type: TypeOTT, Role: RoleConsumer, Name: "once", EndpointID: trust.IDOf(ep), Nonce: NewNonce(),
		IssuedAt: time.Now().Add(-time.Minute), ExpiresAt: time.Now().Add(time.Hour)}
	if err := Sign(root, c); err != nil {
		t.Fatal(err)
	}
	nonces := filepath.Join(t.TempDir(), "store", "ott-nonces")
	g, err := NewGate(Policy{RootPubKey: &rootPub, NonceFile: nonces}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(trust.IDOf(ep), "", c); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, err := g.Admit(trust.IDOf(ep), "", c); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay: %v", err)
	}
	// A restarted server remembers the nonce.
	g2, err := NewGate(Policy{RootPubKey: &rootPub, NonceFile: nonces}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g2.Admit(trust.IDOf(ep), "", c); !errors.Is(err, ErrReplayed) {
		t.Fatalf("replay after restart: %v", err)
	}
	os.WriteFile(nonces, []byte("zz 12\n"), 0o600)
	if _, err := NewGate(Policy{RootPubKey: &rootPub, NonceFile: nonces}, nil); err == nil {
		t.Error("corrupt nonce file accepted")
	}
}

// A clock skew stretches every credential's validity: a negative one (a
// sign slip) or one beyond MaxClockSkew is refused rather than replaced by
// the default or taken as given.
func TestGateClockSkewBounds(t *testing.T) {
	root := trust.IDOf(trust.GenerateKey())
	quiet := slog.New(slog.DiscardHandler)
	for _, skew := range []time.Duration{-time.Second, MaxClockSkew + time.Second, 365 * 24 * time.Hour} {
		if _, err := NewGate(Policy{RootPubKey: &root, ClockSkew: skew}, quiet); err == nil || !strings.Contains(err.Error(), "clock skew") {
			t.Errorf("skew %v: err %v, want a clock skew error", skew, err)
		}
	}
	for skew, want := range map[time.Duration]time.Duration{0: DefaultClockSkew, time.Second: time.Second, MaxClockSkew: MaxClockSkew} {
		g, err := NewGate(Policy{RootPubKey: &root, ClockSkew: skew}, quiet)
		if err != nil {
			t.Fatalf("skew %v: %v", skew, err)
		}
		if got := g.Policy().ClockSkew; got != want {
			t.Errorf("skew %v: gate skew %v, want %v", skew, got, want)
		}
	}
}
