package aster

import (
	"bytes"
	"context"
	"testing"

	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/trust"
)

type contractMsg struct {
	A string            `cbor:"a"`
	B []int             `cbor:"b"`
	C map[string]string `cbor:"c"`
}

// Serving _aster.contract again costs no build of the contract: before,
// every call rebuilt it under the server's lock (which new connections
// also take), so a stranger calling it in a loop made the server build
// contracts and delayed everyone's connection set-up. A Register makes the
// next call build the new contract.
func TestContractBytesCached(t *testing.T) {
	s := NewServer(WithSecretKey(trust.GenerateKey()))
	echo := handler.Unary(func(_ context.Context, m *contractMsg) (*contractMsg, error) { return m, nil })
	s.MustRegister(handler.NewService("A", 1).Handle("x", echo).Handle("y", echo))
	first, err := s.contractBytes()
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = s.contractBytes() }); n != 0 {
		t.Fatalf("serving the contract again allocates %v times, want 0 (no rebuild)", n)
	}
	s.MustRegister(handler.NewService("B", 1).Handle("z", echo))
	second, err := s.contractBytes()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, second) || !bytes.Contains(second, []byte("B")) {
		t.Fatal("the contract did not change with a new service")
	}
}
