package portmap_test

import (
	"log"
	"net"
	"net/netip"

	"github.com/aster-go/aster/transport/portmap"
)

// Map the port of a UDP socket on the default gateway, learn the external
// address when the gateway grants it, and delete the mapping on Close.
func Example() {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	port := uint16(conn.LocalAddr().(*net.UDPAddr).Port)

	m := portmap.New(port, &portmap.Options{
		OnChange: func(ext netip.AddrPort, ok bool) {
			if ok {
				log.Printf("reachable from outside at %s", ext)
			} else {
				log.Print("port mapping lost")
			}
		},
	})
	defer m.Close() // deletes the mapping, waiting at most 2 s

	// Elsewhere: advertise m.Candidates() with the local addresses, or
	// read the current state for logs and metrics.
	if ext, ok := m.External(); ok {
		log.Printf("mapped %d to %s", port, ext)
	}
	log.Printf("port mapping: %+v", m.Status())
}

// Force one protocol and a gateway, as network.portmapper_config = "pcp"
// does for the default gateway.
func ExampleNew_protocol() {
	m := portmap.New(4433, &portmap.Options{
		Protocols: []portmap.Protocol{portmap.PCP},
		Gateway:   netip.MustParseAddr("192.168.1.1"),
	})
	defer m.Close()
	_ = m.Candidates // a func() []netip.AddrPort for address advertisement
}
