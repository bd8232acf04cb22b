package aster

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/aster-go/aster/handler"
)

type ctxTestKey struct{}

// The call context answers the Stream key with its call and every other key
// through its parent, also on contexts derived from it.
func TestCallCtxValue(t *testing.T) {
	parent := context.WithValue(context.Background(), ctxTestKey{}, "v")
	c := &serverCall{}
	x := newCallCtx(parent, c, 0)
	defer x.end()
	for _, ctx := range []context.Context{x, context.WithValue(x, struct{}{}, 1)} {
		if s, ok := handler.StreamFromContext(ctx); !ok || s != handler.Stream(c) {
			t.Fatalf("StreamFromContext = %v, %v", s, ok)
		}
		if v := ctx.Value(ctxTestKey{}); v != "v" {
			t.Fatalf("parent value = %v", v)
		}
	}
	derived, cancel := context.WithCancel(x)
	defer cancel()
	if s, ok := handler.StreamFromContext(derived); !ok || s != handler.Stream(c) {
		t.Fatal("derived context lost the Stream")
	}
	if _, ok := x.Deadline(); ok {
		t.Fatal("deadline without a timeout")
	}
}

// Ending the call cancels the context, its Done channel (made before or
// after), contexts derived from it — synchronously, without a goroutine
// per derived context — and AfterFunc callbacks.
func TestCallCtxEnd(t *testing.T) {
	parent, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	x := newCallCtx(parent, &serverCall{}, 0)
	if x.Err() != nil {
		t.Fatal("cancelled at birth")
	}
	before := runtime.NumGoroutine()
	var children []context.Context
	var cancels []context.CancelFunc
	for range 50 {
		ch, cancel := context.WithCancel(x)
		children = append(children, ch)
		cancels = append(cancels, cancel)
		ch2, cancel2 := context.WithTimeout(x, time.Hour)
		children = append(children, ch2)
		cancels = append(cancels, cancel2)
	}
	fired := make(chan struct{})
	context.AfterFunc(x, func() { close(fired) })
	stopped := context.AfterFunc(x, func() { t.Error("stopped AfterFunc ran") })
	if !stopped() {
		t.Fatal("stop before cancel reported false")
	}
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Fatalf("derived contexts started goroutines: %d -> %d", before, after)
	}
	done := x.Done()
	x.end()
	select {
	case <-done:
	default:
		t.Fatal("Done not closed by end")
	}
	if x.Err() != context.Canceled || context.Cause(x) != context.Canceled {
		t.Fatalf("Err = %v, Cause = %v", x.Err(), context.Cause(x))
	}
	for i, ch := range children {
		// Synchronous: no waiting.
		if ch.Err() != context.Canceled {
			t.Fatalf("child %d: Err = %v", i, ch.Err())
		}
	}
	<-fired
	for _, c := range cancels {
		c()
	}
	select {
	case <-x.Done():
	default:
		t.Fatal("Done after end not closed")
	}
	// Registrations after the end run at once.
	late := make(chan struct{})
	context.AfterFunc(x, func() { close(late) })
	<-late
	if ch, cancel := context.WithCancel(x); ch.Err() != context.Canceled {
		t.Fatal("child of an ended context not cancelled")
	} else {
		cancel()
	}
	if parent.Err() != nil {
		t.Fatal("ending the call cancelled its parent")
	}
}

// The header's deadline: Err reports it even when nothing waited (no
// timer), Done closes at it once something waits, and derived contexts and
// Cause see DeadlineExceeded. Deadline reports the earlier of the header's
// and the parent's.
func TestCallCtxDeadline(t *testing.T) {
	t.Run("lazy", func(t *testing.T) {
		x := newCallCtx(context.Background(), &serverCall{}, 20*time.Millisecond)
		defer x.end()
		d, ok := x.Deadline()
		if !ok || time.Until(d) > 20*time.Millisecond || time.Until(d) < 0 {
			t.Fatalf("Deadline = %v, %v", d, ok)
		}
		if d2, _ := x.Deadline(); !d2.Equal(d) {
			t.Fatalf("Deadline moved: %v then %v", d, d2)
		}
		if x.Err() != nil {
			t.Fatal("expired early")
		}
		time.Sleep(30 * time.Millisecond)
		if x.Err() != context.DeadlineExceeded {
			t.Fatalf("Err = %v", x.Err())
		}
		select {
		case <-x.Done():
		default:
			t.Fatal("Done after the deadline not closed")
		}
		x.end()
		if x.Err() != context.DeadlineExceeded || context.Cause(x) != context.DeadlineExceeded {
			t.Fatalf("end overwrote the deadline: %v, %v", x.Err(), context.Cause(x))
		}
	})
	t.Run("armed", func(t *testing.T) {
		x := newCallCtx(context.Background(), &serverCall{}, 20*time.Millisecond)
		defer x.end()
		child, cancel := context.WithCancel(x)
		defer cancel()
		select {
		case <-child.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("deadline did not fire")
		}
		if child.Err() != context.DeadlineExceeded || x.Err() != context.DeadlineExceeded {
			t.Fatalf("Err = %v / %v", child.Err(), x.Err())
		}
	})
	t.Run("parent earlier", func(t *testing.T) {
		parent, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		x := newCallCtx(parent, &serverCall{}, time.Hour)
		defer x.end()
		pd, _ := parent.Deadline()
		if d, ok := x.Deadline(); !ok || !d.Equal(pd) {
			t.Fatalf("Deadline = %v, want the parent's %v", d, pd)
		}
		y := newCallCtx(parent, &serverCall{}, time.Second)
		defer y.end()
		if d, _ := y.Deadline(); !d.Before(pd) {
			t.Fatalf("Deadline = %v, want the header's", d)
		}
	})
	t.Run("huge", func(t *testing.T) {
		x := newCallCtx(context.Background(), &serverCall{}, time.Duration(maxTimeoutMillis)*time.Millisecond)
		defer x.end()
		<-time.After(time.Millisecond)
		_ = x.Done()
		if x.Err() != nil {
			t.Fatalf("Err = %v", x.Err())
		}
		if d, ok := x.Deadline(); !ok || d.Before(time.Now().Add(200*365*24*time.Hour)) {
			t.Fatalf("Deadline = %v, %v", d, ok)
		}
	})
}

