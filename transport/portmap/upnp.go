package portmap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/soap"
)

// Limits on what a UPnP gateway may send. goupnp's own discovery reads
// the description with http.DefaultClient and no size limit, so this
// package does SSDP and the description fetch itself and gives goupnp's
// SOAP clients an http.Client whose response bodies are capped.
const (
	// MaxSSDPResponse is the largest SSDP answer read (one datagram);
	// longer ones are truncated and fail to parse.
	MaxSSDPResponse = 2048
	// MaxDescriptionSize caps the device description XML.
	MaxDescriptionSize = 256 << 10
	// MaxSOAPResponse caps a SOAP answer.
	MaxSOAPResponse = 64 << 10
	// maxSSDPAnswers bounds how many SSDP datagrams one search reads.
	maxSSDPAnswers = 16

	ssdpPort         = 1900
	igdURN           = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
	upnpDesc         = "aster"
	errPortTaken     = 718 // ConflictInMappingEntry
	errOnlyPermanent = 725 // OnlyPermanentLeasesSupported
)

var ssdpGroup = netip.MustParseAddrPort("239.255.255.250:1900")

// igdConn is what the three WAN connection services have in common.
type igdConn interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string, internalPort uint16, internalClient string, enabled bool, desc string, lease uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
}

// upnpClient speaks UPnP IGD (WANIPConnection:2, WANIPConnection:1,
// WANPPPConnection:1, in that order of preference) to one gateway.
type upnpClient struct {
	gateway   netip.Addr
	local     netip.Addr
	ssdpPort  uint16 // ssdpPort unless a test sets it
	multicast bool   // also search the multicast group
	http      *http.Client

	mu   sync.Mutex
	conn igdConn // found by probe
	svc  string  // its service type, for Status
}

func newUPnPClient(gw, local netip.Addr, port uint16, multicast bool, timeout time.Duration) *upnpClient {
	if port == 0 {
		port = ssdpPort
	}
	tr := &http.Transport{
		Proxy:                  nil,  // the gateway is on the LAN
		DisableKeepAlives:      true, // no idle connection outlives a request
		MaxResponseHeaderBytes: 16 << 10,
		ResponseHeaderTimeout:  timeout,
		DialContext:            (&net.Dialer{Timeout: timeout}).DialContext,
	}
	return &upnpClient{
		gateway: gw, local: local, ssdpPort: port, multicast: multicast,
		http: &http.Client{
			Transport: tr,
			Timeout:   timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return errors.New("portmap: UPnP: redirects are not followed")
			},
		},
	}
}

func (c *upnpClient) name() Protocol { return UPnP }

// probe finds the gateway's IGD: an SSDP search (unicast to the gateway
// and, unless disabled, to the multicast group), answers accepted only from
// the gateway's address with a LOCATION on that address, then the device
// description and its WAN connection service, then the external address.
func (c *upnpClient) probe(ctx context.Context) (netip.Addr, error) {
	loc, err := c.search(ctx)
	if err != nil {
		return netip.Addr{}, err
	}
	root, err := c.describe(ctx, loc)
	if err != nil {
		return netip.Addr{}, err
	}
	conn, svc, err := c.service(root, loc)
	if err != nil {
		return netip.Addr{}, err
	}
	ext, err := externalIP(ctx, conn)
	if err != nil {
		return netip.Addr{}, err
	}
	c.mu.Lock()
	c.conn, c.svc = conn, svc
	c.mu.Unlock()
	return ext, nil
}

func (c *upnpClient) search(ctx context.Context) (*url.URL, error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.local, 0)))
	if err != nil {
		return nil, fmt.Errorf("portmap: SSDP: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	req := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: " + igdURN + "\r\n\r\n"
	targets := []netip.AddrPort{netip.AddrPortFrom(c.gateway, c.ssdpPort)}
	if c.multicast {
		targets = append(targets, ssdpGroup)
	}
	send := func() {
		for _, t := range targets {
			conn.WriteToUDPAddrPort([]byte(req), t)
		}
	}
	send()
	resend := time.Now().Add(500 * time.Millisecond)
	buf := make([]byte, MaxSSDPResponse)
	var lastErr error
	for range maxSSDPAnswers {
		dl := resend
		if d, ok := ctx.Deadline(); ok && d.Before(dl) {
			dl = d
		}
		conn.SetReadDeadline(dl)
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				send()
				resend = time.Now().Add(time.Second)
				continue
			}
			return nil, fmt.Errorf("portmap: SSDP: %w", err)
		}
		if from.Addr().Unmap() != c.gateway {
			continue // only the gateway may answer for the gateway
		}
		loc, err := parseSSDP(buf[:n], c.gateway)
		if err != nil {
			lastErr = err
			continue
		}
		return loc, nil
	}
	if lastErr != nil {
		return nil, lastErr
	}
	return nil, fmt.Errorf("portmap: SSDP: no UPnP gateway answered from %s: %w", c.gateway, context.DeadlineExceeded)
}

// parseSSDP returns the LOCATION of an SSDP answer, which must be an http
// URL on the gateway's address.
func parseSSDP(b []byte, gw netip.Addr) (*url.URL, error) {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return nil, fmt.Errorf("portmap: SSDP answer: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("portmap: SSDP answer: status %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, fmt.Errorf("portmap: SSDP answer: %w", err)
	}
	if loc.Scheme != "http" {
		return nil, fmt.Errorf("portmap: SSDP answer: location scheme %q", loc.Scheme)
	}
	if h, err := netip.ParseAddr(loc.Hostname()); err != nil || h.Unmap() != gw {
		return nil, fmt.Errorf("portmap: SSDP answer: location %q is not on the gateway %s", loc.Host, gw)
	}
	return loc, nil
}

