package aster

import "github.com/aster-go/aster/discovery"

// Address says how to reach an endpoint: its id, home relay and direct
// addresses. Its String form is the compact "aster1…" address.
type Address = discovery.EndpointAddr

// ParseAddress parses an "aster1…" address (or a bare hex endpoint id). A
// mistyped or truncated address fails with a clear error.
func ParseAddress(s string) (Address, error) { return discovery.ParseAddress(s) }
