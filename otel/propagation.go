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

// injectCarrier collects what a propagator injects (traceparent,
// tracestate, baggage) without allocating a map; pairs beyond the first
// four (a custom propagator) go to more.
type injectCarrier struct {
	kv   [4][2]string
	n    int
	more map[string]string
}

func (c *injectCarrier) Get(key string) string {
	for _, kv := range c.kv[:c.n] {
		if kv[0] == key {
			return kv[1]
		}
	}
	return c.more[key]
}

func (c *injectCarrier) Set(key, value string) {
	for i := range c.kv[:c.n] {
		if c.kv[i][0] == key {
			c.kv[i][1] = value
			return
		}
	}
	if _, ok := c.more[key]; !ok && c.n < len(c.kv) {
		c.kv[c.n] = [2]string{key, value}
		c.n++
		return
	}
	if c.more == nil {
		c.more = map[string]string{}
	}
	c.more[key] = value
}

// len returns the number of pairs.
func (c *injectCarrier) len() int { return c.n + len(c.more) }

// copyTo adds the pairs to m.
func (c *injectCarrier) copyTo(m map[string]string) {
	for _, kv := range c.kv[:c.n] {
		m[kv[0]] = kv[1]
	}
	for k, v := range c.more {
		m[k] = v
	}
}

func (c *injectCarrier) Keys() []string {
	keys := make([]string, 0, c.len())
	for _, kv := range c.kv[:c.n] {
		keys = append(keys, kv[0])
	}
	for k := range c.more {
		keys = append(keys, k)
	}
	return keys
}
