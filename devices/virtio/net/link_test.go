package net

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
)

func TestLinkCarriesFramesInOrderAndDropsWhenFull(t *testing.T) {
	a, b := NewLink()
	for i := range LinkQueue + 3 {
		if err := a.Send(frame(60, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if b.Dropped() != 3 || a.Dropped() != 0 {
		t.Errorf("dropped %d at b, %d at a; want 3 at b", b.Dropped(), a.Dropped())
	}
	for i := range LinkQueue {
		f, err := b.Recv()
		if err != nil || !bytes.Equal(f, frame(60, byte(i))) {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	sent := frame(60, 9)
	b.Send(sent)
	sent[20] ^= 0xff // Send copied it
	if f, _ := a.Recv(); !bytes.Equal(f, frame(60, 9)) {
		t.Error("Send did not copy the frame")
	}
	if a.Send(nil) == nil || a.Send(make([]byte, bounce.MaxLen+1)) == nil {
		t.Error("an empty or over-long frame accepted")
	}
}

func TestLinkCloseUnblocksReaders(t *testing.T) {
	a, b := NewLink()
	done := make(chan error, 2)
	go func() { _, err := a.Recv(); done <- err }()
	go func() { _, err := b.Serve(bounce.Request{Tag: 1, Len: MaxFrame, Upto: true}); done <- err }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("reader returned %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a reader still blocked after Close")
		}
	}
	if !errors.Is(a.Send(frame(60, 1)), ErrClosed) {
		t.Error("Send on a closed link")
	}
	a.Close() // twice: fine
}

// A read returns a batch: the first frame (waited for), then those queued
// behind it, up to Arg frames in Len bytes; a frame that does not fit is
// kept for the next read, and frames longer than MaxFrame are discarded.
func TestLinkServeBatches(t *testing.T) {
	a, b := NewLink()
	read := func(n int, lenBytes int) [][]byte {
		t.Helper()
		batch, err := b.Serve(bounce.Request{Tag: 1, Len: lenBytes, Arg: uint64(n), Upto: true})
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		for len(batch) > 0 {
			f, rest, ok := nextFrame(batch)
			if !ok {
				t.Fatalf("batch does not parse: % x", batch)
			}
			frames, batch = append(frames, f), rest
		}
		return frames
	}
	a.Send(make([]byte, MaxFrame+1))
	for i := range 6 {
		a.Send(frame(100+i, byte(i)))
	}
	if got := read(2, 2*RecordLen); !reflectEqual(got, [][]byte{frame(100, 0), frame(101, 1)}) || b.Oversize() != 1 {
		t.Fatalf("first batch: %d frames, oversize %d", len(got), b.Oversize())
	}
	if got := read(RxBatchMax, 2+102+2+103+1); !reflectEqual(got, [][]byte{frame(102, 2), frame(103, 3)}) {
		t.Fatalf("second batch: %d frames", len(got))
	}
	if got := read(0, RecordLen); !reflectEqual(got, [][]byte{frame(104, 4)}) { // the held frame first
		t.Fatalf("third batch: %d frames", len(got))
	}
	if got := read(RxBatchMax, RxBatchMax*RecordLen); !reflectEqual(got, [][]byte{frame(105, 5)}) {
		t.Fatalf("fourth batch: %d frames", len(got))
	}
	if _, err := b.Serve(bounce.Request{Tag: 2, Len: 4, Write: true, Data: []byte{1, 2, 3, 4}}); err != nil {
		t.Fatal(err)
	}
	if f, _ := a.Recv(); !bytes.Equal(f, []byte{1, 2, 3, 4}) {
		t.Fatal("a write did not reach the other end")
	}
}

// pump delivers the engine's completions to the device, as the VMM does at
// delivery points, until done returns true.
func pump(t *testing.T, g *guest, done func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: stats %+v", g.dev.Stats())
		}
		for _, c := range g.dev.Engine().Poll() {
			g.complete(c)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// A live device over a link: the guest's frames come out of the other end
// intact and in order, and frames sent into it land in the guest's
// buffers intact and in order.
func TestLiveOverLink(t *testing.T) {
	devEnd, peer := NewLink()
	defer peer.Close()
	g := newGuest(t, bounce.NewEngine(devEnd.Backend()), 256)
	const n = 150 // more than MaxTxInFlight, and than the queue holds at once
	for i := range 100 {
		g.postRx(HeaderLen + MaxFrame)
		g.sendFrame(frame(MinFrame+i*9, byte(i)), i%2 == 0)
	}
	g.Notify(RxQueue)
	g.Notify(TxQueue)
	got := make(chan []byte, n)
	go func() {
		for range n {
			f, err := peer.Recv()
			if err != nil {
				return
			}
			got <- f
		}
	}()
	queued := 100
	pump(t, g, func() bool {
		g.Collect()
		for ; queued < n && g.Rings[TxQueue].Free() > 0; queued++ {
			g.sendFrame(frame(MinFrame+queued*9, byte(queued)), false)
			g.Notify(TxQueue)
		}
		return len(got) == n
	})
	for i := range n {
		if f := <-got; !bytes.Equal(f, frame(MinFrame+i*9, byte(i))) {
			t.Fatalf("frame %d: %d bytes, out of order or changed", i, len(f))
		}
	}
	pump(t, g, func() bool { tx, _ := g.dev.InFlight(); return tx == 0 })

	for i := range 80 {
		peer.Send(frame(MaxFrame-i, byte(i)))
	}
	pump(t, g, func() bool { return len(g.frames) == 80 })
	for i, f := range g.frames {
		if !bytes.Equal(f, frame(MaxFrame-i, byte(i))) {
			t.Fatalf("received frame %d: out of order or changed", i)
		}
	}
	if st := g.dev.Stats(); st != (Stats{TxFrames: n, RxFrames: 80}) {
		t.Errorf("stats %+v", st)
	}
}

// countingBackend serves reads from a link end and counts how many reads
// are in the backend at once.
type countingBackend struct {
	end            *Endpoint
	reads, maxRead atomic.Int32
}

func (c *countingBackend) serve(r bounce.Request) ([]byte, error) {
	if !r.Write {
		n := c.reads.Add(1)
		defer c.reads.Add(-1)
		for m := c.maxRead.Load(); n > m && !c.maxRead.CompareAndSwap(m, n); m = c.maxRead.Load() {
		}
	}
	return c.end.Serve(r)
}

// A reset cannot cancel the standing receive: it stays the only receive
// in flight, a new driver's notifications do not add a second, and its
// packet goes to the new driver; one that arrives before the new driver
// has posted buffers and notified is dropped, and the next notification
// stands a new receive.
func TestResetWithAStandingReceive(t *testing.T) {
	devEnd, peer := NewLink()
	defer peer.Close()
	cb := &countingBackend{end: devEnd}
	g := newGuest(t, bounce.NewEngine(cb.serve), 64)
	g.postRx(2000)
	g.sendFrame(frame(60, 1), false)
	g.Notify(TxQueue)
	g.Notify(RxQueue)
	waitFor(t, func() bool { return cb.reads.Load() == 1 })
	tag := g.dev.rxTag

	g.Start(64) // reset: the receive and the frame stay in flight
	if tx, rx := g.dev.InFlight(); !rx || g.dev.rxTag != tag {
		t.Fatalf("after reset: receiving %v (tag %d, was %d), %d frames in flight", rx, g.dev.rxTag, tag, tx)
	}
	b := g.postRx(2000)
	g.Notify(RxQueue)
	g.Notify(TxQueue)
	time.Sleep(5 * time.Millisecond)
	if cb.reads.Load() != 1 || g.dev.rxTag != tag {
		t.Fatal("a second receive was submitted")
	}
	peer.Send(frame(80, 2))
	pump(t, g, func() bool { return b.Done })
	if b.Written != HeaderLen+80 || !bytes.Equal(g.frames[0], frame(80, 2)) {
		t.Fatalf("the orphan's packet: %d bytes written", b.Written)
	}
	waitFor(t, func() bool { return cb.reads.Load() == 1 })

	g.Start(64) // reset again; this time the packet comes before any buffer
	peer.Send(frame(90, 3))
	pump(t, g, func() bool { return g.dev.Stats().RxNoBuffer == 1 })
	if _, rx := g.dev.InFlight(); rx {
		t.Fatal("a receive was stood before the driver notified")
	}
	b = g.postRx(2000)
	g.Notify(RxQueue)
	peer.Send(frame(70, 4))
	pump(t, g, func() bool { return b.Done })
	if cb.maxRead.Load() != 1 {
		t.Errorf("%d receives were in the backend at once", cb.maxRead.Load())
	}
	if f, _ := peer.Recv(); !bytes.Equal(f, frame(60, 1)) {
		t.Error("the frame sent before the reset was lost")
	}
	if st := g.dev.Stats(); st != (Stats{TxFrames: 1, RxFrames: 2, RxNoBuffer: 1}) {
		t.Errorf("stats %+v", st)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(100 * time.Microsecond)
	}
}
