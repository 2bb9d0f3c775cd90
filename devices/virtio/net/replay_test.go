package net

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
)

// netScript is a guest's run: frames sent, receive buffers posted, a
// malformed chain of each kind, a reset and a queue restart with
// transfers in flight, and delivery points in between, where point
// delivers completions. Its actions depend only on what the device put in
// guest memory, not on timing.
func netScript(g *guest, point func()) {
	for i := range 6 {
		g.postRx(HeaderLen + MaxFrame)
		g.sendFrame(frame(60+i, byte(i)), i%2 == 1)
	}
	g.notify(RxQueue)
	g.notify(TxQueue)
	point()
	for i := range 4 {
		g.sendFrame(frame(200+i, byte(10+i)), false)
	}
	g.notify(TxQueue)
	point()
	g.post(RxQueue, seg{n: 100})                             // readable: dropped on use
	g.post(TxQueue, seg{n: 8})                               // short: dropped
	g.post(RxQueue, seg{n: HeaderLen + 100, writable: true}) // small
	for range 4 {
		g.postRx(HeaderLen + MaxFrame)
	}
	g.notify(RxQueue)
	g.notify(TxQueue)
	point()
	point()
	g.start(64) // a reset with the receive and probably frames in flight
	for i := range 3 {
		g.sendFrame(frame(300+i, byte(20+i)), true)
		g.postRx(HeaderLen + MaxFrame)
	}
	g.notify(TxQueue)
	point()
	g.notify(RxQueue)
	point()
	g.restartQueue(RxQueue)
	for range 6 {
		g.postRx(HeaderLen + MaxFrame)
	}
	g.notify(RxQueue)
	g.sendFrame(frame(90, 30), false)
	g.notify(TxQueue)
	point()
	point()
}

// A live run over a link, whose peer echoes the guest's frames and sends
// some of its own, records its completions at each delivery point; a fresh
// device whose engine replays them, at the same points, never calls its
// backend and leaves guest memory, the used rings, the interrupts and its
// state exactly as the live run did.
func TestReplayReproducesALiveRun(t *testing.T) {
	devEnd, peer := NewLink()
	defer peer.Close()
	go func() { // the world: echo each frame back, with its source as destination
		for {
			f, err := peer.Recv()
			if err != nil {
				return
			}
			copy(f[0:6], f[6:12])
			copy(f[6:12], []byte{0x52, 0x54, 0, 0, 0, 1})
			time.Sleep(time.Duration(f[20]%3) * 100 * time.Microsecond)
			peer.Send(f)
		}
	}()
	live := bounce.NewEngine(devEnd.Backend())
	g := newGuest(t, live, 64)
	var log [][]bounce.Completion
	n := 0
	point := func() {
		n++
		if n%2 == 0 {
			peer.Send(frame(500+n, byte(n))) // unsolicited traffic
		}
		time.Sleep(2 * time.Millisecond)
		cs := live.Poll()
		for _, c := range cs {
			live.Delivered(c.Tag)
			g.dev.Complete(c)
		}
		log = append(log, cs)
		g.collect()
	}
	netScript(g, point)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tx, _ := g.dev.InFlight()
		st := g.dev.Stats()
		if tx == 0 && st.RxFrames+st.RxNoBuffer+st.RxBadBuffer >= 10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("live run: %d frames still in flight, stats %+v", tx, st)
		}
		point()
	}
	st := g.dev.Stats()
	receives := 0
	for _, cs := range log {
		for _, c := range cs {
			if c.Data != nil {
				receives++
			}
		}
	}
	t.Logf("live run: %+v, %d receives", st, receives)
	if st.TxFrames < 10 || st.RxFrames < 5 || st.TxDropped == 0 {
		t.Fatalf("the live run did too little: %+v", st)
	}
	if uint64(receives) >= st.RxFrames+st.RxNoBuffer+st.RxBadBuffer {
		t.Fatalf("no receive delivered more than one frame: %d receives", receives)
	}

	g2 := newGuest(t, replayEngine(t), 64)
	next := 0
	replayPoint := func() {
		for _, c := range log[next] {
			g2.dev.Engine().Delivered(c.Tag)
			g2.dev.Complete(c)
		}
		next++
		g2.collect()
	}
	netScript(g2, replayPoint)
	for next < len(log) {
		replayPoint()
	}
	if !bytes.Equal(g.ram.Data, g2.ram.Data) {
		t.Error("guest memory differs")
	}
	for q := range 2 {
		if !reflect.DeepEqual(g.rings[q].used, g2.rings[q].used) {
			t.Errorf("queue %d: used rings differ: live %v, replay %v", q, g.rings[q].used, g2.rings[q].used)
		}
	}
	if g.rises != g2.rises || !reflect.DeepEqual(g.dev.Save(), g2.dev.Save()) {
		t.Errorf("interrupts %d vs %d, or device states differ:\n%+v\n%+v", g.rises, g2.rises, g.dev.Save(), g2.dev.Save())
	}
	if !reflect.DeepEqual(g.frames, g2.frames) {
		t.Error("received frames differ")
	}
	if ready, inflight := g2.dev.Engine().Pending(); ready || inflight {
		t.Error("the replay engine ran something")
	}
}
