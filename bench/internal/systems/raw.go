package systems

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"
)

// The raw floors speak a minimal protocol on a QUIC stream or a TLS
// connection: one op byte, then
//
//	'U' 64 bytes, FIN          → the 64 bytes echoed, FIN (one request per stream)
//	'L' 64 bytes, 64 bytes, …  → each 64 bytes echoed (one long stream, ping-pong)
//	'T' u32 count, FIN         → count frames, FIN
//	'I' frames…, FIN           → u64 frame count, FIN
//	'E' frames…, FIN           → every frame echoed, FIN
//
// A frame is a u32 little-endian length and that many bytes (64 here), so
// the streaming floors pay for framing and buffering as an RPC system must,
// but for no header, codec or status.
const (
	opUnary  = 'U'
	opLoop   = 'L'
	opTail   = 'T'
	opIngest = 'I'
	opEcho   = 'E'
)

// rawStream is a QUIC stream or a TLS connection.
type rawStream interface {
	io.Reader
	io.Writer
	// CloseWrite sends FIN.
	CloseWrite() error
	// Abort abandons both directions.
	Abort()
}

// rawDialer opens streams on one connection (QUIC) or one connection per
// stream (TCP).
type rawDialer interface {
	Open(ctx context.Context) (rawStream, error)
	Close() error
}

// rawSystem is a floor: raw quic-go (stream per request, or one long stream
// per caller) or TCP+TLS (one long connection per caller).
type rawSystem struct {
	name   string
	long   bool // unary calls reuse long-lived streams (opLoop)
	isQUIC bool
}

func newRawQUIC(long bool) *rawSystem {
	name := "quic-stream"
	if long {
		name = "quic-long"
	}
	return &rawSystem{name: name, long: long, isQUIC: true}
}

func newRawTCP() *rawSystem { return &rawSystem{name: "tcp-tls", long: true} }

func (s *rawSystem) Name() string { return s.name }
func (s *rawSystem) Floor() string {
	if s.isQUIC {
		return "quic-stream"
	}
	return s.name
}
func (s *rawSystem) InProcessOnly() bool      { return false }
func (s *rawSystem) MessageSize(Workload) int { return EchoSize }

const rawALPN = "bench-raw"

// rawQUICConfig mirrors aster's transport/quic defaults so that the floor
// and aster run on the same QUIC settings.
func rawQUICConfig() *quicgo.Config {
	return &quicgo.Config{
		HandshakeIdleTimeout:           10 * time.Second,
		MaxIdleTimeout:                 60 * time.Second,
		KeepAlivePeriod:                15 * time.Second,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     32 << 20,
		MaxIncomingStreams:             10000,
		MaxIncomingUniStreams:          -1,
	}
}

type quicStream struct{ *quicgo.Stream }

func (s quicStream) CloseWrite() error { return s.Stream.Close() }
func (s quicStream) Abort() {
	s.Stream.CancelRead(1)
	s.Stream.CancelWrite(1)
}

type tcpStream struct{ *tls.Conn }

func (s tcpStream) Abort() { _ = s.Conn.Close() }

