package aster_test

import (
	"context"
	"testing"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/handler"
	"github.com/aster-go/aster/status"
)

// ctxObs is what a callCtxService handler saw of its context.
type ctxObs struct {
	err, childErr error
	afterFired    bool
	deadline      time.Time
	hasDeadline   bool
	streamOK      bool // the Stream is reachable from a derived context
	md            string
	ctx, child    context.Context
}

// callCtxService's handlers report their context to obs; started receives a
// value when a handler has set up its derived contexts.
type callCtxService struct {
	obs     chan ctxObs
	started chan struct{}
}

func newCallCtxService() *callCtxService {
	return &callCtxService{obs: make(chan ctxObs, 8), started: make(chan struct{}, 8)}
}

func (cs *callCtxService) service() *handler.Service {
	// setup derives a child, an AfterFunc and reads the values.
	setup := func(ctx context.Context) (ctxObs, context.Context, context.CancelFunc, chan struct{}) {
		child, cancel := context.WithCancel(ctx)
		fired := make(chan struct{})
		context.AfterFunc(ctx, func() { close(fired) })
		o := ctxObs{ctx: ctx, child: child}
		o.deadline, o.hasDeadline = ctx.Deadline()
		_, o.streamOK = handler.StreamFromContext(context.WithValue(child, struct{}{}, 1))
		o.md = handler.IncomingMetadata(child)["k"]
		return o, child, cancel, fired
	}
	finish := func(o ctxObs, child context.Context, fired chan struct{}) ctxObs {
		select {
		case <-child.Done():
			o.childErr = child.Err()
		case <-time.After(5 * time.Second):
		}
		select {
		case <-fired:
			o.afterFired = true
		case <-time.After(5 * time.Second):
		}
		return o
	}
	return handler.NewService("Ctx", 1).
		// wait blocks on Done.
		Handle("wait", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			o, child, cancel, fired := setup(ctx)
			defer cancel()
			cs.started <- struct{}{}
			<-ctx.Done()
			o.err = ctx.Err()
			cs.obs <- finish(o, child, fired)
			return nil, ctx.Err()
		})).
		// lazy sleeps m.N ms without touching Done, then reports Err.
		Handle("lazy", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			time.Sleep(time.Duration(m.N) * time.Millisecond)
			cs.obs <- ctxObs{err: ctx.Err()}
			return m, nil
		})).
		// keep returns at once; its contexts must end with the call.
		Handle("keep", handler.Unary(func(ctx context.Context, m *Msg) (*Msg, error) {
			o, child, _, fired := setup(ctx)
			o.err = ctx.Err()
			go func() { cs.obs <- finish(o, child, fired) }()
			return m, nil
		}))
}

func ctxEnv(t *testing.T, tk transportKind, reuse bool) (*env, *callCtxService, *aster.Client) {
	e := newEnv(t, tk)
	cs := newCallCtxService()
	e.srv.MustRegister(cs.service())
	return e, cs, reuseClient(t, e, reuse)
}

func recvObs(t *testing.T, cs *callCtxService) ctxObs {
	t.Helper()
	select {
	case o := <-cs.obs:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not report")
		return ctxObs{}
	}
}

func waitStarted(t *testing.T, cs *callCtxService) {
	t.Helper()
	select {
	case <-cs.started:
	case <-time.After(10 * time.Second):
		t.Fatal("handler did not start")
	}
}

// forEachCtxCase runs fn on every transport with stream reuse on and off.
func forEachCtxCase(t *testing.T, fn func(t *testing.T, tk transportKind, reuse bool)) {
	for _, tk := range transports {
		for _, reuse := range []bool{false, true} {
			name := tk.name + "/reuse=off"
			if reuse {
				name = tk.name + "/reuse=on"
			}
			t.Run(name, func(t *testing.T) { fn(t, tk, reuse) })
		}
	}
}

