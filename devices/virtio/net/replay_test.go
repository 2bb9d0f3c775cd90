package net

import (
	"reflect"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
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
	g.Notify(RxQueue)
	g.Notify(TxQueue)
	point()
	for i := range 4 {
		g.sendFrame(frame(200+i, byte(10+i)), false)
	}
	g.Notify(TxQueue)
	point()
	g.Post(RxQueue, seg{N: 100})                             // readable: dropped on use
	g.Post(TxQueue, seg{N: 8})                               // short: dropped
	g.Post(RxQueue, seg{N: HeaderLen + 100, Writable: true}) // small
	for range 4 {
		g.postRx(HeaderLen + MaxFrame)
	}
	g.Notify(RxQueue)
	g.Notify(TxQueue)
	point()
	point()
	g.Start(64) // a reset with the receive and probably frames in flight
	for i := range 3 {
		g.sendFrame(frame(300+i, byte(20+i)), true)
		g.postRx(HeaderLen + MaxFrame)
	}
	g.Notify(TxQueue)
	point()
	g.Notify(RxQueue)
	point()
	g.RestartQueue(RxQueue)
	for range 6 {
		g.postRx(HeaderLen + MaxFrame)
	}
	g.Notify(RxQueue)
	g.sendFrame(frame(90, 30), false)
	g.Notify(TxQueue)
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
	var log virtiotest.Log
	n := 0
	point := func() {
		n++
		if n%2 == 0 {
			peer.Send(frame(500+n, byte(n))) // unsolicited traffic
		}
		time.Sleep(2 * time.Millisecond)
		log.Record(live, g.dev)
		g.Collect()
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
	for _, cs := range log.Points {
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
	replayPoint := func() {
		log.Replay(g2.dev.Engine(), g2.dev)
		g2.Collect()
	}
	netScript(g2, replayPoint)
	for log.Replay(g2.dev.Engine(), g2.dev) {
		g2.Collect()
	}
	virtiotest.SameRun(t, g.Driver, g2.Driver)
	if !reflect.DeepEqual(g.dev.Save(), g2.dev.Save()) {
		t.Errorf("device states differ:\n%+v\n%+v", g.dev.Save(), g2.dev.Save())
	}
	if !reflect.DeepEqual(g.frames, g2.frames) {
		t.Error("received frames differ")
	}
	if ready, inflight := g2.dev.Engine().Pending(); ready || inflight {
		t.Error("the replay engine ran something")
	}
}
