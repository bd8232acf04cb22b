package otel

import (
	"context"
	"sync/atomic"
	"time"

	gotel "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/aster-go/aster/otel"

// Attribute keys set on spans and metrics (see the package documentation).
const (
	KeyRPCSystem          = attribute.Key("rpc.system")
	KeyRPCService         = attribute.Key("rpc.service")
	KeyRPCMethod          = attribute.Key("rpc.method")
	KeyStatusName         = attribute.Key("rpc.response.status_code")
	KeyStatusCode         = attribute.Key("rpc.aster.status_code")
	KeyPattern            = attribute.Key("rpc.aster.pattern")
	KeyVersion            = attribute.Key("rpc.aster.version")
	KeySessionID          = attribute.Key("rpc.aster.session_id")
	KeyPeerID             = attribute.Key("aster.peer.id")
	KeyPeerAddress        = attribute.Key("network.peer.address")
	KeySide               = attribute.Key("aster.rpc.side")
	KeyMessagesSent       = attribute.Key("rpc.aster.messages_sent")
	KeyMessagesReceived   = attribute.Key("rpc.aster.messages_received")
	KeyBytesSent          = attribute.Key("rpc.aster.bytes_sent")
	KeyBytesReceived      = attribute.Key("rpc.aster.bytes_received")
	KeyMessageType        = attribute.Key("rpc.message.type")
	KeyMessageID          = attribute.Key("rpc.message.id")
	KeyMessageUncompBytes = attribute.Key("rpc.message.uncompressed_size")
)

var (
	systemAster  = KeyRPCSystem.String("aster")
	sideServer   = KeySide.String("server")
	sideClient   = KeySide.String("client")
	msgSent      = KeyMessageType.String("SENT")
	msgReceived  = KeyMessageType.String("RECEIVED")
	durationBkts = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	countBkts    = []float64{1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384}
	byteBkts     = []float64{64, 256, 1024, 4096, 16384, 65536, 262144, 1 << 20, 4 << 20, 16 << 20, 64 << 20}
)

// Option configures the middleware and ConnHook.
type Option func(*config)

type config struct {
	tp            trace.TracerProvider
	mp            metric.MeterProvider
	prop          propagation.TextMapPropagator
	messageEvents bool
}

// WithTracerProvider sets the tracer provider. Default: the global one
// (otel.GetTracerProvider), which Setup sets.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithMeterProvider sets the meter provider. Default: the global one
// (otel.GetMeterProvider), which Setup sets.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.mp = mp } }

// WithPropagator sets how trace context travels in call metadata. Default:
// W3C trace context and baggage.
func WithPropagator(p propagation.TextMapPropagator) Option { return func(c *config) { c.prop = p } }

// WithoutMessageEvents stops the per-message span events (counts and sizes
// are still recorded as span attributes and metrics). Default: events on.
func WithoutMessageEvents() Option { return func(c *config) { c.messageEvents = false } }

// DefaultPropagator returns the propagator used when none is given: W3C
// trace context and W3C baggage.
func DefaultPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

func newConfig(opts []Option) *config {
	c := &config{messageEvents: true}
	for _, o := range opts {
		o(c)
	}
	if c.tp == nil {
		c.tp = gotel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = gotel.GetMeterProvider()
	}
	if c.prop == nil {
		c.prop = DefaultPropagator()
	}
	return c
}

// instruments are the metric instruments of one middleware.
type instruments struct {
	started, completed         metric.Int64Counter
	duration                   metric.Float64Histogram
	msgsSent, msgsRecv         metric.Int64Histogram
	bytesSent, bytesRecv       metric.Int64Histogram
	activeStreams, activeConns metric.Int64UpDownCounter
	tracer                     trace.Tracer
	prop                       propagation.TextMapPropagator
	messageEvents              bool
	side                       attribute.KeyValue
	spanKind                   trace.SpanKind
	serverSide                 bool
}

// newInstruments creates the instruments. An instrument that fails to
// register (only with a misbehaving provider) is replaced by a no-op one by
// the metric API, so errors are only reported through otel.Handle.
func newInstruments(c *config, server bool) *instruments {
	m := c.mp.Meter(ScopeName)
	in := &instruments{
		tracer: c.tp.Tracer(ScopeName), prop: c.prop, messageEvents: c.messageEvents,
		side: sideClient, spanKind: trace.SpanKindClient, serverSide: server,
	}
	if server {
		in.side, in.spanKind = sideServer, trace.SpanKindServer
	}
	var errs [9]error
	in.started, errs[0] = m.Int64Counter("aster.rpc.started", metric.WithUnit("{call}"),
		metric.WithDescription("Calls started."))
	in.completed, errs[1] = m.Int64Counter("aster.rpc.completed", metric.WithUnit("{call}"),
		metric.WithDescription("Calls finished, by status code."))
	in.duration, errs[2] = m.Float64Histogram("aster.rpc.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of calls."), metric.WithExplicitBucketBoundaries(durationBkts...))
	in.msgsSent, errs[3] = m.Int64Histogram("aster.rpc.messages_sent", metric.WithUnit("{message}"),
		metric.WithDescription("Messages sent per stream."), metric.WithExplicitBucketBoundaries(countBkts...))
	in.msgsRecv, errs[4] = m.Int64Histogram("aster.rpc.messages_received", metric.WithUnit("{message}"),
		metric.WithDescription("Messages received per stream."), metric.WithExplicitBucketBoundaries(countBkts...))
	in.bytesSent, errs[5] = m.Int64Histogram("aster.rpc.bytes_sent", metric.WithUnit("By"),
		metric.WithDescription("Message payload bytes sent per stream."), metric.WithExplicitBucketBoundaries(byteBkts...))
	in.bytesRecv, errs[6] = m.Int64Histogram("aster.rpc.bytes_received", metric.WithUnit("By"),
		metric.WithDescription("Message payload bytes received per stream."), metric.WithExplicitBucketBoundaries(byteBkts...))
	in.activeStreams, errs[7] = m.Int64UpDownCounter("aster.rpc.active_streams", metric.WithUnit("{stream}"),
		metric.WithDescription("Calls in progress."))
	in.activeConns, errs[8] = m.Int64UpDownCounter("aster.rpc.active_connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Admitted server connections."))
	for _, err := range errs {
		if err != nil {
			gotel.Handle(err)
		}
	}
	return in
}