// The handler's context, contexts derived from it and AfterFuncs on it end
// when the caller goes away; the values are reachable through derived
// contexts.
func TestCallContextClientCancel(t *testing.T) {
	forEachCtxCase(t, func(t *testing.T, tk transportKind, reuse bool) {
		_, cs, c := ctxEnv(t, tk, reuse)
		// A call first, so that the cancelled one may run on a reused stream.
		if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ctx.lazy", &Msg{}); err != nil {
			t.Fatal(err)
		}
		recvObs(t, cs)
		ctx, cancel := context.WithCancel(ctxT(t))
		errc := make(chan error, 1)
		go func() {
			_, err := aster.CallUnary[Msg](ctx, c, "Ctx.wait", &Msg{}, aster.WithHeader("k", "v"))
			errc <- err
		}()
		waitStarted(t, cs)
		cancel()
		o := recvObs(t, cs)
		if o.err != context.Canceled || o.childErr != context.Canceled || !o.afterFired {
			t.Fatalf("handler saw err %v, child %v, AfterFunc fired %v", o.err, o.childErr, o.afterFired)
		}
		if !o.streamOK || o.md != "v" {
			t.Fatalf("values: stream %v, metadata %q", o.streamOK, o.md)
		}
		wantCode(t, <-errc, status.Canceled)
		// The connection still serves calls.
		if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ctx.lazy", &Msg{}); err != nil {
			t.Fatal(err)
		}
		recvObs(t, cs)
	})
}

// The header's deadline is the handler's; a handler that waits sees its
// context end, and one that never waits still sees Err once it passed.
func TestCallContextDeadline(t *testing.T) {
	forEachCtxCase(t, func(t *testing.T, tk transportKind, reuse bool) {
		_, cs, c := ctxEnv(t, tk, reuse)
		ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := aster.CallUnary[Msg](ctx, c, "Ctx.wait", &Msg{})
		wantCode(t, err, status.DeadlineExceeded)
		o := recvObs(t, cs)
		if !o.hasDeadline || o.deadline.Before(start) || o.deadline.After(start.Add(time.Second)) {
			t.Fatalf("handler deadline %v, %v (call started %v)", o.deadline, o.hasDeadline, start)
		}
		if o.err == nil || o.childErr == nil || !o.afterFired {
			t.Fatalf("handler saw err %v, child %v, AfterFunc fired %v", o.err, o.childErr, o.afterFired)
		}
		ctx2, cancel2 := context.WithTimeout(ctxT(t), 100*time.Millisecond)
		defer cancel2()
		_, err = aster.CallUnary[Msg](ctx2, c, "Ctx.lazy", &Msg{N: 300})
		wantCode(t, err, status.DeadlineExceeded)
		if o := recvObs(t, cs); o.err == nil {
			t.Fatal("a handler that never waited saw no error after its deadline")
		}
	})
}

// Once the call has ended its context is cancelled for good, with the
// contexts derived from it; the next call (on the same stream, when
// reused) has a live one.
func TestCallContextEndsWithCall(t *testing.T) {
	forEachCtxCase(t, func(t *testing.T, tk transportKind, reuse bool) {
		_, cs, c := ctxEnv(t, tk, reuse)
		var prev context.Context
		for i := range 3 {
			if _, err := aster.CallUnary[Msg](ctxT(t), c, "Ctx.keep", &Msg{N: i}, aster.WithHeader("k", "v")); err != nil {
				t.Fatal(err)
			}
			o := recvObs(t, cs)
			if o.err != nil {
				t.Fatalf("call %d: context ended during the call: %v", i, o.err)
			}
			if o.childErr != context.Canceled || !o.afterFired || o.ctx.Err() != context.Canceled {
				t.Fatalf("call %d: after the call: err %v, child %v, AfterFunc fired %v", i, o.ctx.Err(), o.childErr, o.afterFired)
			}
			if !o.streamOK || o.md != "v" {
				t.Fatalf("values: stream %v, metadata %q", o.streamOK, o.md)
			}
			if prev != nil && prev.Err() != context.Canceled {
				t.Fatal("an earlier call's context came back to life")
			}
			prev = o.ctx
		}
	})
}

// Closing the server, or a Shutdown whose wait is cut short, ends the
// contexts of the calls in flight.
func TestCallContextServerClose(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			forEachCtxCase(t, func(t *testing.T, tk transportKind, reuse bool) {
				e, cs, c := ctxEnv(t, tk, reuse)
				errc := make(chan error, 1)
				go func() {
					_, err := aster.CallUnary[Msg](ctxT(t), c, "Ctx.wait", &Msg{})
					errc <- err
				}()
				waitStarted(t, cs)
				if how == "Close" {
					e.srv.Close()
				} else {
					sctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
					defer cancel()
					if err := e.srv.Shutdown(sctx); err == nil {
						t.Fatal("Shutdown with a call in flight returned nil")
					}
				}
				o := recvObs(t, cs)
				if o.err == nil || o.childErr == nil || !o.afterFired {
					t.Fatalf("handler saw err %v, child %v, AfterFunc fired %v", o.err, o.childErr, o.afterFired)
				}
				if err := <-errc; err == nil {
					t.Fatal("the call succeeded")
				}
			})
		})
	}
}
