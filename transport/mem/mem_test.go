package mem_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aster-go/aster/discovery"
	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
	"github.com/aster-go/aster/transport/mem"
	"github.com/aster-go/aster/trust"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }

func setup(opts ...mem.Option) func(t *testing.T) testutil.Setup {
	return func(t *testing.T) testutil.Setup {
		nw := mem.NewNetwork(opts...)
		ln, err := nw.Listen(testutil.Key(t, 1))
		if err != nil {
			t.Fatal(err)
		}
		return testutil.Setup{
			Dialer:   nw.Dialer(testutil.Key(t, 2)),
			DialerID: testutil.ID(t, 2),
			Listener: ln,
			Impostor: func(t *testing.T, claimed trust.EndpointID) discovery.EndpointAddr {
				nw.Alias(claimed, ln.Addr().ID)
				return discovery.EndpointAddr{ID: claimed}
			},
		}
	}
}

func TestConformance(t *testing.T) {
	testutil.TestTransport(t, setup())
}

func TestConformanceSmallWindow(t *testing.T) {
	testutil.TestTransport(t, setup(mem.WithStreamWindow(100)))
}

func TestListenTwice(t *testing.T) {
	nw := mem.NewNetwork()
	ln, err := nw.Listen(testutil.Key(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Listen(testutil.Key(t, 1)); err == nil {
		t.Fatal("second Listen on the same id succeeded")
	}
	_ = ln.Close()
	// After Close the id is free again.
	ln, err = nw.Listen(testutil.Key(t, 1))
	if err != nil {
		t.Fatalf("Listen after Close: %v", err)
	}
	_ = ln.Close()
}

func TestDialUnknown(t *testing.T) {
	nw := mem.NewNetwork()
	_, err := nw.Dialer(testutil.Key(t, 2)).Dial(context.Background(), discovery.EndpointAddr{ID: testutil.ID(t, 3)})
	if !errors.Is(err, mem.ErrUnknownEndpoint) {
		t.Fatalf("Dial of unknown id: %v, want ErrUnknownEndpoint", err)
	}
}

func TestBadKey(t *testing.T) {
	nw := mem.NewNetwork()
	if _, err := nw.Listen(trust.SecretKey{1, 2, 3}); !errors.Is(err, mem.ErrInvalidKey) {
		t.Errorf("Listen with short key: %v", err)
	}
	ln, err := nw.Listen(testutil.Key(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := nw.Dialer(nil).Dial(context.Background(), ln.Addr()); !errors.Is(err, mem.ErrInvalidKey) {
		t.Errorf("Dial with nil key: %v", err)
	}
}

// TestWindowBlocks checks that a writer blocks once the window is full.
func TestWindowBlocks(t *testing.T) {
	nw := mem.NewNetwork(mem.WithStreamWindow(1000))
	ln, err := nw.Listen(testutil.Key(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := nw.Dialer(testutil.Key(t, 2)).Dial(t.Context(), ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(transport.ConnNoError, "")
	st, err := c.OpenStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := st.Write(make([]byte, 5000))
	if n != 1000 || err == nil {
		t.Fatalf("Write into a 1000-byte window = %d, %v; want 1000 and a timeout", n, err)
	}
}
