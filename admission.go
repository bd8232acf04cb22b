package aster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/trust/enroll"
)

// The admission exchange (PROTOCOL.md, "Admission"): the first stream a
// client opens on a connection is a unary call to _aster.admit carrying an
// admitHello; the server answers with an admitVerdict, or with a trailer
// whose code is UNAUTHENTICATED and then closes the connection with
// transport.ConnRefused.

// admitHello is the request of _aster.admit.
type admitHello struct {
	// Role the client asks to be admitted as; "" means consumer.
	Role string `cbor:"role,omitempty" json:"role,omitempty"`
	// Credential is the CBOR-encoded enrollment credential (enroll.Credential.Encode),
	// absent when the client has none.
	Credential []byte `cbor:"credential,omitempty" json:"credential,omitempty"`
}

// admitVerdict is the response of _aster.admit.
type admitVerdict struct {
	Role         string   `cbor:"role" json:"role"`
	Capabilities []string `cbor:"capabilities" json:"capabilities"`
	Unrestricted bool     `cbor:"unrestricted" json:"unrestricted"`
	// StreamReuse, when above 0, offers stream reuse (PROTOCOL.md 23):
	// the client may keep up to that many idle streams for further calls.
	// Absent (0) from servers that do not offer it.
	StreamReuse int `cbor:"streamReuse,omitempty" json:"streamReuse,omitempty"`
}

// streamReuseOffer is the verdict's streamReuse for a server's options.
func streamReuseOffer(o *serverOptions) int {
	if o.limits.streamIdle <= 0 {
		return 0
	}
	return DefaultMaxIdleStreams
}

// Admission limits.
const (
	// admissionTimeout bounds the whole exchange on the server (the config
	// field hook_timeout_ms defaults to the same 5 s).
	admissionTimeout = 5 * time.Second
	// admissionLinger is how long a server waits, after sending a refusal,
	// for the client to read it and close before it closes the connection.
	admissionLinger = time.Second
	// maxAdmitFrame caps frames of the admission exchange.
	maxAdmitFrame = 32 << 10
)

