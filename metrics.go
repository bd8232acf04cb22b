package aster

import (
	"sync/atomic"

	"github.com/aster-go/aster/status"
)

// Metrics is a snapshot of a server's counters (see Server.Metrics). The
// health package serves it as JSON at /metrics and in the Prometheus text
// format at /metrics/prometheus.
type Metrics struct {
	// Connections is the number of open connections.
	Connections int `json:"connections"`
	// ActiveCalls is the number of calls being served.
	ActiveCalls int `json:"active_calls"`
	// Calls counts finished calls by status code name ("OK", "NOT_FOUND",
	// ...; "APPLICATION" for codes 100 and above). Codes never seen are
	// left out. Calls refused for a missing capability count as
	// PERMISSION_DENIED, and refused admissions as calls to _aster.admit
	// with their refusal code (UNAUTHENTICATED).
	Calls map[string]uint64 `json:"calls"`
	// StreamsOpened counts the streams whose first call the server
	// served, and StreamsReused the calls it served on a stream that had
	// carried an earlier call (PROTOCOL.md 23); their sum is the calls
	// whose HEADER was read. IdleStreams is the number of reusable streams
	// now waiting for their next call. In JSON the three are left out
	// while 0.
	StreamsOpened uint64 `json:"streams_opened,omitempty"`
	StreamsReused uint64 `json:"streams_reused,omitempty"`
	IdleStreams   int    `json:"idle_streams,omitempty"`
	// ConnsGateRefused counts the connections the connection gates
	// (WithConnGate) refused, including those refused because the gates
	// did not decide in time or panicked. In JSON it is left out while 0.
	ConnsGateRefused uint64 `json:"conns_gate_refused,omitempty"`
}

// ClientMetrics is a snapshot of a client's stream counters (see
// Client.Metrics).
type ClientMetrics struct {
	// StreamsOpened counts the streams the client opened for calls, and
	// StreamsReused the calls it started on an idle stream of an earlier
	// call (PROTOCOL.md 23). IdleStreams is the number of streams now kept
	// for further calls.
	StreamsOpened uint64 `json:"streams_opened,omitempty"`
	StreamsReused uint64 `json:"streams_reused,omitempty"`
	IdleStreams   int    `json:"idle_streams,omitempty"`
}

// Metrics returns a snapshot of the client's stream counters.
func (c *Client) Metrics() ClientMetrics {
	return c.pool.metrics()
}

// callStats counts finished calls by status code.
type callStats struct {
	byCode [status.Unauthenticated + 1]atomic.Uint64
	app    atomic.Uint64 // application codes (100+) and unassigned ones

	streamsOpened, streamsReused atomic.Uint64
	idleStreams                  atomic.Int64
	gateRefused                  atomic.Uint64 // connections refused by connection gates
}

func (cs *callStats) record(code uint32) {
	if code < uint32(len(cs.byCode)) {
		cs.byCode[code].Add(1)
		return
	}
	cs.app.Add(1)
}

// Metrics returns a snapshot of the server's counters. It is cheap (a few
// atomic loads and one short lock) and safe to call at any time, also
// after Shutdown.
func (s *Server) Metrics() Metrics {
	s.mu.Lock()
	m := Metrics{Connections: len(s.conns), Calls: map[string]uint64{}}
	s.mu.Unlock()
	m.ActiveCalls = int(s.calls.n.Load())
	m.StreamsOpened = s.stats.streamsOpened.Load()
	m.StreamsReused = s.stats.streamsReused.Load()
	m.IdleStreams = int(s.stats.idleStreams.Load())
	m.ConnsGateRefused = s.stats.gateRefused.Load()
	for code := range s.stats.byCode {
		if n := s.stats.byCode[code].Load(); n > 0 {
			m.Calls[status.Code(code).String()] = n
		}
	}
	if n := s.stats.app.Load(); n > 0 {
		m.Calls["APPLICATION"] = n
	}
	return m
}

// Ready reports whether the server is serving at least one listener and is
// not shutting down. It turns false as soon as Shutdown or Close begins,
// while in-flight calls still drain, so that a readiness probe (the health
// package's /readyz) takes the server out of rotation before its
// connections close.
func (s *Server) Ready() bool {
	if s.draining.Load() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && len(s.listeners) > 0
}
