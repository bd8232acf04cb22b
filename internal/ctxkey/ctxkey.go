// Package ctxkey holds the context key under which a call's context
// carries its handler.Stream, shared by package handler (which reads it)
// and the server (whose call context answers it without a WithValue
// layer).
package ctxkey

// Stream is the context key of a call's handler.Stream.
type Stream struct{}
