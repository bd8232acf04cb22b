package relay_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/testutil/proxytest"
	"github.com/aster-go/aster/transport/relay"
)

// TestTinyproxyRelay runs a server registered at its relay and a client
// calling it through the relay, neither with direct QUIC, with both relay
// connections tunneled through tinyproxy with proxy authentication: the
// proxy's log shows both CONNECTs, and calls of the four patterns work.
func TestTinyproxyRelay(t *testing.T) {
	p := proxytest.StartTinyproxy(t, proxytest.Options{User: "aster", Password: "tiny-pw-1"})
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	via := aster.WithRelayProxy(relay.ProxyURL(p.URL))
	addr := startServer(t, aster.WithHomeRelay(r.url), aster.WithIPTransports(false), via)
	if n := p.CountConnects(r.addr); n != 1 {
		t.Fatalf("after the server started, the proxy saw %d CONNECTs to %s; want 1:\n%s", n, r.addr, p.Log())
	}
	c, err := aster.Dial(ctxT(t), addr.String(), aster.WithIPTransports(false), via)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	allPatterns(t, c, "through tinyproxy")
	if n, e := p.CountConnects(r.addr), p.Established(); n != 2 || e != 2 {
		t.Fatalf("the proxy saw %d CONNECTs to %s and opened %d tunnels; want 2 and 2 (server and client):\n%s", n, r.addr, e, p.Log())
	}
	if other := len(p.Connects()) - 2; other != 0 {
		t.Errorf("%d other CONNECTs: %v", other, p.Connects())
	}
}

// TestTinyproxyAuth checks proxy authentication against tinyproxy's
// BasicAuth: right credentials tunnel, wrong or missing ones fail with
// ErrProxyAuth, the status line, and no password.
func TestTinyproxyAuth(t *testing.T) {
	const pw = "tiny-pw-2"
	p := proxytest.StartTinyproxy(t, proxytest.Options{User: "aster", Password: pw})
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	listen := func(proxy *url.URL, key int) error {
		ln, err := relay.Listen(ctxT(t), r.url, testutil.Key(t, key), &relay.Config{Logger: quiet, Proxy: relay.ProxyURL(proxy)})
		if err == nil {
			ln.Close()
		}
		return err
	}
	if err := listen(p.URL, 1); err != nil {
		t.Fatalf("right credentials: %v", err)
	}
	wrong := *p.URL
	wrong.User = url.UserPassword("aster", "not-"+pw+"-at-all")
	none := *p.URL
	none.User = nil
	for _, tc := range []struct {
		name   string
		proxy  *url.URL
		status string
		hint   string
	}{
		// tinyproxy 1.11 answers wrong credentials with 401, missing ones
		// with 407.
		{"wrong password", &wrong, "401 Unauthorized", `credentials for user "aster" refused`},
		{"no credentials", &none, "407 Proxy Authentication Required", "no user and password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := listen(tc.proxy, 2)
			t.Log(err)
			if !errors.Is(err, relay.ErrProxyAuth) {
				t.Fatalf("err = %v; want ErrProxyAuth", err)
			}
			for _, w := range []string{tc.status, tc.hint, p.Addr, r.addr} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
	// A server reachable only through its relay does not start.
	srv := aster.NewServer(aster.WithLogger(quiet), aster.WithHomeRelay(r.url), aster.WithIPTransports(false),
		aster.WithRelayProxy(relay.ProxyURL(&wrong)))
	err := srv.ListenAndServe("", nil)
	if err == nil || !strings.Contains(err.Error(), "proxy authentication required or failed") {
		t.Errorf("server behind a proxy refusing it: ListenAndServe = %v", err)
	}
	srv.Close()
}

// TestTinyproxyEnvironment takes the proxy from HTTPS_PROXY: the relay
// connection goes through tinyproxy, unless NO_PROXY names the relay's
// host. The relay is addressed by a name or address that is not loopback,
// which net/http's rules would always reach directly.
func TestTinyproxyEnvironment(t *testing.T) {
	p := proxytest.StartTinyproxy(t, proxytest.Options{})
	host, listenIP := nonLoopbackHost(t)
	cert, err := relay.SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, net.JoinHostPort(listenIP, "0"), relay.ServerConfig{Certificate: cert})
	_, port, _ := net.SplitHostPort(r.addr)
	target := net.JoinHostPort(host, port)
	u := relay.PinnedURL(target, cert.Certificate[0]) // the pin, not the name, verifies the relay
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "https_proxy", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(v, "")
	}
	t.Setenv("HTTPS_PROXY", p.URL.String())
	listen := func(key int) {
		t.Helper()
		ln, err := relay.Listen(ctxT(t), u, testutil.Key(t, key), &relay.Config{Logger: quiet, Proxy: relay.ProxyFromEnvironment()})
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
	}

	t.Setenv("NO_PROXY", "other.example,10.0.0.0/8")
	listen(1)
	if n := p.CountConnects(target); n != 1 {
		t.Fatalf("HTTPS_PROXY set: %d CONNECTs to %s; want 1:\n%s", n, target, p.Log())
	}
	t.Setenv("NO_PROXY", "other.example,"+host)
	listen(2)
	if n := len(p.Connects()); n != 1 {
		t.Fatalf("NO_PROXY names the relay: %d CONNECTs in all; want still 1: %v", n, p.Connects())
	}
}

