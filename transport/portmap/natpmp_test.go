package portmap

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeNATPMP is a NAT-PMP server (RFC 6886) on 127.77.0.1:5351 (the
// protocol's fixed port, on a loopback address of its own).
type fakeNATPMP struct {
	conn *net.UDPConn
	done chan struct{}
	mu   sync.Mutex
	maps map[uint16]uint32 // internal port → lifetime
}

const natpmpTestGW = "127.77.0.1"

func startFakeNATPMP(t *testing.T) *fakeNATPMP {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(natpmpTestGW), Port: 5351})
	if err != nil {
		t.Fatalf("NAT-PMP test server: %v", err)
	}
	s := &fakeNATPMP{conn: conn, done: make(chan struct{}), maps: map[uint16]uint32{}}
	go s.serve()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

func (s *fakeNATPMP) serve() {
	defer close(s.done)
	buf := make([]byte, 64)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		switch {
		case n == 2 && b[0] == 0 && b[1] == 0: // external address
			s.conn.WriteToUDPAddrPort([]byte{0, 128, 0, 0, 0, 0, 0, 7, 203, 0, 113, 7}, from)
		case n == 12 && b[0] == 0 && b[1] == 1: // map UDP
			internal := binary.BigEndian.Uint16(b[4:6])
			ext := binary.BigEndian.Uint16(b[6:8])
			life := binary.BigEndian.Uint32(b[8:12])
			s.mu.Lock()
			if life == 0 {
				delete(s.maps, internal)
			} else {
				life = min(life, 600)
				s.maps[internal] = life
			}
			s.mu.Unlock()
			if ext == 0 {
				ext = internal
			}
			r := []byte{0, 129, 0, 0, 0, 0, 0, 7}
			r = binary.BigEndian.AppendUint16(r, internal)
			r = binary.BigEndian.AppendUint16(r, ext)
			r = binary.BigEndian.AppendUint32(r, life)
			s.conn.WriteToUDPAddrPort(r, from)
		}
	}
}

func TestNATPMPClient(t *testing.T) {
	s := startFakeNATPMP(t)
	c := &natpmpClient{gateway: netip.MustParseAddr(natpmpTestGW), timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if ext, err := c.probe(ctx); err != nil || ext.String() != "203.0.113.7" {
		t.Fatalf("probe: %v, %v", ext, err)
	}
	m, err := c.mapPort(ctx, 40004, 40004, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m.external.String() != "203.0.113.7:40004" || m.lifetime != 10*time.Minute || m.proto != NATPMP {
		t.Fatalf("mapping %+v", m)
	}
	if err := c.unmap(ctx, m); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	n := len(s.maps)
	s.mu.Unlock()
	if n != 0 {
		t.Fatal("mapping not deleted")
	}
}
