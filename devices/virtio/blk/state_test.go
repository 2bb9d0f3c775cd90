package blk

import (
	"bytes"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
)

func TestCompletionsAfterResetAreDropped(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	copy(disk.img, pattern(8192, 5))
	g.read(0, 4096)             // 1: in flight
	g.write(0, pattern(512, 9)) // 2: waits for 1
	g.notify()
	g.Start(64) // device reset: 2 is forgotten, 1 is orphaned
	if s, w := g.dev.InFlight(); s != 1 || w != 0 {
		t.Fatalf("after reset: %d submitted, %d waiting; want the orphan only", s, w)
	}
	// The new driver reuses the orphan's buffers.
	w3 := g.write(4, pattern(512, 7)) // 3: overlaps the orphan, waits
	r4 := g.read(100, 512)            // 4: free
	g.notify()
	if got, want := inflightTags(g.dev), []uint64{1, 4}; !slices.Equal(got, want) {
		t.Fatalf("in flight %v, want %v", got, want)
	}
	before := slices.Clone(g.RAM.Data)
	rises := g.Rises
	g.complete(disk, 1)
	if !bytes.Equal(before, g.RAM.Data) || g.Rises != rises {
		t.Fatal("the orphan's completion touched guest memory or interrupted")
	}
	if got, want := inflightTags(g.dev), []uint64{3, 4}; !slices.Equal(got, want) {
		t.Fatalf("after the orphan: in flight %v, want %v", got, want)
	}
	g.drain(disk)
	if g.status(w3) != StatusOK || g.status(r4) != StatusOK {
		t.Fatal("requests after the reset failed")
	}
	want := pattern(8192, 5)
	copy(want[4*512:], pattern(512, 7))
	if !bytes.Equal(disk.img[:8192], want) {
		t.Fatal("disk: the forgotten write happened, or the new one did not")
	}
}

func TestCompletionsAfterQueueRestartAreDropped(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	g.read(0, 4096)             // 1: in flight
	g.write(0, pattern(512, 9)) // 2: waits for 1
	g.notify()
	g.RestartQueue(0)
	r3 := g.read(0, 512) // 3: reads do not wait for the orphan read; 2 is stale
	g.notify()
	if got, want := inflightTags(g.dev), []uint64{1, 3}; !slices.Equal(got, want) {
		t.Fatalf("in flight %v, want %v", got, want)
	}
	if _, w := g.dev.InFlight(); w != 0 {
		t.Fatal("the stale waiting write was kept")
	}
	before := slices.Clone(g.RAM.Data)
	g.complete(disk, 1)
	if !bytes.Equal(before, g.RAM.Data) {
		t.Fatal("the stale completion touched guest memory")
	}
	g.complete(disk, 3)
	if g.status(r3) != StatusOK || disk.calls != 2 {
		t.Fatalf("status or %d transfers", disk.calls)
	}
}

// busyGuest leaves a read and a write in flight and a write waiting.
func busyGuest(t *testing.T) (*guest, *memDisk) {
	g, disk := newTestGuest(t, Config{ID: "x"})
	copy(disk.img, pattern(4096, 1))
	g.read(0, 1024)              // 1
	g.write(10, pattern(512, 2)) // 2
	g.write(1, pattern(512, 3))  // 3: waits for 1
	g.flush()                    // 4: waits for 2 and 3
	g.notify()
	return g, disk
}

func TestSaveRestoreResubmit(t *testing.T) {
	g, disk := busyGuest(t)
	ms, ds := g.MMIO.Save(), g.dev.Save()
	if len(ds.InFlight) != 2 || len(ds.Waiting) != 2 || ds.NextTag != 5 || !bytes.Equal(ds.InFlight[1].Data, pattern(512, 2)) {
		t.Fatalf("saved %+v", ds)
	}

	// A second device over the same RAM takes over, its engine replaying.
	e2 := replayEngine(t)
	d2, err := New(Config{Capacity: testCapacity, ID: "x"}, e2)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := virtio.NewMMIO(d2, g.RAM, g.IRQ)
	if err != nil {
		t.Fatal(err)
	}
	d2.Attach(m2)
	if err := m2.Restore(ms); err != nil {
		t.Fatal(err)
	}
	if err := d2.Restore(ds); err != nil {
		t.Fatal(err)
	}
	if err := d2.Resubmit(); err != nil {
		t.Fatal(err)
	}
	if got := d2.Save(); !reflect.DeepEqual(got, ds) {
		t.Fatalf("restored state %+v\nwant %+v", got, ds)
	}
	g.dev, g.MMIO = d2, m2
	g.drain(disk)
	g.Collect()
	if g.InFlight() != 0 {
		t.Fatalf("%d requests never completed", g.InFlight())
	}
	want := make([]byte, 8192)
	copy(want, pattern(4096, 1))
	copy(want[512:], pattern(512, 3))
	copy(want[5120:], pattern(512, 2))
	if !bytes.Equal(disk.img[:8192], want) {
		t.Fatal("disk contents after the restored device finished")
	}
}

