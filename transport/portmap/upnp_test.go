package portmap

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

const testRootDesc = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<friendlyName>test gateway</friendlyName>
<UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL><SCPDURL>/WANIPCn.xml</SCPDURL>
</service></serviceList>
</device></deviceList></device></deviceList>
</device></root>`

const soapEnvelope = `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>%s</s:Body></s:Envelope>`

// fakeIGD is a UPnP gateway on 127.0.0.1: an SSDP responder and an HTTP
// server with a device description and a WANIPConnection:2 control URL.
// Its knobs make it hostile.
type fakeIGD struct {
	ssdp *net.UDPConn
	http *httptest.Server
	done chan struct{}

	mu          sync.Mutex
	desc        string // the description, testRootDesc by default
	endlessDesc bool   // the description never ends
	endlessSOAP bool   // AddPortMapping's answer never ends
	answerFrom  string // answer SSDP from this address instead
	locHost     string // put this host in LOCATION instead
	mappings    map[string]string
	written     int64 // bytes of the endless bodies written
}

func startFakeIGD(t *testing.T) *fakeIGD {
	t.Helper()
	g := &fakeIGD{mappings: map[string]string{}, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/rootDesc.xml", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		endless := g.endlessDesc
		g.mu.Unlock()
		if endless {
			io.WriteString(w, `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device><friendlyName>`)
			g.endless(w)
			return
		}
		g.mu.Lock()
		desc := g.desc
		g.mu.Unlock()
		if desc == "" {
			desc = testRootDesc
		}
		io.WriteString(w, desc)
	})
	mux.HandleFunc("/ctl/IPConn", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		action := r.Header.Get("SOAPAction")
		g.mu.Lock()
		endless := g.endlessSOAP
		g.mu.Unlock()
		switch {
		case strings.Contains(action, "#GetExternalIPAddress"):
			fmt.Fprintf(w, soapEnvelope, `<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"><NewExternalIPAddress>203.0.113.7</NewExternalIPAddress></u:GetExternalIPAddressResponse>`)
		case strings.Contains(action, "#AddPortMapping") && endless:
			io.WriteString(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:AddPortMappingResponse>`)
			g.endless(w)
		case strings.Contains(action, "#AddPortMapping"):
			port := between(string(body), "<NewExternalPort>", "</NewExternalPort>")
			g.mu.Lock()
			g.mappings[port] = between(string(body), "<NewInternalClient>", "</NewInternalClient>") + ":" + between(string(body), "<NewInternalPort>", "</NewInternalPort>")
			g.mu.Unlock()
			fmt.Fprintf(w, soapEnvelope, `<u:AddPortMappingResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"/>`)
		case strings.Contains(action, "#DeletePortMapping"):
			port := between(string(body), "<NewExternalPort>", "</NewExternalPort>")
			g.mu.Lock()
			delete(g.mappings, port)
			g.mu.Unlock()
			fmt.Fprintf(w, soapEnvelope, `<u:DeletePortMappingResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"/>`)
		default:
			http.Error(w, "unknown action", http.StatusInternalServerError)
		}
	})
	g.http = httptest.NewServer(mux)
	var err error
	g.ssdp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	go g.serveSSDP()
	t.Cleanup(func() {
		g.ssdp.Close()
		<-g.done
		g.http.Close()
	})
	return g
}

// endless writes up to 64 MiB of filler: far beyond every limit, and
// still a bound on this test.
func (g *fakeIGD) endless(w io.Writer) {
	chunk := []byte(strings.Repeat("x", 32<<10))
	for range 2048 {
		n, err := w.Write(chunk)
		g.mu.Lock()
		g.written += int64(n)
		g.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func between(s, a, b string) string {
	_, rest, _ := strings.Cut(s, a)
	v, _, _ := strings.Cut(rest, b)
	return v
}

func (g *fakeIGD) serveSSDP() {
	defer close(g.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := g.ssdp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if !strings.HasPrefix(string(buf[:n]), "M-SEARCH") {
			continue
		}
		g.mu.Lock()
		host, answerFrom := g.locHost, g.answerFrom
		g.mu.Unlock()
		if host == "" {
			host = g.http.Listener.Addr().String()
		}
		resp := "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + igdURN + "\r\nLOCATION: http://" + host + "/rootDesc.xml\r\n\r\n"
		if answerFrom != "" {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(answerFrom)})
			if err == nil {
				c.WriteToUDPAddrPort([]byte(resp), from)
				c.Close()
			}
			continue
		}
		g.ssdp.WriteToUDPAddrPort([]byte(resp), from)
	}
}

