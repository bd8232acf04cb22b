package aster_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/quic"
)

// rawConn dials the env's server with a bare transport connection, so tests
// can write arbitrary bytes.
func rawConn(t *testing.T, tk transportKind, e *env) transport.Conn {
	t.Helper()
	if tk.name != "quic" {
		t.Fatalf("rawConn: unsupported transport %s", tk.name)
	}
	d := quic.NewDialer(testutil.Key(t, 78), nil)
	t.Cleanup(func() { d.Close() })
	c, err := d.Dial(ctxT(t), e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(transport.ConnNoError, "") })
	return c
}

func header(t *testing.T, h wire.Header) []byte {
	t.Helper()
	b, err := wire.AppendHeader(nil, &h, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func data(t *testing.T, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return wire.AppendFrame(nil, 0, b)
}

// exchange writes raw bytes on a new stream, half-closes, and returns the
// trailer's status (nil for OK) and the data frames received.
func exchange(t *testing.T, c transport.Conn, raw []byte, closeWrite bool) (error, [][]byte) {
	t.Helper()
	st, err := c.OpenStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(raw); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		st.CloseWrite()
	}
	r := wire.NewReader(st, 0)
	defer r.Release()
	var frames [][]byte
	for {
		flags, payload, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("reading response: %v (after %d data frames)", err, len(frames))
		}
		if flags&wire.FlagTrailer != 0 {
			tr, err := wire.DecodeTrailer(payload)
			if err != nil {
				t.Fatal(err)
			}
			return tr.Err(), frames
		}
		frames = append(frames, bytes.Clone(payload))
	}
}

func frame(n uint32, flags byte, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, n)
	return append(append(b, flags), payload...)
}