// gateAdmit runs the server side of the admission exchange on c. It returns
// the peer and the connection to accept calls from: c, or, when the first
// stream was an ordinary call admitted through an open gate, a wrapper that
// hands that stream back first.
func gateAdmit(ctx context.Context, o *serverOptions, g *enroll.Gate, c transport.Conn) (handler.Peer, transport.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, admissionTimeout)
	defer cancel()
	go func() { // the exchange also ends when the connection does
		select {
		case <-c.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	st, err := c.AcceptStream(ctx)
	if err != nil {
		return handler.Peer{}, nil, fmt.Errorf("no admission exchange: %w", err)
	}
	// Reading is bounded by ctx: reset the stream when it ends.
	stop := context.AfterFunc(ctx, func() { st.Reset(transport.CodeCancel) })
	defer stop()

	rec := &recorder{r: st}
	r := wire.NewReader(rec, wire.MaxHeaderSize+1)
	defer r.Release()
	hdr, jsonMeta, err := readFirstHeader(r)
	if err != nil {
		refuse(ctx, c, st, status.FromError(err), jsonMeta)
		return handler.Peer{}, nil, err
	}
	if hdr.Service != wire.ControlService || hdr.Method != wire.MethodAdmit {
		// A client that does not speak admission: an anonymous consumer.
		if grant, aerr := g.Admit(c.RemoteID(), enroll.RoleConsumer, nil); aerr == nil && stop() {
			first := &replayStream{Stream: st, r: io.MultiReader(bytes.NewReader(rec.buf), st)}
			return handler.Peer{ID: c.RemoteID(), Addr: c.RemoteAddr(), Unrestricted: grant.Unrestricted}, &pendingConn{Conn: c, first: first}, nil
		}
		err := status.Errorf(status.Unauthenticated, "admission required: the first call must be %s.%s, got %s.%s", wire.ControlService, wire.MethodAdmit, hdr.Service, hdr.Method)
		refuse(ctx, c, st, err, jsonMeta)
		return handler.Peer{}, nil, err
	}
	rec.buf, rec.off = nil, true
	hello, codecName, err := readHello(r, o, hdr)
	if err != nil {
		refuse(ctx, c, st, status.FromError(err), jsonMeta)
		return handler.Peer{}, nil, err
	}
	var cred *enroll.Credential
	var decodeErr error
	if len(hello.Credential) > 0 {
		cred, decodeErr = enroll.Decode(hello.Credential)
	}
	grant, err := g.Admit(c.RemoteID(), enroll.Role(hello.Role), cred)
	if err != nil {
		var rf *enroll.Refusal
		if errors.As(err, &rf) && decodeErr != nil {
			rf.Message, rf.Reason = enroll.MsgCredentialRejected, decodeErr
		}
		se := status.New(status.Unauthenticated, enroll.MsgCredentialRejected)
		if rf != nil {
			se = rf.Status()
		}
		refuse(ctx, c, st, se, jsonMeta)
		return handler.Peer{}, nil, err
	}
	v := admitVerdict{Role: string(grant.Role), Capabilities: grant.Capabilities, Unrestricted: grant.Unrestricted, StreamReuse: streamReuseOffer(o)}
	if v.Capabilities == nil {
		v.Capabilities = []string{}
	}
	if err := writeVerdict(st, o, codecName, &v, jsonMeta); err != nil {
		return handler.Peer{}, nil, fmt.Errorf("sending admission verdict: %w", err)
	}
	if cred != nil && !grant.Unrestricted {
		// The grant is the credential's: it ends when the credential does.
		closeAtExpiry(o, g, c, cred)
	}
	return handler.Peer{ID: c.RemoteID(), Addr: c.RemoteAddr(), Capabilities: grant.Capabilities, Attributes: grant.Attributes, Unrestricted: grant.Unrestricted}, c, nil
}

// credentialExpired is the reason a connection is closed with when the
// credential it was admitted with expires (PROTOCOL.md 17.2.3).
const credentialExpired = "credential expired"

// closeAtExpiry closes c, with ConnRefused and the reason "credential
// expired", once the credential it was admitted with is no longer valid by
// the gate's clock (expires_at plus the clock skew): otherwise a
// connection kept open would keep its capabilities for as long as it
// lasts. The goroutine it starts ends with the connection.
func closeAtExpiry(o *serverOptions, g *enroll.Gate, c transport.Conn, cred *enroll.Credential) {
	p := g.Policy()
	t := time.NewTimer(cred.ExpiresAt.Add(p.ClockSkew).Sub(p.Now()))
	go func() {
		defer t.Stop()
		select {
		case <-c.Done():
		case <-t.C:
			o.logger.Info("aster: closing a connection whose credential expired", "peer", c.RemoteID().Short(),
				"name", cred.Name, "expired", enroll.FormatTime(cred.ExpiresAt))
			c.Close(transport.ConnRefused, credentialExpired)
		}
	}()
}

// recorder keeps what is read through it (until off), so that a stream the
// gate peeked at can be served from its first byte.
type recorder struct {
	r   io.Reader
	buf []byte
	off bool
}

func (rc *recorder) Read(p []byte) (int, error) {
	n, err := rc.r.Read(p)
	if !rc.off {
		rc.buf = append(rc.buf, p[:n]...)
	}
	return n, err
}

// replayStream is a stream whose first bytes are served again.
type replayStream struct {
	transport.Stream
	r io.Reader
}

func (s *replayStream) Read(p []byte) (int, error) { return s.r.Read(p) }

// pendingConn hands out first before the connection's next streams. Only
// the connection's serving goroutine calls AcceptStream.
type pendingConn struct {
	transport.Conn
	first transport.Stream
}

func (c *pendingConn) AcceptStream(ctx context.Context) (transport.Stream, error) {
	if st := c.first; st != nil {
		c.first = nil
		return st, nil
	}
	return c.Conn.AcceptStream(ctx)
}

// readFirstHeader reads the first frame of the connection's first stream,
// which must be a call header.
func readFirstHeader(r *wire.Reader) (*wire.Header, bool, error) {
	flags, payload, err := r.ReadFrame()
	if err != nil {
		return nil, false, status.Errorf(status.Unauthenticated, "admission required: %v", err)
	}
	if flags&wire.FlagHeader == 0 {
		return nil, false, status.New(status.Unauthenticated, "admission required: the first stream must be the _aster.admit call")
	}
	jsonMeta := wire.IsJSON(payload)
	hdr, err := wire.DecodeHeader(payload)
	return hdr, jsonMeta, err
}

// readHello reads the admission request after its header: one data frame.
func readHello(r *wire.Reader, o *serverOptions, hdr *wire.Header) (h admitHello, codecName string, err error) {
	codecName = hdr.SerializationMode
	if codecName == "" {
		codecName = cbor.Name
	}
	cd, ok := o.codecs[codecName]
	if !ok {
		return h, "", status.Errorf(status.InvalidArgument, "unsupported serialization mode %q", codecName)
	}
	flags, payload, err := r.ReadFrame()
	if err != nil {
		if err == io.EOF {
			return h, codecName, status.New(status.InvalidArgument, "admission call without a request")
		}
		return h, codecName, status.Errorf(status.InvalidArgument, "admission request: %v", err)
	}
	if flags&(wire.FlagHeader|wire.FlagTrailer) != 0 {
		return h, codecName, status.Errorf(status.InvalidArgument, "unexpected %s frame in the admission call", wire.FlagString(flags))
	}
	data, err := wire.DataPayload(flags, payload, maxAdmitFrame)
	if err != nil {
		return h, codecName, err
	}
	if len(data) > maxAdmitFrame {
		return h, codecName, wire.FrameTooLarge(uint64(len(data)), maxAdmitFrame)
	}
	if err := cd.Unmarshal(data, &h); err != nil {
		return h, codecName, status.Errorf(status.InvalidArgument, "admission request does not decode: %v", err)
	}
	return h, codecName, nil
}

func writeVerdict(st transport.Stream, o *serverOptions, codecName string, v *admitVerdict, jsonMeta bool) error {
	body, err := o.codecs[codecName].Marshal(v)
	if err != nil {
		return err
	}
	buf := wire.AppendFrame(nil, 0, body)
	tr := wire.Trailer{}
	if buf, err = wire.AppendTrailer(buf, &tr, jsonMeta); err != nil {
		return err
	}
	if _, err := st.Write(buf); err != nil {
		return err
	}
	// The client may stop reading as soon as it has the verdict, which can
	// make Close report a reset: the verdict was written either way.
	st.Close()
	return nil
}

// refuse sends the refusal trailer and gives the client a moment to read it
// and close; the caller then closes the connection with ConnRefused.
func refuse(ctx context.Context, c transport.Conn, st transport.Stream, se *status.Error, jsonMeta bool) {
	tr := wire.TrailerFor(se)
	buf, err := wire.AppendTrailer(nil, &tr, jsonMeta)
	if err == nil {
		if _, err = st.Write(buf); err == nil {
			st.Close()
		}
	}
	if err != nil {
		st.Reset(transport.CodeInternal)
		return
	}
	t := time.NewTimer(admissionLinger)
	defer t.Stop()
	select {
	case <-c.Done():
	case <-t.C:
	case <-ctx.Done():
	}
}

// admitOpen answers _aster.admit on a server without a gate: everyone is
// admitted unrestricted.
//
// The verdict states the connection's actual grant: unrestricted on a
// server without admission, but on a connection admitted by a gate
// (a later _aster.admit) or by WithAdmission, the capabilities it was
// granted, never an unrestricted verdict it does not have.
func (c *serverCall) admitOpen() error {
	var h admitHello
	if err := handler.RecvOne(c, &h, handler.Requests); err != nil {
		return err
	}
	role := h.Role
	if role == "" {
		role = string(enroll.RoleConsumer)
	}
	p := c.sc.peer
	caps := p.Capabilities
	if caps == nil {
		caps = []string{}
	}
	return c.Send(&admitVerdict{Role: role, Capabilities: caps, Unrestricted: p.Unrestricted, StreamReuse: streamReuseOffer(&c.sc.srv.opts)})
}
