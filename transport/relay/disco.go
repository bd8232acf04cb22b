package relay

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/aster-go/aster/trust"
)

// The direct-path ("disco") messages of PROTOCOL.md §24. They travel as
// the datagram of a relay SEND/RECV frame (CALL-ME-MAYBE) or as a UDP
// payload (PING, PONG, OBSERVE, OBSERVED), and are told apart from QUIC
// packets by their first byte: discoMagic starts with 0x00, and every QUIC
// v1 packet has the fixed bit 0x40 set (RFC 9000 §17), a Version
// Negotiation packet the header form bit 0x80; a byte with both clear
// begins no QUIC packet. A relay that predates §24 forwards them as any
// datagram.
const (
	discoMagic = "\x00astdisc"
	// discoTxLen is the length of a transaction id.
	discoTxLen = 12
	// discoAddrLen is the length of an encoded address: 16 bytes of IPv6
	// (IPv4 as ::ffff:a.b.c.d) and a big-endian port.
	discoAddrLen = 18
	// MaxCandidates is the most addresses one CALL-ME-MAYBE carries.
	MaxCandidates = 16
	// MaxClockSkew is how far the timestamp of a signed disco message may
	// be from the receiver's clock.
	MaxClockSkew = 2 * time.Minute

	discoHeaderLen = len(discoMagic) + 1 + idLen + 8 // magic, type, sender, time
	discoSigLen    = ed25519.SignatureSize
	// MaxPingLen is the longest PING or PONG: padded, a PING shows that
	// the path carries datagrams as large as QUIC's (quic-go's are at most
	// 1452 bytes). It is also the longest disco message.
	MaxPingLen  = 1452
	maxDiscoLen = MaxPingLen
	// pingLen is the length of an unpadded PING or PONG.
	pingBaseLen = discoHeaderLen + discoTxLen + discoAddrLen + discoSigLen
	// observedLen is the length of OBSERVED, shorter than OBSERVE.
	observedLen = len(discoMagic) + 1 + discoTxLen + discoAddrLen
)

// Disco message types.
const (
	discoPing        byte = 0x01 // endpoint → endpoint, UDP: tx ‖ destination address
	discoPong        byte = 0x02 // endpoint → endpoint, UDP: tx ‖ observed source address
	discoCallMeMaybe byte = 0x03 // endpoint → endpoint, relay: count ‖ addresses
	discoObserve     byte = 0x10 // endpoint → relay, UDP: tx
	discoObserved    byte = 0x11 // relay → endpoint, UDP, unsigned: tx ‖ observed address
)

// discoContext starts the bytes a disco signature covers.
const discoContext = "aster/1 disco"

// errDisco is wrapped by the errors of malformed disco messages.
var errDisco = errors.New("relay: bad disco message")

// isDisco reports whether a datagram is a disco message rather than a QUIC
// packet.
func isDisco(b []byte) bool {
	return len(b) >= len(discoMagic) && string(b[:len(discoMagic)]) == discoMagic
}

// discoMsg is one decoded disco message. Its slices alias the input.
type discoMsg struct {
	typ    byte
	sender trust.EndpointID // signed types
	time   int64            // unix milliseconds, signed types
	tx     [discoTxLen]byte // PING, PONG, OBSERVE, OBSERVED
	addr   netip.AddrPort   // PING: destination; PONG, OBSERVED: observed source
	cands  []netip.AddrPort // CALL-ME-MAYBE
	pad    int              // PING, PONG: bytes of padding
	signed []byte           // type through body: what the signature covers after the context
	sig    []byte
}

// appendDiscoAddr appends the 18-byte encoding of a.
func appendDiscoAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().As16()
	b = append(b, ip[:]...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

// parseDiscoAddr decodes 18 bytes; an IPv4-mapped address comes back as
// IPv4.
func parseDiscoAddr(b []byte) netip.AddrPort {
	ip := netip.AddrFrom16([16]byte(b[:16])).Unmap()
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[16:18]))
}

// discoSignedBytes returns what a signature covers: the context, 0x00, the
// receiver's id, then the message from the type through the body.
func discoSignedBytes(receiver trust.EndpointID, signed []byte) []byte {
	m := make([]byte, 0, len(discoContext)+1+idLen+len(signed))
	m = append(m, discoContext...)
	m = append(m, 0)
	m = append(m, receiver[:]...)
	return append(m, signed...)
}

// encodeDisco builds a signed disco message of type typ with body for the
// receiver (the zero id for OBSERVE, whose receiver is a relay).
func encodeDisco(key trust.SecretKey, receiver trust.EndpointID, typ byte, now time.Time, body []byte) []byte {
	id := trust.IDOf(key)
	b := make([]byte, 0, discoHeaderLen+len(body)+discoSigLen)
	b = append(b, discoMagic...)
	b = append(b, typ)
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMilli()))
	b = append(b, body...)
	sig := ed25519.Sign(ed25519.PrivateKey(key), discoSignedBytes(receiver, b[len(discoMagic):]))
	return append(b, sig...)
}

// pingBody is the body of a PING or PONG: tx, an address, and pad zero
// bytes of padding.
func pingBody(tx [discoTxLen]byte, addr netip.AddrPort, pad int) []byte {
	b := appendDiscoAddr(append([]byte(nil), tx[:]...), addr)
	return append(b, make([]byte, pad)...)
}

