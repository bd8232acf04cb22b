package portmap

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// The MAP request of RFC 6887 for UDP port 40000 of 192.168.1.10,
// suggesting external port 40000 for 7200 s, byte by byte.
const pcpMapRequestHex = "" +
	"02" + "01" + "0000" + "00001c20" + // version 2, MAP, reserved, lifetime 7200
	"00000000000000000000ffffc0a8010a" + // client 192.168.1.10 (IPv4-mapped)
	"0102030405060708090a0b0c" + // nonce
	"11" + "000000" + "9c40" + "9c40" + // UDP, reserved, internal 40000, suggested 40000
	"00000000000000000000ffff00000000" // suggested external address: none

func TestPCPEncodeMap(t *testing.T) {
	nonce := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	got := appendPCPMap(nil, netip.MustParseAddr("192.168.1.10"), nonce, 40000, 40000, 7200)
	want, _ := hex.DecodeString(pcpMapRequestHex)
	if !bytes.Equal(got, want) {
		t.Fatalf("MAP request\n got %x\nwant %x", got, want)
	}
	if len(got) != pcpHeaderLen+pcpMapLen {
		t.Fatalf("length %d", len(got))
	}
}

// pcpMapResponse builds a MAP response (what a gateway sends).
func pcpMapResponse(result uint8, lifetime uint32, nonce [12]byte, internal uint16, ext netip.AddrPort) []byte {
	b := []byte{pcpVersion, pcpOpMap | pcpResponseBit, 0, result}
	b = binary.BigEndian.AppendUint32(b, lifetime)
	b = binary.BigEndian.AppendUint32(b, 1234) // epoch
	b = append(b, make([]byte, 12)...)
	b = append(b, nonce[:]...)
	b = append(b, protoUDP, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internal)
	b = binary.BigEndian.AppendUint16(b, ext.Port())
	a := ext.Addr().As16()
	return append(b, a[:]...)
}

