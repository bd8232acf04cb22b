package otel

import "github.com/aster-go/aster/handler"

// metadataCarrier adapts call metadata to propagation.TextMapCarrier. Keys
// are lowercase ("traceparent", "tracestate", "baggage"), as the W3C
// propagators write them.
type metadataCarrier handler.Metadata

func (m metadataCarrier) Get(key string) string { return m[key] }

func (m metadataCarrier) Set(key, value string) { m[key] = value }

func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
