package main

import (
	"bytes"
	"io"
	"os"
	"testing"
	"time"
)

// TestForwarder runs the loss test's forwarder over pipes: with no loss
// every byte arrives in order; with certain loss nothing does and every
// packet is counted as dropped.
func TestForwarder(t *testing.T) {
	for _, loss := range []float64{0, 1} {
		srcR, srcW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		dstR, dstW, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		n := &lossNet{}
		n.wg.Go(func() { n.forward(srcR, dstW, loss, time.Millisecond) })
		want := []byte("packet-one packet-two")
		if _, err := srcW.Write(want); err != nil {
			t.Fatal(err)
		}
		srcW.Close()
		n.wg.Wait() // the forwarder ends at EOF and flushes its queue
		dstW.Close()
		got, err := io.ReadAll(dstR)
		if err != nil {
			t.Fatal(err)
		}
		delivered, dropped := n.counts()
		switch loss {
		case 0:
			if !bytes.Equal(got, want) || dropped != 0 || delivered == 0 {
				t.Errorf("loss 0: got %q, %d delivered, %d dropped", got, delivered, dropped)
			}
		case 1:
			if len(got) != 0 || delivered != 0 || dropped == 0 {
				t.Errorf("loss 1: got %q, %d delivered, %d dropped", got, delivered, dropped)
			}
		}
		srcR.Close()
		dstR.Close()
	}
}
