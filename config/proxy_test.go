package config_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/config"
	"github.com/aster-go/aster/internal/testutil/proxytest"
	"github.com/aster-go/aster/transport/relay"
)

const proxyPW = "s3cr%40t-pw" // percent-encoded "s3cr@t-pw"

// TestConfigProxyURL checks proxy_url from the environment and the file:
// accepted, printed and logged with the password masked.
func TestConfigProxyURL(t *testing.T) {
	dir := isolate(t)
	const u = "http://alice:" + proxyPW + "@proxy.example:3128"
	t.Setenv("ASTER_PROXY_URL", u)
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyURL != u || c.Source("network.proxy_url") != "ASTER_PROXY_URL" {
		t.Fatalf("ProxyURL %q from %s", c.ProxyURL, c.Source("network.proxy_url"))
	}
	for _, asJSON := range []bool{false, true} {
		var b bytes.Buffer
		if err := c.Print(&b, asJSON); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if !strings.Contains(out, "http://alice:xxxxx@proxy.example:3128") {
			t.Errorf("Print (json %v) does not show the masked URL:\n%s", asJSON, out)
		}
		if strings.Contains(out, "s3cr") {
			t.Errorf("Print (json %v) shows the password:\n%s", asJSON, out)
		}
	}
	// Log lines never carry the password, as written or decoded.
	var logs bytes.Buffer
	c.LogMask = true
	c.NewLogger(&logs).Info("proxy "+u, "url", u, "pw", "s3cr@t-pw", "err", errors.New("dial "+u+" failed"))
	if strings.Contains(logs.String(), "s3cr") {
		t.Errorf("log line shows the password: %s", logs.String())
	}

	t.Setenv("ASTER_PROXY_URL", "")
	path := writeFile(t, dir, "aster.toml", "[network]\nproxy_url = \"https://proxy.example\"\nproxy_from_env = true\n")
	c, err = config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.ProxyURL != "https://proxy.example" || !c.ProxyFromEnv || c.Source("network.proxy_url") != path {
		t.Fatalf("from the file: %q %v %s", c.ProxyURL, c.ProxyFromEnv, c.Source("network.proxy_url"))
	}
}

// TestConfigProxyURLBad checks that a bad proxy_url fails with an *Error
// naming the field, the source and the value with the password masked.
func TestConfigProxyURLBad(t *testing.T) {
	isolate(t)
	for i, bad := range []string{
		"proxy.example:3128",
		"socks5://alice:" + proxyPW + "@proxy.example:1080",
		"ftp://proxy.example",
		"http://alice:" + proxyPW + "@:3128",
		"http://alice:" + proxyPW + "@proxy.example:99999",
		"http://alice:" + proxyPW + "@proxy.example:3128/path",
		"http://alice:" + proxyPW + "@proxy example:3128",
		"http://alice:s3cr%zz@proxy.example:3128",
		"http://alice:s3cr\x01@proxy.example:3128",
	} {
		t.Run(strconv.Itoa(i), func(t *testing.T) { // bad holds a password
			t.Setenv("ASTER_PROXY_URL", bad)
			_, err := config.Load()
			checkConfigErr(t, err, nil, "network.proxy_url", "ASTER_PROXY_URL", "is not an HTTP proxy URL")
			var ce *config.Error
			errors.As(err, &ce)
			if strings.Contains(err.Error(), "s3cr") || strings.Contains(ce.Value, "s3cr") {
				t.Errorf("the error shows the password: %v", err)
			}
			if strings.Contains(bad, "alice:") && !strings.Contains(ce.Value, "alice:xxxxx@") {
				t.Errorf("Value %s does not show the masked URL", ce.Value)
			}
			t.Log(err)
		})
	}
	// A literal Config is checked when used.
	_, err := (&config.Config{ProxyURL: "gopher://alice:" + proxyPW + "@proxy"}).ClientOptions()
	checkConfigErr(t, err, nil, "network.proxy_url", "Config", "is not an HTTP proxy URL")
	if strings.Contains(err.Error(), "s3cr") {
		t.Errorf("the error shows the password: %v", err)
	}
}

