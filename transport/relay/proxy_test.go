package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
)

// fakeProxy serves each connection with a handler that plays a CONNECT
// proxy (well or badly). It is closed, and its handlers waited for, at the
// end of the test.
type fakeProxy struct {
	ln    net.Listener
	url   *url.URL
	conns *sync.Map // net.Conn → true: the connections accepted
	mu    sync.Mutex
	reqs  []string // the request head of each connection
}

func startFakeProxy(t *testing.T, handle func(t *testing.T, c net.Conn, br *bufio.Reader)) *fakeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFakeProxy(t, ln, "http", handle)
}

func serveFakeProxy(t *testing.T, ln net.Listener, scheme string, handle func(t *testing.T, c net.Conn, br *bufio.Reader)) *fakeProxy {
	var conns sync.Map
	p := &fakeProxy{ln: ln, url: &url.URL{Scheme: scheme, Host: ln.Addr().String()}, conns: &conns}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				var head strings.Builder
				for {
					l, err := br.ReadString('\n')
					head.WriteString(l)
					if err != nil || l == "\r\n" {
						break
					}
				}
				if head.Len() == 0 {
					return // no request (a failed TLS handshake)
				}
				p.mu.Lock()
				p.reqs = append(p.reqs, head.String())
				p.mu.Unlock()
				handle(t, c, br)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return p
}

// cut closes every connection the proxy accepted, as a proxy that
// restarts does.
func (p *fakeProxy) cut() {
	p.conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
}

func (p *fakeProxy) requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.reqs...)
}

// answer returns a handler that writes s and then holds the connection
// open until the client closes it.
func answer(s string) func(*testing.T, net.Conn, *bufio.Reader) {
	return func(_ *testing.T, c net.Conn, br *bufio.Reader) {
		_, _ = io.WriteString(c, s)
		_, _ = io.Copy(io.Discard, br)
	}
}

// forwardTo returns a handler that is a working CONNECT proxy to target:
// it dials it and copies both ways.
func forwardTo(target string) func(*testing.T, net.Conn, *bufio.Reader) {
	return func(t *testing.T, c net.Conn, br *bufio.Reader) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(up, br)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		_, _ = io.Copy(c, up)
		c.Close()
		<-done
	}
}

func dialVia(t *testing.T, proxy *url.URL, timeout time.Duration) (net.Conn, time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	c, err := dialProxy(ctx, proxy, "relay.example:443", nil)
	return c, time.Since(start), err
}

func withUser(u *url.URL, user, pw string) *url.URL {
	v := *u
	v.User = url.UserPassword(user, pw)
	return &v
}

// TestProxyRequest checks the CONNECT request (target, Host, Basic
// Proxy-Authorization from the URL) and that bytes the proxy sends right
// after its answer reach the reader of the tunnel.
func TestProxyRequest(t *testing.T) {
	p := startFakeProxy(t, answer("HTTP/1.0 200 Connection established\r\nProxy-agent: test\r\n\r\nearly bytes"))
	c, _, err := dialVia(t, withUser(p.url, "alice", "p@ss:w/rd"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, len("early bytes"))
	if err != nil || string(buf[:n]) != "early bytes" {
		t.Fatalf("tunnel read %q, %v; want the bytes sent with the answer", buf[:n], err)
	}
	reqs := p.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(reqs[0])))
	if err != nil {
		t.Fatalf("the CONNECT request does not parse: %v\n%s", err, reqs[0])
	}
	if req.Method != "CONNECT" || req.RequestURI != "relay.example:443" || req.Host != "relay.example:443" {
		t.Errorf("request %s %s Host %s; want CONNECT relay.example:443", req.Method, req.RequestURI, req.Host)
	}
	auth, ok := strings.CutPrefix(req.Header.Get("Proxy-Authorization"), "Basic ")
	if !ok {
		t.Fatalf("Proxy-Authorization = %q", req.Header.Get("Proxy-Authorization"))
	}
	if b, _ := base64.StdEncoding.DecodeString(auth); string(b) != "alice:p@ss:w/rd" {
		t.Errorf("credentials %q; want alice:p@ss:w/rd", b)
	}

	// Without user information, no Proxy-Authorization.
	c2, _, err := dialVia(t, p.url, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if r := p.requests()[1]; strings.Contains(r, "Proxy-Authorization") {
		t.Errorf("request without credentials carries Proxy-Authorization:\n%s", r)
	}
}

