// Package otel instruments aster calls with OpenTelemetry traces and
// metrics and carries trace context across services in call metadata.
//
// Install the middleware on both sides, outermost (first in
// aster.WithMiddleware / aster.WithClientMiddleware or middleware.Chain) so
// that its span covers the whole call: on the server, calls the inner
// middleware (rate limit, auth, deadline) reject and panics Recover turns
// into INTERNAL; on the client, one span per call with Retry's attempts
// inside it:
//
//	srv := aster.NewServer(
//		aster.WithMiddleware(otel.Server()),
//		aster.WithConnHook(otel.ConnHook()),
//	)
//	client := aster.NewClient(addr, aster.WithClientMiddleware(otel.Client()))
//
// By default the middleware uses the global tracer and meter providers, and
// W3C trace context plus baggage for propagation. This package links only
// the OpenTelemetry API, no SDK and no exporter: the sub-package otelexport
// installs providers that export (OTLP over gRPC or HTTP, console,
// Prometheus) as configured by the standard OTEL_* environment variables,
// and does nothing when none is set.
//
// # Traces
//
// Every call of every pattern gets a span named "{service}/{method}": kind
// client on the caller, server on the handler side, the server span a child
// of the client span (the context travels in the call's "traceparent",
// "tracestate" and "baggage" metadata), so a handler that calls another
// aster service with its ctx continues the same trace. Attributes:
//
//	rpc.system                  "aster"
//	rpc.service, rpc.method     the service and method names
//	rpc.response.status_code    the status code name ("OK", "NOT_FOUND", ...)
//	rpc.aster.status_code       the numeric status code
//	rpc.aster.pattern           "unary", "server_stream", "client_stream", "bidi_stream"
//	rpc.aster.version           service version (server; client if pinned)
//	rpc.aster.session_id        session id of a session call (client)
//	aster.peer.id               the other side's endpoint id (hex)
//	network.peer.address        the caller's network address (server, if known)
//	rpc.aster.messages_sent, rpc.aster.messages_received   messages in each direction
//	rpc.aster.bytes_sent, rpc.aster.bytes_received         message payload bytes
//
// Each message adds a "message" event with rpc.message.type (SENT or
// RECEIVED), rpc.message.id (1, 2, ... per direction) and
// rpc.message.uncompressed_size (omitted when the stream cannot tell);
// WithoutMessageEvents turns the events off. Following the RPC semantic
// conventions, a client span has status Error for every code but OK; a
// server span only for codes that mean the server failed (UNKNOWN,
// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS), so
// that a caller's bad request does not count as a server error. Errors are
// also recorded as an exception event.
//
// # Metrics
//
// All instruments carry rpc.system, rpc.service, rpc.method and
// aster.rpc.side ("client" or "server"); completed, duration and the
// per-stream histograms add rpc.response.status_code.
//
//	aster.rpc.started            counter {call}         calls started
//	aster.rpc.completed          counter {call}         calls finished, by status code
//	aster.rpc.duration           histogram s            call duration (start to outcome)
//	aster.rpc.messages_sent      histogram {message}    messages sent per stream
//	aster.rpc.messages_received  histogram {message}    messages received per stream
//	aster.rpc.bytes_sent         histogram By           payload bytes sent per stream
//	aster.rpc.bytes_received     histogram By           payload bytes received per stream
//	aster.rpc.active_streams     updown counter {stream}      calls in progress
//	aster.rpc.active_connections updown counter {connection}  admitted server connections (ConnHook)
//
// Message sizes and the byte figures come from the framework's own stream
// counts (middleware.StatsOf, which looks through wrappers that have an
// Unwrap method, as the standard middleware's do), so other middleware may
// sit between otel and the transport. The size of a message is omitted, and
// the per-call byte figures with it, when the counts cannot tell it: a stream
// that keeps no counts, or a retry inside otel that moved to a new attempt
// and replayed messages on it.
package otel
