package aster

// The client's path, top to bottom: NewClient picks the dialer; the first
// call dials (getConn), starts the admission exchange (admit: over QUIC the
// call goes out right behind it, PROTOCOL.md 17.6) and, when
// something needs it, fetches the contract (Contract); NewStream checks the
// call against the contract and runs the middleware; the innermost Caller
// (transportCaller) opens the stream (openStream) whose life is in
// client_stream.go.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

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
	"github.com/aster-go/aster/trust"
)

// Caller starts calls; Client and Session implement it, and client
// middleware wraps it. The typed call functions (CallUnary, ...) take one.
type Caller = middleware.Caller

// Client calls the services of one endpoint. It dials lazily and redials
// when the connection is lost. A Client is safe for concurrent use.
type Client struct {
	addr   Address
	opts   clientOptions
	caller Caller // middleware chain around transportCaller
	callID atomic.Uint64
	sessID atomic.Uint64

	mu       sync.Mutex
	conn     transport.Conn
	adm      *admission    // of conn
	dialing  chan struct{} // non-nil while a dial is in progress
	closed   bool
	contract *fetchedContract // of conn; nil until fetched
	fetching chan struct{}    // non-nil while a contract fetch is in progress
	// methods is the index of the last contract fetched, kept across
	// redials for the idempotent flag and requirements.
	methods  map[methodKey]methodMeta
	ownsDial bool

	// pool holds the idle reusable streams of the connection
	// (PROTOCOL.md 23; client_stream.go).
	pool streamPool

	// index is methods and contract as fetchContract last set them, for
	// NewStream to read per call without mu (which getConn takes too).
	index atomic.Pointer[callIndex]
	// live is conn, stored under mu wherever conn changes, for getConn's
	// per-call read without mu; nil while there is none and after Close.
	live atomic.Pointer[transport.Conn]
}

// callIndex is a Client's methods and contract at one time.
type callIndex struct {
	methods map[methodKey]methodMeta
	fc      *fetchedContract
}

// fetchedContract is the contract of one connection, or (err set) the
// server's refusal to give one.
type fetchedContract struct {
	conn    transport.Conn
	c       *contract.Contract
	id      string
	methods map[methodKey]methodMeta
	err     error
}

type methodKey struct {
	service, method string
	version         uint32
}

type methodMeta struct {
	pattern           handler.Pattern
	idempotent        bool
	requires          trust.Requirement
	request, response string // wire type names
	service           string // for messages
	method            string
	version           uint32
}