// nonLoopbackHost returns a name or address for this machine that
// net/http's proxy rules do not treat as loopback, and the address to
// listen on for it: the first IPv4 address of an interface that is up,
// else the host name if it resolves to loopback.
func nonLoopbackHost(t *testing.T) (host, listenIP string) {
	t.Helper()
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				ip := ipn.IP.String()
				if ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0")); err == nil {
					ln.Close()
					return ip, ip
				}
			}
		}
	}
	if name, err := os.Hostname(); err == nil && name != "localhost" {
		if ips, err := net.LookupHost(name); err == nil && len(ips) > 0 && net.ParseIP(ips[0]).IsLoopback() {
			return name, ips[0]
		}
	}
	t.Fatal("no address of this machine that is not loopback, and the host name does not resolve to loopback")
	return "", ""
}

// TestTinyproxyDown checks that a proxy that is not running fails the
// relay connection at once, saying so.
func TestTinyproxyDown(t *testing.T) {
	p := proxytest.StartTinyproxy(t, proxytest.Options{User: "aster", Password: "tiny-pw-3"})
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	p.Stop()
	start := time.Now()
	_, err := relay.Listen(ctxT(t), r.url, testutil.Key(t, 1), &relay.Config{Logger: quiet, Proxy: relay.ProxyURL(p.URL)})
	took := time.Since(start)
	t.Logf("%v (%v)", err, took)
	var pe *relay.ProxyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "proxy unreachable") || !strings.Contains(err.Error(), p.Addr) {
		t.Fatalf("err = %v; want a *ProxyError saying the proxy is unreachable", err)
	}
	if strings.Contains(err.Error(), "tiny-pw-3") {
		t.Errorf("the error shows the password: %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("took %v", took)
	}
	// A client falls back to nothing: its dial fails with the same cause.
	_, err = aster.DialAddress(ctxT(t), aster.Address{ID: testutil.ID(t, 2), Relay: r.url},
		aster.WithIPTransports(false), aster.WithRelayProxy(relay.ProxyURL(p.URL)))
	if err == nil || !strings.Contains(err.Error(), "proxy unreachable") {
		t.Errorf("client through a stopped proxy: %v", err)
	}
}

