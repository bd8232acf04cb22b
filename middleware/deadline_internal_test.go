package middleware

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster/handler"
)

// eofStream ends at its first Recv.
type eofStream struct{ closed atomic.Int32 }

func (*eofStream) Send(any) error            { return nil }
func (*eofStream) CloseSend() error          { return nil }
func (*eofStream) Recv(any) error            { return io.EOF }
func (*eofStream) Header() handler.Metadata  { return nil }
func (*eofStream) Trailer() handler.Metadata { return nil }
func (s *eofStream) Close()                  { s.closed.Add(1) }

// deadlineCall runs ClientDeadline(opts) over a caller that records the
// context it is given.
func deadlineCall(t *testing.T, ctx context.Context, opts DeadlineOptions) (context.Context, ClientStream) {
	t.Helper()
	var got context.Context
	c := ClientDeadline(opts)(CallerFunc(func(ctx context.Context, _ *Call) (ClientStream, error) {
		got = ctx
		return &eofStream{}, nil
	}))
	cs, err := c.NewStream(ctx, &Call{Service: "S", Method: "m"})
	if err != nil {
		t.Fatal(err)
	}
	return got, cs
}

func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: context not done", what)
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

type ctxKey struct{}

// The context ClientDeadline derives from a context that is never cancelled
// behaves like context.WithTimeout's for everything package context offers.
func TestClientDeadlineContextExpires(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxKey{}, "v")
	const d = 30 * time.Millisecond
	before := time.Now()
	ctx, cs := deadlineCall(t, parent, DeadlineOptions{Default: d})
	defer cs.Close()
	if _, ok := ctx.(*deadlineCtx); !ok {
		t.Fatalf("context %T, want *deadlineCtx", ctx)
	}
	dl, ok := ctx.Deadline()
	if !ok || dl.Before(before.Add(d)) || dl.After(time.Now().Add(d)) {
		t.Fatalf("deadline %v, %v; want %v from now", dl, ok, d)
	}
	if ctx.Value(ctxKey{}) != "v" {
		t.Fatal("value of the parent lost")
	}
	if !strings.Contains(ctx.(interface{ String() string }).String(), "WithDeadline") {
		t.Fatalf("String() = %q", ctx)
	}
	if ctx.Err() != nil {
		t.Fatalf("Err() = %v before the deadline", ctx.Err())
	}
	ran := make(chan struct{})
	context.AfterFunc(ctx, func() { close(ran) })
	child, cancelChild := context.WithCancel(ctx)
	defer cancelChild()
	stopped := context.AfterFunc(ctx, func() { t.Error("stopped AfterFunc ran") })
	if !stopped() || stopped() {
		t.Fatal("stop did not report stopping once")
	}

	waitDone(t, ctx, "at the deadline")
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("Err() = %v, Cause = %v", ctx.Err(), context.Cause(ctx))
	}
	waitClosed(t, ran, "AfterFunc")
	waitDone(t, child, "child")
	if !errors.Is(child.Err(), context.DeadlineExceeded) {
		t.Fatalf("child Err() = %v", child.Err())
	}
	// Registered after the end: runs at once.
	late := make(chan struct{})
	context.AfterFunc(ctx, func() { close(late) })
	waitClosed(t, late, "late AfterFunc")
	// The end of the call does not change how the context ended.
	if err := cs.Recv(nil); err != io.EOF {
		t.Fatal(err)
	}
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err() = %v after the call ended", ctx.Err())
	}
}

// Nobody waits on the context: Err still reports the deadline once it has
// passed, and Done is closed when asked for afterwards. On synctest's
// clock (no timer is armed here, so none can leak into the shared timer
// pool from the bubble).
func TestClientDeadlineContextUnwatched(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cs := deadlineCall(t, context.Background(), DeadlineOptions{Default: time.Second})
		defer cs.Close()
		dl, _ := ctx.Deadline()
		time.Sleep(time.Until(dl) - time.Nanosecond)
		if err := ctx.Err(); err != nil {
			t.Fatalf("Err() = %v 1 ns before the deadline", err)
		}
		time.Sleep(time.Nanosecond)
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("Err() = %v at the deadline", ctx.Err())
		}
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done not closed after the deadline")
		}
	})
}