// TestConfigProxyChoice checks which proxy a relay connection gets:
// proxy_url wins over proxy_from_env, which follows HTTPS_PROXY and
// NO_PROXY; neither means direct.
func TestConfigProxyChoice(t *testing.T) {
	isolate(t)
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(v, "")
	}
	t.Setenv("HTTPS_PROXY", "http://env-proxy:8080")
	t.Setenv("NO_PROXY", "near.example")
	relayAt := func(h string) *url.URL { return &url.URL{Scheme: "https", Host: h} }
	for _, tc := range []struct {
		c     config.Config
		relay string
		want  string
	}{
		{config.Config{}, "relay.example:443", ""},
		{config.Config{ProxyFromEnv: true}, "relay.example:443", "http://env-proxy:8080"},
		{config.Config{ProxyFromEnv: true}, "near.example:443", ""},
		{config.Config{ProxyURL: "http://cfg-proxy:3128"}, "near.example:443", "http://cfg-proxy:3128"},
		{config.Config{ProxyURL: "http://cfg-proxy:3128", ProxyFromEnv: true}, "relay.example:443", "http://cfg-proxy:3128"},
	} {
		p, err := tc.c.RelayProxy()
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		if p != nil {
			u, err := p(relayAt(tc.relay))
			if err != nil {
				t.Fatal(err)
			}
			if u != nil {
				got = u.String()
			}
		}
		if got != tc.want {
			t.Errorf("%+v, relay %s: proxy %q; want %q", tc.c, tc.relay, got, tc.want)
		}
	}
}

// TestConfigProxyTinyproxy runs a server whose home relay connection and a
// client whose relay connection both go through tinyproxy, configured by
// ASTER_PROXY_URL with credentials, from config.NewServer and
// ClientOptions.
func TestConfigProxyTinyproxy(t *testing.T) {
	isolate(t)
	p := proxytest.StartTinyproxy(t, proxytest.Options{User: "cfg", Password: "cfg-tiny-pw"})
	cert, err := relay.SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := relay.NewServer(relay.ServerConfig{Certificate: cert, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rs.Serve(ln) }()
	t.Cleanup(func() {
		rs.Close()
		if err := <-done; !errors.Is(err, relay.ErrServerClosed) {
			t.Errorf("relay Serve: %v", err)
		}
	})
	relayAddr := ln.Addr().String()

	t.Setenv("ASTER_LOG_LEVEL", "error")
	t.Setenv("ASTER_RELAY_MODE", relay.PinnedURL(relayAddr, cert.Certificate[0]))
	t.Setenv("ASTER_CLEAR_IP_TRANSPORTS", "true")
	t.Setenv("ASTER_PROXY_URL", p.URL.String())
	c, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := c.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Register(opsService(nil, nil)); err != nil {
		t.Fatal(err)
	}
	addr := listen(t, srv, "")
	if len(addr.Direct) != 0 || addr.Relay == "" {
		t.Fatalf("address %+v; want the relay only", addr)
	}
	opts, err := c.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := aster.DialAddress(ctxT(t), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got, err := aster.CallUnary[Msg](ctxT(t), cl, "Ops.open", &Msg{Text: "via tinyproxy"})
	if err != nil || got.Text != "via tinyproxy" {
		t.Fatalf("call: %+v, %v", got, err)
	}
	if n, e := p.CountConnects(relayAddr), p.Established(); n != 2 || e != 2 {
		t.Fatalf("the proxy saw %d CONNECTs to %s and opened %d tunnels; want 2 and 2:\n%s", n, relayAddr, e, p.Log())
	}

	// The wrong password: the client fails, saying why, not showing it.
	t.Setenv("ASTER_PROXY_URL", "http://cfg:wrong-cfg-pw@"+p.Addr)
	c2, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	opts, err = c2.ClientOptions()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	cl2, err := aster.DialAddress(ctx, addr, opts...)
	if err == nil {
		cl2.Close()
		t.Fatal("dial through the proxy with the wrong password worked")
	}
	if !strings.Contains(err.Error(), "proxy authentication required or failed") || strings.Contains(err.Error(), "wrong-cfg-pw") {
		t.Errorf("wrong password: %v", err)
	}
}