// TestProxyErrors covers the proxy's refusals and misbehaviour: each fails
// with a *ProxyError that names the cause, the status line if any, and
// never the password.
func TestProxyErrors(t *testing.T) {
	const pw = "hunter2-secret"
	big := strings.Repeat("X-Filler: "+strings.Repeat("a", 1000)+"\r\n", 100)
	for _, tc := range []struct {
		name   string
		handle func(*testing.T, net.Conn, *bufio.Reader)
		user   bool
		is     error
		status int
		want   []string
	}{
		{"407 without credentials", answer("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n"), false,
			ErrProxyAuth, 407, []string{"407 Proxy Authentication Required", "no user and password"}},
		{"407 with credentials", answer("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"), true,
			ErrProxyAuth, 407, []string{"407 Proxy Authentication Required", `user "alice" refused`, "xxxxx"}},
		{"401 wrong credentials", answer("HTTP/1.0 401 Unauthorized\r\nContent-Type: text/html\r\n\r\n<html>...</html>"), true,
			ErrProxyAuth, 401, []string{"401 Unauthorized"}},
		{"403", answer("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"), true,
			ErrProxyRefused, 403, []string{"403 Forbidden", "CONNECT relay.example:443"}},
		{"502 with control bytes in the reason", answer("HTTP/1.1 502 Bad\x1b[31mGateway\r\n\r\n"), false,
			ErrProxyRefused, 502, []string{"502 Bad?[31mGateway"}},
		{"oversized header", answer("HTTP/1.1 200 OK\r\n" + big), false,
			ErrProxyProtocol, 0, []string{"longer than 16384 bytes"}},
		{"one endless header line", answer("HTTP/1.1 200 OK\r\nX: " + strings.Repeat("b", 64<<10)), false,
			ErrProxyProtocol, 0, []string{"longer than 16384 bytes"}},
		{"long status line", answer("HTTP/1.1 200 " + strings.Repeat("c", 8<<10) + "\r\n\r\n"), false,
			ErrProxyProtocol, 0, []string{"status line longer"}},
		{"closed without answering", func(*testing.T, net.Conn, *bufio.Reader) {}, false,
			ErrProxyProtocol, 0, []string{"closed the connection without answering"}},
		{"closed in the header", func(_ *testing.T, c net.Conn, _ *bufio.Reader) { io.WriteString(c, "HTTP/1.1 200 OK\r\nX-A: b\r\n") }, false,
			ErrProxyProtocol, 0, []string{"in the middle of its response header"}},
		{"not HTTP", answer("SSH-2.0-OpenSSH_9.2\r\n"), false,
			ErrProxyProtocol, 0, []string{"not an HTTP/1.x status line", "SSH-2.0"}},
		{"bad code", answer("HTTP/1.1 2x0 OK\r\n\r\n"), false,
			ErrProxyProtocol, 0, []string{"bad status code"}},
		{"HTTP/2 status", answer("HTTP/2 200\r\n\r\n"), false,
			ErrProxyProtocol, 0, []string{"not an HTTP/1.x status line"}},
		{"hangs", func(_ *testing.T, _ net.Conn, br *bufio.Reader) { _, _ = io.Copy(io.Discard, br) }, true,
			context.DeadlineExceeded, 0, []string{"waiting for the proxy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startFakeProxy(t, tc.handle)
			u := p.url
			if tc.user {
				u = withUser(u, "alice", pw)
			}
			c, took, err := dialVia(t, u, 500*time.Millisecond)
			if err == nil {
				c.Close()
				t.Fatal("no error")
			}
			if took > 3*time.Second {
				t.Errorf("took %v", took)
			}
			t.Logf("%v (%v)", err, took.Round(time.Millisecond))
			var pe *ProxyError
			if !errors.As(err, &pe) {
				t.Fatalf("%v (%T) is not a *ProxyError", err, err)
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("%v does not wrap %v", err, tc.is)
			}
			if pe.StatusCode != tc.status || pe.Target != "relay.example:443" {
				t.Errorf("StatusCode %d Target %q; want %d", pe.StatusCode, pe.Target, tc.status)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte("alice:"+pw))) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

// TestProxyInformational checks that 1xx answers before the final one are
// skipped.
func TestProxyInformational(t *testing.T) {
	p := startFakeProxy(t, answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nhi"))
	c, _, err := dialVia(t, p.url, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// TestProxyUnreachable checks that a proxy nobody listens on fails at once
// with an error that says so.
func TestProxyUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, took, err := dialVia(t, &url.URL{Scheme: "http", Host: addr, User: url.UserPassword("u", "topsecret")}, 5*time.Second)
	var oe *net.OpError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "proxy unreachable") || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v; want proxy unreachable wrapping a *net.OpError", err)
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("the error shows the password: %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("took %v", took)
	}
}

// TestProxyHTTPS runs the CONNECT exchange over TLS to an https:// proxy,
// and the relay's TLS and registration inside it.
func TestProxyHTTPS(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	cert, err := SelfSignedCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	p := serveFakeProxy(t, ln, "https", forwardTo(r.ln.Addr().String()))
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	// Not trusted by the system roots: a TLS error, not a tunnel.
	_, err = DialPacketConn(ctxT(t), r.url, testutil.Key(t, 1), &Config{Logger: quietLog, Proxy: ProxyURL(p.url)})
	var ve *tls.CertificateVerificationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "TLS handshake with the proxy") {
		t.Fatalf("untrusted proxy certificate: err = %v", err)
	}

	proxyTLS := &tls.Config{RootCAs: roots} // the server name is the proxy URL's host
	pc, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 1), &Config{Logger: quietLog, Proxy: ProxyURL(p.url), ProxyTLS: proxyTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc2, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 2), &Config{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	exchange(t, pc, pc2)
	if n := len(p.requests()); n != 1 { // the refused TLS handshake sent none
		t.Errorf("%d CONNECT requests; want 1", n)
	}
}

// exchange sends a datagram each way between two packet connections.
func exchange(t *testing.T, a, b *PacketConn) {
	t.Helper()
	buf := make([]byte, 100)
	for _, pair := range [][2]*PacketConn{{a, b}, {b, a}} {
		from, to := pair[0], pair[1]
		deadline := time.Now().Add(10 * time.Second)
		_ = to.SetReadDeadline(deadline)
		for {
			if _, err := from.WriteTo([]byte("ping"), to.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			_ = to.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, src, err := to.ReadFrom(buf)
			if err == nil {
				if string(buf[:n]) != "ping" || src.String() != from.LocalAddr().String() {
					t.Fatalf("got %q from %v", buf[:n], src)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no datagram: %v", err)
			}
		}
	}
}

func TestParseProxyURL(t *testing.T) {
	for _, ok := range []string{"http://proxy:3128", "http://u:p@proxy:3128", "https://proxy", "http://[::1]:8080/", "http://u%40x:p%2Fw@10.0.0.1:1"} {
		if _, err := ParseProxyURL(ok); err != nil {
			t.Errorf("ParseProxyURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "proxy:3128", "socks5://u:pw-secret@proxy:1080", "ftp://proxy", "http://", "http://u:pw-secret@:3128",
		"http://u:pw-secret@proxy:99999", "http://u:pw-secret@proxy:0", "http://u:pw-secret@proxy:3128/path", "http://u:pw-secret@proxy:3128?q",
		"http://u:pw-secret@proxy:x", "http://u:pw-secret@pro xy:1", "http://u:pw-secret@proxy\x00:1", "http://u:pw-secret@proxy:1#f"} {
		_, err := ParseProxyURL(bad)
		if err == nil {
			t.Errorf("ParseProxyURL(%q): no error", bad)
			continue
		}
		if strings.Contains(err.Error(), "pw-secret") {
			t.Errorf("ParseProxyURL(%q): the error shows the password: %v", bad, err)
		}
	}
	// A scheme dialProxy does not speak, from the environment for
	// instance, fails clearly without dialling.
	_, _, err := dialVia(t, &url.URL{Scheme: "socks5", Host: "127.0.0.1:1"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), `"socks5" is not supported`) {
		t.Errorf("socks5 proxy: %v", err)
	}
}

// TestProxyFromEnvironment checks that the relay's proxy comes from
// HTTPS_PROXY and NO_PROXY as net/http takes it.
func TestProxyFromEnvironment(t *testing.T) {
	for _, v := range []string{"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(v, "")
	}
	relayAt := func(host string) *url.URL { return &url.URL{Scheme: "https", Host: host} }
	for _, tc := range []struct {
		env   map[string]string
		relay string
		want  string // "" = direct
	}{
		{map[string]string{}, "relay.example:443", ""},
		{map[string]string{"HTTP_PROXY": "http://p:1"}, "relay.example:443", ""}, // http targets only
		{map[string]string{"HTTPS_PROXY": "http://p:1"}, "relay.example:443", "http://p:1"},
		{map[string]string{"https_proxy": "p:2"}, "relay.example:443", "http://p:2"},
		{map[string]string{"HTTPS_PROXY": "http://u:pw@p:1"}, "relay.example:3340", "http://u:pw@p:1"},
		{map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "relay.example"}, "relay.example:443", ""},
		{map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example"}, "relay.example:443", ""},
		{map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.example"}, "relay.example:443", "http://p:1"},
		{map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "10.1.2.3:443", ""},
		{map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "relay.example:80"}, "relay.example:443", "http://p:1"},
		{map[string]string{"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "relay.example:443", ""},
		{map[string]string{"HTTPS_PROXY": "http://p:1"}, "127.0.0.1:443", ""}, // loopback: always direct
		{map[string]string{"HTTPS_PROXY": "http://p:1"}, "localhost:443", ""},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		got, err := ProxyFromEnvironment()(relayAt(tc.relay))
		gs := ""
		if got != nil {
			gs = got.String()
		}
		if err != nil || gs != tc.want {
			t.Errorf("env %v, relay %s: proxy %q, %v; want %q", tc.env, tc.relay, gs, err, tc.want)
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}

// TestProxyPacketConn runs a relay connection through a forwarding proxy,
// and checks that Config.Proxy is asked with the relay's https URL.
func TestProxyPacketConn(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	p := startFakeProxy(t, forwardTo(r.ln.Addr().String()))
	var asked []string
	var mu sync.Mutex
	proxyFn := func(target *url.URL) (*url.URL, error) {
		mu.Lock()
		asked = append(asked, target.String())
		mu.Unlock()
		return p.url, nil
	}
	pc, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 1), &Config{Logger: quietLog, Proxy: proxyFn})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc2, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 2), &Config{Logger: quietLog, Proxy: proxyFn})
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	exchange(t, pc, pc2)
	mu.Lock()
	defer mu.Unlock()
	want := "https://" + r.ln.Addr().String()
	if len(asked) != 2 || asked[0] != want || asked[1] != want {
		t.Errorf("Proxy asked for %v; want %s twice", asked, want)
	}
	if n := len(p.requests()); n != 2 {
		t.Errorf("%d CONNECTs; want 2", n)
	}

	// A Proxy function's error fails the connection.
	_, err = DialPacketConn(ctxT(t), r.url, testutil.Key(t, 3), &Config{Logger: quietLog,
		Proxy: func(*url.URL) (*url.URL, error) { return nil, errors.New("no proxy today") }})
	if err == nil || !strings.Contains(err.Error(), "no proxy today") {
		t.Errorf("Proxy error: %v", err)
	}
}

// FuzzConnectResponse feeds the CONNECT response reader arbitrary proxy
// answers: it returns a 1xx-5xx status or an error, reads at most
// MaxProxyResponseHeader bytes, and never panics.
func FuzzConnectResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 Connection established\r\n\r\n",
		"HTTP/1.0 200 OK\r\nProxy-agent: x\r\n\r\ntunnel",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
		"HTTP/1.1 200\n\n",
		"HTTP/1.1 999 x\r\n\r\n",
		"SSH-2.0-x\r\n",
		"HTTP/1.1 200 OK\r\nX: " + strings.Repeat("a", 5000) + "\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		br := bufio.NewReaderSize(r, 4096)
		code, status, err := readConnectResponse(br)
		consumed := r.n - br.Buffered()
		if consumed > MaxProxyResponseHeader+4096 {
			t.Fatalf("read %d bytes of header", consumed)
		}
		if err != nil {
			if !errors.Is(err, ErrProxyProtocol) {
				t.Fatalf("error %v is not ErrProxyProtocol", err)
			}
			return
		}
		if code < 100 || code > 599 || (code < 200 && code != 101) {
			t.Fatalf("code %d", code)
		}
		if len(status) > 100 || !strings.HasPrefix(status, strconv.Itoa(code)) {
			t.Fatalf("status %q for code %d", status, code)
		}
		for _, c := range []byte(status) {
			if c < ' ' || c > '~' {
				t.Fatalf("status %q is not printable", status)
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestProxyReconnect checks that a relay connection the proxy cuts is
// replaced through the proxy, and datagrams flow again.
func TestProxyReconnect(t *testing.T) {
	r := startRelay(t, ServerConfig{})
	p := startFakeProxy(t, forwardTo(r.ln.Addr().String()))
	pc, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 1), &Config{Logger: quietLog, Proxy: ProxyURL(p.url)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc2, err := DialPacketConn(ctxT(t), r.url, testutil.Key(t, 2), &Config{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	defer pc2.Close()
	exchange(t, pc, pc2)
	p.cut()
	deadline := time.Now().Add(10 * time.Second)
	for pc.Reconnects() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if pc.Reconnects() != 1 {
		t.Fatalf("Reconnects = %d after the proxy cut the tunnel", pc.Reconnects())
	}
	exchange(t, pc, pc2)
	if n := len(p.requests()); n != 2 {
		t.Errorf("%d CONNECTs; want 2 (the first connection and its replacement)", n)
	}
}

// A proxy that refuses the credentials fails DialPacketConn at once, also
// with ConnectInBackground: waiting cannot fix a wrong password, and a
// server that started anyway would be silently unreachable by relay.
func TestProxyAuthFailsEvenInBackground(t *testing.T) {
	p := startFakeProxy(t, answer("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"))
	cfg := &Config{Logger: quietLog, Proxy: ProxyURL(withUser(p.url, "alice", "wrong")), ConnectInBackground: true}
	pc, err := DialPacketConn(ctxT(t), "https://relay.example:443", testutil.Key(t, 1), cfg)
	if err == nil {
		pc.Close()
		t.Fatal("DialPacketConn through a proxy that refused the credentials succeeded (connecting in the background)")
	}
	if !errors.Is(err, ErrProxyAuth) {
		t.Fatalf("err = %v; want ErrProxyAuth", err)
	}
}
