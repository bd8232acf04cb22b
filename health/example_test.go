package health_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/health"
)

// ExampleNewHandler mounts the health endpoints under /aster/ on an
// application's own mux, next to its other HTTP handlers.
func ExampleNewHandler() {
	srv := aster.NewServer()
	// ... srv.Register(...); go srv.ListenAndServe("", nil)

	mux := http.NewServeMux()
	mux.Handle("/aster/", http.StripPrefix("/aster", health.NewHandler(srv, health.Options{Metrics: true, Prometheus: true})))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "my app") })

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/aster/readyz", nil))
	fmt.Print(rec.Code, " ", rec.Body.String()) // 503 until srv serves a listener
	// Output: 503 not ready
}
