package otel

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	gotel "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/middleware"
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

	mu      sync.RWMutex
	methods map[methodKey]*methodAttrs
}

// newInstruments creates the instruments. Registration errors (a
// misbehaving provider) are reported through otel.Handle and never fail a
// call: a missing instrument is replaced by a no-op one.
func newInstruments(c *config, server bool) *instruments {
	m := c.mp.Meter(ScopeName)
	in := &instruments{
		tracer: c.tp.Tracer(ScopeName), prop: c.prop, messageEvents: c.messageEvents,
		side: sideClient, spanKind: trace.SpanKindClient, serverSide: server,
		methods: map[methodKey]*methodAttrs{},
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
	if in.started == nil {
		in.started = noop.Int64Counter{}
	}
	if in.completed == nil {
		in.completed = noop.Int64Counter{}
	}
	if in.duration == nil {
		in.duration = noop.Float64Histogram{}
	}
	for _, h := range []*metric.Int64Histogram{&in.msgsSent, &in.msgsRecv, &in.bytesSent, &in.bytesRecv} {
		if *h == nil {
			*h = noop.Int64Histogram{}
		}
	}
	if in.activeStreams == nil {
		in.activeStreams = noop.Int64UpDownCounter{}
	}
	if in.activeConns == nil {
		in.activeConns = noop.Int64UpDownCounter{}
	}
	return in
}

// tracker follows one call: its span, counters and metric attributes. The
// counters are atomic because a client may Send and Recv from different
// goroutines.
type tracker struct {
	in    *instruments
	ma    *methodAttrs
	span  trace.Span
	start time.Time
	sent  atomic.Int64
	recv  atomic.Int64
	sentB atomic.Int64
	recvB atomic.Int64
	// sizes: the stream reports byte counts (middleware.StatsOf) and every
	// message's size was known, so the byte totals are complete.
	sizes atomic.Bool
	ended atomic.Bool
}

// methodAttrs are the attributes of one method's spans and metrics, built
// once per method: attribute sets allocate.
type methodAttrs struct {
	name string               // span name, "{service}/{method}"
	span []attribute.KeyValue // rpc.system, rpc.service, rpc.method
	// startOpts: span kind and the attributes above.
	startOpts []trace.SpanStartOption
	kv        [4]attribute.KeyValue
	base      []metric.AddOption // + aster.rpc.side (a slice: passing it with ... does not allocate)
	// done holds the completed-call attributes (base + status code name)
	// of the codes 0–16; others are built per call.
	done [status.Unauthenticated + 1]*doneOpts
}

// doneOpts are the options of the completed-call measurements.
type doneOpts struct {
	add    []metric.AddOption
	record []metric.RecordOption
}

func newMethodAttrs(service, method string, side attribute.KeyValue, kind trace.SpanKind) *methodAttrs {
	svc, meth := KeyRPCService.String(service), KeyRPCMethod.String(method)
	ma := &methodAttrs{
		name: service + "/" + method,
		span: []attribute.KeyValue{systemAster, svc, meth},
		kv:   [4]attribute.KeyValue{systemAster, svc, meth, side},
	}
	ma.startOpts = []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithAttributes(ma.span...)}
	// attribute.NewSet sorts its argument, so each set gets its own array.
	kv := ma.kv
	ma.base = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(kv[:]...))}
	for c := range ma.done {
		ma.done[c] = ma.doneFor(status.Code(c))
	}
	return ma
}

func (ma *methodAttrs) doneFor(c status.Code) *doneOpts {
	if int(c) < len(ma.done) && ma.done[c] != nil {
		return ma.done[c]
	}
	o := metric.WithAttributeSet(attribute.NewSet(ma.kv[0], ma.kv[1], ma.kv[2], ma.kv[3], KeyStatusName.String(c.String())))
	return &doneOpts{add: []metric.AddOption{o}, record: []metric.RecordOption{o}}
}

// maxCachedMethods bounds the per-method attribute cache (a client may call
// arbitrary names, e.g. the CLI); beyond it attributes are built per call.
const maxCachedMethods = 4096

type methodKey struct{ service, method string }

