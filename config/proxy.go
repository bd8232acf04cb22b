package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/transport/relay"
)

// validateProxy checks network.proxy_url: "http://[user:password@]host[:port]"
// or "https://…" (transport/relay.ParseProxyURL). The error's value has
// the password masked.
func (c *Config) validateProxy() error {
	if c.ProxyURL == "" {
		return nil
	}
	if _, err := relay.ParseProxyURL(c.ProxyURL); err != nil {
		f := fieldByKey["network.proxy_url"]
		src, raw := c.origin(f)
		reason := `is not an HTTP proxy URL "http://[user:password@]host[:port]" or "https://…": ` +
			strings.TrimPrefix(err.Error(), "relay: ")
		return &Error{Field: f.key, Source: src, Value: fmt.Sprintf("%q", maskProxyURL(raw)), Reason: reason, Err: err}
	}
	return nil
}

// RelayProxy returns the function that chooses the HTTP proxy for relay
// connections (transport/relay.Config.Proxy), or nil for direct
// connections: network.proxy_url when set (it wins over proxy_from_env),
// else with network.proxy_from_env the HTTPS_PROXY and NO_PROXY
// variables as Go's net/http reads them (relay.ProxyFromEnvironment, read
// now), else nil.
func (c *Config) RelayProxy() (relay.ProxyFunc, error) {
	if err := c.validateProxy(); err != nil {
		return nil, err
	}
	switch {
	case c.ProxyURL != "":
		u, _ := relay.ParseProxyURL(c.ProxyURL)
		return relay.ProxyURL(u), nil
	case c.ProxyFromEnv:
		return relay.ProxyFromEnvironment(), nil
	}
	return nil, nil
}

// relayProxyOption returns aster.WithRelayProxy for the proxy settings,
// or nil when relays are reached directly.
func (c *Config) relayProxyOption() (aster.Option, error) {
	p, err := c.RelayProxy()
	if err != nil || p == nil {
		return nil, err
	}
	return aster.WithRelayProxy(p), nil
}

// maskProxyURL replaces the password in a proxy URL with "xxxxx" (as
// url.URL.Redacted does), also in text that does not parse as a URL.
func maskProxyURL(s string) string {
	i, j, ok := proxyPassword(s)
	if !ok {
		return s
	}
	return s[:i] + "xxxxx" + s[j:]
}

// proxyPassword finds the password in a proxy URL as written, also in text
// that does not parse: s[i:j] is everything between the first ':' of the
// user information (after "scheme://") and its last '@'.
func proxyPassword(s string) (i, j int, ok bool) {
	start := 0
	if k := strings.Index(s, "://"); k >= 0 {
		start = k + 3
	}
	at := strings.LastIndex(s[start:], "@")
	if at < 0 {
		return 0, 0, false
	}
	colon := strings.Index(s[start:start+at], ":")
	if colon < 0 {
		return 0, 0, false
	}
	return start + colon + 1, start + at, true
}

// proxyPasswords returns the proxy passwords the logger masks: that of
// network.proxy_url and, with proxy_from_env, those in HTTPS_PROXY and
// HTTP_PROXY, each as written and percent-decoded.
func (c *Config) proxyPasswords() []string {
	var out []string
	add := func(s string) {
		i, j, ok := proxyPassword(s)
		if !ok || i == j {
			return
		}
		out = append(out, s[i:j])
		if pw, err := url.PathUnescape(s[i:j]); err == nil && pw != s[i:j] {
			out = append(out, pw)
		}
	}
	add(c.ProxyURL)
	if c.ProxyFromEnv && c.ProxyURL == "" {
		for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
			add(os.Getenv(v))
		}
	}
	return out
}