func (c *upnpClient) describe(ctx context.Context, loc *url.URL) (*goupnp.RootDevice, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("portmap: UPnP description: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("portmap: UPnP description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("portmap: UPnP description: HTTP %s", resp.Status)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(&limitedBody{r: resp.Body, n: MaxDescriptionSize})
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("portmap: UPnP description: %w", err)
	}
	base := loc
	if root.URLBaseStr != "" {
		if base, err = url.Parse(root.URLBaseStr); err != nil {
			return nil, fmt.Errorf("portmap: UPnP description: URLBase: %w", err)
		}
	}
	root.SetURLBase(base)
	return root, nil
}

// service picks the first WAN connection service of root, preferring
// WANIPConnection:2, whose control URL is on the gateway.
func (c *upnpClient) service(root *goupnp.RootDevice, loc *url.URL) (igdConn, string, error) {
	onGateway := func(sc *goupnp.ServiceClient) bool {
		h, err := netip.ParseAddr(sc.SOAPClient.EndpointURL.Hostname())
		if err != nil || h.Unmap() != c.gateway || sc.SOAPClient.EndpointURL.Scheme != "http" {
			return false
		}
		sc.SOAPClient.HTTPClient = http.Client{
			Transport:     limitTransport{c.http.Transport, MaxSOAPResponse},
			Timeout:       c.http.Timeout,
			CheckRedirect: c.http.CheckRedirect,
		}
		return true
	}
	if cs, _ := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc); len(cs) > 0 && onGateway(&cs[0].ServiceClient) {
		return cs[0], internetgateway2.URN_WANIPConnection_2, nil
	}
	if cs, _ := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc); len(cs) > 0 && onGateway(&cs[0].ServiceClient) {
		return cs[0], internetgateway2.URN_WANIPConnection_1, nil
	}
	if cs, _ := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc); len(cs) > 0 && onGateway(&cs[0].ServiceClient) {
		return cs[0], internetgateway2.URN_WANPPPConnection_1, nil
	}
	return nil, "", fmt.Errorf("portmap: UPnP: %q has no WAN connection service on the gateway", root.Device.FriendlyName)
}

func externalIP(ctx context.Context, conn igdConn) (netip.Addr, error) {
	s, err := conn.GetExternalIPAddressCtx(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: UPnP GetExternalIPAddress: %w", err)
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("portmap: UPnP GetExternalIPAddress: %q is not an IPv4 address", s)
	}
	return a, nil
}

func upnpCode(err error) int {
	var f *soap.SOAPFaultError
	if errors.As(err, &f) {
		return f.Detail.UPnPError.Errorcode
	}
	return 0
}

func (c *upnpClient) mapPort(ctx context.Context, internal, suggested uint16, lifetime time.Duration) (mapping, error) {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		if _, err := c.probe(ctx); err != nil {
			return mapping{}, err
		}
		c.mu.Lock()
		conn = c.conn
		c.mu.Unlock()
	}
	ext, err := externalIP(ctx, conn)
	if err != nil {
		return mapping{}, err
	}
	if suggested == 0 {
		suggested = internal
	}
	lease := lifetimeSeconds(lifetime)
	// The suggested port, then two pseudo-random ones if it is taken.
	ports := []uint16{suggested, randomPort(), randomPort()}
	for i, port := range ports {
		err = conn.AddPortMappingCtx(ctx, "", port, "UDP", internal, c.local.String(), true, upnpDesc, lease)
		if upnpCode(err) == errOnlyPermanent {
			lease = 0
			err = conn.AddPortMappingCtx(ctx, "", port, "UDP", internal, c.local.String(), true, upnpDesc, lease)
		}
		if err == nil {
			granted := time.Duration(lease) * time.Second
			return mapping{proto: UPnP, external: netip.AddrPortFrom(ext, port), lifetime: granted, internal: internal}, nil
		}
		if upnpCode(err) != errPortTaken || i == len(ports)-1 || ctx.Err() != nil {
			break
		}
	}
	return mapping{}, fmt.Errorf("portmap: UPnP AddPortMapping: %w", err)
}

func (c *upnpClient) unmap(ctx context.Context, m mapping) error {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return errors.New("portmap: UPnP: no gateway service")
	}
	if err := conn.DeletePortMappingCtx(ctx, "", m.external.Port(), "UDP"); err != nil {
		return fmt.Errorf("portmap: UPnP DeletePortMapping: %w", err)
	}
	return nil
}

// limitedBody reads at most n bytes from r and fails after that, so that
// a decoder never reads an unbounded body.
type limitedBody struct {
	r io.Reader
	n int64
}

var errTooLarge = errors.New("portmap: UPnP: response body too large")

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

type limitedReadCloser struct {
	limitedBody
	c io.Closer
}

func (l *limitedReadCloser) Close() error { return l.c.Close() }

// limitTransport caps every response body at n bytes.
type limitTransport struct {
	base http.RoundTripper
	n    int64
}

func (t limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedReadCloser{limitedBody{resp.Body, t.n}, resp.Body}
	return resp, nil
}

// randomPort picks an external port to suggest in [1024, 65535].
func randomPort() uint16 { return uint16(1024 + mrand.IntN(65536-1024)) }
