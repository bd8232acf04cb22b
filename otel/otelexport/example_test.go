package otelexport_test

import (
	"context"
	"log"

	"github.com/aster-go/aster"
	asterotel "github.com/aster-go/aster/otel"
	"github.com/aster-go/aster/otel/otelexport"
)

// ExampleSetup is the start of a program that exports when the OTEL_*
// variables are set, e.g.
//
//	OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_SERVICE_NAME=fleet ./server
func ExampleSetup() {
	ctx := context.Background()
	shutdown, err := otelexport.Setup(ctx, otelexport.Config{ServiceName: "fleet"})
	if err != nil {
		log.Fatal(err)
	}
	defer shutdown(ctx) // flushes spans and metrics

	opts := []aster.ServerOption{}
	if otelexport.Configured() {
		opts = append(opts, aster.WithMiddleware(asterotel.Server()), aster.WithConnHook(asterotel.ConnHook()))
	}
	srv := aster.NewServer(opts...)
	_ = srv // register services and serve
}
