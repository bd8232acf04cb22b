package aster_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"iter"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec/json"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
	"github.com/aster-go/aster/trust/identity"
)

// opsService declares the capabilities of chapter 5 on all four patterns.
func opsService() *handler.Service {
	echo := func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }
	return handler.NewService("Ops", 1).
		Handle("status", handler.Unary(echo), handler.Requires(trust.Cap("ops.status"))).
		Handle("open", handler.Unary(echo)).
		Handle("both", handler.Unary(echo), handler.Requires(trust.AllOf(trust.Cap("ops.status"), trust.Cap("ops.ingest")))).
		Handle("tail", handler.ServerStream(func(_ context.Context, m *Msg, send func(*Msg) error) error {
			return send(m)
		}), handler.Requires(trust.AnyOf(trust.Cap("ops.logs"), trust.Cap("ops.admin")))).
		Handle("ingest", handler.ClientStream(func(_ context.Context, in iter.Seq2[*Msg, error]) (*Msg, error) {
			n := 0
			for _, err := range in {
				if err != nil {
					return nil, err
				}
				n++
			}
			return &Msg{N: n}, nil
		}), handler.Requires(trust.Cap("ops.ingest")))
}

type agent struct{}

func agentService() *handler.Service {
	return handler.NewSessionService("Agent", 1, func(context.Context, handler.Peer) (*agent, error) { return &agent{}, nil }).
		Require(trust.Cap("ops.ingest")).
		Handle("register", handler.On(func(*agent) handler.Def {
			return handler.Unary(func(_ context.Context, m *Msg) (*Msg, error) { return m, nil })
		})).
		Handle("run", handler.On(func(*agent) handler.Def {
			return handler.BidiStream(func(_ context.Context, b *handler.Bidi[Msg, Msg]) error {
				for m, err := range b.All() {
					if err != nil {
						return err
					}
					if err := b.Send(m); err != nil {
						return err
					}
				}
				return nil
			})
		}), handler.Requires(trust.Cap("ops.admin")))
}

type gated struct {
	srv  *aster.Server
	addr aster.Address
	root trust.SecretKey
	logs *testutil.SyncBuffer
}