// indexMethods indexes what the client needs to know of each method
// (version 0 stands for the highest version).
func indexMethods(ct *contract.Contract) map[methodKey]methodMeta {
	idx := map[methodKey]methodMeta{}
	highest := map[string]uint32{}
	for _, s := range ct.Services {
		highest[s.Name] = max(highest[s.Name], s.Version)
	}
	for _, s := range ct.Services {
		for _, m := range s.Methods {
			p, _ := handler.ParsePattern(m.Pattern)
			mm := methodMeta{pattern: p, idempotent: m.Idempotent, request: m.Request, response: m.Response,
				service: s.Name, method: m.Name, version: s.Version}
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
	if _, err := c.getAdmittedConn(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// NewClient returns a Client for addr without connecting; the first call
// dials. A bad option value makes every call fail with INVALID_ARGUMENT.
func NewClient(addr Address, opts ...ClientOption) *Client {
	o := defaultClientOptions()
	for _, opt := range opts {
		opt.applyClient(&o)
	}
	c := &Client{addr: addr, opts: o}
	if c.opts.key == nil && (o.dialerFor != nil || (o.dialer == nil && o.conn == nil)) {
		// Only a dialer the client builds uses its key: with WithDialer or
		// WithConn, generating one would be wasted (16 µs of set-up).
		c.opts.key = trust.GenerateKey()
	}
	switch {
	case o.dialerFor != nil:
		c.opts.dialer = o.dialerFor(c.opts.key)
		c.ownsDial = true
	case o.dialer != nil:
	case o.conn != nil:
		// The given connection still goes through admission on first use.
		c.opts.dialer = &connDialer{conn: o.conn}
		c.ownsDial = true
	default:
		c.opts.dialer = defaultDialer(&c.opts, addr)
		c.ownsDial = c.opts.dialer != nil
	}
	c.caller = middleware.ChainClient(o.mw...)(transportCaller{c})
	return c
}

// defaultDialer picks the dialer for addr from the client's options: direct
// QUIC, the relay, or direct with a fallback to the relay. It records an
// error in o for an address the aster package has no transport for.
func defaultDialer(o *clientOptions, addr Address) transport.Dialer {
	useRelay := addr.Relay != "" && !o.noRelay
	switch {
	case len(addr.Direct) == 0 && addr.WebTransport != "" && !useRelay:
		keep(&o.err, status.Errorf(status.InvalidArgument,
			"aster: %s is reachable only over WebTransport (%s), which the aster package does not link: "+
				"pass a WebTransport dialer, e.g. aster.WithDialerFor(func(k trust.SecretKey) transport.Dialer { return webtransport.NewDialer(k, nil) })",
			addr.ID.Short(), addr.WebTransport))
		return nil
	case !useRelay && !o.noIP:
		return quic.NewDialer(o.key, o.quic)
	}
	// Direct when it can, through the relay when it cannot.
	f := &relay.FallbackDialer{}
	if !o.noIP {
		f.Direct = quic.NewDialer(o.key, o.quic)
	}
	if useRelay {
		f.Relay = relay.NewDialer(o.key, &relay.Config{QUIC: o.quic, Proxy: o.relayProxy, Logger: o.logger, Direct: relay.DirectConfig{Disable: o.noDirect}})
	}
	return f
}

// Address returns the address the client calls.
func (c *Client) Address() Address { return c.addr }

// PeerID returns the endpoint id the client calls.
func (c *Client) PeerID() trust.EndpointID { return c.addr.ID }

// RemoteAddr returns the network address of the client's connection, or
// nil while it has none: a *net.UDPAddr over direct QUIC, a *relay.Addr
// through a relay, whose Path method says whether the connection moved to
// a direct path (PROTOCOL.md §24).
func (c *Client) RemoteAddr() net.Addr {
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	return conn.RemoteAddr()
}

// Resolve builds an Address from a Resolver, for DialAddress.
func Resolve(ctx context.Context, r discovery.Resolver, id trust.EndpointID) (Address, error) {
	return r.Resolve(ctx, id)
}

// Close closes the connection. Calls in flight fail with UNAVAILABLE.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.live.Store(nil)
	c.mu.Unlock()
	if conn != nil {
		conn.Close(transport.ConnNoError, "client closed")
	}
	if cl, ok := c.opts.dialer.(io.Closer); ok && c.ownsDial {
		cl.Close()
	}
	return nil
}

// getAdmittedConn returns the live connection, dialling if there is none,
// once the server has admitted it (PROTOCOL.md 17.2): a refusal is its
// error. DialAddress and a Fleet's producers use it, so that a refused
// connection is a failed dial.
func (c *Client) getAdmittedConn(ctx context.Context) (transport.Conn, error) {
	for {
		conn, err := c.getConn(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		adm := c.adm
		current := c.conn == conn
		c.mu.Unlock()
		if !current || adm == nil {
			continue // lost meanwhile (e.g. refused): dial again
		}
		if err := adm.wait(ctx); err != nil {
			return nil, err
		}
		return conn, nil
	}
}

// getConn returns the live connection, dialling if there is none. On a
// transport whose streams reach the server in the order they were opened
// (QUIC: see admissionPipelines), it returns as soon as the admission
// request is sent, so that the first call travels with it instead of a
// round trip later (PROTOCOL.md 17.6); the server serves
// no call before its verdict, and a call started before a refusal fails
// with the refusal. Elsewhere it returns once admitted.
func (c *Client) getConn(ctx context.Context) (transport.Conn, error) {
	// The hot path: the live connection, without mu. live is cleared by
	// Close (with closed set, under mu) and replaced only by a dial, so a
	// live connection read here is the one the locked path would return.
	if p := c.live.Load(); p != nil && !isDone((*p).Done()) {
		return *p, nil
	}
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, status.New(status.Unavailable, "client closed")
		}
		if err := c.opts.err; err != nil {
			c.mu.Unlock()
			if _, ok := err.(*status.Error); !ok {
				err = status.Wrap(status.InvalidArgument, err)
			}
			return nil, err
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
		lost := c.conn != nil
		c.contract = nil
		c.mu.Unlock()
		if lost {
			c.opts.logger.Debug("aster: connection lost, redialling", "peer", c.addr.ID.Short())
		}

		conn, err := c.opts.dialer.Dial(ctx, c.addr)
		var adm *admission
		var admitErr error
		if err == nil {
			if adm, admitErr = c.admit(ctx, conn); admitErr != nil {
				conn.Close(transport.ConnRefused, "admission failed")
			} else if !isDone(adm.done) {
				conn = &admittingConn{Conn: conn, adm: adm}
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
			err = dialError(ctx, c.addr, err)
			c.opts.logger.Debug("aster: dial failed", "peer", c.addr.ID.Short(), "err", err)
			return nil, err
		}
		if admitErr != nil {
			c.mu.Unlock()
			c.opts.logger.Debug("aster: admission failed", "peer", c.addr.ID.Short(), "err", admitErr)
			return nil, admitErr
		}
		c.conn, c.adm = conn, adm
		c.live.Store(&conn)
		c.mu.Unlock()
		c.opts.logger.Debug("aster: connected", "peer", c.addr.ID.Short())
		return conn, nil
	}
}

// dialError maps a failed dial (PROTOCOL.md 14.2). DEADLINE_EXCEEDED and
// CANCELED are reported only when the caller's own ctx ended; a transport
// that gave up by its own bound (transport.ErrHandshakeTimeout: nothing
// answered) is UNAVAILABLE, so that Retry and callers move on.
func dialError(ctx context.Context, a Address, err error) error {
	var ce *transport.ConnError
	switch {
	case errors.As(err, &ce) && ce.Code == transport.ConnDenied:
		// The server's connection gate refused the client while the
		// transport's handshake was finishing (PROTOCOL.md 3.3).
		return status.Errorf(status.PermissionDenied, "dial %s: server refused the connection: %s", a.ID.Short(), ce.Reason)
	case errors.Is(err, transport.ErrPeerMismatch):
		return status.Errorf(status.Unauthenticated, "dial %s: %w", a.ID.Short(), err)
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return status.Errorf(status.DeadlineExceeded, "dial %s: %w", a.ID.Short(), err)
	case ctx.Err() != nil:
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

// admission is the client's side of one connection's admission exchange
// (PROTOCOL.md 17.2).
type admission struct {
	done    chan struct{} // closed once the outcome is known
	err     error         // the refusal or failure, set before done closes
	verdict admitVerdict  // the server's verdict, once done with err nil
}

// wait returns the outcome, or ctx's error if it ends first.
func (a *admission) wait(ctx context.Context) error {
	select {
	case <-a.done:
		return a.err
	case <-ctx.Done():
		select {
		case <-a.done:
			return a.err
		default:
		}
		return status.FromError(ctx.Err())
	}
}

// explain returns, for an error of a stream opened before the verdict,
// the refusal if admission failed. A lost connection waits for the
// outcome, which the closed connection settles at once.
func (a *admission) explain(err error) error {
	var ce *transport.ConnError
	if errors.As(err, &ce) {
		<-a.done
	} else if !isDone(a.done) {
		return err
	}
	if a.err != nil {
		return a.err
	}
	return err
}

// admissionPipelines reports whether the client may send calls on conn
// before the admission verdict: only when the server is certain to take
// the admission stream first, because streams reach its AcceptStream in
// the order they were opened. transport/quic's connections (direct and
// relayed) say so; for others (WebTransport, wrappers) the client waits.
func admissionPipelines(conn transport.Conn) bool {
	o, ok := conn.(interface{ StreamsAcceptedInOrder() bool })
	return ok && o.StreamsAcceptedInOrder()
}

// admit starts the admission exchange on a new connection: it presents the
// client's credential (or none). Where admission pipelines it returns once
// the request is sent, with the outcome to come in the admission (which
// then closes conn with ConnRefused if it fails); elsewhere it returns the
// outcome: nil and a settled admission once the server admitted the
// client, or the refusal (UNAUTHENTICATED, with the server's message).
func (c *Client) admit(ctx context.Context, conn transport.Conn) (*admission, error) {
	adm := &admission{done: make(chan struct{})}
	if !admissionPipelines(conn) {
		xctx, cancel := context.WithTimeout(ctx, admissionTimeout)
		defer cancel()
		cs, err := c.sendHello(xctx, conn)
		if err == nil {
			err = c.readVerdict(cs, &adm.verdict)
		}
		if err = admitTimeout(ctx, err); err != nil {
			return nil, err
		}
		c.offerReuse(conn, adm.verdict.StreamReuse)
		close(adm.done)
		return adm, nil
	}
	// The exchange is the connection's, no longer the first caller's: it
	// ends with its own bound or when the connection closes.
	xctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), admissionTimeout)
	cs, err := c.sendHello(xctx, conn)
	if err != nil {
		cancel()
		return nil, admitTimeout(ctx, err)
	}
	go func() {
		defer cancel()
		err := admitTimeout(context.Background(), c.readVerdict(cs, &adm.verdict))
		adm.err = err
		if err == nil {
			// Before done closes: a call that waited for the verdict
			// finds the offer in place.
			c.offerReuse(conn, adm.verdict.StreamReuse)
		}
		close(adm.done)
		if err != nil {
			c.opts.logger.Debug("aster: admission failed", "peer", c.addr.ID.Short(), "err", err)
			conn.Close(transport.ConnRefused, "admission failed")
		}
	}()
	return adm, nil
}

// admitTimeout maps the admission exchange's own bound running out (while
// ctx, the caller's, is live) to UNAVAILABLE: the server did not answer
// (PROTOCOL.md 14.2).
func admitTimeout(ctx context.Context, err error) error {
	if err != nil && ctx.Err() == nil {
		if code := status.CodeOf(err); code == status.DeadlineExceeded || code == status.Canceled {
			return status.Errorf(status.Unavailable, "admission: no answer within %v", admissionTimeout)
		}
	}
	return err
}

// sendHello opens the admission stream on conn and sends the request.
func (c *Client) sendHello(ctx context.Context, conn transport.Conn) (*clientStream, error) {
	hello := admitHello{}
	if cr := c.opts.cred; cr != nil {
		b, err := cr.Encode()
		if err != nil {
			return nil, status.Wrap(status.InvalidArgument, err)
		}
		hello.Credential = b
		hello.Role = string(cr.Role)
	}
	cs, err := c.openStream(ctx, conn, &middleware.Call{Service: wire.ControlService, Method: wire.MethodAdmit, Pattern: handler.PatternUnary})
	if err != nil {
		return nil, admitError(err)
	}
	// Send and CloseSend report a broken stream as io.EOF: the outcome
	// (e.g. a refusal already sent) is then read by Recv.
	if err := sendOne(cs, &hello); err != nil {
		cs.Close()
		return nil, admitError(err)
	}
	return cs, nil
}

// readVerdict reads the server's answer to the admission request into v
// and closes cs: nil means admitted.
func (c *Client) readVerdict(cs *clientStream, v *admitVerdict) error {
	defer cs.Close()
	if err := cs.Recv(v); err != nil {
		if c := status.CodeOf(err); c == status.NotFound || c == status.Unimplemented {
			// A server of the protocol revision without admission: it has
			// no gate, so there is nothing to pass.
			*v = admitVerdict{Unrestricted: true}
			return nil
		}
		return admitError(err)
	}
	if err := cs.Recv(nil); err != io.EOF {
		if err == nil {
			err = status.New(status.Internal, "admission answered with more than one message")
		}
		return admitError(err)
	}
	return nil
}

// admittingConn is a connection whose admission runs alongside its first
// calls. A stream opened before the verdict reports a refusal as the
// refusal rather than as the loss of the connection it causes; once
// admitted, streams are the transport's own.
type admittingConn struct {
	transport.Conn
	adm *admission
}

func (c *admittingConn) OpenStream(ctx context.Context) (transport.Stream, error) {
	st, err := c.Conn.OpenStream(ctx)
	if err != nil {
		return nil, c.adm.explain(err)
	}
	if isDone(c.adm.done) && c.adm.err == nil {
		return st, nil
	}
	return &admittingStream{Stream: st, adm: c.adm}, nil
}

// admittingStream is a stream opened before the admission verdict.
type admittingStream struct {
	transport.Stream
	adm *admission
}

func (s *admittingStream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if err != nil && err != io.EOF {
		err = s.adm.explain(err)
	}
	return n, err
}

func (s *admittingStream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if err != nil {
		err = s.adm.explain(err)
	}
	return n, err
}

// admitError maps a failed admission exchange. A connection the server
// closed with ConnRefused before its refusal arrived is UNAUTHENTICATED;
// one its connection gate refused (ConnDenied, PROTOCOL.md 3.3) is
// PERMISSION_DENIED.
func admitError(err error) error {
	var ce *transport.ConnError
	if errors.As(err, &ce) {
		switch ce.Code {
		case transport.ConnRefused:
			return status.Errorf(status.Unauthenticated, "admission refused: %s", ce.Reason)
		case transport.ConnDenied:
			return status.Errorf(status.PermissionDenied, "server refused the connection: %s", ce.Reason)
		}
	}
	se := status.FromError(err)
	if se.Code() == status.Unauthenticated || se.Code() == status.PermissionDenied {
		return se
	}
	return status.Errorf(se.Code(), "admission: %s", se.Message())
}

// connDialer hands out one established connection (WithConn), so that it
// goes through admission like a dialled one; later dials fail.
type connDialer struct {
	mu   sync.Mutex
	conn transport.Conn
	used bool
}

func (d *connDialer) Dial(ctx context.Context, _ discovery.EndpointAddr) (transport.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.used || d.conn == nil {
		return nil, errors.New("connection closed")
	}
	d.used = true
	return d.conn, nil
}

// Close closes the connection if it was never used.
func (d *connDialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.used && d.conn != nil {
		d.used = true
		return d.conn.Close(transport.ConnNoError, "client closed")
	}
	return nil
}

// Contract fetches the server's contract (once per connection; concurrent
// callers share one fetch) and returns it with its id. From then on, calls
// are checked against it before anything is sent: a call whose pattern
// differs from the method's fails with FAILED_PRECONDITION, one whose Go
// request or response type has another wire name than the method's with
// INVALID_ARGUMENT (see CallUnary).
func (c *Client) Contract(ctx context.Context) (*contract.Contract, string, error) {
	fc, err := c.fetchContract(ctx, false)
	if err != nil {
		return nil, "", err
	}
	return fc.c, fc.id, nil
}

// RefreshContract is Contract without the cache: it fetches the contract
// again (a server may register services while it serves) and caches the
// new one.
func (c *Client) RefreshContract(ctx context.Context) (*contract.Contract, string, error) {
	fc, err := c.fetchContract(ctx, true)
	if err != nil {
		return nil, "", err
	}
	return fc.c, fc.id, nil
}

// fetchContract returns the contract of the live connection, fetching it
// unless it is cached (and !fresh).
func (c *Client) fetchContract(ctx context.Context, fresh bool) (*fetchedContract, error) {
	for {
		conn, err := c.getConn(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		if fc := c.contract; fc != nil && fc.conn == conn && !fresh {
			c.mu.Unlock()
			if fc.err != nil {
				return nil, fc.err
			}
			return fc, nil
		}
		if wait := c.fetching; wait != nil {
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, status.FromError(ctx.Err())
			}
		}
		done := make(chan struct{})
		c.fetching = done
		c.mu.Unlock()

		fc, err := c.fetchFrom(ctx, conn)
		c.mu.Lock()
		c.fetching = nil
		close(done)
		switch {
		case err == nil:
			if c.conn == conn {
				c.contract = fc
			}
			c.methods = fc.methods
		case settled(err) && c.conn == conn:
			// The server answered that it has no contract to give: ask
			// again only on the next connection.
			c.contract = &fetchedContract{conn: conn, err: err}
		}
		c.index.Store(&callIndex{methods: c.methods, fc: c.contract})
		c.mu.Unlock()
		return fc, err
	}
}

// settled reports whether a failed contract fetch is the server's answer
// (which asking again on the same connection would not change) rather than
// a broken stream or an ended context.
func settled(err error) bool {
	switch status.CodeOf(err) {
	case status.NotFound, status.Unimplemented, status.Internal, status.ResourceExhausted, status.PermissionDenied:
		return true
	}
	return false
}

// fetchFrom runs the _aster.contract call on conn.
func (c *Client) fetchFrom(ctx context.Context, conn transport.Conn) (*fetchedContract, error) {
	cs, err := c.openStream(ctx, conn, &middleware.Call{Service: wire.ControlService, Method: wire.MethodContract, Pattern: handler.PatternUnary})
	if err != nil {
		return nil, err
	}
	defer cs.Close()
	// The server answers without reading the request, so Send may see the
	// call already ended (io.EOF); the answer is still read below.
	if err := sendOne(cs, struct{}{}); err != nil {
		return nil, err
	}
	raw, err := cs.recvRaw()
	if err != nil {
		return nil, err
	}
	raw = bytes.Clone(raw) // recvRaw's bytes are valid only until the next read
	if err := cs.Recv(nil); err != io.EOF {
		if err == nil {
			err = status.New(status.Internal, "contract call sent more than one message")
		}
		return nil, err
	}
	ct, err := contract.Decode(raw)
	if err != nil {
		return nil, status.Wrap(status.Internal, err)
	}
	return &fetchedContract{conn: conn, c: ct, id: contract.ID(raw), methods: indexMethods(ct)}, nil
}

// DescribeMethod implements middleware.MethodDescriber: what the server's
// contract says of call's method, fetching the contract first if this
// connection's has not been fetched. A method the contract lacks is
// NOT_FOUND.
func (c *Client) DescribeMethod(ctx context.Context, call *middleware.Call) (middleware.MethodSpec, error) {
	if call.Conn != nil && isDone(call.Conn.Done()) {
		// A pinned call whose connection is gone: no dial for it.
		return middleware.MethodSpec{}, status.New(status.Unavailable, "session lost: its connection closed")
	}
	fc, err := c.fetchContract(ctx, false)
	if err != nil {
		return middleware.MethodSpec{}, err
	}
	m, ok := fc.methods[methodKey{call.Service, call.Method, call.Version}]
	if !ok {
		return middleware.MethodSpec{}, status.Errorf(status.NotFound, "the server's contract has no method %s.%s (version %d)", call.Service, call.Method, call.Version)
	}
	return middleware.MethodSpec{Pattern: m.pattern, Idempotent: m.idempotent, Requires: m.requires, Request: m.request, Response: m.response}, nil
}

// NewStream starts a call through the client's middleware. It fills in
// call.Peer; the method's idempotent flag (from the last contract fetched
// and WithIdempotent) and capability requirement, so that middleware such
// as Retry can act on them; and, when the client has this connection's
// contract, checks the call against it before anything is sent (see
// Contract).
func (c *Client) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	if call.Peer.IsZero() {
		call.Peer = c.addr.ID
	}
	if c.opts.idempotent != nil && c.opts.idempotent[methodName{call.Service, call.Method}] {
		call.Idempotent = true
	}
	var methods map[methodKey]methodMeta
	var fc *fetchedContract
	if idx := c.index.Load(); idx != nil {
		methods, fc = idx.methods, idx.fc
	}
	if fc != nil && isDone(fc.conn.Done()) {
		// The contract of a lost connection, which getConn drops
		// (c.contract) when it redials.
		fc = nil
	}
	// One lookup when the connection's contract is the last one fetched
	// (the usual case): fc.methods then is methods.
	key := methodKey{call.Service, call.Method, call.Version}
	var m methodMeta
	var inContract bool
	if fc != nil {
		m, inContract = fc.methods[key]
	}
	known := inContract
	if !known && methods != nil {
		m, known = methods[key]
	}
	if known {
		call.Idempotent = call.Idempotent || m.idempotent
		if call.Requires == nil {
			call.Requires = m.requires
		}
	}
	if inContract {
		if err := checkCall(call, &m); err != nil {
			return nil, err
		}
	}
	return c.caller.NewStream(ctx, call)
}

// checkCall checks a call against the contract's description of its
// method: the pattern, and the wire names of the Go message types.
func checkCall(call *middleware.Call, m *methodMeta) error {
	if call.Pattern != 0 && m.pattern != 0 && call.Pattern != m.pattern {
		return status.Errorf(status.FailedPrecondition, "%s.%s is a %s method; it was called as %s", m.service, m.method, m.pattern, call.Pattern)
	}
	if name, ok := wireName(call.RequestType); ok && name != m.request {
		return status.Errorf(status.InvalidArgument, "%s.%s takes %s; the request is a %s (wire name %s)", m.service, m.method, m.request, call.RequestType, name)
	}
	if name, ok := wireName(call.ResponseType); ok && name != m.response {
		return status.Errorf(status.InvalidArgument, "%s.%s returns %s; the response type is %s (wire name %s)", m.service, m.method, m.response, call.ResponseType, name)
	}
	return nil
}

var wireNames sync.Map // reflect.Type → string ("" for types not checked)

// wireName returns the wire type name of t as the server names message
// types in its contract (handler.TypeName: WireType() if t implements
// handler.WireTyper, else "<import path>.<Name>"), or false for types that
// are not checked: nil, and anything but a named struct (maps, any, ...).
func wireName(t reflect.Type) (string, bool) {
	if t == nil {
		return "", false
	}
	if v, ok := wireNames.Load(t); ok {
		s := v.(string)
		return s, s != ""
	}
	e := t
	for e.Kind() == reflect.Pointer {
		e = e.Elem()
	}
	name := ""
	if e.Kind() == reflect.Struct && e.Name() != "" && e != reflect.TypeFor[time.Time]() {
		name = handler.TypeName(e)
	}
	wireNames.Store(t, name)
	return name, name != ""
}

// transportCaller is the innermost Caller: it opens the call's stream on
// the connection (the call's pinned one, or the client's) and sends the
// call header. It implements middleware.MethodDescriber for the
// middleware around it.
type transportCaller struct{ c *Client }

func (t transportCaller) NewStream(ctx context.Context, call *middleware.Call) (middleware.ClientStream, error) {
	if err := ctx.Err(); err != nil {
		return nil, status.FromError(err)
	}
	conn := call.Conn
	switch {
	case conn != nil:
		if isDone(conn.Done()) {
			return nil, status.New(status.Unavailable, "session lost: its connection closed")
		}
	case call.SessionID != 0:
		return nil, status.New(status.FailedPrecondition, "a session call must carry its session's connection (middleware.Call.Conn)")
	default:
		var err error
		if conn, err = t.c.getConn(ctx); err != nil {
			return nil, err
		}
	}
	return t.c.openStream(ctx, conn, call)
}

// DescribeMethod implements middleware.MethodDescriber.
func (t transportCaller) DescribeMethod(ctx context.Context, call *middleware.Call) (middleware.MethodSpec, error) {
	return t.c.DescribeMethod(ctx, call)
}

// headerBufs holds scratch buffers for encoding call headers.
var headerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// openStream opens a stream on conn and queues the call header.
func (c *Client) openStream(ctx context.Context, conn transport.Conn, call *middleware.Call) (*clientStream, error) {
	h := wire.Header{
		Service: call.Service, Method: call.Method, Version: call.Version,
		CallID: c.callID.Add(1), Metadata: call.Metadata, SessionID: call.SessionID,
	}
	// An idle stream of an earlier call, when the connection offered
	// reuse (PROTOCOL.md 23); it goes back to the pool if the call fails
	// before it is used.
	var st transport.Stream
	if c.opts.streamReuse {
		st, h.Reuse = c.pool.take(conn)
	}
	unused := func() {
		if st != nil {
			c.pool.put(conn, st)
		}
	}
	if c.opts.codec.Name() != cbor.Name {
		h.SerializationMode = c.opts.codec.Name()
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			unused()
			return nil, status.New(status.DeadlineExceeded, "deadline exceeded before the call started")
		}
		h.Timeout = uint64((left + time.Millisecond - 1) / time.Millisecond)
	}
	if err := h.Validate(); err != nil {
		unused()
		return nil, err
	}
	// Encode the header before a stream exists: one over the 64 KiB limit
	// (PROTOCOL.md 4.3) is RESOURCE_EXHAUSTED and costs the server nothing.
	hb := headerBufs.Get().(*[]byte)
	defer headerBufs.Put(hb)
	enc, err := wire.AppendHeader((*hb)[:0], &h, false)
	*hb = enc[:0]
	if err != nil {
		unused()
		return nil, status.Wrap(status.ResourceExhausted, err)
	}
	if st != nil {
		c.pool.reused.Add(1)
	} else {
		if st, err = conn.OpenStream(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, status.FromError(ctx.Err())
			}
			if se, ok := err.(*status.Error); ok {
				return nil, se // the admission's refusal (admittingConn)
			}
			return nil, status.Wrap(status.Unavailable, err)
		}
		c.pool.opened.Add(1)
	}
	cs := &clientStream{st: st, ctx: ctx, codec: c.opts.codec, pattern: call.Pattern}
	if h.Reuse {
		cs.reuse, cs.pool, cs.conn = true, &c.pool, conn
		c.pool.inFlight.Add(1) // until release
	}
	cs.r.Reset(st, c.opts.maxFrame)
	cs.w.Reset(st)
	cs.maxFrame = c.opts.maxFrame
	if call.Pattern.ClientStreams() {
		cs.w.SetStreaming()
	}
	if err := cs.w.Append(func(b []byte) ([]byte, error) { return append(b, enc...), nil }); err != nil {
		cs.release(true)
		return nil, status.Wrap(status.Internal, err)
	}
	if ctx.Done() != nil {
		cs.stop = context.AfterFunc(ctx, cs.cancel)
	}
	return cs, nil
}
