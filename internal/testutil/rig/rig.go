// Package rig starts an aster server and its clients for a test, on the
// in-memory transport or on QUIC over loopback, and stops them when the
// test ends:
//
//	srv := rig.Start(t, rig.Mem, []*handler.Service{svc})
//	c := srv.Client(t)
//	resp, err := aster.CallUnary[Msg](ctx, c, "Svc.method", req)
//
// It is a separate package from testutil because it imports the aster
// package, which imports the transports whose in-package tests import
// testutil; only external test packages (package foo_test) can use it.
package rig

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/transport/quic"
	"github.com/aster-go/aster/trust"
)

// Transport names the transport a rig serves on.
type Transport string

// The transports a rig can serve on.
const (
	// Mem is the in-memory transport (transport/mem), one Network per rig.
	Mem Transport = "mem"
	// QUIC is QUIC over 127.0.0.1 (transport/quic).
	QUIC Transport = "quic"
)

// Transports lists every transport a rig can serve on, for tests that run
// on each (t.Run(string(tr), ...)).
var Transports = []Transport{Mem, QUIC}

// Server is an aster server serving for one test.
type Server struct {
	// Server is the running server; a test may Register more services.
	*aster.Server
	// Addr is the address clients dial.
	Addr aster.Address
	// Key is the server's key: testutil.Key(t, 1).
	Key trust.SecretKey
	// Transport is the transport it serves on.
	Transport Transport
	// Network is the in-memory network, for Mem (nil for QUIC).
	Network *mem.Network

	svcs     []*handler.Service
	opts     []aster.ServerOption
	nclients atomic.Int64
}

// QuietLogger returns a logger that discards everything.
func QuietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Start starts a server on tr with key testutil.Key(t, 1) and a quiet
// logger (opts come after, so they can replace both), registers svcs and
// serves them until the test ends. At the end it closes the server and
// fails the test if Serve returned anything but aster.ErrServerClosed.
func Start(t testing.TB, tr Transport, svcs []*handler.Service, opts ...aster.ServerOption) *Server {
	t.Helper()
	s := &Server{Key: testutil.Key(t, 1), Transport: tr, svcs: svcs, opts: opts}
	switch tr {
	case Mem:
		s.Network = mem.NewNetwork()
	case QUIC:
	default:
		t.Fatalf("rig: unknown transport %q", tr)
	}
	s.serve(t)
	return s
}

// Restart serves again, with a new aster.Server built from the same
// options and services on a new listener with the same key (for Mem, on
// the same network, so clients reach it at the same address; for QUIC on
// a new port, see Addr), after the test closed the previous one.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.serve(t)
}

func (s *Server) serve(t testing.TB) {
	t.Helper()
	var ln transport.Listener
	var err error
	if s.Transport == Mem {
		ln, err = s.Network.Listen(s.Key)
	} else {
		ln, err = quic.Listen("127.0.0.1:0", s.Key, nil)
	}
	if err != nil {
		t.Fatalf("rig: listen on %s: %v", s.Transport, err)
	}
	opts := append([]aster.ServerOption{aster.WithSecretKey(s.Key), aster.WithLogger(QuietLogger())}, s.opts...)
	srv := aster.NewServer(opts...)
	for _, svc := range s.svcs {
		if err := srv.Register(svc); err != nil {
			ln.Close()
			t.Fatalf("rig: register %s: %v", svc.Name(), err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, aster.ErrServerClosed) {
			t.Errorf("rig: Serve: %v", err)
		}
	})
	s.Server, s.Addr = srv, ln.Addr()
}

// DialOption returns the client option that dials this server's
// transport with clientKey (for QUIC, a dialer closed when the test ends).
func (s *Server) DialOption(t testing.TB, clientKey trust.SecretKey) aster.ClientOption {
	if s.Transport == Mem {
		return aster.WithDialer(s.Network.Dialer(clientKey))
	}
	d := quic.NewDialer(clientKey, nil)
	t.Cleanup(func() { d.Close() })
	return aster.WithDialer(d)
}

// Client returns a new client of the server with its own key
// (testutil.Key(t, 100+n) for the n-th client) and opts, closed when the
// test ends. It connects on its first call.
func (s *Server) Client(t testing.TB, opts ...aster.ClientOption) *aster.Client {
	t.Helper()
	k := testutil.Key(t, 100+int(s.nclients.Add(1)))
	c := aster.NewClient(s.Addr, append([]aster.ClientOption{s.DialOption(t, k), aster.WithSecretKey(k)}, opts...)...)
	t.Cleanup(func() { c.Close() })
	return c
}
