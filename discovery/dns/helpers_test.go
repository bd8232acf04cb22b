package dns_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/discovery/dns"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/dnstest"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

const svc = "_mc._udp.example.internal."

// newResolver returns a resolver asking s, logging into the returned buffer.
func newResolver(t testing.TB, s *dnstest.Server, cfg dns.Config) (*dns.Resolver, *testutil.SyncBuffer) {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	cfg.Server = s.Addr()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r, err := dns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("resolver logs:\n%s", logs.String())
		}
	})
	return r, logs
}

// addrOf returns the aster1 address of test key n with the given direct
// address.
func addrOf(t testing.TB, n int, direct string) discovery.EndpointAddr {
	t.Helper()
	return discovery.EndpointAddr{ID: testutil.ID(t, n), Direct: []netip.AddrPort{netip.MustParseAddrPort(direct)}}
}

// txtStrings renders v as TXT character-strings of at most 255 bytes, in
// zone-file syntax.
func txtStrings(v string) string {
	var b strings.Builder
	for len(v) > 0 {
		n := min(len(v), 255)
		fmt.Fprintf(&b, " %q", v[:n])
		v = v[n:]
	}
	return b.String()
}

// credOf is a credential-like blob of n bytes, different per seed.
func credOf(seed, n int) []byte {
	b := bytes.Repeat([]byte{byte(seed)}, n)
	for i := range b {
		b[i] ^= byte(i * 7)
	}
	return b
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func hexID(t testing.TB, n int) string { t.Helper(); return testutil.ID(t, n).String() }

// idOf is the id of test key n.
func idOf(t testing.TB, n int) trust.EndpointID { t.Helper(); return testutil.ID(t, n) }

// ids returns the sorted endpoint ids of ps, shortened, for messages.
func ids(ps []discovery.Producer) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Addr.ID.Short())
	}
	return out
}
