package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aster-go/aster"
	"github.com/aster-go/aster/bench/internal/pb"
)

// probeLoad: N unary calls over 64 callers, each with a unique id the
// server echoes back; every id must come back exactly once, on its own call.
func probeLoad(ctx context.Context, e *probeEnv, system string) error {
	n := e.n(1_000_000, 20_000)
	const callers = 64
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	var call func(ctx context.Context, id uint64) (uint64, error)
	switch system {
	case "aster":
		c, err := dialAster(ctx, p.addr)
		if err != nil {
			return err
		}
		defer c.Close()
		call = func(ctx context.Context, id uint64) (uint64, error) {
			r, err := aster.CallUnary[probeMsg](ctx, c, "Probe.echo", &probeMsg{ID: id})
			if err != nil {
				return 0, err
			}
			return r.ID, nil
		}
	case "grpc":
		cc, err := dialGRPCProbe(p.addr)
		if err != nil {
			return err
		}
		defer cc.Close()
		call = func(ctx context.Context, id uint64) (uint64, error) {
			var r pb.StatusResponse
			if err := cc.Invoke(ctx, grpcEcho, &pb.StatusRequest{AgentId: strconv.FormatUint(id, 10)}, &r); err != nil {
				return 0, err
			}
			return strconv.ParseUint(r.AgentId, 10, 64)
		}
	}
	seen := make([]atomic.Uint32, n)
	var next atomic.Int64
	var failed, mismatched, outOfRange atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				got, err := call(cctx, uint64(i))
				cancel()
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case got >= uint64(n):
					outOfRange.Add(1)
				default:
					if got != uint64(i) {
						mismatched.Add(1)
					}
					seen[got].Add(1)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	var lost, dup int
	for i := range seen {
		switch v := seen[i].Load(); {
		case v == 0:
			lost++
		case v > 1:
			dup++
		}
	}
	notes := fmt.Sprintf("%d calls, %d callers, one connection: %d lost, %d duplicated, %d mismatched, %d failed, %d unknown ids",
		n, callers, lost, dup, mismatched.Load(), failed.Load(), outOfRange.Load())
	if v := firstErr.Load(); v != nil {
		notes += "; first error: " + v.(string)
	}
	e.report("load", system, fmt.Sprintf("%.0f", float64(n)/el.Seconds()), "calls/s", notes)
	if lost+dup > 0 || mismatched.Load()+failed.Load()+outOfRange.Load() > 0 {
		return errors.New("load: calls lost, duplicated, mismatched or failed")
	}
	return nil
}