func newGated(t *testing.T, p enroll.Policy) *gated {
	t.Helper()
	g := &gated{root: trust.GenerateKey(), logs: &testutil.SyncBuffer{}}
	if p.RootPubKey == nil {
		pub := trust.IDOf(g.root)
		p.RootPubKey = &pub
	}
	logger := slog.New(slog.NewTextHandler(g.logs, nil))
	gate, err := enroll.NewGate(p, logger)
	if err != nil {
		t.Fatal(err)
	}
	g.srv = aster.NewServer(aster.WithGate(gate), aster.WithLogger(logger))
	g.srv.MustRegister(opsService(), agentService())
	ln, err := quic.Listen("127.0.0.1:0", g.srv.SecretKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr()
	done := make(chan error, 1)
	go func() { done <- g.srv.Serve(ln) }()
	t.Cleanup(func() {
		g.srv.Close()
		if err := <-done; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return g
}

// enroll issues a credential for a fresh node key.
func (g *gated) enroll(t *testing.T, name string, caps ...string) *identity.Identity {
	t.Helper()
	key := trust.GenerateKey()
	c := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: name, EndpointID: trust.IDOf(key),
		Capabilities: caps, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := enroll.Sign(g.root, c); err != nil {
		t.Fatal(err)
	}
	return &identity.Identity{Key: key, Peers: []*enroll.Credential{c}}
}

// withIdentity is the client option for id's node key and its credential
// named name ("" for the first consumer credential).
func withIdentity(t testing.TB, id *identity.Identity, name string) aster.ClientOption {
	t.Helper()
	cred, err := id.Credential(name)
	if err != nil {
		t.Fatal(err)
	}
	return aster.WithClientOptions(aster.WithSecretKey(id.Key), aster.WithCredential(cred))
}

func (g *gated) dial(t *testing.T, opts ...aster.ClientOption) (*aster.Client, error) {
	c, err := aster.DialAddress(ctxT(t), g.addr, opts...)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func callsAllowed(t *testing.T, c *aster.Client) map[string]bool {
	t.Helper()
	ctx := ctxT(t)
	got := map[string]error{}
	for _, m := range []string{"Ops.status", "Ops.open", "Ops.both"} {
		_, got[m] = aster.CallUnary[Msg](ctx, c, m, &Msg{Text: "x"})
	}
	if s, err := aster.CallServerStream[Msg](ctx, c, "Ops.tail", &Msg{Text: "x"}); err != nil {
		got["Ops.tail"] = err
	} else {
		_, got["Ops.tail"] = s.Recv()
		s.Close()
	}
	if s, err := aster.CallClientStream[Msg, Msg](ctx, c, "Ops.ingest"); err != nil {
		got["Ops.ingest"] = err
	} else {
		s.Send(&Msg{})
		_, got["Ops.ingest"] = s.CloseAndRecv()
	}
	sess := c.NewSession()
	_, got["Agent.register"] = aster.CallUnary[Msg](ctx, sess, "Agent.register", &Msg{})
	if b, err := aster.CallBidiStream[Msg, Msg](ctx, sess, "Agent.run"); err != nil {
		got["Agent.run"] = err
	} else {
		b.Send(&Msg{Text: "df"})
		b.CloseSend()
		_, got["Agent.run"] = b.Recv()
		b.Close()
	}
	sess.Close(ctx)
	allowed := map[string]bool{}
	for m, err := range got {
		switch code := status.CodeOf(err); {
		case err == nil:
			allowed[m] = true
		case code == status.PermissionDenied:
			if msg := status.FromError(err).Message(); msg != "permission denied" {
				t.Errorf("%s: denial message %q says more than it should", m, msg)
			}
		default:
			t.Errorf("%s: unexpected error %v", m, err)
		}
	}
	return allowed
}

func TestAdmissionCapabilitiesPerMethod(t *testing.T) {
	g := newGated(t, enroll.Policy{AllowAllProducers: true})
	for _, tc := range []struct {
		name string
		caps []string
		want []string
	}{
		{"edge-node-7", []string{"ops.status", "ops.ingest"}, []string{"Ops.status", "Ops.open", "Ops.both", "Ops.ingest", "Agent.register"}},
		{"ops-team", []string{"ops.status", "ops.logs", "ops.admin", "ops.ingest"}, []string{"Ops.status", "Ops.open", "Ops.both", "Ops.tail", "Ops.ingest", "Agent.register", "Agent.run"}},
		{"log-viewer", []string{"ops.logs"}, []string{"Ops.open", "Ops.tail"}},
		{"nobody", nil, []string{"Ops.open"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := g.enroll(t, tc.name, tc.caps...)
			c, err := g.dial(t, withIdentity(t, id, ""))
			if err != nil {
				t.Fatalf("enrolled peer refused: %v\n%s", err, g.logs)
			}
			allowed := callsAllowed(t, c)
			if len(allowed) != len(tc.want) {
				t.Errorf("allowed %v, want %v\nserver log:\n%s", allowed, tc.want, g.logs)
			}
			for _, m := range tc.want {
				if !allowed[m] {
					t.Errorf("%s denied, want allowed (allowed: %v)", m, allowed)
				}
			}
		})
	}
}

func TestAdmissionRefusals(t *testing.T) {
	g := newGated(t, enroll.Policy{AllowAllProducers: true})
	edge := g.enroll(t, "edge-node-7", "ops.status")
	expired := g.enroll(t, "old", "ops.status")
	expired.Peers[0].IssuedAt = time.Now().Add(-48 * time.Hour)
	expired.Peers[0].ExpiresAt = time.Now().Add(-24 * time.Hour)
	enroll.Sign(g.root, expired.Peers[0])
	foreign := g.enroll(t, "foreign", "ops.status")
	enroll.Sign(trust.GenerateKey(), foreign.Peers[0])
	tampered := g.enroll(t, "tampered", "ops.status")
	tampered.Peers[0].Capabilities = []string{"ops.admin"}

	for _, tc := range []struct {
		name   string
		opts   []aster.ClientOption
		msg    string
		reason string // in the server log
	}{
		{"no credential", nil, enroll.MsgCredentialRequired, "no credential presented"},
		{"stolen credential", []aster.ClientOption{aster.WithSecretKey(trust.GenerateKey()), aster.WithCredential(edge.Peers[0])}, enroll.MsgCredentialRejected, "belongs to another endpoint"},
		{"expired", []aster.ClientOption{withIdentity(t, expired, "")}, enroll.MsgCredentialRejected, "expired"},
		{"other root", []aster.ClientOption{withIdentity(t, foreign, "")}, enroll.MsgCredentialRejected, "signed by another root"},
		{"tampered", []aster.ClientOption{withIdentity(t, tampered, "")}, enroll.MsgCredentialRejected, "signature does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := g.dial(t, tc.opts...)
			wantCode(t, err, status.Unauthenticated)
			if msg := status.FromError(err).Message(); msg != tc.msg {
				t.Errorf("message %q, want %q", msg, tc.msg)
			}
			waitFor(t, func() bool { return strings.Contains(g.logs.String(), tc.reason) }, "server log of the reason "+tc.reason)
		})
	}
	// The edge node itself gets in.
	if _, err := g.dial(t, withIdentity(t, edge, "")); err != nil {
		t.Fatalf("edge-node-7: %v", err)
	}
}

func TestAdmissionOpenGate(t *testing.T) {
	// A gate open to consumers admits anyone, unrestricted.
	g := newGated(t, enroll.Policy{AllowAllConsumers: true, AllowAllProducers: true})
	c, err := g.dial(t)
	if err != nil {
		t.Fatal(err)
	}
	if allowed := callsAllowed(t, c); len(allowed) != 7 {
		t.Errorf("open gate allowed only %v", allowed)
	}
	// Dev mode: no root key.
	logs := &testutil.SyncBuffer{}
	gate, err := enroll.NewGate(enroll.Policy{DevMode: true}, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil || !gate.DevMode() || !strings.Contains(logs.String(), enroll.DevModeWarning) {
		t.Fatalf("dev gate: %v, log %q", err, logs)
	}
}

func TestAdmissionCredentialFile(t *testing.T) {
	g := newGated(t, enroll.Policy{})
	path := filepath.Join(t.TempDir(), "edge-node-7.cred")
	if err := identity.Save(path, g.enroll(t, "edge-node-7", "ops.status")); err != nil {
		t.Fatal(err)
	}
	id, err := identity.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := aster.Dial(ctxT(t), g.addr.String(), withIdentity(t, id, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); err != nil {
		t.Fatal(err)
	}
}

// A peer that skips admission and opens an RPC stream straight away is
// refused, and its call is never served.
func TestAdmissionSkippedIsRefused(t *testing.T) {
	g := newGated(t, enroll.Policy{AllowAllProducers: true})
	d := quic.NewDialer(trust.GenerateKey(), nil)
	defer d.Close()
	conn, err := d.Dial(ctxT(t), g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(transport.ConnNoError, "")
	st, err := conn.OpenStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	h := wire.Header{Service: "Ops", Method: "open"}
	buf, _ := wire.AppendHeader(nil, &h, false)
	buf = wire.AppendFrame(buf, 0, []byte{0xa0})
	st.Write(buf)
	st.CloseWrite()
	r := wire.NewReader(st, 1<<20)
	defer r.Release()
	flags, payload, err := r.ReadFrame()
	if err != nil {
		t.Fatalf("no refusal trailer: %v", err)
	}
	if flags&wire.FlagTrailer == 0 {
		t.Fatalf("served a call without admission: flags %s", wire.FlagString(flags))
	}
	tr, _ := wire.DecodeTrailer(payload)
	wantCode(t, tr.Err(), status.Unauthenticated)
	if !strings.Contains(tr.Message, "admission required") {
		t.Errorf("message %q", tr.Message)
	}
	select {
	case <-conn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after refusal")
	}
	if _, err := conn.OpenStream(ctxT(t)); err == nil {
		t.Error("stream opened on a refused connection")
	}
}

// A server without a gate answers the admission call itself (clients always
// make it), and admits everyone unrestricted.
func TestAdmissionWithoutGate(t *testing.T) {
	srv := aster.NewServer(aster.WithLogger(quietLogger()))
	srv.MustRegister(opsService(), agentService())
	ln, err := quic.Listen("127.0.0.1:0", srv.SecretKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Close(); <-done }()
	c, err := aster.DialAddress(ctxT(t), ln.Addr(), withIdentity(t, (&gated{root: trust.GenerateKey()}).enroll(t, "x"), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if allowed := callsAllowed(t, c); len(allowed) != 7 {
		t.Errorf("no gate allowed only %v", allowed)
	}
}

// hexBytes decodes hex written with spaces, as in PROTOCOL.md section 17.
func hexBytes(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawExchange sends req on the first stream of a fresh connection and
// returns everything the server answers on it.
func rawExchange(t *testing.T, addr aster.Address, key trust.SecretKey, req []byte) []byte {
	t.Helper()
	d := quic.NewDialer(key, nil)
	defer d.Close()
	conn, err := d.Dial(ctxT(t), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(transport.ConnNoError, "")
	st, err := conn.OpenStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write(req); err != nil {
		t.Fatal(err)
	}
	st.CloseWrite()
	resp, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp
}

// TestAdmissionWireExample checks the byte examples of PROTOCOL.md §17.4.
func TestAdmissionWireExample(t *testing.T) {
	request := hexBytes(t, `26000000 04
		a3 66 63616c6c4964 01 66 6d6574686f64 65 61646d6974 67 73657276696365 66 5f6173746572
		02000000 00 a0`)
	open := newGated(t, enroll.Policy{AllowAllConsumers: true, AllowAllProducers: true})
	want := hexBytes(t, `3a000000 00
		a4 64 726f6c65 68 636f6e73756d6572 6b 73747265616d5265757365 18 40 6c 6361706162696c6974696573 80 6c 756e72657374726963746564 f5
		08000000 02 a1 64 636f6465 00`)
	if got := rawExchange(t, open.addr, trust.GenerateKey(), request); !bytes.Equal(got, want) {
		t.Errorf("open gate answered\n%x\nwant\n%x", got, want)
	}
	closed := newGated(t, enroll.Policy{AllowAllProducers: true})
	want = append(hexBytes(t, `52000000 02 a2 64 636f6465 10 67 6d657373616765 78 40`), enroll.MsgCredentialRequired...)
	if got := rawExchange(t, closed.addr, trust.GenerateKey(), request); !bytes.Equal(got, want) {
		t.Errorf("closed gate answered\n%x\nwant\n%x", got, want)
	}

	// The §3.4 credential, presented by its endpoint to a server trusting
	// the vector's root at a time within its validity.
	seed := func(h string) trust.SecretKey { k, _ := trust.KeyFromSeed(hexBytes(t, h)); return k }
	root := seed("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	ep := seed("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
	rootPub := trust.IDOf(root)
	vec := newGated(t, enroll.Policy{RootPubKey: &rootPub, Now: func() time.Time { return time.Unix(1767225600+3600, 0) }})
	cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "edge-node-7", EndpointID: trust.IDOf(ep),
		Capabilities: []string{"ops.status", "ops.ingest"}, Attributes: map[string]string{"site": "eu-west"},
		IssuedAt: time.Unix(1767225600, 0), ExpiresAt: time.Unix(1769817600, 0)}
	if err := enroll.Sign(root, cred); err != nil {
		t.Fatal(err)
	}
	enc, _ := cred.Encode()
	hello := append(hexBytes(t, `a2 64 726f6c65 68 636f6e73756d6572 6a 63726564656e7469616c 59 0130`), enc...)
	req := append(request[:len(request)-6:len(request)-6], wire.AppendFrame(nil, 0, hello)...)
	want = wire.AppendFrame(nil, 0, hexBytes(t, `a4 64 726f6c65 68 636f6e73756d6572 6b 73747265616d5265757365 18 40 6c 6361706162696c6974696573 82 6a 6f70732e737461747573 6a 6f70732e696e67657374 6c 756e72657374726963746564 f4`))
	want = append(want, hexBytes(t, `08000000 02 a1 64 636f6465 00`)...)
	if got := rawExchange(t, vec.addr, ep, req); !bytes.Equal(got, want) {
		t.Errorf("vector credential answered\n%x\nwant\n%x", got, want)
	}
}

func TestAdmissionOneTimeToken(t *testing.T) {
	g := newGated(t, enroll.Policy{NonceFile: filepath.Join(t.TempDir(), "ott-nonces")})
	id := g.enroll(t, "once", "ops.status")
	c := id.Peers[0]
	c.Type, c.Nonce = enroll.TypeOTT, enroll.NewNonce()
	if err := enroll.Sign(g.root, c); err != nil {
		t.Fatal(err)
	}
	first, err := g.dial(t, withIdentity(t, id, ""))
	if err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), first, "Ops.status", &Msg{}); err != nil {
		t.Fatal(err)
	}
	_, err = g.dial(t, withIdentity(t, id, ""))
	wantCode(t, err, status.Unauthenticated)
	waitFor(t, func() bool { return strings.Contains(g.logs.String(), "already used") }, "replay logged")
}

// The admission call works in JSON too (the credential as base64).
func TestAdmissionJSON(t *testing.T) {
	g := newGated(t, enroll.Policy{})
	c, err := g.dial(t, withIdentity(t, g.enroll(t, "j", "ops.status"), ""), aster.WithCodec(json.Codec{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); err != nil {
		t.Fatal(err)
	}
	_, err = aster.CallUnary[Msg](ctxT(t), c, "Ops.tail", &Msg{})
	wantCode(t, err, status.PermissionDenied)
}

// BenchmarkDialAdmission measures connecting over QUIC on loopback: the
// handshake plus the admission exchange, without and with a credential check.
func BenchmarkDialAdmission(b *testing.B) {
	for _, gated := range []bool{false, true} {
		name := "no-gate"
		if gated {
			name = "gate"
		}
		b.Run(name, func(b *testing.B) {
			root := trust.GenerateKey()
			rootPub := trust.IDOf(root)
			opts := []aster.ServerOption{aster.WithLogger(quietLogger())}
			if gated {
				gate, _ := enroll.NewGate(enroll.Policy{RootPubKey: &rootPub}, quietLogger())
				opts = append(opts, aster.WithGate(gate))
			}
			srv := aster.NewServer(opts...)
			srv.MustRegister(opsService())
			ln, err := quic.Listen("127.0.0.1:0", srv.SecretKey(), nil)
			if err != nil {
				b.Fatal(err)
			}
			go srv.Serve(ln)
			defer srv.Close()
			key := trust.GenerateKey()
			cred := &enroll.Credential{Type: enroll.TypePolicy, Role: enroll.RoleConsumer, Name: "bench", EndpointID: trust.IDOf(key),
				Capabilities: []string{"ops.status"}, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
			enroll.Sign(root, cred)
			id := &identity.Identity{Key: key, Peers: []*enroll.Credential{cred}}
			d := quic.NewDialer(key, nil)
			defer d.Close()
			b.ReportAllocs()
			for b.Loop() {
				c, err := aster.DialAddress(context.Background(), ln.Addr(), aster.WithDialer(d), withIdentity(b, id, ""))
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// A server of the protocol revision without admission answers _aster.admit
// with NOT_FOUND; the client goes on as admitted.
func TestAdmissionOlderServer(t *testing.T) {
	nw := mem.NewNetwork()
	serverKey := trust.GenerateKey()
	ln, err := nw.Listen(serverKey)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		served <- func() error {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return err
			}
			defer conn.Close(transport.ConnNoError, "")
			for i, tr := range []wire.Trailer{{Code: uint32(status.NotFound), Message: "unknown method _aster.admit"}, {}} {
				st, err := conn.AcceptStream(context.Background())
				if err != nil {
					return err
				}
				r := wire.NewReader(st, 1<<20)
				var hdr *wire.Header
				for {
					flags, payload, err := r.ReadFrame()
					if err == io.EOF {
						break
					}
					if err != nil {
						return err
					}
					if flags&wire.FlagHeader != 0 {
						if hdr, err = wire.DecodeHeader(payload); err != nil {
							return err
						}
					}
				}
				r.Release()
				if want := []string{"_aster.admit", "Ops.open"}[i]; hdr.Service+"."+hdr.Method != want {
					return errors.New("stream " + want + " got " + hdr.Service + "." + hdr.Method)
				}
				var out []byte
				if i == 1 {
					out = wire.AppendFrame(nil, 0, hexBytes(t, "a1 64 74657874 62 6f6b")) // {"text": "ok"}
				}
				out, _ = wire.AppendTrailer(out, &tr, false)
				st.Write(out)
				st.Close()
			}
			<-conn.Done()
			return nil
		}()
	}()
	c := aster.NewClient(ln.Addr(), aster.WithDialer(nw.Dialer(trust.GenerateKey())))
	resp, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.open", &Msg{})
	if err != nil || resp.Text != "ok" {
		t.Fatalf("call after NOT_FOUND admission: %+v %v", resp, err)
	}
	c.Close()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}

// A client that does not speak admission (the protocol revision without
// it, e.g. a browser) is served as an anonymous consumer by an open gate —
// its first call included.
func TestAdmissionSkippedOpenGate(t *testing.T) {
	g := newGated(t, enroll.Policy{AllowAllConsumers: true, AllowAllProducers: true})
	d := quic.NewDialer(trust.GenerateKey(), nil)
	defer d.Close()
	conn, err := d.Dial(ctxT(t), g.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(transport.ConnNoError, "")
	for i := range 2 {
		st, err := conn.OpenStream(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		// A JSON call to a method that needs ops.status: the open gate
		// admits the peer unrestricted.
		h := wire.Header{Service: "Ops", Method: "status", SerializationMode: "json", CallID: uint64(i + 1)}
		buf, _ := wire.AppendHeader(nil, &h, true)
		buf = wire.AppendFrame(buf, 0, []byte(`{"text":"hi","n":`+string(rune('1'+i))+`}`))
		st.Write(buf)
		st.CloseWrite()
		r := wire.NewReader(st, 1<<20)
		flags, payload, err := r.ReadFrame()
		if err != nil || flags != 0 || string(payload) != `{"text":"hi","n":`+string(rune('1'+i))+`}` {
			t.Fatalf("call %d: %x %q %v", i, flags, payload, err)
		}
		flags, payload, err = r.ReadFrame()
		if err != nil || flags&wire.FlagTrailer == 0 {
			t.Fatalf("call %d trailer: %v", i, err)
		}
		tr, _ := wire.DecodeTrailer(payload)
		if tr.Err() != nil {
			t.Fatalf("call %d: %v", i, tr.Err())
		}
		r.Release()
		st.Close()
	}
}

// A connection admitted with a credential does not outlive it: once the
// credential expires (plus the clock skew) the server closes the
// connection, and a redial with the expired credential is refused.
func TestAdmissionCredentialExpiryClosesConnection(t *testing.T) {
	var shift atomic.Int64 // how far the gate's clock is ahead
	g := newGated(t, enroll.Policy{ClockSkew: time.Millisecond, Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	id := g.enroll(t, "edge-node-7", "ops.status")
	// The gate's clock is 300 ms short of the credential's expiry.
	shift.Store(int64(time.Until(id.Peers[0].ExpiresAt) - 300*time.Millisecond))
	c, err := g.dial(t, withIdentity(t, id, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{})
		if err != nil {
			// A call in flight when the connection closes reports the
			// close (UNAVAILABLE, naming the reason); the next one
			// redials and is refused.
			code := status.CodeOf(err)
			if code == status.Unavailable && strings.Contains(err.Error(), "credential expired") {
				_, err = aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{})
				code = status.CodeOf(err)
			}
			if code != status.PermissionDenied && code != status.Unauthenticated {
				t.Fatalf("after expiry: %v (code %v), want PERMISSION_DENIED or UNAUTHENTICATED", err, code)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("calls with an expired credential still succeed on the connection it was admitted on")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(g.logs.String(), "credential expired") {
		t.Errorf("server log does not say why: %s", g.logs)
	}
	// An unrestricted grant (open consumer gate) does not depend on the
	// credential: its connection stays.
	shift.Store(0)
	open := newGated(t, enroll.Policy{AllowAllConsumers: true, ClockSkew: time.Millisecond, Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	id = open.enroll(t, "edge-node-8", "ops.status")
	shift.Store(int64(time.Until(id.Peers[0].ExpiresAt) - 100*time.Millisecond))
	c, err = open.dial(t, withIdentity(t, id, ""))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); err != nil {
		t.Fatalf("open gate: %v", err)
	}
}

// On a gated server a second _aster.admit, after the connection was
// admitted, is answered with the connection's real grant: it used to be
// an unrestricted verdict, which a proxy or a later client could take for
// the grant.
func TestAdmissionSecondAdmitTellsTheGrant(t *testing.T) {
	g := newGated(t, enroll.Policy{AllowAllProducers: true})
	c, err := g.dial(t, withIdentity(t, g.enroll(t, "log-viewer", "ops.logs"), ""))
	if err != nil {
		t.Fatal(err)
	}
	type verdict struct {
		Role         string   `cbor:"role"`
		Capabilities []string `cbor:"capabilities"`
		Unrestricted bool     `cbor:"unrestricted"`
	}
	v, err := aster.CallUnary[verdict](ctxT(t), c, "_aster.admit", &struct {
		Role string `cbor:"role"`
	}{Role: "producer"})
	if err != nil || v.Unrestricted || len(v.Capabilities) != 1 || v.Capabilities[0] != "ops.logs" {
		t.Fatalf("second admit: %+v, %v; want the grant (ops.logs, restricted)", v, err)
	}
	// The connection still serves with its grant.
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.open", &Msg{}); err != nil {
		t.Fatal(err)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); status.CodeOf(err) != status.PermissionDenied {
		t.Fatalf("Ops.status: %v", err)
	}
}

// panickyReq is an application's Requirement whose check panics.
type panickyReq struct{}

func (panickyReq) Satisfied([]string) bool { panic("requirement bug") }
func (panickyReq) String() string          { return "panicky" }
func (panickyReq) Expr() trust.Expr        { return trust.Expr{Cap: "ops.panicky"} }

// TestAdmissionRequirementPanicDenies: a Requirement whose Satisfied
// panics denies the call (fail closed) and logs it; the server keeps
// serving, the connection too.
func TestAdmissionRequirementPanicDenies(t *testing.T) {
	g := newGated(t, enroll.Policy{AllowAllProducers: true})
	echo := func(_ context.Context, m *Msg) (*Msg, error) { return m, nil }
	g.srv.MustRegister(handler.NewService("Odd", 1).Handle("call", handler.Unary(echo), handler.Requires(panickyReq{})))
	c, err := g.dial(t, withIdentity(t, g.enroll(t, "edge", "ops.status"), ""))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := aster.CallUnary[Msg](ctxT(t), c, "Odd.call", &Msg{})
		wantCode(t, err, status.PermissionDenied)
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ops.status", &Msg{}); err != nil {
		t.Fatalf("a call after the panicking requirement: %v", err)
	}
	if !strings.Contains(g.logs.String(), "requirement panicked") {
		t.Errorf("the panic was not logged:\n%s", g.logs)
	}
}
