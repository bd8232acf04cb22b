package aster

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster/codec"
	"github.com/aster-go/aster/codec/cbor"
	"github.com/aster-go/aster/contract"
	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/wire"
	"github.com/aster-go/aster/middleware"
	"github.com/aster-go/aster/status"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/transport/relay"
	"github.com/aster-go/aster/transport/webtransport"
	"github.com/aster-go/aster/trust"
	"github.com/aster-go/aster/trust/enroll"
)

// Caller starts calls; Client and Session implement it, and client
// middleware wraps it. The typed call functions (CallUnary, ...) take one.
type Caller = middleware.Caller

// Client calls the services of one endpoint. It dials lazily and redials
// when the connection is lost. A Client is safe for concurrent use.
type Client struct {
	addr   Address
	opts   clientOptions
	caller Caller // middleware chain around the transport path
	callID atomic.Uint64
	sessID atomic.Uint64

	mu       sync.Mutex
	conn     transport.Conn
	dialing  chan struct{} // non-nil while a dial is in progress
	closed   bool
	contract *fetchedContract
	methods  map[methodKey]methodMeta // from the last contract fetched; kept across redials
	ownsDial bool
}

type fetchedContract struct {
	c  *contract.Contract
	id string
}

type methodKey struct {
	service, method string
	version         uint32
}

type methodMeta struct {
	idempotent bool
	requires   trust.Requirement
}

// indexMethods indexes what client middleware needs to know of each method
// (version 0 stands for the highest version).
func indexMethods(ct *contract.Contract) map[methodKey]methodMeta {
	idx := map[methodKey]methodMeta{}
	highest := map[string]uint32{}
	for _, s := range ct.Services {
		highest[s.Name] = max(highest[s.Name], s.Version)
	}
	for _, s := range ct.Services {
		for _, m := range s.Methods {
			mm := methodMeta{idempotent: m.Idempotent}
			if m.Requires != nil {
				if r, err := m.Requires.Requirement(); err == nil {
					mm.requires = r
				}
			}
			idx[methodKey{s.Name, m.Name, s.Version}] = mm
			if s.Version == highest[s.Name] {
				idx[methodKey{s.Name, m.Name, 0}] = mm
			}
		}
	}
	return idx
}

type clientOptions struct {
	key      trust.SecretKey
	dialer   transport.Dialer
	conn     transport.Conn
	mw       []middleware.Client
	codec    codec.Codec
	maxFrame uint32
	quic     *quic.Config
	noRelay  bool               // WithClientRelay(false)
	noIP     bool               // WithClientIPTransports(false)
	cred     *enroll.Credential // presented at admission (admission.go)
	err      error              // an option that failed (e.g. an unreadable credential file)
}

// ClientOption configures a Client.
type ClientOption func(*clientOptions)

// WithClientKey sets the client's identity key. Default: a fresh random key.
func WithClientKey(k trust.SecretKey) ClientOption { return func(o *clientOptions) { o.key = k } }

// WithDialer sets the transport used to reach the server. Default: direct
// QUIC with the client's key; when the address carries a relay, direct QUIC
// with a fallback to the relay (see WithClientRelay); WebTransport when the
// address has a WebTransport URL and neither a direct address nor a relay.
func WithDialer(d transport.Dialer) ClientOption { return func(o *clientOptions) { o.dialer = d } }

// WithConn makes the client use an established connection instead of
// dialling. The client does not redial when it closes.
func WithConn(c transport.Conn) ClientOption { return func(o *clientOptions) { o.conn = c } }

// WithClientMiddleware adds client middleware (outermost first).
func WithClientMiddleware(mw ...middleware.Client) ClientOption {
	return func(o *clientOptions) { o.mw = append(o.mw, mw...) }
}

// WithClientCodec sets the codec for request and response messages.
// Default: CBOR.
func WithClientCodec(c codec.Codec) ClientOption { return func(o *clientOptions) { o.codec = c } }

// WithClientMaxFrameSize caps the size of one received frame. Default and
// maximum 16 MiB.
func WithClientMaxFrameSize(n uint32) ClientOption {
	return func(o *clientOptions) {
		if n > 0 && n <= wire.DefaultMaxFrameSize {
			o.maxFrame = n
		}
	}
}

