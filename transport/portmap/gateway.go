package portmap

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// ErrNoGateway is returned (wrapped) when the system has no IPv4 default
// route with a gateway.
var ErrNoGateway = errors.New("portmap: no default gateway")

// maxRouteTable bounds how much of /proc/net/route is read.
const maxRouteTable = 1 << 20

// DefaultGateway returns the gateway of the IPv4 default route with the
// lowest metric, read from /proc/net/route (Linux). Elsewhere, or without
// such a route, it fails with ErrNoGateway; set Options.Gateway there.
func DefaultGateway() (netip.Addr, error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %w", ErrNoGateway, err)
	}
	defer f.Close()
	return parseRouteTable(io.LimitReader(f, maxRouteTable))
}

// parseRouteTable reads the Linux /proc/net/route format: a header line,
// then "Iface Destination Gateway Flags RefCnt Use Metric Mask ..." with
// addresses as little-endian hex.
func parseRouteTable(r io.Reader) (netip.Addr, error) {
	const rtfUp, rtfGateway = 0x1, 0x2
	sc := bufio.NewScanner(r)
	best, bestMetric := netip.Addr{}, -1
	first := true
	for sc.Scan() {
		if first {
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		gw, err1 := hex.DecodeString(f[2])
		flags, err2 := hexUint(f[3])
		metric, err3 := decUint(f[6])
		if err1 != nil || err2 != nil || err3 != nil || len(gw) != 4 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		a := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, binary.LittleEndian.Uint32(gw))))
		if a.IsUnspecified() {
			continue
		}
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = a, metric
		}
	}
	if err := sc.Err(); err != nil {
		return netip.Addr{}, fmt.Errorf("%w: /proc/net/route: %w", ErrNoGateway, err)
	}
	if !best.IsValid() {
		return netip.Addr{}, ErrNoGateway
	}
	return best, nil
}

func hexUint(s string) (uint32, error) {
	b, err := hex.DecodeString(fmt.Sprintf("%08s", s))
	if err != nil || len(b) != 4 {
		return 0, fmt.Errorf("bad hex %q", s)
	}
	return binary.BigEndian.Uint32(b), nil
}

func decUint(s string) (int, error) {
	n := 0
	if len(s) == 0 || len(s) > 9 {
		return 0, fmt.Errorf("bad metric %q", s)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("bad metric %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// localAddrFor returns the local IPv4 address the system uses to reach gw
// (connecting a UDP socket sends nothing).
func localAddrFor(gw netip.Addr) (netip.Addr, error) {
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, pcpPort)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: no route to gateway %s: %w", gw, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}
