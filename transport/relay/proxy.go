package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// HTTP CONNECT proxies for relay connections.
//
// A relay connection is TCP carrying TLS; through a proxy the endpoint
// opens TCP (or TLS, for an https:// proxy) to the proxy, asks it
// "CONNECT relayhost:port HTTP/1.1" and, once the proxy answers 2xx, runs
// the relay's TLS over the tunnel end to end: the proxy sees the relay's
// host and port and opaque TLS records, nothing else.

// ProxyFunc chooses the HTTP proxy for a relay connection (Config.Proxy):
// it is called with the relay as "https://host:port" before each
// connection to it and returns the proxy's URL, or nil for a direct
// connection. Its signature is that of httpproxy.Config's ProxyFunc.
type ProxyFunc func(target *url.URL) (*url.URL, error)

// ProxyURL returns a Config.Proxy function that sends every relay
// connection through the proxy at u (as net/http's ProxyURL does). A nil u
// means direct connections.
func ProxyURL(u *url.URL) ProxyFunc {
	return func(*url.URL) (*url.URL, error) { return u, nil }
}

// ProxyFromEnvironment returns a Config.Proxy function that chooses the
// proxy from the environment variables HTTPS_PROXY, HTTP_PROXY and
// NO_PROXY (or their lower-case forms), read when ProxyFromEnvironment is
// called, exactly as Go's net/http reads them (it uses
// golang.org/x/net/http/httpproxy, which net/http vendors). A relay is an
// https target, so HTTPS_PROXY names the proxy; HTTP_PROXY applies to
// plain-http targets only and therefore never to a relay. NO_PROXY lists
// hosts, domains (".example.com" or "example.com" also matches its
// subdomains), IP addresses, CIDR ranges and host:port pairs to reach
// directly, "*" for all. As in net/http, a relay at "localhost" or at a
// loopback address is always reached directly. A proxy value without a
// scheme is taken as http://.
func ProxyFromEnvironment() ProxyFunc {
	return httpproxy.FromEnvironment().ProxyFunc()
}

// ParseProxyURL parses and checks an HTTP proxy URL:
// "http://[user:password@]host[:port]" (default port 80) or
// "https://[user:password@]host[:port]" (TLS to the proxy, default port
// 443). The user and password, percent-encoded, are sent to the proxy as
// Basic Proxy-Authorization. Errors never repeat the URL (it may hold a
// password).
func ParseProxyURL(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		return nil, errors.New(`relay: proxy URL has no scheme (want "http://host:port" or "https://host:port")`)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		var ee url.EscapeError
		switch {
		case errors.As(err, &ee):
			err = errors.New("bad %-escape") // the escape may be part of the password
		case errors.As(err, &ue):
			err = ue.Err // url.Error repeats the URL, password included
		}
		return nil, fmt.Errorf("relay: bad proxy URL: %w", err)
	}
	if err := checkProxyURL(u); err != nil {
		return nil, err
	}
	return u, nil
}

// checkProxyURL checks a proxy URL's scheme, host and port.
func checkProxyURL(u *url.URL) error {
	switch u.Scheme {
	case "http", "https":
	case "":
		return errors.New(`relay: proxy URL has no scheme (want "http://host:port" or "https://host:port")`)
	default:
		return fmt.Errorf(`relay: proxy URL scheme %.20q is not supported (want "http" or "https")`, u.Scheme)
	}
	if u.Hostname() == "" {
		return errors.New("relay: proxy URL has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return errors.New("relay: proxy URL has a bad port")
		}
	}
	if u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return errors.New(`relay: proxy URL has a path, query or fragment (want "http://host:port")`)
	}
	return nil
}

// proxyHostPort returns the proxy's "host:port", with the scheme's default
// port when the URL has none.
func proxyHostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// Errors a ProxyError wraps.
var (
	// ErrProxyAuth: the proxy answered 407 Proxy Authentication Required
	// (or 401 Unauthorized, as some proxies do for wrong credentials), to a
	// CONNECT without credentials or with credentials it refused.
	ErrProxyAuth = errors.New("proxy authentication required or failed")
	// ErrProxyRefused: the proxy answered CONNECT with another status than
	// 2xx, 401 or 407.
	ErrProxyRefused = errors.New("proxy refused the tunnel")
	// ErrProxyProtocol: the proxy's answer is not an HTTP response, is
	// longer than MaxProxyResponseHeader, or ended early.
	ErrProxyProtocol = errors.New("bad response from the proxy")
)

// MaxProxyResponseHeader bounds the bytes of a proxy's answer to CONNECT
// (status line and header fields, informational responses included) that
// an endpoint reads; a longer answer fails with ErrProxyProtocol.
const MaxProxyResponseHeader = 16 << 10