// WithClientQUICConfig sets the QUIC configuration of the default dialer.
func WithClientQUICConfig(c *quic.Config) ClientOption { return func(o *clientOptions) { o.quic = c } }

// WithClientRelay(false) keeps the default dialer from going through the
// relay named in the server's address. Default: true, the client dials the
// direct addresses first and falls back to the relay when they do not
// answer (transport/relay.FallbackDialer).
func WithClientRelay(enabled bool) ClientOption {
	return func(o *clientOptions) { o.noRelay = !enabled }
}

// WithClientIPTransports(false) keeps the default dialer from dialling
// the server's direct addresses: it goes through the relay only. Default:
// true.
func WithClientIPTransports(enabled bool) ClientOption {
	return func(o *clientOptions) { o.noIP = !enabled }
}

// Dial returns a Client for the endpoint at addr (an "aster1…" address) and
// connects to it. The connection is verified against the address's endpoint
// id: a peer holding another key fails with UNAUTHENTICATED.
func Dial(ctx context.Context, addr string, opts ...ClientOption) (*Client, error) {
	a, err := ParseAddress(addr)
	if err != nil {
		return nil, status.Wrap(status.InvalidArgument, err)
	}
	return DialAddress(ctx, a, opts...)
}

// DialAddress is Dial with a parsed Address.
func DialAddress(ctx context.Context, addr Address, opts ...ClientOption) (*Client, error) {
	c := NewClient(addr, opts...)
	if _, err := c.getConn(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NewClient returns a Client for addr without connecting; the first call
// dials.
func NewClient(addr Address, opts ...ClientOption) *Client {
	o := clientOptions{codec: cbor.Codec{}, maxFrame: wire.DefaultMaxFrameSize}
	for _, fn := range opts {
		fn(&o)
	}
	if o.key == nil {
		o.key = trust.GenerateKey()
	}
	c := &Client{addr: addr, opts: o}
	if o.conn != nil && o.dialer == nil {
		// The given connection still goes through admission on first use.
		c.opts.dialer = &connDialer{conn: o.conn}
		c.ownsDial = true
	}
	if o.dialer == nil && o.conn == nil {
		useRelay := addr.Relay != "" && !o.noRelay
		switch {
		case len(addr.Direct) == 0 && addr.WebTransport != "" && !useRelay:
			// Only reachable over WebTransport.
			o.dialer = webtransport.NewDialer(o.key, nil)
		case !useRelay && !o.noIP:
			o.dialer = quic.NewDialer(o.key, o.quic)
		default:
			// Direct when it can, through the relay when it cannot.
			f := &relay.FallbackDialer{}
			if !o.noIP {
				f.Direct = quic.NewDialer(o.key, o.quic)
			}
			if useRelay {
				f.Relay = relay.NewDialer(o.key, &relay.Config{QUIC: o.quic})
			}
			o.dialer = f
		}
		c.opts.dialer = o.dialer
		c.ownsDial = true
	}
	c.caller = middleware.ChainClient(o.mw...)(middleware.CallerFunc(c.newTransportStream))
	return c
}

// Address returns the address the client calls.
func (c *Client) Address() Address { return c.addr }

// Close closes the connection. Calls in flight fail with UNAVAILABLE.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	if conn != nil {
		conn.Close(transport.ConnNoError, "client closed")
	}
	if cl, ok := c.opts.dialer.(io.Closer); ok && c.ownsDial {
		cl.Close()
	}
	return nil
}

