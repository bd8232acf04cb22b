package webtransport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aster-go/aster/internal/testutil"
	"github.com/aster-go/aster/transport"
)

// When the server's UDP socket vanishes without a CONNECTION_CLOSE (as
// when its process is killed), the client's session notices within the
// default idle timeout: a pending Read fails with a *transport.ConnError
// and Done is closed.
func TestKilledServerNoticed(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", testutil.Key(t, 1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := NewDialer(testutil.Key(t, 2), nil)
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(transport.ConnNoError, "")
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(transport.ConnNoError, "")
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ss, err := sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	ln.udp.Close() // the server's socket is gone; nothing is sent
	t0 := time.Now()
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		readErr <- err
	}()
	bound := 4 * DefaultMaxIdleTimeout
	select {
	case err := <-readErr:
		var ce *transport.ConnError
		if !errors.As(err, &ce) {
			t.Fatalf("Read: %v, want a *transport.ConnError", err)
		}
		t.Logf("noticed after %v: %v", time.Since(t0), err)
	case <-time.After(bound):
		t.Fatalf("a session to a killed server still open after %v", bound)
	}
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed after the session failed")
	}
}
