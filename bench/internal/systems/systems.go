// Package systems implements the benchmark service (Mission Control's
// getStatus, tailLogs and ingestMetrics, plus an echo bidi) in each system
// the suite compares: aster over its transports, grpc-go, connect-go, and
// the raw quic-go and TCP+TLS floors.
//
// # Adding a system
//
// Implement System (a server constructor and a client constructor; every
// Client method performs one workload and checks its result), give it a
// unique Name and the Name of the floor it is compared with, and append it
// to All in this file. The runner (cmd/asterbench), the go test benchmarks
// and the correctness tests pick it up from All. A system that cannot do a
// workload returns ErrNotSupported from that method and the table shows
// "n/a". aster over another transport is an asterSystem with its own
// listen and dialer functions (see newAsterWT and newAsterRelay); the
// service and the client methods are shared.
//
// A system may implement RSSNoter to annotate its peak-RSS row.
package systems

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"time"
)

// The workload's fixed values, the same for every system.
const (
	// AgentID is the getStatus request's agent id.
	AgentID = "edge-node-7"
	// EchoSize is the payload size of an echo message (and of the raw
	// floors' messages).
	EchoSize = 64
	// LogMessage is the message of every streamed log entry.
	LogMessage = "disk usage above threshold"
	// LogLevel is the level of every streamed log entry.
	LogLevel = "info"
	// MetricName is the name of every ingested metric point.
	MetricName = "cpu.usage"
)

// ErrNotSupported is returned by a Client or System method for a workload
// the system cannot run (the table shows "n/a").
var ErrNotSupported = errors.New("not supported by this system")

// Workload names the streaming workloads, for System.MessageSize.
type Workload int

// The streaming workloads.
const (
	WorkloadTail Workload = iota
	WorkloadIngest
	WorkloadEcho
)

// System is one RPC system under test.
type System interface {
	// Name identifies the system in tables and benchmark names
	// ("aster-quic", "grpc", ...).
	Name() string
	// Floor names the system whose figures this one is divided by (a raw
	// transport floor); a floor returns its own name.
	Floor() string
	// Serve starts a server on loopback. It must be closed.
	Serve() (Server, error)
	// Dial connects a new client (with its own connection) to the server
	// at addr, a Server.Addr string. It must be closed.
	Dial(ctx context.Context, addr string) (Client, error)
	// MessageSize is the encoded size in bytes of one message of the
	// workload, as this system puts it on the wire (before framing).
	MessageSize(w Workload) int
	// InProcessOnly reports whether the server can only be reached from
	// the same process (so peak-RSS figures of a server process are n/a).
	InProcessOnly() bool
}

// Server is a running benchmark server.
type Server interface {
	// Addr is what Dial needs to reach the server.
	Addr() string
	// Close stops the server and releases its resources.
	Close() error
}

// Client is one connection to a benchmark server. Its methods are safe for
// concurrent use.
type Client interface {
	// Unary calls getStatus once and checks the response.
	Unary(ctx context.Context) error
	// Tail calls tailLogs for n entries and receives them all.
	Tail(ctx context.Context, n int) error
	// Ingest streams n metric points through ingestMetrics and checks that
	// the server counted n.
	Ingest(ctx context.Context, n int) error
	// Echo sends n 64-byte messages on one bidi stream while receiving the
	// echoes concurrently, and checks that n came back.
	Echo(ctx context.Context, n int) error
	// OpenStream opens an echo stream, completes one round trip on it and
	// leaves it open until the returned Closer is closed.
	OpenStream(ctx context.Context) (io.Closer, error)
	// Close closes the connection.
	Close() error
}

// All returns every system, floors first.
func All() []System {
	return []System{
		newRawQUIC(false),
		newRawQUIC(true),
		newRawTCP(),
		newAsterQUIC(),
		newAsterMem(),
		newAsterWT(),
		newAsterRelay(),
		newGRPC(),
		newConnect(),
	}
}

// ByName returns the system called name, or nil.
func ByName(name string) System {
	for _, s := range All() {
		if s.Name() == name {
			return s
		}
	}
	return nil
}

// ListenHost is the IP address servers listen on. Default 127.0.0.1
// (loopback); the loss test sets the address of its network namespace.
var ListenHost = "127.0.0.1"

// serverName is the TLS server name of the TCP systems' certificate.
const serverName = "bench.local"

// benchCert is a deterministic self-signed ed25519 certificate, so a client
// in another process than the server can verify it without an exchange.
var benchCert, benchPool = func() (tls.Certificate, *x509.CertPool) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: serverName},
		DNSNames:              []string{serverName},
		NotBefore:             time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err) // cannot happen with a fixed template and key
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}()

// serverTLS returns the TLS configuration of the TCP and raw QUIC servers.
func serverTLS(alpn ...string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{benchCert}, NextProtos: alpn, MinVersion: tls.VersionTLS13}
}

// clientTLS returns the TLS configuration of their clients, which verify
// the server's certificate against benchPool.
func clientTLS(alpn ...string) *tls.Config {
	return &tls.Config{RootCAs: benchPool, ServerName: serverName, NextProtos: alpn, MinVersion: tls.VersionTLS13}
}

// echoPayload is the payload of every echo message.
var echoPayload = func() []byte {
	b := make([]byte, EchoSize)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// logTimestamp is the timestamp of every streamed log entry and metric.
const logTimestamp = 1712567890.125

// RSSNoter is implemented by systems whose server process holds more than
// the server (aster-relay's holds the relay): the peak-RSS table shows the
// note next to the system's name.
type RSSNoter interface {
	RSSNote() string
}

// Warmer is implemented by clients that use one long-lived stream or
// connection per concurrent caller (the raw floors). The runner calls Warm
// with the number of callers before a unary measurement so that opening
// them is not measured as call latency; the RPC systems multiplex one
// connection and need no warming.
type Warmer interface {
	Warm(ctx context.Context, callers int) error
}