func (in *instruments) attrsFor(service, method string) *methodAttrs {
	k := methodKey{service, method}
	in.mu.RLock()
	ma := in.methods[k]
	in.mu.RUnlock()
	if ma != nil {
		return ma
	}
	ma = newMethodAttrs(service, method, in.side, in.spanKind)
	in.mu.Lock()
	if len(in.methods) < maxCachedMethods {
		if old := in.methods[k]; old != nil {
			ma = old
		} else {
			in.methods[k] = ma
		}
	}
	in.mu.Unlock()
	return ma
}

// begin starts a call's span and counts it. Callers add their own span
// attributes when t.span.IsRecording().
func (in *instruments) begin(ctx context.Context, service, method string) (context.Context, *tracker) {
	ma := in.attrsFor(service, method)
	t := &tracker{in: in, ma: ma, start: time.Now()}
	ctx, t.span = in.tracer.Start(ctx, ma.name, ma.startOpts...)
	in.started.Add(ctx, 1, ma.base...)
	in.activeStreams.Add(ctx, 1, ma.base...)
	return ctx, t
}

// sentMsg records one sent message; size < 0 means unknown (and makes the
// byte totals incomplete, so they are not reported).
func (t *tracker) sentMsg(size int64) {
	n := t.sent.Add(1)
	if size >= 0 {
		t.sentB.Add(size)
	} else {
		t.sizes.Store(false)
	}
	t.event(msgSent, n, size)
}

// recvMsg records one received message; size < 0 means unknown.
func (t *tracker) recvMsg(size int64) {
	n := t.recv.Add(1)
	if size >= 0 {
		t.recvB.Add(size)
	} else {
		t.sizes.Store(false)
	}
	t.event(msgReceived, n, size)
}

// msgSizer tells the size of each message of one direction of a stream from
// the framework's cumulative counts (middleware.StatsOf). Only the goroutine
// doing that direction's Send or Recv uses it.
type msgSizer struct{ msgs, bytes int64 }

// sent returns the size of the message a successful Send just sent, or -1.
func (z *msgSizer) sent(stream any) int64 {
	st, ok := middleware.StatsOf(stream)
	if !ok {
		return -1
	}
	return z.next(st.SentMessages, st.SentBytes)
}

// received returns the size of the message a successful Recv just
// received, or -1.
func (z *msgSizer) received(stream any) int64 {
	st, ok := middleware.StatsOf(stream)
	if !ok {
		return -1
	}
	return z.next(st.ReceivedMessages, st.ReceivedBytes)
}

// next returns the size of the one message the counts advanced by since the
// last call, or -1 when they did not advance by exactly one message: then
// the size cannot be told (for example a retry middleware inside otel
// switched to a new attempt's stream and replayed messages on it, or held a
// message back for the next attempt).
func (z *msgSizer) next(msgs, bytes int64) int64 {
	size := int64(-1)
	if msgs == z.msgs+1 && bytes >= z.bytes {
		size = bytes - z.bytes
	}
	z.msgs, z.bytes = msgs, bytes
	return size
}

// hasStats reports whether stream, or a stream it wraps, keeps message and
// byte counts (aster's own streams do).
func hasStats(stream any) bool {
	_, ok := middleware.StatsOf(stream)
	return ok
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
		if t.sizes.Load() {
			attrs = append(attrs, KeyBytesSent.Int64(t.sentB.Load()), KeyBytesReceived.Int64(t.recvB.Load()))
		}
		t.span.SetAttributes(attrs...)
		if code != status.OK && (!t.in.serverSide || serverFault(code)) {
			t.span.RecordError(se, trace.WithAttributes(KeyStatusName.String(code.String())), trace.WithTimestamp(now))
			t.span.SetStatus(codes.Error, code.String()+": "+se.Message())
		}
	}
	if t.span.IsRecording() {
		t.span.End(trace.WithTimestamp(now))
	} else {
		t.span.End()
	}

	done := t.ma.doneFor(code)
	t.in.activeStreams.Add(ctx, -1, t.ma.base...)
	t.in.completed.Add(ctx, 1, done.add...)
	t.in.duration.Record(ctx, now.Sub(t.start).Seconds(), done.record...)
	t.in.msgsSent.Record(ctx, t.sent.Load(), done.record...)
	t.in.msgsRecv.Record(ctx, t.recv.Load(), done.record...)
	if t.sizes.Load() {
		t.in.bytesSent.Record(ctx, t.sentB.Load(), done.record...)
		t.in.bytesRecv.Record(ctx, t.recvB.Load(), done.record...)
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