// The parent's end (the caller reset the stream, the connection closed)
// cancels the context with the parent's error and cause, whether or not
// anything waited on it before.
func TestCallCtxParent(t *testing.T) {
	cause := errors.New("stream reset")
	for _, armed := range []bool{false, true} {
		parent, cancel := context.WithCancelCause(context.Background())
		x := newCallCtx(parent, &serverCall{}, time.Hour)
		var child context.Context
		if armed {
			var ccancel context.CancelFunc
			child, ccancel = context.WithCancel(x)
			defer ccancel()
		}
		cancel(cause)
		if armed {
			select {
			case <-child.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("parent's end did not reach the derived context")
			}
			if context.Cause(child) != cause {
				t.Fatalf("child cause = %v", context.Cause(child))
			}
		}
		if x.Err() != context.Canceled {
			t.Fatalf("armed=%v: Err = %v", armed, x.Err())
		}
		<-x.Done()
		if context.Cause(x) != cause {
			t.Fatalf("armed=%v: Cause = %v", armed, context.Cause(x))
		}
		x.end()
		if context.Cause(x) != cause {
			t.Fatal("end changed the cause")
		}
	}
	if cancelCtxKey == nil {
		t.Fatal("package context's cause key was not found")
	}
}

// After the call ends with the parent alive, Cause is the call's own
// error, not the parent's (nil) cause.
func TestCallCtxCauseOwn(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	x := newCallCtx(parent, &serverCall{}, 0)
	x.end()
	cancel(errors.New("later"))
	if context.Cause(x) != context.Canceled {
		t.Fatalf("Cause = %v", context.Cause(x))
	}
}

// In a synctest bubble (whose clock starts before clockBase) the deadline
// holds until it passes, armed or not, however far it is.
func TestCallCtxDeadlineBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lazy := newCallCtx(context.Background(), &serverCall{}, time.Hour)
		defer lazy.end()
		armed := newCallCtx(context.Background(), &serverCall{}, time.Hour)
		defer armed.end()
		huge := newCallCtx(context.Background(), &serverCall{}, time.Duration(maxTimeoutMillis)*time.Millisecond)
		defer huge.end()
		_, _ = armed.Done(), huge.Done()
		if d, ok := lazy.Deadline(); !ok || !d.Equal(time.Now().Add(time.Hour)) {
			t.Fatalf("Deadline = %v, %v, want %v", d, ok, time.Now().Add(time.Hour))
		}
		time.Sleep(59 * time.Minute)
		if lazy.Err() != nil || armed.Err() != nil {
			t.Fatalf("early: %v, %v", lazy.Err(), armed.Err())
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		select {
		case <-armed.Done():
		default:
			t.Fatal("armed deadline did not fire")
		}
		if lazy.Err() != context.DeadlineExceeded || armed.Err() != context.DeadlineExceeded {
			t.Fatalf("late: %v, %v", lazy.Err(), armed.Err())
		}
		if huge.Err() != nil {
			t.Fatalf("huge deadline passed: %v", huge.Err())
		}
	})
}

// BenchmarkCallContext compares the call context's life in a call whose
// handler does not wait on it (as BenchmarkUnary's: Err twice, then the
// end) with what the server did before: WithValue of the stream's context,
// then WithCancel (reused stream) or WithTimeout (header deadline). The
// parent is a live cancelCtx, as a stream's context is.
func BenchmarkCallContext(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &serverCall{}
	for _, timeout := range []time.Duration{0, time.Minute} {
		name := "cancel"
		if timeout > 0 {
			name = "deadline"
		}
		b.Run("std/"+name, func(b *testing.B) {
			b.ReportAllocs()
			{
				for b.Loop() {
					ctx := handler.NewContext(parent, c)
					var end context.CancelFunc
					if timeout > 0 {
						ctx, end = context.WithTimeout(ctx, timeout)
					} else {
						ctx, end = context.WithCancel(ctx)
					}
					_, _ = ctx.Err(), ctx.Err()
					end()
				}
			}
		})
		b.Run("callCtx/"+name, func(b *testing.B) {
			b.ReportAllocs()
			{
				for b.Loop() {
					x := newCallCtx(parent, c, timeout)
					_, _ = x.Err(), x.Err()
					x.end()
				}
			}
		})
	}
}