// tracker follows one call: its span, counters and metric attributes. The
// counters are atomic because a client may Send and Recv from different
// goroutines.
type tracker struct {
	in       *instruments
	span     trace.Span
	start    time.Time
	base     metric.MeasurementOption // rpc.system, service, method, side
	baseAttr []attribute.KeyValue
	sent     atomic.Int64
	recv     atomic.Int64
	sentB    atomic.Int64
	recvB    atomic.Int64
	sizes    bool // the stream reports byte counts
	ended    atomic.Bool
}

func (in *instruments) begin(ctx context.Context, service, method string, attrs []attribute.KeyValue) (context.Context, *tracker) {
	t := &tracker{in: in, start: time.Now()}
	svc, meth := KeyRPCService.String(service), KeyRPCMethod.String(method)
	// attribute.NewSet sorts its argument, so each set gets its own slice.
	t.baseAttr = []attribute.KeyValue{systemAster, svc, meth, in.side}
	t.base = metric.WithAttributeSet(attribute.NewSet(systemAster, svc, meth, in.side))
	all := append(append(make([]attribute.KeyValue, 0, 3+len(attrs)), systemAster, svc, meth), attrs...)
	ctx, t.span = in.tracer.Start(ctx, service+"/"+method,
		trace.WithSpanKind(in.spanKind), trace.WithAttributes(all...), trace.WithTimestamp(t.start))
	in.started.Add(ctx, 1, t.base)
	in.activeStreams.Add(ctx, 1, t.base)
	return ctx, t
}

