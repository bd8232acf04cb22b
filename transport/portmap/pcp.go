package portmap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// PCP (RFC 6887) wire format, the parts this package speaks: the common
// request and response headers and the MAP opcode. All integers are
// big-endian; addresses are 16 bytes (IPv4 as an IPv4-mapped IPv6
// address).
//
//	request:  version(1)=2 · R|opcode(1)=0x01 · reserved(2) · lifetime(4) ·
//	          client address(16) · MAP payload(36)
//	response: version(1)=2 · R|opcode(1)=0x81 · reserved(1) · result(1) ·
//	          lifetime(4) · epoch(4) · reserved(12) · MAP payload(36)
//	MAP:      nonce(12) · protocol(1) · reserved(3) · internal port(2) ·
//	          external port(2) · external address(16)
//
// Options after the MAP payload are ignored in responses and never sent.
const (
	pcpPort        = 5351
	pcpVersion     = 2
	pcpOpAnnounce  = 0
	pcpOpMap       = 1
	pcpResponseBit = 0x80
	pcpHeaderLen   = 24
	pcpMapLen      = 36
	// pcpMaxPacket is the largest PCP message (RFC 6887 section 7): reads
	// use a buffer of this size, so a longer datagram is truncated, and
	// nothing else is allocated per packet.
	pcpMaxPacket = 1100
	protoUDP     = 17
)

// pcpResult is a PCP result code (RFC 6887 section 7.4).
type pcpResult uint8

var pcpResultNames = [...]string{
	0: "SUCCESS", 1: "UNSUPP_VERSION", 2: "NOT_AUTHORIZED", 3: "MALFORMED_REQUEST",
	4: "UNSUPP_OPCODE", 5: "UNSUPP_OPTION", 6: "MALFORMED_OPTION", 7: "NETWORK_FAILURE",
	8: "NO_RESOURCES", 9: "UNSUPP_PROTOCOL", 10: "USER_EX_QUOTA", 11: "CANNOT_PROVIDE_EXTERNAL",
	12: "ADDRESS_MISMATCH", 13: "EXCESSIVE_REMOTE_PEERS",
}

func (r pcpResult) String() string {
	if int(r) < len(pcpResultNames) {
		return pcpResultNames[r]
	}
	return fmt.Sprintf("result %d", uint8(r))
}

// pcpResponse is a decoded PCP response.
type pcpResponse struct {
	Opcode   uint8
	Result   pcpResult
	Lifetime uint32 // seconds
	Epoch    uint32
	// MAP only:
	Nonce        [12]byte
	Protocol     uint8
	InternalPort uint16
	External     netip.AddrPort
}

var errPCPMalformed = errors.New("portmap: malformed PCP response")

// appendPCPMap appends a MAP request asking that internalPort (UDP) of
// client be mapped for lifetime seconds, suggesting the external port
// (0: any). Lifetime 0 deletes the mapping with this nonce.
func appendPCPMap(b []byte, client netip.Addr, nonce [12]byte, internalPort, suggestedPort uint16, lifetime uint32) []byte {
	b = append(b, pcpVersion, pcpOpMap, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lifetime)
	c16 := client.As16()
	b = append(b, c16[:]...)
	b = append(b, nonce[:]...)
	b = append(b, protoUDP, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internalPort)
	b = binary.BigEndian.AppendUint16(b, suggestedPort)
	var any16 [16]byte // suggest no external address: IPv4-mapped 0.0.0.0
	any16[10], any16[11] = 0xff, 0xff
	return append(b, any16[:]...)
}

// appendPCPAnnounce appends an ANNOUNCE request (RFC 6887 section 14.1),
// used to learn whether the gateway speaks PCP.
func appendPCPAnnounce(b []byte, client netip.Addr) []byte {
	b = append(b, pcpVersion, pcpOpAnnounce, 0, 0, 0, 0, 0, 0)
	c16 := client.As16()
	return append(b, c16[:]...)
}

// decodePCPResponse decodes a PCP response. It checks the version, the
// response bit and the lengths; the result code is returned for the caller
// to judge. A NAT-PMP server's "unsupported version" answer (version 0)
// fails as malformed, which tells the caller the gateway has no PCP.
func decodePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) < pcpHeaderLen || len(b) > pcpMaxPacket || len(b)%4 != 0 {
		return r, fmt.Errorf("%w: %d bytes", errPCPMalformed, len(b))
	}
	if b[0] != pcpVersion {
		return r, fmt.Errorf("%w: version %d", errPCPMalformed, b[0])
	}
	if b[1]&pcpResponseBit == 0 {
		return r, fmt.Errorf("%w: not a response", errPCPMalformed)
	}
	r.Opcode = b[1] &^ pcpResponseBit
	r.Result = pcpResult(b[3])
	r.Lifetime = binary.BigEndian.Uint32(b[4:8])
	r.Epoch = binary.BigEndian.Uint32(b[8:12])
	if r.Opcode != pcpOpMap {
		return r, nil
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		if r.Result != 0 {
			return r, nil // an error answer may carry no payload
		}
		return r, fmt.Errorf("%w: MAP response of %d bytes", errPCPMalformed, len(b))
	}
	p := b[pcpHeaderLen:]
	copy(r.Nonce[:], p[:12])
	r.Protocol = p[12]
	r.InternalPort = binary.BigEndian.Uint16(p[16:18])
	port := binary.BigEndian.Uint16(p[18:20])
	ip := netip.AddrFrom16([16]byte(p[20:36])).Unmap()
	r.External = netip.AddrPortFrom(ip, port)
	return r, nil
}