func (g *fakeIGD) client() *upnpClient {
	lo := netip.MustParseAddr("127.0.0.1")
	return newUPnPClient(lo, lo, uint16(g.ssdp.LocalAddr().(*net.UDPAddr).Port), false, 2*time.Second)
}

func (g *fakeIGD) set(fn func(g *fakeIGD)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	fn(g)
}

func TestUPnPClient(t *testing.T) {
	t.Run("WANIPConnection:2", func(t *testing.T) { testUPnPClient(t, testRootDesc) })
	t.Run("WANIPConnection:1", func(t *testing.T) {
		testUPnPClient(t, strings.NewReplacer(":2<", ":1<").Replace(testRootDesc))
	})
	t.Run("WANPPPConnection:1", func(t *testing.T) {
		testUPnPClient(t, strings.NewReplacer(":2<", ":1<", "WANIPConnection", "WANPPPConnection").Replace(testRootDesc))
	})
}

func testUPnPClient(t *testing.T, desc string) {
	g := startFakeIGD(t)
	g.set(func(g *fakeIGD) { g.desc = desc })
	c := g.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ext, err := c.probe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ext.String() != "203.0.113.7" {
		t.Fatalf("external address %v", ext)
	}
	c.mu.Lock()
	svc := c.svc
	c.mu.Unlock()
	if want := between(desc, "<serviceType>", "</serviceType>"); svc != want {
		t.Fatalf("service %q, want %q", svc, want)
	}
	m, err := c.mapPort(ctx, 40002, 40002, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.external.String() != "203.0.113.7:40002" || m.lifetime != time.Hour {
		t.Fatalf("mapping %+v", m)
	}
	g.mu.Lock()
	got := g.mappings["40002"]
	g.mu.Unlock()
	if got != "127.0.0.1:40002" {
		t.Fatalf("gateway holds %q", got)
	}
	if err := c.unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	n := len(g.mappings)
	g.mu.Unlock()
	if n != 0 {
		t.Fatal("mapping not deleted")
	}
}

// A gateway that sends an endless description or SOAP answer: the client
// stops reading at its limit and fails.
func TestUPnPHostileBodies(t *testing.T) {
	g := startFakeIGD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	g.set(func(g *fakeIGD) { g.endlessDesc = true })
	if _, err := g.client().probe(ctx); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("endless description: err = %v", err)
	}

	g.set(func(g *fakeIGD) { g.endlessDesc, g.endlessSOAP = false, true })
	c := g.client()
	if _, err := c.probe(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mapPort(ctx, 40003, 40003, time.Hour); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("endless SOAP answer: err = %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the client read until its deadline")
	}
}

// SSDP answers from another address than the gateway's, or naming
// another host, are ignored.
func TestUPnPSSDPFromElsewhere(t *testing.T) {
	g := startFakeIGD(t)
	g.set(func(g *fakeIGD) { g.answerFrom = "127.0.0.2" })
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := g.client().probe(ctx); err == nil || !strings.Contains(err.Error(), "no UPnP gateway answered") {
		t.Fatalf("answer from another address: err = %v", err)
	}
	g.set(func(g *fakeIGD) { g.answerFrom, g.locHost = "", "192.0.2.55:80" })
	ctx2, cancel2 := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel2()
	if _, err := g.client().probe(ctx2); err == nil || !strings.Contains(err.Error(), "not on the gateway") {
		t.Fatalf("location elsewhere: err = %v", err)
	}
}

// FuzzParseSSDP: any datagram yields a LOCATION on the gateway or an
// error, never a panic.
func FuzzParseSSDP(f *testing.F) {
	f.Add([]byte("HTTP/1.1 200 OK\r\nST: " + igdURN + "\r\nLOCATION: http://192.0.2.1:5000/rootDesc.xml\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nLOCATION: http://192.0.2.9/\r\n\r\n"))
	f.Add([]byte("HTTP/1.1 404 Not Found\r\n\r\n"))
	gw := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxSSDPResponse {
			b = b[:MaxSSDPResponse] // what a read returns
		}
		loc, err := parseSSDP(b, gw)
		if err != nil {
			return
		}
		if h, err := netip.ParseAddr(loc.Hostname()); err != nil || h.Unmap() != gw || loc.Scheme != "http" {
			t.Fatalf("accepted location %v", loc)
		}
	})
}
