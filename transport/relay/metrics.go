package relay

import (
	"fmt"
	"net/http"
	"sort"
)

// Handler returns the relay's HTTP handler: GET /healthz answers 200 "ok"
// while the relay serves (503 after Shutdown or Close) and GET /metrics the
// Stats in the Prometheus text format.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.isClosed() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "shutting down")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		st := s.Stats()
		gauge := func(name, help string, v any) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
		}
		counter := func(name, help string, v any) {
			fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %v\n", name, help, name, name, v)
		}
		gauge("aster_relay_endpoints", "Endpoints registered now.", st.Endpoints)
		gauge("aster_relay_connections", "TCP connections open now.", st.Conns)
		counter("aster_relay_connections_accepted_total", "TCP connections accepted.", st.Accepted)
		counter("aster_relay_registrations_total", "Successful endpoint registrations.", st.Registrations)
		counter("aster_relay_refused_total", "Connections refused (bad proof, limits, protocol errors).", st.Refused)
		counter("aster_relay_observed_total", "Address-observation probes answered over UDP.", st.Observed)
		counter("aster_relay_packets_forwarded_total", "Datagrams forwarded.", st.PacketsForwarded)
		counter("aster_relay_bytes_forwarded_total", "Datagram bytes forwarded.", st.BytesForwarded)
		fmt.Fprintf(w, "# HELP aster_relay_packets_dropped_total Datagrams dropped, by reason.\n# TYPE aster_relay_packets_dropped_total counter\n")
		reasons := make([]string, 0, len(st.Dropped))
		for r := range st.Dropped {
			reasons = append(reasons, r)
		}
		sort.Strings(reasons)
		for _, r := range reasons {
			fmt.Fprintf(w, "aster_relay_packets_dropped_total{reason=%q} %d\n", r, st.Dropped[r])
		}
	})
	return mux
}
