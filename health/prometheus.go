package health

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The Prometheus form of a server's counters, served at /metrics/prometheus
// next to the JSON /metrics. The official client library writes the text
// exposition format; the values are read from the server at scrape time, so
// serving them costs nothing between scrapes.
var (
	promConnections = prometheus.NewDesc("aster_server_connections",
		"Open connections.", nil, nil)
	promActiveCalls = prometheus.NewDesc("aster_server_active_calls",
		"Calls being served.", nil, nil)
	promCalls = prometheus.NewDesc("aster_server_calls_total",
		"Finished calls by status code name (APPLICATION for codes 100 and above).", []string{"code"}, nil)
	promStreams = prometheus.NewDesc("aster_server_streams_total",
		"Streams that carried calls: opened for a call, or reused after an earlier call (PROTOCOL.md 23).", []string{"kind"}, nil)
	promIdleStreams = prometheus.NewDesc("aster_server_idle_streams",
		"Reusable streams waiting for their next call.", nil, nil)
	promGateRefused = prometheus.NewDesc("aster_server_conns_gate_refused_total",
		"Connections refused by the server's connection gates (aster.WithConnGate), time-outs and panics included.", nil, nil)
)

// promCollector exports a Source's Metrics to Prometheus.
type promCollector struct{ src Source }

// Describe implements prometheus.Collector.
func (c promCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- promConnections
	ch <- promActiveCalls
	ch <- promCalls
	ch <- promStreams
	ch <- promIdleStreams
	ch <- promGateRefused
}

// Collect implements prometheus.Collector.
func (c promCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.src.Metrics()
	ch <- prometheus.MustNewConstMetric(promConnections, prometheus.GaugeValue, float64(m.Connections))
	ch <- prometheus.MustNewConstMetric(promActiveCalls, prometheus.GaugeValue, float64(m.ActiveCalls))
	for code, n := range m.Calls {
		ch <- prometheus.MustNewConstMetric(promCalls, prometheus.CounterValue, float64(n), code)
	}
	ch <- prometheus.MustNewConstMetric(promStreams, prometheus.CounterValue, float64(m.StreamsOpened), "opened")
	ch <- prometheus.MustNewConstMetric(promStreams, prometheus.CounterValue, float64(m.StreamsReused), "reused")
	ch <- prometheus.MustNewConstMetric(promIdleStreams, prometheus.GaugeValue, float64(m.IdleStreams))
	ch <- prometheus.MustNewConstMetric(promGateRefused, prometheus.CounterValue, float64(m.ConnsGateRefused))
}

// prometheusHandler serves src's counters in the Prometheus text format,
// from a registry of its own (nothing is added to the global one).
func prometheusHandler(src Source) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(promCollector{src})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