// pcpClient speaks PCP to one gateway.
type pcpClient struct {
	gateway netip.Addr
	port    uint16 // pcpPort unless a test sets it
	local   netip.Addr
	nonce   [12]byte // one nonce per mapper: renewals and the delete reuse it
}

func newPCPClient(gw, local netip.Addr, port uint16) *pcpClient {
	c := &pcpClient{gateway: gw, local: local, port: port}
	if c.port == 0 {
		c.port = pcpPort
	}
	rand.Read(c.nonce[:])
	return c
}

func (c *pcpClient) name() Protocol { return PCP }

// roundTrip sends req to the gateway, retransmitting with a doubling
// interval from 250 ms, until a response passes accept or ctx ends.
func (c *pcpClient) roundTrip(ctx context.Context, req []byte, accept func(pcpResponse) bool) (pcpResponse, error) {
	conn, err := dialGateway(netip.AddrPortFrom(c.gateway, c.port), c.local)
	if err != nil {
		return pcpResponse{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, pcpMaxPacket)
	interval := 250 * time.Millisecond
	var lastErr error
	for {
		if _, err := conn.Write(req); err != nil {
			return pcpResponse{}, fmt.Errorf("portmap: PCP: %w", err)
		}
		resend := time.Now().Add(interval)
		interval = min(2*interval, 4*time.Second)
		if dl, ok := ctx.Deadline(); ok && dl.Before(resend) {
			resend = dl
		}
		conn.SetReadDeadline(resend)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					if lastErr != nil {
						return pcpResponse{}, lastErr
					}
					return pcpResponse{}, fmt.Errorf("portmap: PCP: no answer from %s: %w", c.gateway, ctx.Err())
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // resend
				}
				// ICMP port unreachable and the like: no PCP server.
				return pcpResponse{}, fmt.Errorf("portmap: PCP: %w", err)
			}
			r, err := decodePCPResponse(buf[:n])
			if err != nil {
				lastErr = err
				continue
			}
			if accept(r) {
				return r, nil
			}
		}
	}
}

func (c *pcpClient) probe(ctx context.Context) (netip.Addr, error) {
	r, err := c.roundTrip(ctx, appendPCPAnnounce(nil, c.local), func(r pcpResponse) bool { return r.Opcode == pcpOpAnnounce })
	if err != nil {
		return netip.Addr{}, err
	}
	if r.Result != 0 {
		return netip.Addr{}, fmt.Errorf("portmap: PCP ANNOUNCE: %s", r.Result)
	}
	return netip.Addr{}, nil // ANNOUNCE does not tell the external address
}

func (c *pcpClient) mapPort(ctx context.Context, internal, suggested uint16, lifetime time.Duration) (mapping, error) {
	req := appendPCPMap(nil, c.local, c.nonce, internal, suggested, lifetimeSeconds(lifetime))
	r, err := c.roundTrip(ctx, req, func(r pcpResponse) bool {
		return r.Opcode == pcpOpMap && (r.Result != 0 || r.Nonce == c.nonce && r.InternalPort == internal && r.Protocol == protoUDP)
	})
	if err != nil {
		return mapping{}, err
	}
	if r.Result != 0 {
		return mapping{}, fmt.Errorf("portmap: PCP MAP refused: %s", r.Result)
	}
	if !r.External.Addr().Is4() || r.External.Addr().IsUnspecified() || r.External.Port() == 0 || r.Lifetime == 0 {
		return mapping{}, fmt.Errorf("%w: MAP granted %s for %d s", errPCPMalformed, r.External, r.Lifetime)
	}
	return mapping{proto: PCP, external: r.External, lifetime: time.Duration(r.Lifetime) * time.Second, internal: internal}, nil
}

func (c *pcpClient) unmap(ctx context.Context, m mapping) error {
	req := appendPCPMap(nil, c.local, c.nonce, m.internal, 0, 0)
	r, err := c.roundTrip(ctx, req, func(r pcpResponse) bool {
		return r.Opcode == pcpOpMap && (r.Result != 0 || r.Nonce == c.nonce)
	})
	if err != nil {
		return err
	}
	if r.Result != 0 {
		return fmt.Errorf("portmap: PCP delete refused: %s", r.Result)
	}
	return nil
}

// lifetimeSeconds converts a requested lifetime to whole seconds in
// [1, 2^32-1].
func lifetimeSeconds(d time.Duration) uint32 {
	s := d / time.Second
	switch {
	case s < 1:
		return 1
	case s > 1<<32-1:
		return 1<<32 - 1
	}
	return uint32(s)
}

// dialGateway opens a UDP socket connected to gw, from local when valid.
func dialGateway(gw netip.AddrPort, local netip.Addr) (*net.UDPConn, error) {
	var laddr *net.UDPAddr
	if local.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	conn, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(gw))
	if err != nil {
		return nil, fmt.Errorf("portmap: %w", err)
	}
	return conn, nil
}