// A device restored with its engine in replay mode, then going live, runs
// the transfers in flight on the backend, writes with their data.
func TestResubmitThenGoLive(t *testing.T) {
	g, _ := busyGuest(t)
	ds := g.dev.Save()
	var mu sync.Mutex
	var got []bounce.Request
	e := bounce.NewEngine(func(r bounce.Request) ([]byte, error) {
		mu.Lock()
		got = append(got, r)
		mu.Unlock()
		if r.Write {
			return nil, nil
		}
		return make([]byte, r.Len), nil
	})
	e.SetReplay()
	d2, _ := New(Config{Capacity: testCapacity, ID: "x"}, e)
	if err := d2.Restore(ds); err != nil {
		t.Fatal(err)
	}
	if err := d2.Resubmit(); err != nil {
		t.Fatal(err)
	}
	e.SetLive()
	deadline := time.Now().Add(5 * time.Second)
	var cs []bounce.Completion
	for len(cs) < 2 && time.Now().Before(deadline) {
		cs = append(cs, e.Poll()...)
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.SortFunc(got, func(a, b bounce.Request) int { return int(a.Tag) - int(b.Tag) })
	if len(cs) != 2 || len(got) != 2 || got[0].Write || got[0].Len != 1024 ||
		!got[1].Write || got[1].Arg != 5120 || !bytes.Equal(got[1].Data, pattern(512, 2)) {
		t.Fatalf("backend got %+v, completions %+v", got, cs)
	}
}

func TestRestoreRefusesBadStates(t *testing.T) {
	g, _ := busyGuest(t)
	good := g.dev.Save()
	for _, c := range []struct {
		name   string
		mutate func(s *State)
	}{
		{"next tag 0", func(s *State) { s.NextTag = 0 }},
		{"tag not below next", func(s *State) { s.NextTag = 4 }},
		{"tag 0", func(s *State) { s.InFlight[0].Tag = 0 }},
		{"tag twice", func(s *State) { s.Waiting[0].Tag = 2 }},
		{"waiting out of order", func(s *State) { s.Waiting[0].Tag, s.Waiting[1].Tag = 4, 3 }},
		{"too many in flight", func(s *State) { s.InFlight = make([]Request, MaxInFlight+1) }},
		{"too many waiting", func(s *State) { s.Waiting = make([]Request, QueueMax+1) }},
		{"unknown op", func(s *State) { s.InFlight[0].Op = 9 }},
		{"misaligned length", func(s *State) { s.InFlight[0].Len = 1000 }},
		{"empty read", func(s *State) { s.InFlight[0].Len = 0 }},
		{"past the end", func(s *State) { s.InFlight[0].Offset = testCapacity }},
		{"misaligned offset", func(s *State) { s.InFlight[0].Offset = 3 }},
		{"flush with a range", func(s *State) { s.Waiting[1].Len = 512 }},
		{"write in flight without data", func(s *State) { s.InFlight[1].Data = nil }},
		{"waiting write with data", func(s *State) { s.Waiting[0].Data = []byte{1} }},
		{"read with data", func(s *State) { s.InFlight[0].Data = make([]byte, 1024) }},
		{"conflicting in flight", func(s *State) { s.InFlight[1].Offset = 512 }},
		{"chain without segments", func(s *State) { s.InFlight[0].Chain.Segments = nil }},
		{"chain lengths lie", func(s *State) { s.InFlight[0].Chain.WriteLen++ }},
		{"chain too short", func(s *State) { s.InFlight[0].Chain.Segments[1].Len = 512 }},
		{"readable after writable", func(s *State) {
			seg := &s.InFlight[0].Chain.Segments
			*seg = append(*seg, virtio.Segment{Addr: virtiotest.RAMBase})
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := cloneState(good)
			c.mutate(&s)
			before := g.dev.Save()
			if err := g.dev.Restore(s); err == nil {
				t.Fatal("accepted")
			}
			if !reflect.DeepEqual(g.dev.Save(), before) {
				t.Fatal("a refused restore changed the device")
			}
		})
	}
	ro, _ := New(Config{Capacity: testCapacity, ReadOnly: true}, replayEngine(t))
	if err := ro.Restore(good); err == nil {
		t.Error("a read-only device accepted writes in flight")
	}
}

func cloneState(s State) State {
	c := State{NextTag: s.NextTag}
	for i := range s.InFlight {
		c.InFlight = append(c.InFlight, cloneRequest(&s.InFlight[i]))
	}
	for i := range s.Waiting {
		c.Waiting = append(c.Waiting, cloneRequest(&s.Waiting[i]))
	}
	return c
}
