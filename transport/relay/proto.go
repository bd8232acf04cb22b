package relay

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aster-go/aster/trust"
)

// The relay wire protocol (PROTOCOL.md, "Relayed QUIC"). After TLS 1.3
// with ALPN ALPN, both directions carry frames:
//
//	type   1 byte
//	length 2 bytes, big-endian, at most MaxFrameBody
//	body   length bytes
const (
	// ALPN is the TLS application protocol of relay connections.
	ALPN = "aster-relay/1"
	// Version is the protocol version carried by CHALLENGE and REGISTER.
	Version = 0x01
	// MaxDatagramSize is the largest QUIC packet a SEND or RECV frame may
	// carry (quic-go sends at most 1452 bytes).
	MaxDatagramSize = 1500
	// MaxFrameBody is the largest frame body: an endpoint id and a datagram.
	MaxFrameBody = idLen + MaxDatagramSize
	// MaxReasonLen is the longest CLOSE reason, in bytes.
	MaxReasonLen = 256
	// DefaultPort is the port of a relay URL without one.
	DefaultPort = 443

	frameHeaderLen = 3
	idLen          = 32
	nonceLen       = 32
	exporterLen    = 32
)

// Frame types.
const (
	frameChallenge byte = 0x01 // relay → endpoint: version ‖ nonce
	frameRegister  byte = 0x02 // endpoint → relay: version ‖ id ‖ signature
	frameAccepted  byte = 0x03 // relay → endpoint: empty
	frameClose     byte = 0x04 // either: code ‖ reason
	frameSend      byte = 0x10 // endpoint → relay: destination id ‖ datagram
	frameRecv      byte = 0x11 // relay → endpoint: source id ‖ datagram
	framePing      byte = 0x20 // either: 8 opaque bytes
	framePong      byte = 0x21 // answer to PING: the same 8 bytes
	frameOptional  byte = 0x80 // unknown types at or above it are ignored
)

// CloseCode says why a relay connection was closed (the CLOSE frame).
type CloseCode byte

// Close codes.
const (
	// CloseNormal is a close without error.
	CloseNormal CloseCode = 0x00
	// CloseBadProof refuses a registration whose signature does not verify.
	CloseBadProof CloseCode = 0x01
	// CloseLimit refuses a connection beyond the relay's limits.
	CloseLimit CloseCode = 0x02
	// CloseReplaced closes a registration replaced by a newer one of the
	// same endpoint id.
	CloseReplaced CloseCode = 0x03
	// CloseProtocol closes a connection whose peer broke the protocol.
	CloseProtocol CloseCode = 0x04
	// CloseShutdown closes connections when the relay shuts down.
	CloseShutdown CloseCode = 0x05
)

func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "normal"
	case CloseBadProof:
		return "bad proof"
	case CloseLimit:
		return "limit"
	case CloseReplaced:
		return "replaced"
	case CloseProtocol:
		return "protocol error"
	case CloseShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("code %#x", byte(c))
}

// CloseError is the error of a relay connection closed by a CLOSE frame.
type CloseError struct {
	Code   CloseCode
	Reason string
	Remote bool // the peer sent the CLOSE
}

func (e *CloseError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by the relay"
	}
	if e.Reason == "" {
		return fmt.Sprintf("relay connection closed %s: %v", who, e.Code)
	}
	return fmt.Sprintf("relay connection closed %s: %v: %s", who, e.Code, e.Reason)
}

// ErrProtocol is wrapped by errors about malformed relay frames.
var ErrProtocol = errors.New("relay: protocol error")

// registerContext starts the message a REGISTER signature covers.
const registerContext = "aster/1 relay register"

// exporterLabel is the TLS exporter label (RFC 8446 §7.5) whose 32 bytes
// bind a REGISTER to its TLS connection.
const exporterLabel = "EXPORTER-aster-relay-register"

// registerMessage returns the bytes a REGISTER signs:
// "aster/1 relay register" ‖ 0x00 ‖ nonce ‖ exporter ‖ id.
func registerMessage(nonce, exporter []byte, id trust.EndpointID) []byte {
	m := make([]byte, 0, len(registerContext)+1+nonceLen+exporterLen+idLen)
	m = append(m, registerContext...)
	m = append(m, 0)
	m = append(m, nonce...)
	m = append(m, exporter...)
	return append(m, id[:]...)
}