// sentMsg records one sent message; size < 0 means unknown.
func (t *tracker) sentMsg(size int64) {
	n := t.sent.Add(1)
	if size >= 0 {
		t.sentB.Add(size)
	}
	t.event(msgSent, n, size)
}

// recvMsg records one received message; size < 0 means unknown.
func (t *tracker) recvMsg(size int64) {
	n := t.recv.Add(1)
	if size >= 0 {
		t.recvB.Add(size)
	}
	t.event(msgReceived, n, size)
}

func (t *tracker) event(typ attribute.KeyValue, id, size int64) {
	if !t.in.messageEvents || !t.span.IsRecording() {
		return
	}
	if size >= 0 {
		t.span.AddEvent("message", trace.WithAttributes(typ, KeyMessageID.Int64(id), KeyMessageUncompBytes.Int64(size)))
	} else {
		t.span.AddEvent("message", trace.WithAttributes(typ, KeyMessageID.Int64(id)))
	}
}

// serverFault reports whether a code means the server failed (the semantic
// conventions' rule for server span status).
func serverFault(c status.Code) bool {
	switch c {
	case status.Unknown, status.DeadlineExceeded, status.Unimplemented, status.Internal, status.Unavailable, status.DataLoss:
		return true
	}
	return false
}

// end finishes the call with err (nil is OK). Only the first end counts.
func (t *tracker) end(ctx context.Context, err error) {
	if !t.ended.CompareAndSwap(false, true) {
		return
	}
	now := time.Now()
	se := status.FromError(err)
	code := se.Code()
	codeName := KeyStatusName.String(code.String())
	if t.span.IsRecording() {
		attrs := []attribute.KeyValue{codeName, KeyStatusCode.Int64(int64(code)),
			KeyMessagesSent.Int64(t.sent.Load()), KeyMessagesReceived.Int64(t.recv.Load())}
		if t.sizes {
			attrs = append(attrs, KeyBytesSent.Int64(t.sentB.Load()), KeyBytesReceived.Int64(t.recvB.Load()))
		}
		t.span.SetAttributes(attrs...)
		if code != status.OK && (!t.in.serverSide || serverFault(code)) {
			t.span.RecordError(se, trace.WithAttributes(KeyStatusName.String(code.String())), trace.WithTimestamp(now))
			t.span.SetStatus(codes.Error, code.String()+": "+se.Message())
		}
	}
	t.span.End(trace.WithTimestamp(now))

	done := metric.WithAttributeSet(attribute.NewSet(t.baseAttr[0], t.baseAttr[1], t.baseAttr[2], t.baseAttr[3], codeName))
	t.in.activeStreams.Add(ctx, -1, t.base)
	t.in.completed.Add(ctx, 1, done)
	t.in.duration.Record(ctx, now.Sub(t.start).Seconds(), done)
	t.in.msgsSent.Record(ctx, t.sent.Load(), done)
	t.in.msgsRecv.Record(ctx, t.recv.Load(), done)
	if t.sizes {
		t.in.bytesSent.Record(ctx, t.sentB.Load(), done)
		t.in.bytesRecv.Record(ctx, t.recvB.Load(), done)
	}
}

// ConnHook returns a hook for aster.WithConnHook that counts admitted server
// connections in aster.rpc.active_connections.
func ConnHook(opts ...Option) func(handler.Peer) func() {
	in := newInstruments(newConfig(opts), true)
	set := metric.WithAttributeSet(attribute.NewSet(systemAster, sideServer))
	return func(handler.Peer) func() {
		in.activeConns.Add(context.Background(), 1, set)
		return func() { in.activeConns.Add(context.Background(), -1, set) }
	}
}

// byteCounter is implemented by aster's streams (server and client side):
// cumulative message payload bytes in each direction.
type byteCounter interface {
	SentBytes() uint64
	ReceivedBytes() uint64
}