// The call's end (its last Recv, or Close) releases the context: Canceled,
// with AfterFunc functions and children run, as a context.WithTimeout's
// cancel does.
func TestClientDeadlineContextReleased(t *testing.T) {
	for _, end := range []string{"recv", "close"} {
		for _, parentKind := range []string{"background", "cancellable"} {
			t.Run(end+"/"+parentKind, func(t *testing.T) {
				parent := context.Background()
				if parentKind == "cancellable" {
					var cancel context.CancelFunc
					parent, cancel = context.WithCancel(parent)
					defer cancel()
				}
				ctx, cs := deadlineCall(t, parent, DeadlineOptions{Default: time.Hour})
				ran := make(chan struct{})
				context.AfterFunc(ctx, func() { close(ran) })
				child, cancelChild := context.WithCancel(ctx)
				defer cancelChild()
				if ctx.Err() != nil {
					t.Fatal(ctx.Err())
				}
				switch end {
				case "recv":
					if err := cs.Recv(nil); err != io.EOF {
						t.Fatal(err)
					}
				case "close":
					cs.Close()
				}
				waitDone(t, ctx, "released")
				if !errors.Is(ctx.Err(), context.Canceled) || !errors.Is(context.Cause(ctx), context.Canceled) {
					t.Fatalf("Err() = %v, Cause = %v", ctx.Err(), context.Cause(ctx))
				}
				waitClosed(t, ran, "AfterFunc")
				waitDone(t, child, "child")
				cs.Close() // again: harmless
				if n := cs.(*deadlineStream).ClientStream.(*eofStream).closed.Load(); end == "close" && n != 2 {
					t.Fatalf("inner stream closed %d times", n)
				}
			})
		}
	}
}

// A cancellable parent still ends the call's context.
func TestClientDeadlineParentCancelled(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx, cs := deadlineCall(t, parent, DeadlineOptions{Default: time.Hour})
	defer cs.Close()
	cancel()
	waitDone(t, ctx, "parent cancelled")
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal(ctx.Err())
	}
}

// No timeout to add: the caller's context goes through unchanged.
func TestClientDeadlineUnchanged(t *testing.T) {
	parent, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, opts := range []DeadlineOptions{{}, {Default: time.Hour}, {Max: time.Hour}} {
		ctx, cs := deadlineCall(t, parent, opts)
		if ctx != parent {
			t.Fatalf("%+v: context replaced", opts)
		}
		cs.Close()
	}
	// Max shortens it.
	ctx, cs := deadlineCall(t, parent, DeadlineOptions{Max: time.Second})
	defer cs.Close()
	if dl, _ := ctx.Deadline(); time.Until(dl) > time.Second {
		t.Fatalf("deadline %v not capped", time.Until(dl))
	}
}

// Timers of released calls are reused: a reused timer fires for its new
// call at that call's deadline, and never for a call that has ended.
func TestClientDeadlineTimerReuse(t *testing.T) {
	var ended []context.Context
	var streams []ClientStream
	for range 50 {
		ctx, cs := deadlineCall(t, context.Background(), DeadlineOptions{Default: time.Hour})
		ctx.Done() // arms a timer
		ended, streams = append(ended, ctx), append(streams, cs)
	}
	for _, cs := range streams {
		cs.Close() // the timers are free for the calls below
	}
	long, cs := deadlineCall(t, context.Background(), DeadlineOptions{Default: time.Hour})
	defer cs.Close()
	long.Done()
	short, cs2 := deadlineCall(t, context.Background(), DeadlineOptions{Default: 20 * time.Millisecond})
	defer cs2.Close()
	waitDone(t, short, "short deadline")
	if !errors.Is(short.Err(), context.DeadlineExceeded) {
		t.Fatalf("short: %v", short.Err())
	}
	if long.Err() != nil {
		t.Fatalf("an hour's deadline ended: %v", long.Err())
	}
	for _, ctx := range ended {
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("ended call: %v", ctx.Err())
		}
	}
}
