package relay

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
	"unsafe"

	"github.com/aster-go/aster/trust"
)

// seedFrames are valid frames of every type, as the tests and PROTOCOL.md
// examples build them.
func seedFrames() [][]byte {
	key, _ := trust.KeyFromSeed(bytes.Repeat([]byte{1}, 32))
	peer, _ := trust.KeyFromSeed(bytes.Repeat([]byte{2}, 32))
	nonce := make([]byte, nonceLen)
	for i := range nonce {
		nonce[i] = byte(i)
	}
	exporter := bytes.Repeat([]byte{0xee}, exporterLen)
	return [][]byte{
		challengeFrame(nonce),
		registerFrame(key, nonce, exporter),
		appendFrame(nil, frameAccepted),
		datagramFrame(frameSend, trust.IDOf(peer), []byte{0x40, 0x01, 0x02, 0x03}),
		datagramFrame(frameRecv, trust.IDOf(key), bytes.Repeat([]byte{0xc3}, MaxDatagramSize)),
		closeFrame(CloseReplaced, "replaced"),
		closeFrame(CloseNormal, ""),
		appendFrame(nil, framePing, []byte("12345678")),
		appendFrame(nil, framePong, []byte("12345678")),
		appendFrame(nil, 0x9f, []byte("future")),
	}
}

// FuzzRelayFrame reads a byte stream as a relay connection does (readFrame,
// then parseFrame on each frame) and checks that nothing panics, that a
// frame body never exceeds MaxFrameBody nor lands outside the reader's
// fixed buffer (lengths are checked before anything is read or allocated),
// that every error wraps ErrProtocol or is an end of input, and that every
// accepted frame encodes back to the bytes it was read from (CLOSE: to a
// frame that parses to the same close).
func FuzzRelayFrame(f *testing.F) {
	seeds := seedFrames()
	for _, s := range seeds {
		f.Add(s)
	}
	f.Add(bytes.Join(seeds, nil))
	f.Add([]byte{frameSend, 0xff, 0xff})                      // length beyond MaxFrameBody
	f.Add(appendFrame(nil, frameClose, []byte{4, 0xff, 'x'})) // reason not UTF-8
	f.Add(appendFrame(nil, frameClose))                       // no code
	f.Add(appendFrame(nil, framePing, []byte{1}))             // short PING
	f.Add(appendFrame(nil, 0x42))                             // unknown type below 0x80
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		buf := make([]byte, MaxFrameBody)
		off := 0
		for {
			typ, body, err := readFrame(br, buf)
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrProtocol) {
					t.Fatalf("readFrame: unexpected error %v", err)
				}
				return
			}
			if len(body) > MaxFrameBody {
				t.Fatalf("body of %d bytes, more than MaxFrameBody", len(body))
			}
			if len(body) > 0 && unsafe.SliceData(body) != unsafe.SliceData(buf) {
				t.Fatal("readFrame returned a body outside the caller's buffer")
			}
			raw := data[off : off+frameHeaderLen+len(body)]
			off += len(raw)

			fr, err := parseFrame(typ, body)
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("parseFrame(%#x): error %v does not wrap ErrProtocol", typ, err)
				}
				if typ >= frameOptional {
					t.Fatalf("parseFrame refused optional type %#x: %v", typ, err)
				}
				continue
			}
			enc := fr.appendTo(nil)
			if typ != frameClose {
				if !bytes.Equal(enc, raw) {
					t.Fatalf("frame %#x re-encodes differently:\n read %x\n enc  %x", typ, raw, enc)
				}
				continue
			}
			if !utf8.ValidString(fr.close.Reason) {
				t.Fatalf("CLOSE reason %q is not UTF-8", fr.close.Reason)
			}
			ok := len(body) > 0 && len(body)-1 <= MaxReasonLen && utf8.Valid(body[1:])
			if ok && !bytes.Equal(enc, raw) {
				t.Fatalf("valid CLOSE re-encodes differently:\n read %x\n enc  %x", raw, enc)
			}
			again, err := parseFrame(enc[0], enc[frameHeaderLen:])
			if err != nil {
				t.Fatalf("re-encoded CLOSE %x does not parse: %v", enc, err)
			}
			if !strings.HasPrefix(fr.close.Reason, again.close.Reason) || again.close.Code != fr.close.Code {
				t.Fatalf("CLOSE %+v re-encodes as %+v", fr.close, again.close)
			}
		}
	})
}