func TestBadInput(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	echo := header(t, wire.Header{Service: "Test", Method: "echo"})
	cases := []struct {
		name string
		raw  []byte
		want status.Code
	}{
		{"zero length", frame(0, 0, nil), status.InvalidArgument},
		{"oversized length", frame(wire.DefaultMaxFrameSize+1, wire.FlagHeader, nil), status.ResourceExhausted},
		{"huge length", frame(0xFFFFFFFF, 0, nil), status.ResourceExhausted},
		{"unknown flags", frame(2, 0x40, []byte{0}), status.InvalidArgument},
		{"header and trailer flags", frame(2, wire.FlagHeader|wire.FlagTrailer, []byte{0}), status.InvalidArgument},
		{"first frame not a header", data(t, map[string]any{"text": "x"}), status.InvalidArgument},
		{"header not CBOR", frame(4, wire.FlagHeader, []byte{0xff, 0xff, 0xff}), status.InvalidArgument},
		{"header JSON garbage", frame(5, wire.FlagHeader, []byte("{abc")), status.InvalidArgument},
		{"header without method", header(t, wire.Header{Service: "Test"}), status.InvalidArgument},
		{"oversized header", frame(wire.MaxHeaderSize+2, wire.FlagHeader, nil), status.ResourceExhausted},
		{"unknown method", append(header(t, wire.Header{Service: "Test", Method: "missing"}), data(t, struct{}{})...), status.NotFound},
		{"unknown service", append(header(t, wire.Header{Service: "Missing", Method: "echo"}), data(t, struct{}{})...), status.NotFound},
		{"unknown codec", append(header(t, wire.Header{Service: "Test", Method: "echo", SerializationMode: "xml"}), data(t, struct{}{})...), status.InvalidArgument},
		{"payload does not decode", append(echo, frame(3, 0, []byte{0xa1, 0x64})...), status.InvalidArgument},
		{"payload wrong type", append(echo, data(t, map[string]any{"n": "not a number"})...), status.InvalidArgument},
		{"missing request", echo, status.InvalidArgument},
		{"truncated data frame", append(echo, frame(100, 0, []byte{1, 2, 3})...), status.InvalidArgument},
		{"trailer from client", append(echo, frame(2, wire.FlagTrailer, []byte{0xa0})...), status.InvalidArgument},
		{"bad compressed payload", append(echo, frame(5, wire.FlagCompressed, []byte{1, 2, 3, 4})...), status.InvalidArgument},
		{"endSession without id", append(header(t, wire.Header{Service: "_aster", Method: "endSession"}), data(t, struct{}{})...), status.InvalidArgument},
		{"end unknown session", append(header(t, wire.Header{Service: "_aster", Method: "endSession", SessionID: 5}), data(t, struct{}{})...), status.NotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err, _ := exchange(t, c, tc.raw, true)
			if got := status.CodeOf(err); got != tc.want {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// After all that, normal calls still work on the same connection and on
	// the typed client.
	err, frames := exchange(t, c, append(header(t, wire.Header{Service: "Test", Method: "echo"}), data(t, Msg{Text: "ok"})...), true)
	if err != nil || len(frames) != 1 {
		t.Fatalf("valid raw call: %v, %d frames", err, len(frames))
	}
	if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
		t.Fatal(err)
	}
}

func TestJSONHeaderAndCodec(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	raw := frame(0, 0, nil)[:0]
	hdr := []byte(`{"service":"Test","method":"echo","serializationMode":"json"}`)
	raw = wire.AppendFrame(raw, wire.FlagHeader, hdr)
	raw = wire.AppendFrame(raw, 0, []byte(`{"text":"from json","n":3}`))
	err, frames := exchange(t, c, raw, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 1 || !bytes.Contains(frames[0], []byte(`"text":"from json"`)) {
		t.Fatalf("got %q", frames)
	}
}

func TestCompressedRequest(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	payload, _ := cbor.Marshal(Msg{Text: string(bytes.Repeat([]byte("z"), 10000))})
	raw := append(header(t, wire.Header{Service: "Test", Method: "echo"}), wire.AppendFrame(nil, wire.FlagCompressed, wire.Compress(payload))...)
	err, frames := exchange(t, c, raw, true)
	if err != nil || len(frames) != 1 {
		t.Fatalf("compressed request: %v", err)
	}
	var m Msg
	if err := cbor.Unmarshal(frames[0], &m); err != nil || len(m.Text) != 10000 {
		t.Fatalf("echo of compressed request: %v (%d bytes)", err, len(m.Text))
	}
}

func TestServerEnforcesTimeout(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	c := rawConn(t, tk, e)
	start := time.Now()
	raw := append(header(t, wire.Header{Service: "Test", Method: "sleep", Timeout: 30}), data(t, Msg{N: 10000})...)
	err, _ := exchange(t, c, raw, true)
	if status.CodeOf(err) != status.DeadlineExceeded {
		t.Fatalf("got %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("server took %v to enforce a 30 ms budget", el)
	}
}

func TestClientVanishesMidStream(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	for _, how := range []string{"reset", "conn close"} {
		t.Run(how, func(t *testing.T) {
			c := rawConn(t, tk, e)
			st, err := c.OpenStream(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			raw := header(t, wire.Header{Service: "Test", Method: "sum"})
			for i := range 100 {
				raw = append(raw, data(t, Msg{N: i})...)
			}
			if _, err := st.Write(raw); err != nil {
				t.Fatal(err)
			}
			if how == "reset" {
				st.Reset(transport.CodeCancel)
			} else {
				c.Close(transport.ConnNoError, "bye")
			}
			// The server keeps serving others.
			if _, err := aster.CallUnary[Msg](ctxT(t), e.client, "Test.echo", &Msg{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestResetMidCallClient(t *testing.T) {
	// The server resets a stream (here: by closing the whole server) while a
	// client streams; the client sees UNAVAILABLE, not a hang.
	tk := transports[1]
	e := newEnv(t, tk)
	cs, err := aster.CallClientStream[Msg, Msg](ctxT(t), e.client, "Test.sum")
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if err := cs.Send(&Msg{N: 1}); err != nil {
		t.Fatal(err)
	}
	e.srv.Close()
	var sendErr error
	for i := 0; i < 100000 && sendErr == nil; i++ {
		sendErr = cs.Send(&Msg{N: i})
	}
	_, err = cs.CloseAndRecv()
	if c := status.CodeOf(err); c != status.Unavailable {
		t.Fatalf("got %v (send err %v)", err, sendErr)
	}
}

func TestDialUnknownEndpoint(t *testing.T) {
	nw := mem.NewNetwork()
	c := aster.NewClient(aster.Address{ID: [32]byte{1}}, aster.WithDialer(nw.Dialer(testutil.Key(t, 3))))
	defer c.Close()
	_, err := aster.CallUnary[Msg](ctxT(t), c, "Test.echo", &Msg{})
	wantCode(t, err, status.Unavailable)
}

// A timeout too large for a time.Duration means no deadline, not an
// overflow into the past.
func TestHugeTimeoutIsNoDeadline(t *testing.T) {
	tk := transports[1]
	e := newEnv(t, tk)
	for _, ms := range []uint64{9_223_372_036_854, 9_223_372_036_855, 1 << 63, ^uint64(0)} {
		c := rawConn(t, tk, e)
		raw := append(header(t, wire.Header{Service: "Test", Method: "echo", Timeout: ms}), data(t, Msg{Text: "t"})...)
		err, frames := exchange(t, c, raw, true)
		if err != nil || len(frames) != 1 {
			t.Fatalf("timeout %d ms: %v", ms, err)
		}
	}
}