// maxStatusLine bounds the status line, which is kept for the error.
const maxStatusLine = 1024

// ProxyError reports a relay connection that could not be tunneled through
// an HTTP proxy. Its text names the proxy with the password replaced by
// "xxxxx", the relay's host and port, and the proxy's status line if it
// answered; never the credentials.
type ProxyError struct {
	// Proxy is the proxy URL with its password redacted.
	Proxy string
	// Target is the relay's "host:port" the CONNECT asked for.
	Target string
	// StatusCode is the proxy's status code, or 0 if it did not answer.
	StatusCode int
	// Status is the status code and reason phrase the proxy sent
	// ("407 Proxy Authentication Required"), printable ASCII only; empty
	// if it did not answer.
	Status string
	// Err is the cause: a dial error (the proxy is unreachable),
	// ErrProxyAuth, ErrProxyRefused, ErrProxyProtocol, a TLS error with an
	// https:// proxy, or the context's error.
	Err error
}

// Error formats the error, e.g. `proxy http://u:xxxxx@proxy:3128: CONNECT
// relay:443: 407 Proxy Authentication Required: proxy authentication
// required or failed (credentials for user "u" refused)`.
func (e *ProxyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxy %s: CONNECT %s: ", e.Proxy, e.Target)
	if e.Status != "" {
		b.WriteString(e.Status)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (e *ProxyError) Unwrap() error { return e.Err }

// dialRelay opens the TCP connection (carrying the relay's TLS) to the
// relay at u: directly, or through the HTTP proxy c.Proxy names for it.
func (c *Config) dialRelay(ctx context.Context, u *URL) (net.Conn, error) {
	var proxy *url.URL
	if c.Proxy != nil {
		p, err := c.Proxy(&url.URL{Scheme: "https", Host: u.HostPort()})
		if err != nil {
			return nil, fmt.Errorf("choosing a proxy: %w", err)
		}
		proxy = p
	}
	if proxy == nil {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", u.HostPort())
	}
	return dialProxy(ctx, proxy, u.HostPort(), c.ProxyTLS)
}

// dialProxy opens a tunnel to target ("host:port") through the HTTP
// CONNECT proxy at proxy, within ctx. tlsConf configures TLS to an https
// proxy (nil: the system roots and the proxy's host name).
func dialProxy(ctx context.Context, proxy *url.URL, target string, tlsConf *tls.Config) (net.Conn, error) {
	perr := &ProxyError{Proxy: proxy.Redacted(), Target: target}
	fail := func(err error) (net.Conn, error) {
		perr.Err = err
		return nil, perr
	}
	if err := checkProxyURL(proxy); err != nil {
		return fail(err)
	}
	if strings.IndexFunc(target, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return fail(errors.New("relay host has a space or control character"))
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", proxyHostPort(proxy))
	if err != nil {
		if cause := context.Cause(ctx); cause != nil {
			return fail(fmt.Errorf("connecting to the proxy: %w (%v)", cause, err))
		}
		return fail(fmt.Errorf("proxy unreachable: %w", err))
	}
	// ctx bounds the TLS handshake, the request and the response: when it
	// ends, the pending read or write fails at once.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	tun, err := connectTunnel(ctx, conn, proxy, target, tlsConf, perr)
	if !stop() && err == nil {
		// ctx ended as the tunnel opened: the deadline is set already.
		err = fmt.Errorf("waiting for the proxy: %w", context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		if cause := context.Cause(ctx); cause != nil && perr.StatusCode == 0 && !errors.Is(err, cause) {
			// A read or write cut short by ctx: name the reason.
			err = fmt.Errorf("waiting for the proxy: %w (%v)", cause, err)
		}
		return fail(err)
	}
	_ = conn.SetDeadline(time.Time{})
	return tun, nil
}

// connectTunnel runs TLS to an https proxy and the CONNECT exchange over
// conn. It records the proxy's status in perr.
func connectTunnel(ctx context.Context, conn net.Conn, proxy *url.URL, target string, tlsConf *tls.Config, perr *ProxyError) (net.Conn, error) {
	if proxy.Scheme == "https" {
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if tlsConf != nil {
			conf = tlsConf.Clone()
		}
		if conf.ServerName == "" {
			conf.ServerName = proxy.Hostname()
		}
		tc := tls.Client(conn, conf)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS handshake with the proxy: %w", err)
		}
		conn = tc
	}
	if _, err := conn.Write(connectRequest(proxy, target)); err != nil {
		return nil, fmt.Errorf("sending CONNECT: %w", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	code, status, err := readConnectResponse(br)
	perr.StatusCode, perr.Status = code, status
	if err != nil {
		return nil, err
	}
	// 407 is the status for proxy authentication; some proxies (tinyproxy
	// 1.11) answer wrong credentials with 401.
	auth := code == 407 || code == 401
	switch {
	case auth && proxy.User == nil:
		return nil, fmt.Errorf("%w (the proxy URL has no user and password)", ErrProxyAuth)
	case auth:
		return nil, fmt.Errorf("%w (credentials for user %q refused)", ErrProxyAuth, proxy.User.Username())
	case code < 200 || code > 299:
		return nil, ErrProxyRefused
	}
	if br.Buffered() == 0 {
		return conn, nil
	}
	// The relay's first bytes came with the proxy's answer: read them
	// first.
	return &bufferedConn{Conn: conn, br: br}, nil
}

// connectRequest returns the CONNECT request for target, with Basic
// Proxy-Authorization from the URL's user and password.
func connectRequest(proxy *url.URL, target string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if proxy.User != nil {
		pw, _ := proxy.User.Password()
		cred := base64.StdEncoding.EncodeToString([]byte(proxy.User.Username() + ":" + pw))
		fmt.Fprintf(&b, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// readConnectResponse reads a proxy's answer to CONNECT up to the end of
// its header (skipping informational 1xx responses), at most
// MaxProxyResponseHeader bytes, and returns the final status code and
// "code reason" (printable ASCII). What follows the header stays in br: for
// a 2xx answer it is the tunnel's first bytes (RFC 9110, 9.3.6: a 2xx
// answer to CONNECT has no content).
func readConnectResponse(br *bufio.Reader) (code int, status string, err error) {
	total := 0
	// line reads one line (LF or CRLF ended); a line longer than the
	// reader's buffer is returned cut (long reports it) and its rest
	// skipped.
	line := func() (l []byte, long bool, err error) {
		for {
			b, err := br.ReadSlice('\n')
			total += len(b)
			if total > MaxProxyResponseHeader {
				return nil, false, fmt.Errorf("%w: the response header is longer than %d bytes", ErrProxyProtocol, MaxProxyResponseHeader)
			}
			switch {
			case err == nil && !long:
				return bytes.TrimSuffix(bytes.TrimSuffix(b, []byte("\n")), []byte("\r")), false, nil
			case err == nil:
				return l, true, nil
			case errors.Is(err, bufio.ErrBufferFull):
				if !long {
					l = append([]byte(nil), b[:min(len(b), maxStatusLine)]...)
				}
				long = true
			case errors.Is(err, io.EOF):
				if total == 0 {
					return nil, false, fmt.Errorf("%w: the proxy closed the connection without answering", ErrProxyProtocol)
				}
				return nil, false, fmt.Errorf("%w: the proxy closed the connection in the middle of its response header", ErrProxyProtocol)
			default:
				return nil, false, err
			}
		}
	}
	for {
		l, long, err := line()
		if err != nil {
			return 0, "", err
		}
		if long {
			return 0, "", fmt.Errorf("%w: status line longer than %d bytes", ErrProxyProtocol, br.Size())
		}
		code, status, err = parseStatusLine(l)
		if err != nil {
			return 0, "", err
		}
		for {
			h, _, err := line()
			if err != nil {
				return 0, "", err
			}
			if len(h) == 0 {
				break
			}
		}
		if code >= 200 || code == 101 {
			return code, status, nil
		}
	}
}

// parseStatusLine parses "HTTP/1.x SP code [SP reason]".
func parseStatusLine(l []byte) (int, string, error) {
	rest, ok := bytes.CutPrefix(l, []byte("HTTP/1."))
	if !ok || len(rest) < 5 || (rest[0] != '0' && rest[0] != '1') || rest[1] != ' ' {
		return 0, "", fmt.Errorf("%w: not an HTTP/1.x status line: %q", ErrProxyProtocol, printable(l, 40))
	}
	num := rest[2:5]
	code := 0
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, "", fmt.Errorf("%w: bad status code in %q", ErrProxyProtocol, printable(l, 40))
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 || code > 599 || (len(rest) > 5 && rest[5] != ' ') {
		return 0, "", fmt.Errorf("%w: bad status code in %q", ErrProxyProtocol, printable(l, 40))
	}
	return code, printable(rest[2:], 100), nil
}

// printable returns b with bytes outside printable ASCII replaced by '?',
// cut to n bytes: proxy-sent text fit for an error message.
func printable(b []byte, n int) string {
	out := make([]byte, 0, min(len(b), n))
	for _, c := range b[:min(len(b), n)] {
		if c < ' ' || c > '~' {
			c = '?'
		}
		out = append(out, c)
	}
	return strings.TrimSpace(string(out))
}

// bufferedConn is a tunnel whose first bytes the proxy sent together with
// its answer: they are read from br before the connection.
type bufferedConn struct {
	net.Conn
	br *bufio.Reader // nil once drained; only the reader touches it
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}