// probeStreams: N concurrent server streams on one connection (served with
// WithMaxConcurrentStreams(N)); each sends
// its first message and waits until all N are open, then sends the rest
// (21 messages of 1 KiB in all); the server's heap per open stream is
// measured while all are open, and every stream must complete in order.
func probeStreams(ctx context.Context, e *probeEnv, system string) error {
	n := e.n(10_000, 500)
	const msgs, size = 21, 1024
	// All n streams must be open at once, beyond the server's default cap
	// on concurrent streams per connection (calls over it wait in the
	// transport): the server is told to serve n.
	p, err := startProbeServer(system, "-max-streams", strconv.Itoa(n))
	if err != nil {
		return err
	}
	defer p.stop()
	c, err := dialAster(ctx, p.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	base, err := p.stats()
	if err != nil {
		return err
	}
	sctx, cancel := capCtx(ctx, 5*time.Minute)
	defer cancel()
	var opened, completed, disordered, failed atomic.Int64
	var firstErr atomic.Value
	allOpen := make(chan struct{})
	var openWG, doneWG sync.WaitGroup
	openWG.Add(n)
	release := make(chan struct{})
	for range n {
		doneWG.Go(func() {
			s, err := aster.CallServerStream[probeMsg](sctx, c, "Probe.stream", &probeStreamReq{Count: msgs, Size: size, Gate: true})
			if err != nil {
				firstErr.CompareAndSwap(nil, err.Error())
				failed.Add(1)
				openWG.Done()
				return
			}
			defer s.Close()
			m, err := s.Recv()
			openWG.Done()
			if err != nil || m.Seq != 0 {
				failed.Add(1)
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
				}
				return
			}
			opened.Add(1)
			<-release
			want := 1
			for {
				m, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					failed.Add(1)
					return
				}
				if m.Seq != want || len(m.Pad) != size {
					disordered.Add(1)
					return
				}
				want++
			}
			if want != msgs {
				disordered.Add(1)
				return
			}
			completed.Add(1)
		})
	}
	go func() { openWG.Wait(); close(allOpen) }()
	start := time.Now()
	timedOut := false
	select {
	case <-allOpen:
	case <-time.After(e.wait + time.Minute):
		timedOut = true
	}
	openTime := time.Since(start)
	during, err := p.stats()
	if err != nil {
		return err
	}
	close(release)
	if _, err := p.ctl("release"); err != nil {
		return err
	}
	doneWG.Wait()
	el := time.Since(start)
	perStream := delta(during.HeapInuse, base.HeapInuse) / float64(max(opened.Load(), 1))
	notes := fmt.Sprintf("%d streams x %d KiB on one connection: %d open at once (after %.1fs), %d completed in order, %d out of order, %d failed, %.1fs in all; server heap %s MiB -> %s MiB, RSS %s MiB, %d goroutines while open",
		n, msgs*size/1024, opened.Load(), openTime.Seconds(), completed.Load(), disordered.Load(), failed.Load(), el.Seconds(),
		mib(float64(base.HeapInuse)), mib(float64(during.HeapInuse)), mib(float64(during.RSSKB)*1024), during.Goroutines)
	if timedOut {
		notes += "; not all opened within the bound"
	}
	if v := firstErr.Load(); v != nil {
		notes += "; first error: " + v.(string)
	}
	e.report("streams", system, kibOf(perStream), "KiB/stream", notes)
	if completed.Load() != int64(n) {
		return fmt.Errorf("streams: %d of %d completed in order", completed.Load(), n)
	}
	return nil
}

// probeConns: N connections (each its own client, key and UDP socket),
// each makes one call then stays idle; the server's heap per connection.
func probeConns(ctx context.Context, e *probeEnv, system string) error {
	n := e.n(1000, 50)
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	base, err := p.stats()
	if err != nil {
		return err
	}
	clients := make([]*aster.Client, n)
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	start := time.Now()
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := dialAster(cctx, p.addr)
			if err == nil {
				_, err = aster.CallUnary[probeMsg](cctx, c, "Probe.echo", &probeMsg{ID: uint64(i)})
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
			clients[i] = c
		})
	}
	wg.Wait()
	setup := time.Since(start)
	time.Sleep(time.Second)
	during, err := p.stats()
	for _, c := range clients {
		if c != nil {
			c.Close()
		}
	}
	if err != nil {
		return err
	}
	ok := int64(n) - failed.Load()
	per := delta(during.HeapInuse, base.HeapInuse) / float64(max(ok, 1))
	notes := fmt.Sprintf("%d connections, one call each then idle: %d ok, %d failed, set up in %.1fs; server sees %d; heap %s -> %s MiB, RSS %s MiB, %.1f goroutines/conn",
		n, ok, failed.Load(), setup.Seconds(), during.Conns, mib(float64(base.HeapInuse)), mib(float64(during.HeapInuse)),
		mib(float64(during.RSSKB)*1024), float64(during.Goroutines-base.Goroutines)/float64(max(ok, 1)))
	if v := firstErr.Load(); v != nil {
		notes += "; first error: " + v.(string)
	}
	e.report("conns", system, kibOf(per), "KiB/conn", notes)
	if failed.Load() > 0 {
		return fmt.Errorf("conns: %d of %d failed", failed.Load(), n)
	}
	return nil
}