// getConn returns the live connection, dialling if there is none.
func (c *Client) getConn(ctx context.Context) (transport.Conn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, status.New(status.Unavailable, "client closed")
		}
		if c.opts.err != nil {
			c.mu.Unlock()
			return nil, status.Wrap(status.InvalidArgument, c.opts.err)
		}
		if c.conn != nil && !isDone(c.conn.Done()) {
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		}
		if c.opts.dialer == nil {
			c.mu.Unlock()
			return nil, status.New(status.Unavailable, "connection closed")
		}
		if wait := c.dialing; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, status.FromError(ctx.Err())
			}
		}
		c.dialing = make(chan struct{})
		c.contract = nil
		c.mu.Unlock()

		conn, err := c.opts.dialer.Dial(ctx, c.addr)
		var admitErr error
		if err == nil {
			if admitErr = c.admit(ctx, conn); admitErr != nil {
				conn.Close(transport.ConnRefused, "admission failed")
			}
		}
		c.mu.Lock()
		close(c.dialing)
		c.dialing = nil
		if err == nil && c.closed {
			conn.Close(transport.ConnNoError, "client closed")
			err = errors.New("client closed")
		}
		if err != nil {
			c.mu.Unlock()
			return nil, dialError(c.addr, err)
		}
		if admitErr != nil {
			c.mu.Unlock()
			return nil, admitErr
		}
		c.conn = conn
		c.mu.Unlock()
		return conn, nil
	}
}

func dialError(a Address, err error) error {
	switch {
	case errors.Is(err, transport.ErrPeerMismatch):
		return status.Errorf(status.Unauthenticated, "dial %s: %w", a.ID.Short(), err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(status.DeadlineExceeded, "dial %s: %w", a.ID.Short(), err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(status.Canceled, "dial %s: %w", a.ID.Short(), err)
	}
	return status.Errorf(status.Unavailable, "dial %s: %w", a.ID.Short(), err)
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// NewStream starts a call through the client's middleware. It fills in
// call.Peer and, once the client has fetched the server's contract (see
// Contract; for example right after Dial), the method's idempotent flag and
// capability requirement, so that middleware such as Retry can act on them.
func (c *Client) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	if call.Peer.IsZero() {
		call.Peer = c.addr.ID
	}
	c.mu.Lock()
	methods := c.methods
	c.mu.Unlock()
	if methods != nil {
		if m, ok := methods[methodKey{call.Service, call.Method, call.Version}]; ok {
			call.Idempotent = call.Idempotent || m.idempotent
			if call.Requires == nil {
				call.Requires = m.requires
			}
		}
	}
	return c.caller.NewStream(ctx, call)
}

// Contract fetches the server's contract (cached per connection) and returns
// it with its id.
func (c *Client) Contract(ctx context.Context) (*contract.Contract, string, error) {
	conn, err := c.getConn(ctx)
	if err != nil {
		return nil, "", err
	}
	c.mu.Lock()
	fc := c.contract
	c.mu.Unlock()
	if fc != nil {
		return fc.c, fc.id, nil
	}
	cs, err := c.openStream(ctx, conn, &middleware.Call{Service: wire.ControlService, Method: wire.MethodContract, Pattern: handler.PatternUnary})
	if err != nil {
		return nil, "", err
	}
	defer cs.Close()
	// The server answers without reading the request, so Send may see the
	// call already ended (io.EOF); the answer is still read below.
	if err := sendOne(cs, struct{}{}); err != nil {
		return nil, "", err
	}
	raw, err := cs.recvRaw()
	if err != nil {
		return nil, "", err
	}
	raw = bytes.Clone(raw) // recvRaw's bytes are valid only until the next read
	if err := cs.Recv(nil); err != io.EOF {
		if err == nil {
			err = status.New(status.Internal, "contract call sent more than one message")
		}
		return nil, "", err
	}
	ct, err := contract.Decode(raw)
	if err != nil {
		return nil, "", status.Wrap(status.Internal, err)
	}
	fc = &fetchedContract{c: ct, id: contract.ID(raw)}
	methods := indexMethods(ct)
	c.mu.Lock()
	if c.conn == conn {
		c.contract = fc
	}
	c.methods = methods
	c.mu.Unlock()
	return fc.c, fc.id, nil
}

// newTransportStream is the innermost Caller: it opens a stream on the
// connection and sends the call header.
func (c *Client) newTransportStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromError(err)
	}
	conn, err := c.getConn(ctx)
	if err != nil {
		return nil, err
	}
	return c.openStream(ctx, conn, call)
}

