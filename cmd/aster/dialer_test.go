package main

import (
	"net/netip"
	"testing"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/trust"
)

func TestWithTransport(t *testing.T) {
	id := trust.IDOf(trust.GenerateKey())
	wtOnly := aster.Address{ID: id, WebTransport: "https://127.0.0.1:4433/aster"}
	if got := withTransport(wtOnly, nil); len(got) != 1 {
		t.Fatalf("WebTransport-only address: %d options, want the WebTransport dialer", len(got))
	}
	direct := aster.Address{ID: id, WebTransport: "https://127.0.0.1:4433/aster", Direct: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:4433")}}
	if got := withTransport(direct, nil); len(got) != 0 {
		t.Fatalf("address with a direct QUIC address: %d options, want none", len(got))
	}
}
