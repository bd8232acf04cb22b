package aster_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
)

// Response streams the client stops reading must not stall its other calls
// on the same connection: a client's connection receive window (16 MiB when
// dialling) outlasts a few unread streams' windows (512 KiB each), so a
// unary call made after two streams stopped being read still completes.
// With the listening side's 1 MiB the two streams took all the credit and
// the unary call hung until its deadline.
func TestUnreadStreamsDoNotStallConnection(t *testing.T) {
	for _, tk := range append(transports[1:len(transports):len(transports)], relayTransport) { // QUIC, WebTransport, relay
		t.Run(tk.name, func(t *testing.T) {
			e := newEnv(t, tk)
			var sent atomic.Int64 // messages the Flood handlers sent
			flood := handler.NewService("Flood", 1).
				Handle("fill", handler.ServerStream(func(ctx context.Context, m *Msg, send func(*Msg) error) error {
					big := &Msg{Data: make([]byte, 64<<10)}
					for ctx.Err() == nil {
						if err := send(big); err != nil {
							return err
						}
						sent.Add(1)
					}
					return ctx.Err()
				}))
			if err := e.srv.Register(flood); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t)
			for range 2 {
				s, err := aster.CallServerStream[Msg](ctx, e.client, "Flood.fill", &Msg{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if _, err := s.Recv(); err != nil { // the stream is flowing; then it is left unread
					t.Fatal(err)
				}
			}
			// Let the server fill what flow control allows: its sends stop
			// when the streams' (and, before, the connection's) credit is
			// used up. There is no event for "blocked in flow control", so
			// wait until the count has not moved for half a second.
			for last, still := int64(-1), 0; still < 10; time.Sleep(50 * time.Millisecond) {
				if n := sent.Load(); n == last {
					still++
				} else {
					last, still = n, 0
				}
			}
			// A bounded wait, not a speed check: a stalled connection waits
			// until this deadline, a working one answers in milliseconds.
			uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			resp, err := aster.CallUnary[Msg](uctx, e.client, "Test.echo", &Msg{Text: "still here"})
			if err != nil {
				t.Fatalf("unary call beside two unread streams: %v", err)
			}
			if resp.Text != "still here" {
				t.Fatalf("got %+v", resp)
			}
		})
	}
}