// TestSquidRelay is TestTinyproxyRelay with squid: a server and a client,
// relay only, both relay connections tunneled through squid, whose access
// log shows the two CONNECTs once the tunnels have closed.
func TestSquidRelay(t *testing.T) {
	p := proxytest.StartSquid(t, proxytest.Options{})
	r := startRelay(t, "127.0.0.1:0", relay.ServerConfig{})
	via := aster.WithRelayProxy(relay.ProxyURL(p.URL))
	srv := aster.NewServer(aster.WithLogger(quiet), aster.WithHomeRelay(r.url), aster.WithIPTransports(false), via)
	if err := srv.Register(testService()); err != nil {
		t.Fatal(err)
	}
	ready := make(chan aster.Address, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe("", func(a aster.Address) { ready <- a }) }()
	var addr aster.Address
	select {
	case addr = <-ready:
	case err := <-errc:
		t.Fatalf("ListenAndServe: %v", err)
	}
	c, err := aster.Dial(ctxT(t), addr.String(), aster.WithIPTransports(false), via)
	if err != nil {
		srv.Close()
		<-errc
		t.Fatal(err)
	}
	allPatterns(t, c, "through squid")
	c.Close()
	srv.Close()
	if err := <-errc; !errors.Is(err, aster.ErrServerClosed) {
		t.Errorf("ListenAndServe: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for p.CountConnects(r.addr) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // squid logs a tunnel after it closes
	}
	if n, e := p.CountConnects(r.addr), p.Established(); n != 2 || e != 2 {
		t.Fatalf("squid logged %d CONNECTs to %s, %d answered 200; want 2 and 2:\n%s", n, r.addr, e, p.Log())
	}
}

// BenchmarkRelayProxy compares relay connections made directly with ones
// tunneled through tinyproxy and through squid (no authentication) in the
// same run: the time to connect and register at the relay, the unary call
// rate and server-streaming throughput (16 KiB messages) through the
// relay. Run:
//
//	go test -run NONE -bench RelayProxy -benchtime 2s ./transport/relay
func BenchmarkRelayProxy(b *testing.B) {
	for _, path := range []string{"relay", "relay+tinyproxy", "relay+squid"} {
		b.Run(path, func(b *testing.B) {
			r := startBenchRelay(b)
			cfg := &relay.Config{Logger: quiet}
			// Every packet through the relay (and so the proxy): no
			// direct path.
			opts := []aster.Option{aster.WithDirectPaths(false)}
			var p *proxytest.Proxy
			switch path {
			case "relay+tinyproxy":
				p = proxytest.StartTinyproxy(b, proxytest.Options{})
			case "relay+squid":
				p = proxytest.StartSquid(b, proxytest.Options{})
			}
			if p != nil {
				cfg.Proxy = relay.ProxyURL(p.URL)
				opts = append(opts, aster.WithRelayProxy(cfg.Proxy))
			}
			b.Run("connect", func(b *testing.B) {
				key := testutil.Key(b, 9)
				for b.Loop() {
					pc, err := relay.DialPacketConn(context.Background(), r.url, key, cfg)
					if err != nil {
						b.Fatal(err)
					}
					pc.Close()
				}
			})
			addr := startBenchServer(b, append([]aster.ServerOption{aster.WithHomeRelay(r.url), aster.WithIPTransports(false)}, serverOpts(opts)...)...)
			copts := []aster.ClientOption{aster.WithIPTransports(false)}
			for _, o := range opts {
				copts = append(copts, o)
			}
			c, err := aster.DialAddress(context.Background(), addr, copts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			b.Run("unary", func(b *testing.B) {
				for b.Loop() {
					if _, err := aster.CallUnary[Msg](ctx, c, "T.echo", &Msg{Text: "x"}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
			})
			b.Run("stream16KiB", func(b *testing.B) { benchStream16KiB(b, c) })
		})
	}
}

func serverOpts(opts []aster.Option) []aster.ServerOption {
	out := make([]aster.ServerOption, len(opts))
	for i, o := range opts {
		out[i] = o
	}
	return out
}