func callMeMaybeBody(cands []netip.AddrPort) []byte {
	cands = cands[:min(len(cands), MaxCandidates)]
	b := []byte{byte(len(cands))}
	for _, c := range cands {
		b = appendDiscoAddr(b, c)
	}
	return b
}

// encodeObserved builds the relay's unsigned OBSERVED answer.
func encodeObserved(tx [discoTxLen]byte, observed netip.AddrPort) []byte {
	b := make([]byte, 0, observedLen)
	b = append(b, discoMagic...)
	b = append(b, discoObserved)
	b = append(b, tx[:]...)
	return appendDiscoAddr(b, observed)
}

// parseDisco checks a disco message's layout and decodes it; it does not
// verify the signature or the timestamp (verifyDisco does). Errors wrap
// errDisco. It allocates only for the candidates of a CALL-ME-MAYBE.
func parseDisco(b []byte) (discoMsg, error) {
	var m discoMsg
	if len(b) > maxDiscoLen {
		return m, fmt.Errorf("%w: %d bytes, at most %d", errDisco, len(b), maxDiscoLen)
	}
	if !isDisco(b) || len(b) < len(discoMagic)+1 {
		return m, fmt.Errorf("%w: no magic and type", errDisco)
	}
	m.typ = b[len(discoMagic)]
	if m.typ == discoObserved {
		if len(b) != observedLen {
			return m, fmt.Errorf("%w: OBSERVED of %d bytes, want %d", errDisco, len(b), observedLen)
		}
		p := b[len(discoMagic)+1:]
		copy(m.tx[:], p)
		m.addr = parseDiscoAddr(p[discoTxLen:])
		return m, nil
	}
	var bodyLen int
	switch m.typ {
	case discoPing, discoPong:
		if len(b) < pingBaseLen {
			return m, fmt.Errorf("%w: short PING or PONG", errDisco)
		}
		bodyLen = len(b) - discoHeaderLen - discoSigLen
		m.pad = bodyLen - discoTxLen - discoAddrLen
	case discoObserve:
		bodyLen = discoTxLen
	case discoCallMeMaybe:
		if len(b) < discoHeaderLen+1 {
			return m, fmt.Errorf("%w: short CALL-ME-MAYBE", errDisco)
		}
		n := int(b[discoHeaderLen])
		if n > MaxCandidates {
			return m, fmt.Errorf("%w: %d candidates, at most %d", errDisco, n, MaxCandidates)
		}
		bodyLen = 1 + n*discoAddrLen
	default:
		return m, fmt.Errorf("%w: unknown type %#x", errDisco, m.typ)
	}
	if len(b) != discoHeaderLen+bodyLen+discoSigLen {
		return m, fmt.Errorf("%w: type %#x of %d bytes, want %d", errDisco, m.typ, len(b), discoHeaderLen+bodyLen+discoSigLen)
	}
	copy(m.sender[:], b[len(discoMagic)+1:])
	m.time = int64(binary.BigEndian.Uint64(b[discoHeaderLen-8 : discoHeaderLen]))
	body := b[discoHeaderLen : discoHeaderLen+bodyLen]
	m.signed = b[len(discoMagic) : discoHeaderLen+bodyLen]
	m.sig = b[discoHeaderLen+bodyLen:]
	switch m.typ {
	case discoPing, discoPong:
		copy(m.tx[:], body)
		m.addr = parseDiscoAddr(body[discoTxLen:])
		for _, c := range body[discoTxLen+discoAddrLen:] {
			if c != 0 {
				return discoMsg{}, fmt.Errorf("%w: padding not zero", errDisco)
			}
		}
	case discoObserve:
		copy(m.tx[:], body)
	case discoCallMeMaybe:
		n := int(body[0])
		m.cands = make([]netip.AddrPort, 0, n)
		for i := range n {
			m.cands = append(m.cands, parseDiscoAddr(body[1+i*discoAddrLen:]))
		}
	}
	return m, nil
}

// verifyDisco checks a parsed signed message: the signature by its sender
// for receiver, and a timestamp within MaxClockSkew of now.
func verifyDisco(m *discoMsg, receiver trust.EndpointID, now time.Time) error {
	if m.typ == discoObserved {
		return fmt.Errorf("%w: OBSERVED is not signed", errDisco)
	}
	if d := now.Sub(time.UnixMilli(m.time)); d > MaxClockSkew || d < -MaxClockSkew {
		return fmt.Errorf("%w: timestamp %s off", errDisco, d.Round(time.Second))
	}
	if !ed25519.Verify(ed25519.PublicKey(m.sender[:]), discoSignedBytes(receiver, m.signed), m.sig) {
		return fmt.Errorf("%w: bad signature by %s", errDisco, m.sender.Short())
	}
	return nil
}

// appendTo re-encodes a parsed message (the fuzz test's round trip).
func (m *discoMsg) appendTo(b []byte) []byte {
	b = append(b, discoMagic...)
	if m.typ == discoObserved {
		return appendDiscoAddr(append(append(b, discoObserved), m.tx[:]...), m.addr)
	}
	b = append(b, m.signed...)
	return append(b, m.sig...)
}

// sameAddr compares two addresses with IPv4-mapped IPv6 unmapped.
func sameAddr(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && a.Addr().Unmap() == b.Addr().Unmap()
}