type rawServer struct {
	addr    string
	closeFn func() error
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

func (s *rawServer) Addr() string { return s.addr }

func (s *rawServer) Close() error {
	s.cancel()
	err := s.closeFn()
	s.wg.Wait()
	return err
}

func (s *rawSystem) Serve() (Server, error) {
	ctx, cancel := context.WithCancel(context.Background())
	srv := &rawServer{cancel: cancel}
	if s.isQUIC {
		ln, err := quicgo.ListenAddr(ListenHost+":0", serverTLS(rawALPN), rawQUICConfig())
		if err != nil {
			cancel()
			return nil, err
		}
		srv.addr = ln.Addr().String()
		var mu sync.Mutex
		conns := map[*quicgo.Conn]struct{}{}
		srv.closeFn = func() error {
			err := ln.Close()
			mu.Lock()
			for c := range conns {
				_ = c.CloseWithError(0, "")
			}
			mu.Unlock()
			return err
		}
		srv.wg.Go(func() {
			for {
				qc, err := ln.Accept(ctx)
				if err != nil {
					return
				}
				mu.Lock()
				conns[qc] = struct{}{}
				mu.Unlock()
				srv.wg.Go(func() {
					defer func() { mu.Lock(); delete(conns, qc); mu.Unlock() }()
					for {
						st, err := qc.AcceptStream(ctx)
						if err != nil {
							return
						}
						srv.wg.Go(func() { serveRaw(quicStream{st}) })
					}
				})
			}
		})
		return srv, nil
	}
	ln, err := net.Listen("tcp", ListenHost+":0")
	if err != nil {
		cancel()
		return nil, err
	}
	srv.addr = ln.Addr().String()
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	srv.closeFn = func() error {
		err := ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		return err
	}
	tcfg := serverTLS()
	srv.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			srv.wg.Go(func() {
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); _ = c.Close() }()
				tc := tls.Server(c, tcfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					return
				}
				serveRaw(tcpStream{tc})
			})
		}
	})
	return srv, nil
}

// serveRaw serves one raw stream (see the protocol above).
func serveRaw(st rawStream) {
	if err := serveRawOp(st); err != nil {
		st.Abort()
		return
	}
	_ = st.CloseWrite()
}

// Buffered readers and writers of the streaming ops are pooled so that the
// floors allocate no more than an RPC system with pooled buffers would.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
)

func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) { br.Reset(nil); readerPool.Put(br) }

func getWriter(w io.Writer) *bufio.Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func putWriter(bw *bufio.Writer) { bw.Reset(nil); writerPool.Put(bw) }

func serveRawOp(st rawStream) error {
	var opb [1]byte
	if _, err := io.ReadFull(st, opb[:]); err != nil {
		return err
	}
	op := opb[0]
	switch op {
	case opUnary:
		var buf [EchoSize + 1]byte
		n, err := io.ReadFull(st, buf[:])
		if err != io.ErrUnexpectedEOF || n != EchoSize {
			return fmt.Errorf("unary: %d bytes, %v", n, err)
		}
		_, err = st.Write(buf[:n])
		return err
	case opLoop:
		var buf [EchoSize]byte
		for {
			if _, err := io.ReadFull(st, buf[:]); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if _, err := st.Write(buf[:]); err != nil {
				return err
			}
		}
	case opTail:
		var cnt [4]byte
		if _, err := io.ReadFull(st, cnt[:]); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, st); err != nil {
			return err
		}
		w := getWriter(st)
		defer putWriter(w)
		for range binary.LittleEndian.Uint32(cnt[:]) {
			if err := writeFrame(w, echoPayload); err != nil {
				return err
			}
		}
		return w.Flush()
	case opIngest:
		r := getReader(st)
		defer putReader(r)
		var n uint64
		buf := make([]byte, EchoSize)
		for {
			if _, err := readFrame(r, buf); err != nil {
				if err == io.EOF {
					break
				}
				return err
			}
			n++
		}
		var out [8]byte
		binary.LittleEndian.PutUint64(out[:], n)
		_, err := st.Write(out[:])
		return err
	case opEcho:
		r := getReader(st)
		defer putReader(r)
		w := getWriter(st)
		defer putWriter(w)
		buf := make([]byte, EchoSize)
		for {
			m, err := readFrame(r, buf)
			if err == io.EOF {
				return w.Flush()
			}
			if err != nil {
				return err
			}
			if err := writeFrame(w, buf[:m]); err != nil {
				return err
			}
			if r.Buffered() == 0 { // the sender paused: send what we have
				if err := w.Flush(); err != nil {
					return err
				}
			}
		}
	}
	return fmt.Errorf("unknown op %q", op)
}