// appendFrame appends a frame of type typ with body parts to b.
func appendFrame(b []byte, typ byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// challengeFrame encodes CHALLENGE.
func challengeFrame(nonce []byte) []byte {
	return appendFrame(nil, frameChallenge, []byte{Version}, nonce)
}

// registerFrame encodes REGISTER, signing with key.
func registerFrame(key trust.SecretKey, nonce, exporter []byte) []byte {
	id := trust.IDOf(key)
	sig := ed25519.Sign(ed25519.PrivateKey(key), registerMessage(nonce, exporter, id))
	return appendFrame(nil, frameRegister, []byte{Version}, id[:], sig)
}

// verifyRegister checks a REGISTER body (version, id, signature) against
// the nonce and exporter of its connection and returns the proven id.
func verifyRegister(body, nonce, exporter []byte) (trust.EndpointID, bool) {
	var id trust.EndpointID
	if len(body) != 1+idLen+ed25519.SignatureSize || body[0] != Version {
		return id, false
	}
	copy(id[:], body[1:1+idLen])
	return id, ed25519.Verify(ed25519.PublicKey(id[:]), registerMessage(nonce, exporter, id), body[1+idLen:])
}

// closeFrame encodes CLOSE; the reason is cut to MaxReasonLen bytes, at a
// UTF-8 character boundary.
func closeFrame(code CloseCode, reason string) []byte {
	if len(reason) > MaxReasonLen {
		i := MaxReasonLen
		for i > 0 && !utf8.RuneStart(reason[i]) {
			i--
		}
		reason = reason[:i]
	}
	return appendFrame(nil, frameClose, []byte{byte(code)}, []byte(reason))
}

// frameBuf is the storage of one pooled frame buffer: it holds any frame.
type frameBuf = [frameHeaderLen + MaxFrameBody]byte

// framePool recycles the buffers of datagram frames, which are created and
// written at the packet rate. It holds *frameBuf, so that putting a buffer
// back allocates nothing (a slice header would have to be boxed).
var framePool = sync.Pool{New: func() any { return new(frameBuf) }}

// getBuf returns an empty pooled buffer that holds any frame.
func getBuf() []byte { return framePool.Get().(*frameBuf)[:0] }

// putBuf returns a buffer from getBuf (or datagramFrame) to the pool once
// it is no longer used; other buffers are left to the garbage collector.
func putBuf(b []byte) {
	if cap(b) == len(frameBuf{}) {
		framePool.Put((*frameBuf)(b[:cap(b)]))
	}
}

// datagramFrame encodes SEND or RECV into a pooled buffer (see putBuf).
func datagramFrame(typ byte, peer trust.EndpointID, pkt []byte) []byte {
	return appendFrame(getBuf(), typ, peer[:], pkt)
}

// deadlineEvery is how often read and write deadlines are pushed forward
// on a busy connection (setting them for every frame costs too much).
const deadlineEvery = time.Second

// readFrame reads one frame into buf (which must hold MaxFrameBody bytes)
// and returns its type and body, a slice of buf.
func readFrame(r *bufio.Reader, buf []byte) (byte, []byte, error) {
	// The header is read into buf (a local array would escape through
	// io.ReadFull and cost an allocation per frame), then the body over it.
	if _, err := io.ReadFull(r, buf[:frameHeaderLen]); err != nil {
		return 0, nil, err
	}
	typ, n := buf[0], int(binary.BigEndian.Uint16(buf[1:frameHeaderLen]))
	if n > MaxFrameBody {
		return 0, nil, fmt.Errorf("%w: frame type %#x of %d bytes, at most %d allowed", ErrProtocol, typ, n, MaxFrameBody)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return typ, buf[:n], nil
}

// parseClose decodes a CLOSE body. An empty body, which carries no code,
// reads as a protocol-error close; a reason that is not UTF-8 has its bad
// bytes replaced by "?".
func parseClose(body []byte) *CloseError {
	if len(body) == 0 {
		return &CloseError{Code: CloseProtocol, Reason: "empty CLOSE frame", Remote: true}
	}
	return &CloseError{Code: CloseCode(body[0]), Reason: strings.ToValidUTF8(string(body[1:]), "?"), Remote: true}
}

// frame is one decoded relay frame. Its byte slices alias the body it was
// parsed from.
type frame struct {
	typ   byte
	nonce []byte           // CHALLENGE
	id    trust.EndpointID // REGISTER: the claimed id; SEND: destination; RECV: source
	sig   []byte           // REGISTER: the signature, not yet verified
	data  []byte           // SEND, RECV: the datagram; PING, PONG: the 8 bytes; types >= 0x80: the body
	close *CloseError      // CLOSE
}

// pingLen is the length of a PING or PONG body.
const pingLen = 8

// parseFrame checks a frame body against the layout of its type (the table
// in PROTOCOL.md §19.2) and decodes it. Whether the type may arrive in the
// receiver's state (direction, order) is the caller's to check. Errors wrap
// ErrProtocol. It allocates only for CLOSE.
func parseFrame(typ byte, body []byte) (frame, error) {
	f := frame{typ: typ}
	bad := func(want string) (frame, error) {
		return frame{}, fmt.Errorf("%w: %s frame of %d bytes, want %s", ErrProtocol, frameName(typ), len(body), want)
	}
	switch {
	case typ == frameChallenge:
		if len(body) != 1+nonceLen || body[0] != Version {
			return bad("version 1 and a 32-byte nonce")
		}
		f.nonce = body[1:]
	case typ == frameRegister:
		if len(body) != 1+idLen+ed25519.SignatureSize || body[0] != Version {
			return bad("version 1, a 32-byte id and a 64-byte signature")
		}
		copy(f.id[:], body[1:1+idLen])
		f.sig = body[1+idLen:]
	case typ == frameAccepted:
		if len(body) != 0 {
			return bad("an empty body")
		}
	case typ == frameClose:
		f.close = parseClose(body)
	case typ == frameSend || typ == frameRecv:
		if len(body) <= idLen || len(body)-idLen > MaxDatagramSize {
			return bad("a 32-byte id and a datagram of 1 to 1500 bytes")
		}
		copy(f.id[:], body[:idLen])
		f.data = body[idLen:]
	case typ == framePing || typ == framePong:
		if len(body) != pingLen {
			return bad("8 bytes")
		}
		f.data = body
	case typ >= frameOptional:
		f.data = body
	default:
		return frame{}, fmt.Errorf("%w: unknown frame type %#x", ErrProtocol, typ)
	}
	return f, nil
}

// appendTo appends the encoding of f to b; for a frame parseFrame accepted
// it gives back the bytes parsed, except that a CLOSE reason that was not
// UTF-8 comes back repaired, and an empty CLOSE body comes back as a CLOSE
// with code CloseProtocol.
func (f *frame) appendTo(b []byte) []byte {
	switch {
	case f.typ == frameChallenge:
		return appendFrame(b, f.typ, []byte{Version}, f.nonce)
	case f.typ == frameRegister:
		return appendFrame(b, f.typ, []byte{Version}, f.id[:], f.sig)
	case f.typ == frameClose:
		return append(b, closeFrame(f.close.Code, f.close.Reason)...)
	case f.typ == frameSend || f.typ == frameRecv:
		return appendFrame(b, f.typ, f.id[:], f.data)
	}
	return appendFrame(b, f.typ, f.data)
}

// frameName names a frame type for errors.
func frameName(typ byte) string {
	switch typ {
	case frameChallenge:
		return "CHALLENGE"
	case frameRegister:
		return "REGISTER"
	case frameAccepted:
		return "ACCEPTED"
	case frameClose:
		return "CLOSE"
	case frameSend:
		return "SEND"
	case frameRecv:
		return "RECV"
	case framePing:
		return "PING"
	case framePong:
		return "PONG"
	}
	return fmt.Sprintf("type %#x", typ)
}

// URL is a parsed relay URL: "https://host[:port][#sha256=<hex>]". The
// optional fragment pins the SHA-256 hash of the relay's DER certificate,
// for relays with a self-signed certificate; without it the certificate must
// verify for host against the trusted roots.
type URL struct {
	// Host is the relay's host name or IP address.
	Host string
	// Port is the relay's TCP port (DefaultPort when the URL has none).
	Port uint16
	// Pin is the certificate hash the relay must present, if HasPin.
	Pin [sha256.Size]byte
	// HasPin says whether the URL pins the certificate.
	HasPin bool
	raw    string
}

// ParseURL parses a relay URL.
func ParseURL(s string) (*URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("relay: bad URL %.80q: %w", s, err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("relay: URL %.80q: scheme must be https", s)
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("relay: URL %.80q: want https://host[:port][#sha256=<hex>]", s)
	}
	out := &URL{Host: u.Hostname(), Port: DefaultPort, raw: s}
	if out.Host == "" {
		return nil, fmt.Errorf("relay: URL %.80q has no host", s)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("relay: URL %.80q: bad port", s)
		}
		out.Port = uint16(n)
	}
	if u.Fragment != "" {
		h, ok := strings.CutPrefix(u.Fragment, "sha256=")
		if !ok {
			return nil, fmt.Errorf("relay: URL %.80q: the fragment must be sha256=<64 hex characters>", s)
		}
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("relay: URL %.80q: the pin must be 64 hex characters", s)
		}
		copy(out.Pin[:], b)
		out.HasPin = true
	}
	return out, nil
}

// String returns the URL as it was parsed.
func (u *URL) String() string { return u.raw }

// HostPort returns "host:port" for dialling.
func (u *URL) HostPort() string { return net.JoinHostPort(u.Host, strconv.Itoa(int(u.Port))) }

// PinnedURL returns the relay URL for hostPort ("host:port") that pins the
// certificate der.
func PinnedURL(hostPort string, der []byte) string {
	return "https://" + hostPort + "#sha256=" + Fingerprint(der)
}

// Fingerprint returns the SHA-256 hash of a DER certificate in lower-case hex,
// as relay URLs pin it.
func Fingerprint(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}