// probeSoak: mixed load (unary callers, short server streams, connection
// churn) for -soak; the server's heap and goroutines are sampled every 10s.
func probeSoak(ctx context.Context, e *probeEnv, system string) error {
	d := e.soak
	if d <= 0 {
		d = 30 * time.Second
	}
	p, err := startProbeServer(system)
	if err != nil {
		return err
	}
	defer p.stop()
	c, err := dialAster(ctx, p.addr)
	if err != nil {
		return err
	}
	defer c.Close()
	sctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var calls, streams, churn, errs atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for id := uint64(0); sctx.Err() == nil; id++ {
				r, err := aster.CallUnary[probeMsg](sctx, c, "Probe.echo", &probeMsg{ID: id})
				if sctx.Err() != nil {
					return
				}
				if err != nil || r.ID != id {
					errs.Add(1)
					continue
				}
				calls.Add(1)
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for sctx.Err() == nil {
				s, err := aster.CallServerStream[probeMsg](sctx, c, "Probe.stream", &probeStreamReq{Count: 50, Size: 1024})
				if err == nil {
					k := 0
					for _, err = range s.All() {
						if err != nil {
							break
						}
						k++
					}
					s.Close()
					if err == nil && k != 50 {
						err = fmt.Errorf("%d of 50 messages", k)
					}
				}
				if sctx.Err() != nil {
					return
				}
				if err != nil {
					errs.Add(1)
					continue
				}
				streams.Add(1)
			}
		})
	}
	wg.Go(func() {
		for sctx.Err() == nil {
			cc, err := dialAster(sctx, p.addr)
			if err == nil {
				_, err = aster.CallUnary[probeMsg](sctx, cc, "Probe.echo", &probeMsg{ID: 1})
				cc.Close()
			}
			if sctx.Err() != nil {
				return
			}
			if err != nil {
				errs.Add(1)
			} else {
				churn.Add(1)
			}
			select {
			case <-time.After(200 * time.Millisecond):
			case <-sctx.Done():
			}
		}
	})
	var samples []*probeStats
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	first, err := p.stats()
	if err != nil {
		return err
	}
	samples = append(samples, first)
loop:
	for {
		select {
		case <-tick.C:
			s, err := p.stats()
			if err != nil {
				return err
			}
			samples = append(samples, s)
			fmt.Fprintf(e.log, "soak %s: heap %s MiB, %d goroutines, RSS %s MiB, %d calls\n",
				time.Duration(len(samples)-1)*10*time.Second, mib(float64(s.HeapInuse)), s.Goroutines, mib(float64(s.RSSKB)*1024), calls.Load())
		case <-sctx.Done():
			break loop
		}
	}
	wg.Wait()
	var maxHeap uint64
	maxG := 0
	var maxRSS int64
	for _, s := range samples {
		maxHeap, maxG, maxRSS = max(maxHeap, s.HeapInuse), max(maxG, s.Goroutines), max(maxRSS, s.RSSKB)
	}
	// The first sample is taken before the load starts; the second is the
	// first under load.
	loaded := samples[min(1, len(samples)-1)]
	last := samples[len(samples)-1]
	notes := fmt.Sprintf("%s mixed load (8 unary callers, 2 stream callers, a new connection every 200ms): %d calls, %d streams, %d connections, %d errors; %d samples: heap first/last/max %s/%s/%s MiB (idle before load %s), goroutines %d/%d/%d (idle %d), RSS max %s MiB",
		d, calls.Load(), streams.Load(), churn.Load(), errs.Load(), len(samples),
		mib(float64(loaded.HeapInuse)), mib(float64(last.HeapInuse)), mib(float64(maxHeap)), mib(float64(first.HeapInuse)),
		loaded.Goroutines, last.Goroutines, maxG, first.Goroutines, mib(float64(maxRSS)*1024))
	e.report("soak", system, mib(delta(last.HeapInuse, loaded.HeapInuse)), "MiB drift", notes)
	return nil
}