func (c *Client) openStream(ctx context.Context, conn transport.Conn, call *middleware.Call) (*clientStream, error) {
	h := wire.Header{
		Service: call.Service, Method: call.Method, Version: call.Version,
		CallID: c.callID.Add(1), Metadata: call.Metadata, SessionID: call.SessionID,
	}
	if c.opts.codec.Name() != cbor.Name {
		h.SerializationMode = c.opts.codec.Name()
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return nil, status.New(status.DeadlineExceeded, "deadline exceeded before the call started")
		}
		h.Timeout = uint64((left + time.Millisecond - 1) / time.Millisecond)
	}
	if err := h.Validate(); err != nil {
		return nil, err
	}
	st, err := conn.OpenStream(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromError(ctx.Err())
		}
		return nil, status.Wrap(status.Unavailable, err)
	}
	cs := &clientStream{st: st, ctx: ctx, codec: c.opts.codec, pattern: call.Pattern}
	cs.r.Reset(st, c.opts.maxFrame)
	cs.w.Reset(st)
	cs.maxFrame = c.opts.maxFrame
	if call.Pattern.ClientStreams() {
		cs.w.SetStreaming()
	}
	if err := cs.w.Append(func(b []byte) ([]byte, error) { return wire.AppendHeader(b, &h, false) }); err != nil {
		st.Reset(transport.CodeInternal)
		return nil, status.Wrap(status.Internal, err)
	}
	if ctx.Done() != nil {
		cs.stop = context.AfterFunc(ctx, cs.cancel)
	}
	return cs, nil
}

// clientStream is the transport-level middleware.ClientStream.
type clientStream struct {
	st       transport.Stream
	ctx      context.Context
	codec    codec.Codec
	pattern  handler.Pattern
	r        wire.Reader
	w        wire.Writer
	maxFrame uint32
	stop     func() bool

	sendClosed bool
	// Message and byte counts (Send and Recv may run concurrently).
	sentMsgs, sentBytes, recvMsgs, recvBytes atomic.Int64

	mu       sync.Mutex // guards done, err, trailer, released
	done     bool
	err      error
	trailer  map[string]string
	released bool
}

// cancel runs when ctx is done before the call finished.
func (cs *clientStream) cancel() {
	code := transport.CodeCancel
	if errors.Is(cs.ctx.Err(), context.DeadlineExceeded) {
		code = transport.CodeDeadline
	}
	cs.st.Reset(code)
}

func (cs *clientStream) Send(msg any) error {
	if cs.sendClosed {
		return status.New(status.FailedPrecondition, "send after CloseSend")
	}
	err := cs.w.Append(func(b []byte) ([]byte, error) {
		b, off := wire.BeginFrame(b, 0)
		b, err := cs.codec.AppendMarshal(b, msg)
		if err != nil {
			return b, status.Errorf(status.InvalidArgument, "request does not encode: %v", err)
		}
		n := len(b) - off - 4
		if n > int(cs.maxFrame) {
			return b, wire.FrameTooLarge(uint64(n), uint64(cs.maxFrame))
		}
		wire.EndFrame(b, off)
		cs.sentMsgs.Add(1)
		cs.sentBytes.Add(int64(n - 1))
		return b, nil
	})
	if err != nil {
		return cs.sendError(err)
	}
	return nil
}

// Stats implements middleware.StatsReporter.
func (cs *clientStream) Stats() middleware.StreamStats {
	return middleware.StreamStats{
		SentMessages: cs.sentMsgs.Load(), SentBytes: cs.sentBytes.Load(),
		ReceivedMessages: cs.recvMsgs.Load(), ReceivedBytes: cs.recvBytes.Load(),
	}
}

func (cs *clientStream) sendError(err error) error {
	if _, ok := err.(*status.Error); ok {
		return err
	}
	if ctxErr := cs.ctx.Err(); ctxErr != nil {
		return status.FromError(ctxErr)
	}
	// The stream broke; as in gRPC, the call's status is reported by Recv.
	return io.EOF
}

func (cs *clientStream) CloseSend() error {
	if cs.sendClosed {
		return nil
	}
	cs.sendClosed = true
	if err := cs.w.Flush(); err != nil {
		return cs.sendError(err)
	}
	if err := cs.st.CloseWrite(); err != nil {
		return cs.sendError(err)
	}
	return nil
}