func TestPCPDecode(t *testing.T) {
	nonce := [12]byte{9}
	ext := netip.MustParseAddrPort("203.0.113.7:50000")
	r, err := decodePCPResponse(pcpMapResponse(0, 3600, nonce, 40000, ext))
	if err != nil {
		t.Fatal(err)
	}
	if r.Opcode != pcpOpMap || r.Result != 0 || r.Lifetime != 3600 || r.Epoch != 1234 || r.Nonce != nonce || r.InternalPort != 40000 || r.External != ext || r.Protocol != protoUDP {
		t.Fatalf("decoded %+v", r)
	}
	// Options after the payload are ignored.
	withOpt := append(pcpMapResponse(0, 3600, nonce, 40000, ext), 0x01, 0, 0, 4, 1, 2, 3, 4)
	if r2, err := decodePCPResponse(withOpt); err != nil || r2 != r {
		t.Fatalf("with an option: %+v, %v", r2, err)
	}
	// An error answer without payload.
	short := pcpMapResponse(8, 0, nonce, 0, ext)[:pcpHeaderLen]
	if r, err := decodePCPResponse(short); err != nil || r.Result != 8 || r.Result.String() != "NO_RESOURCES" {
		t.Fatalf("short error answer: %+v, %v", r, err)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          make([]byte, 20),
		"NAT-PMP answer": {0, 128, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		"not a response": append([]byte{2, 1}, make([]byte, 58)...),
		"odd length":     append(pcpMapResponse(0, 1, nonce, 1, ext), 0),
		"success, short": short[:0:0],
		"too long":       make([]byte, pcpMaxPacket+4),
	} {
		if name == "success, short" {
			b = append([]byte{2, 0x81, 0, 0}, make([]byte, 20)...)
		}
		if _, err := decodePCPResponse(b); !errors.Is(err, errPCPMalformed) {
			t.Errorf("%s: err = %v, want malformed", name, err)
		}
	}
}

// FuzzDecodePCPResponse: any datagram decodes or fails cleanly, never
// panics, and reads nothing beyond the buffer.
func FuzzDecodePCPResponse(f *testing.F) {
	f.Add(pcpMapResponse(0, 3600, [12]byte{1}, 40000, netip.MustParseAddrPort("203.0.113.7:50000")))
	f.Add(pcpMapResponse(2, 0, [12]byte{}, 0, netip.MustParseAddrPort("[::1]:1")))
	f.Add([]byte{2, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 128, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodePCPResponse(b)
		if err != nil {
			return
		}
		if len(b) < pcpHeaderLen || len(b) > pcpMaxPacket || b[0] != pcpVersion || b[1]&pcpResponseBit == 0 {
			t.Fatalf("accepted %x as %+v", b, r)
		}
		if r.Opcode == pcpOpMap && r.Result == 0 && !r.External.IsValid() {
			t.Fatalf("successful MAP without an address: %x", b)
		}
	})
}

// fakePCP is a PCP server on a loopback address: it grants every MAP
// request (the suggested port, or 50000) on 203.0.113.7 for the requested
// lifetime, capped at maxLife, and answers ANNOUNCE.
type fakePCP struct {
	conn    *net.UDPConn
	maxLife uint32
	refuse  uint8 // result code for MAP, 0 to grant
	mu      sync.Mutex
	maps    map[uint16]uint32 // internal port → lifetime
	reqs    int
	done    chan struct{}
}

func startFakePCP(t *testing.T, ip string) *fakePCP {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakePCP{conn: conn, maxLife: 3600, maps: map[uint16]uint32{}, done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

func (s *fakePCP) port() uint16 { return uint16(s.conn.LocalAddr().(*net.UDPAddr).Port) }

func (s *fakePCP) serve() {
	defer close(s.done)
	buf := make([]byte, 2000)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		s.mu.Lock()
		s.reqs++
		s.mu.Unlock()
		if n < pcpHeaderLen || b[0] != pcpVersion {
			continue
		}
		switch b[1] {
		case pcpOpAnnounce:
			resp := append([]byte{pcpVersion, pcpOpAnnounce | pcpResponseBit, 0, 0}, make([]byte, 20)...)
			s.conn.WriteToUDPAddrPort(resp, from)
		case pcpOpMap:
			if n != pcpHeaderLen+pcpMapLen {
				continue
			}
			life := binary.BigEndian.Uint32(b[4:8])
			p := b[pcpHeaderLen:]
			nonce := [12]byte(p[:12])
			internal := binary.BigEndian.Uint16(p[16:18])
			ext := binary.BigEndian.Uint16(p[18:20])
			if ext == 0 {
				ext = 50000
			}
			s.mu.Lock()
			refuse := s.refuse
			s.mu.Unlock()
			if refuse != 0 {
				s.conn.WriteToUDPAddrPort(pcpMapResponse(refuse, 0, nonce, internal, netip.AddrPort{}), from)
				continue
			}
			life = min(life, s.maxLife)
			s.mu.Lock()
			if life == 0 {
				delete(s.maps, internal)
			} else {
				s.maps[internal] = life
			}
			s.mu.Unlock()
			s.conn.WriteToUDPAddrPort(pcpMapResponse(0, life, nonce, internal, netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), ext)), from)
		}
	}
}

func (s *fakePCP) mapped(internal uint16) (uint32, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.maps[internal]
	return l, ok
}

// TestPCPClient maps, renews and deletes over real sockets.
func TestPCPClient(t *testing.T) {
	s := startFakePCP(t, "127.0.0.1")
	c := newPCPClient(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), s.port())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.probe(ctx); err != nil {
		t.Fatalf("probe: %v", err)
	}
	m, err := c.mapPort(ctx, 40000, 40000, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.external.String() != "203.0.113.7:40000" || m.lifetime != time.Hour || m.proto != PCP {
		t.Fatalf("mapping %+v", m)
	}
	if l, ok := s.mapped(40000); !ok || l != 3600 {
		t.Fatalf("server state %d %v", l, ok)
	}
	if err := c.unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.mapped(40000); ok {
		t.Fatal("mapping not deleted")
	}
	s.mu.Lock()
	s.refuse = 2
	s.mu.Unlock()
	if _, err := c.mapPort(ctx, 40000, 40000, time.Hour); err == nil || !strings.Contains(err.Error(), "NOT_AUTHORIZED") {
		t.Fatalf("refused MAP: err = %v", err)
	}
}

// TestPCPNoServer: a gateway without PCP answers with ICMP port
// unreachable (on loopback) or not at all: the probe fails within its
// context.
func TestPCPNoServer(t *testing.T) {
	c := newPCPClient(netip.MustParseAddr("127.0.0.1"), netip.Addr{}, 9) // discard port: nothing listens
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.probe(ctx); err == nil {
		t.Fatal("probe succeeded without a server")
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("probe took %v", d)
	}
}