// TestParseFrame checks the layout rules of each frame type, including
// the ones the fuzzer found easiest to break.
func TestParseFrame(t *testing.T) {
	for _, s := range seedFrames() {
		f, err := parseFrame(s[0], s[frameHeaderLen:])
		if err != nil {
			t.Errorf("seed %x: %v", s[:min(len(s), 8)], err)
			continue
		}
		if enc := f.appendTo(nil); !bytes.Equal(enc, s) {
			t.Errorf("seed %x re-encodes as %x", s, enc)
		}
	}
	bad := map[string][]byte{
		"CHALLENGE, short nonce":   appendFrame(nil, frameChallenge, []byte{Version}, make([]byte, nonceLen-1)),
		"CHALLENGE, version 2":     appendFrame(nil, frameChallenge, []byte{2}, make([]byte, nonceLen)),
		"REGISTER, no signature":   appendFrame(nil, frameRegister, []byte{Version}, make([]byte, idLen)),
		"ACCEPTED with a body":     appendFrame(nil, frameAccepted, []byte{0}),
		"SEND without a datagram":  appendFrame(nil, frameSend, make([]byte, idLen)),
		"RECV without a datagram":  appendFrame(nil, frameRecv, make([]byte, idLen)),
		"RECV, datagram too large": appendFrame(nil, frameRecv, make([]byte, idLen+MaxDatagramSize+1)),
		"PING of 1 byte":           appendFrame(nil, framePing, []byte{1}),
		"PONG of 9 bytes":          appendFrame(nil, framePong, make([]byte, 9)),
		"unknown type 0x42":        appendFrame(nil, 0x42),
	}
	for name, b := range bad {
		if _, err := parseFrame(b[0], b[frameHeaderLen:]); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: got %v, want an ErrProtocol error", name, err)
		}
	}
	f, err := parseFrame(frameClose, nil)
	if err != nil || f.close.Code != CloseProtocol {
		t.Errorf("empty CLOSE: %+v, %v; want a CloseProtocol close", f.close, err)
	}
}

// TestCloseFrameCutsAtRuneBoundary checks that a CLOSE reason longer than
// MaxReasonLen is cut without splitting a UTF-8 character.
func TestCloseFrameCutsAtRuneBoundary(t *testing.T) {
	reason := strings.Repeat("a", MaxReasonLen-1) + "é and more"
	b := closeFrame(CloseLimit, reason)
	got := parseClose(b[frameHeaderLen:])
	if want := strings.Repeat("a", MaxReasonLen-1); got.Reason != want {
		t.Errorf("reason cut to %q (%d bytes), want %d bytes of 'a'", got.Reason[MaxReasonLen-4:], len(got.Reason), len(want))
	}
}

// TestParseFrameNoAllocs checks that the frames of the packet path decode
// without allocating.
func TestParseFrameNoAllocs(t *testing.T) {
	send := datagramFrame(frameSend, trust.EndpointID{1}, make([]byte, 1200))
	ping := appendFrame(nil, framePing, []byte("12345678"))
	n := testing.AllocsPerRun(100, func() {
		frameSink, _ = parseFrame(send[0], send[frameHeaderLen:])
		frameSink, _ = parseFrame(ping[0], ping[frameHeaderLen:])
	})
	if n != 0 {
		t.Errorf("parseFrame allocates %v times per SEND and PING", n)
	}
}

var frameSink frame

// FuzzParseURL checks that ParseURL never panics and that a URL it accepts,
// written again from its parts, parses to the same relay.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{
		"https://relay.example:4433",
		"https://127.0.0.1:443#sha256=" + strings.Repeat("ab", 32),
		"https://[::1]:8443/",
		"http://relay.example",
		"https://user@relay.example",
		"https://relay.example:0",
		"https://relay.example#sha256=zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			return
		}
		if u.Host == "" || u.Port == 0 {
			t.Fatalf("ParseURL(%q) accepted %+v", s, u)
		}
		canon := "https://" + u.HostPort()
		if u.HasPin {
			canon += "#sha256=" + hex.EncodeToString(u.Pin[:])
		}
		again, err := ParseURL(canon)
		if err != nil || again.HostPort() != u.HostPort() || again.Pin != u.Pin || again.HasPin != u.HasPin {
			t.Fatalf("ParseURL(%q) = %+v, reparsed %+v, %v", s, u, again, err)
		}
	})
}