// recvRaw returns the next data frame's bytes undecoded (valid until the
// next Recv).
func (cs *clientStream) recvRaw() ([]byte, error) {
	for {
		cs.mu.Lock()
		if cs.done {
			err := cs.err
			cs.mu.Unlock()
			return nil, err
		}
		cs.mu.Unlock()
		flags, payload, err := cs.r.ReadFrame()
		if err != nil {
			if err == io.EOF {
				err = status.New(status.Unavailable, "stream ended without a trailer")
			} else {
				err = cs.mapErr(err)
			}
			return nil, cs.end(err, nil)
		}
		switch {
		case flags&wire.FlagTrailer != 0:
			var t wire.Trailer
			if err := wire.DecodeTrailerInto(payload, &t); err != nil {
				return nil, cs.end(err, nil)
			}
			res := t.Err()
			if res == nil {
				res = io.EOF
				// Read the FIN that follows the trailer (normally in the
				// same packet). Closing a QUIC stream whose end was not
				// read sends STOP_SENDING, and the server answers with
				// RESET_STREAM: two extra frames per call, which halved
				// unary throughput at 32 concurrent callers.
				cs.r.WaitEOF()
			}
			return nil, cs.end(res, t.Metadata)
		case flags&wire.FlagHeader != 0:
			return nil, cs.end(status.New(status.Internal, "unexpected header frame from server"), nil)
		}
		data, err := wire.DataPayload(flags, payload, cs.maxFrame)
		if err != nil {
			return nil, cs.end(err, nil)
		}
		return data, nil
	}
}

func (cs *clientStream) Recv(msg any) error {
	data, err := cs.recvRaw()
	if err != nil {
		return err
	}
	if msg == nil {
		return nil
	}
	if err := cs.codec.Unmarshal(data, msg); err != nil {
		return cs.end(status.Errorf(status.Internal, "response does not decode: %v", err), nil)
	}
	cs.recvMsgs.Add(1)
	cs.recvBytes.Add(int64(len(data)))
	return nil
}

// end records the call's outcome and releases the stream.
func (cs *clientStream) end(err error, trailer map[string]string) error {
	cs.mu.Lock()
	if !cs.done {
		cs.done, cs.err, cs.trailer = true, err, trailer
	}
	err = cs.err
	cs.mu.Unlock()
	cs.release(err != io.EOF)
	return err
}

func (cs *clientStream) release(reset bool) {
	cs.mu.Lock()
	if cs.released {
		cs.mu.Unlock()
		return
	}
	cs.released = true
	cs.mu.Unlock()
	if cs.stop != nil {
		cs.stop()
	}
	if reset {
		cs.st.Reset(transport.CodeCancel)
	} else {
		cs.st.Close()
	}
	cs.w.Wait()
}

func (cs *clientStream) Trailer() handler.Metadata {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.trailer
}

func (cs *clientStream) Close() {
	cs.mu.Lock()
	finished := cs.done && cs.err == io.EOF
	if !cs.done {
		cs.done, cs.err = true, status.New(status.Canceled, "call closed by caller")
	}
	cs.mu.Unlock()
	cs.release(!finished)
	cs.r.Release()
	cs.w.Release()
}

// mapErr turns a transport error into the call's status.
func (cs *clientStream) mapErr(err error) error {
	if ctxErr := cs.ctx.Err(); ctxErr != nil {
		return status.FromError(ctxErr)
	}
	if _, ok := err.(*status.Error); ok {
		return err
	}
	var se *transport.StreamError
	if errors.As(err, &se) {
		if se.Remote {
			return status.Errorf(status.Unavailable, "stream reset by server: %w", err)
		}
		return status.Errorf(status.Canceled, "stream reset: %w", err)
	}
	var ce *transport.ConnError
	if errors.As(err, &ce) {
		return status.Errorf(status.Unavailable, "connection lost: %w", err)
	}
	return status.Wrap(status.Unavailable, err)
}

var (
	_ middleware.ClientStream  = (*clientStream)(nil)
	_ middleware.StatsReporter = (*clientStream)(nil)
)

// PeerID returns the endpoint id the client calls.
func (c *Client) PeerID() trust.EndpointID { return c.addr.ID }

// Resolve builds an Address from a Resolver, for DialAddress.
func Resolve(ctx context.Context, r discovery.Resolver, id trust.EndpointID) (Address, error) {
	return r.Resolve(ctx, id)
}
