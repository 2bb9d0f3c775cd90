package blk

import (
	"bytes"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
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
	g.post(seg{n: 16, fill: header(TypeGetID, 0)}, seg{n: IDLen + 1, writable: true})
	g.post(seg{n: 8}, seg{n: 1, writable: true}) // malformed
	g.read(0, 512)
	g.notify()
	point()
	point()
	g.start(64) // a reset, probably with transfers in flight
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
	var log [][]bounce.Completion
	point := func() {
		time.Sleep(300 * time.Microsecond)
		cs := live.Poll()
		for _, c := range cs {
			live.Delivered(c.Tag)
			g.dev.Complete(c)
		}
		log = append(log, cs)
		g.collect()
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
	next := 0
	replayPoint := func() {
		for _, c := range log[next] {
			g2.dev.Engine().Delivered(c.Tag)
			g2.dev.Complete(c)
		}
		next++
		g2.collect()
	}
	guestScript(g2, replayPoint)
	for next < len(log) {
		replayPoint()
	}
	if !bytes.Equal(g.ram.Data, g2.ram.Data) {
		t.Error("guest memory differs")
	}
	if !reflect.DeepEqual(g.used, g2.used) || len(g.used) < 7 {
		t.Errorf("used rings differ (or are too short): live %v, replay %v", g.used, g2.used)
	}
	if g.rises != g2.rises || !reflect.DeepEqual(g.dev.Save(), g2.dev.Save()) {
		t.Errorf("interrupts %d vs %d, or device states differ", g.rises, g2.rises)
	}
	if ready, inflight := g2.dev.Engine().Pending(); ready || inflight {
		t.Error("the replay engine ran something")
	}
}