func writeFrame(w *bufio.Writer, p []byte) error {
	var h [4]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// readFrame reads one frame into buf and returns its length; io.EOF means
// a clean end before a frame.
func readFrame(r *bufio.Reader, buf []byte) (int, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	n := binary.LittleEndian.Uint32(h[:])
	if n > uint32(len(buf)) {
		return 0, fmt.Errorf("frame of %d bytes exceeds %d", n, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	return int(n), nil
}

type quicDialer struct{ qc *quicgo.Conn }

func (d quicDialer) Open(ctx context.Context) (rawStream, error) {
	st, err := d.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{st}, nil
}

func (d quicDialer) Close() error { return d.qc.CloseWithError(0, "") }

type tcpDialer struct{ addr string }

func (d tcpDialer) Open(ctx context.Context) (rawStream, error) {
	td := tls.Dialer{Config: clientTLS()}
	c, err := td.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	return tcpStream{c.(*tls.Conn)}, nil
}

func (d tcpDialer) Close() error { return nil }

// rawClient is a client of a floor. Unary calls in long mode borrow an idle
// long stream (opLoop) or open one; streams never leave the pool otherwise,
// so at most one stream per concurrent caller exists.
type rawClient struct {
	d    rawDialer
	long bool

	mu   sync.Mutex
	idle []rawStream
	all  []rawStream
}

func (s *rawSystem) Dial(ctx context.Context, addr string) (Client, error) {
	c := &rawClient{long: s.long}
	if s.isQUIC {
		qc, err := quicgo.DialAddr(ctx, addr, clientTLS(rawALPN), rawQUICConfig())
		if err != nil {
			return nil, err
		}
		c.d = quicDialer{qc}
	} else {
		c.d = tcpDialer{addr}
	}
	if s.long || !s.isQUIC {
		// Establish the first long stream (for TCP, the connection) now, so
		// Dial's cost includes the handshake as for the other systems.
		st, err := c.openLoop(ctx)
		if err != nil {
			c.d.Close()
			return nil, err
		}
		c.idle = append(c.idle, st)
	}
	return c, nil
}

func (c *rawClient) openLoop(ctx context.Context) (rawStream, error) {
	st, err := c.d.Open(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := st.Write([]byte{opLoop}); err != nil {
		st.Abort()
		return nil, err
	}
	c.mu.Lock()
	c.all = append(c.all, st)
	c.mu.Unlock()
	return st, nil
}

func (c *rawClient) Close() error {
	c.mu.Lock()
	all := c.all
	c.all, c.idle = nil, nil
	c.mu.Unlock()
	for _, st := range all {
		st.Abort()
	}
	return c.d.Close()
}

func (c *rawClient) Unary(ctx context.Context) error {
	var buf [EchoSize + 1]byte
	if !c.long {
		st, err := c.d.Open(ctx)
		if err != nil {
			return err
		}
		var req [1 + EchoSize]byte
		req[0] = opUnary
		copy(req[1:], echoPayload)
		if _, err := st.Write(req[:]); err != nil {
			st.Abort()
			return err
		}
		if err := st.CloseWrite(); err != nil {
			st.Abort()
			return err
		}
		n, err := io.ReadFull(st, buf[:])
		if err != io.ErrUnexpectedEOF || n != EchoSize {
			st.Abort()
			return fmt.Errorf("unary: %d bytes, %v", n, err)
		}
		return nil
	}
	c.mu.Lock()
	var st rawStream
	if k := len(c.idle); k > 0 {
		st = c.idle[k-1]
		c.idle = c.idle[:k-1]
	}
	c.mu.Unlock()
	if st == nil {
		var err error
		if st, err = c.openLoop(ctx); err != nil {
			return err
		}
	}
	if _, err := st.Write(echoPayload); err != nil {
		st.Abort()
		return err
	}
	if _, err := io.ReadFull(st, buf[:EchoSize]); err != nil {
		st.Abort()
		return err
	}
	c.mu.Lock()
	c.idle = append(c.idle, st)
	c.mu.Unlock()
	return nil
}

func (c *rawClient) Tail(ctx context.Context, n int) error {
	st, err := c.d.Open(ctx)
	if err != nil {
		return err
	}
	var req [5]byte
	req[0] = opTail
	binary.LittleEndian.PutUint32(req[1:], uint32(n))
	if _, err := st.Write(req[:]); err != nil {
		st.Abort()
		return err
	}
	if err := st.CloseWrite(); err != nil {
		st.Abort()
		return err
	}
	r := getReader(st)
	defer putReader(r)
	buf := make([]byte, EchoSize)
	got := 0
	for {
		m, err := readFrame(r, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			st.Abort()
			return err
		}
		if m != EchoSize {
			st.Abort()
			return fmt.Errorf("tail: %d-byte frame", m)
		}
		got++
	}
	if got != n {
		return fmt.Errorf("tail: got %d, want %d", got, n)
	}
	return nil
}

func (c *rawClient) Ingest(ctx context.Context, n int) error {
	st, err := c.d.Open(ctx)
	if err != nil {
		return err
	}
	w := getWriter(st)
	defer putWriter(w)
	_ = w.WriteByte(opIngest)
	for range n {
		if err := writeFrame(w, echoPayload); err != nil {
			st.Abort()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		st.Abort()
		return err
	}
	if err := st.CloseWrite(); err != nil {
		st.Abort()
		return err
	}
	var out [9]byte
	m, err := io.ReadFull(st, out[:])
	if err != io.ErrUnexpectedEOF || m != 8 {
		st.Abort()
		return fmt.Errorf("ingest: %d-byte reply, %v", m, err)
	}
	if got := binary.LittleEndian.Uint64(out[:8]); got != uint64(n) {
		return fmt.Errorf("ingest: server counted %d, want %d", got, n)
	}
	return nil
}

func (c *rawClient) Echo(ctx context.Context, n int) error {
	st, err := c.d.Open(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() {
		w := getWriter(st)
		defer putWriter(w)
		_ = w.WriteByte(opEcho)
		for range n {
			if sendErr = writeFrame(w, echoPayload); sendErr != nil {
				return
			}
		}
		if sendErr = w.Flush(); sendErr != nil {
			return
		}
		sendErr = st.CloseWrite()
	})
	r := getReader(st)
	defer putReader(r)
	buf := make([]byte, EchoSize)
	got := 0
	var recvErr error
	for {
		_, err := readFrame(r, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			recvErr = err
			st.Abort()
			break
		}
		got++
	}
	wg.Wait()
	if recvErr != nil {
		return recvErr
	}
	if sendErr != nil {
		st.Abort()
		return sendErr
	}
	if got != n {
		return fmt.Errorf("echo: got %d, want %d", got, n)
	}
	return nil
}

func (c *rawClient) OpenStream(ctx context.Context) (io.Closer, error) {
	if _, ok := c.d.(tcpDialer); ok {
		return nil, fmt.Errorf("tcp-tls has no streams: %w", ErrNotSupported)
	}
	st, err := c.d.Open(ctx)
	if err != nil {
		return nil, err
	}
	var req [1 + 4 + EchoSize]byte
	req[0] = opEcho
	binary.LittleEndian.PutUint32(req[1:], EchoSize)
	copy(req[5:], echoPayload)
	if _, err := st.Write(req[:]); err != nil {
		st.Abort()
		return nil, err
	}
	var resp [4 + EchoSize]byte
	if _, err := io.ReadFull(st, resp[:]); err != nil {
		st.Abort()
		return nil, err
	}
	return closerFunc(func() error {
		if err := st.CloseWrite(); err != nil {
			st.Abort()
			return err
		}
		if _, err := io.Copy(io.Discard, st); err != nil && !errors.Is(err, io.EOF) {
			st.Abort()
		}
		return nil
	}), nil
}

// Warm opens long streams (connections for TCP) until there are callers.
func (c *rawClient) Warm(ctx context.Context, callers int) error {
	if !c.long {
		return nil
	}
	for {
		c.mu.Lock()
		have := len(c.all)
		c.mu.Unlock()
		if have >= callers {
			return nil
		}
		st, err := c.openLoop(ctx)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.idle = append(c.idle, st)
		c.mu.Unlock()
	}
}
