package blk

import (
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
)

// guestScript is a guest's run: requests, some overlapping, a reset with
// transfers in flight, and delivery points in between, where point
// delivers completions. Its actions do not depend on timing, only on what
// the device put in guest memory.
func guestScript(g *guest, point func()) {
	g.write(0, pattern(4096, 1))
	g.write(4, pattern(2048, 2))
	g.read(0, 8192)
	g.read(40, 512)
	g.notify()
	point()
	g.read(50, 1024)
	g.flush()
	g.read(2, 512)
	g.write(60, pattern(512, 3))
	g.notify()
	point()
	g.post(seg{N: 16, Fill: header(TypeGetID, 0)}, seg{N: IDLen + 1, Writable: true})
	g.post(seg{N: 8}, seg{N: 1, Writable: true}) // malformed
	g.read(0, 512)
	g.notify()
	point()
	point()
	g.Start(64) // a reset, probably with transfers in flight
	g.write(1, pattern(1024, 4))
	g.read(0, 4096)
	g.read(60, 512)
	g.notify()
	point()
	g.flush()
	g.read(0, 2048)
	g.notify()
	point()
}

// A live run with a real image records its completions at each delivery
// point; a fresh device whose engine replays them, at the same points,
// never calls its backend and leaves guest memory, the used ring and the
// interrupts exactly as the live run did.
func TestReplayReproducesALiveRun(t *testing.T) {
	cfg := Config{Capacity: 64 << 10, ID: "replayed"}
	f := tempImage(t, int(cfg.Capacity))
	img, err := NewFileBackend(f)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	live := bounce.NewEngine(func(r bounce.Request) ([]byte, error) {
		calls.Add(1)
		time.Sleep(time.Duration(r.Tag%3) * 200 * time.Microsecond) // vary the order
		return img.Serve(r)
	})
	g := newGuestRAM(t, cfg, live, 64, 256<<10)
	var log virtiotest.Log
	point := func() {
		time.Sleep(300 * time.Microsecond)
		log.Record(live, g.dev)
		g.Collect()
	}
	guestScript(g, point)
	deadline := time.Now().Add(10 * time.Second)
	for s, w := g.dev.InFlight(); s+w > 0; s, w = g.dev.InFlight() {
		if time.Now().After(deadline) {
			t.Fatalf("live run: %d transfers still in flight", s)
		}
		point()
	}
	if calls.Load() == 0 {
		t.Fatal("the live run never called its backend")
	}

	g2 := newGuestRAM(t, cfg, replayEngine(t), 64, 256<<10)
	replayPoint := func() {
		log.Replay(g2.dev.Engine(), g2.dev)
		g2.Collect()
	}
	guestScript(g2, replayPoint)
	for log.Replay(g2.dev.Engine(), g2.dev) {
		g2.Collect()
	}
	virtiotest.SameRun(t, g.Driver, g2.Driver)
	if len(g.Rings[0].Used) < 7 {
		t.Errorf("the used ring is too short: %v", g.Rings[0].Used)
	}
	if !reflect.DeepEqual(g.dev.Save(), g2.dev.Save()) {
		t.Error("device states differ")
	}
	if ready, inflight := g2.dev.Engine().Pending(); ready || inflight {
		t.Error("the replay engine ran something")
	}
}
