package blk

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/internal/mpack"
)

// A snapshot taken with transfers in flight on a live engine: the engine
// is quiesced and saved with its completions, the transport and device
// through their encodings; a new device and engine restored from them,
// without re-submitting anything, finish every request as the saved
// device would have (the disk and the guest's buffers as expected).
func TestSnapshotWithTransfersInFlight(t *testing.T) {
	var mu sync.Mutex
	img := make([]byte, testCapacity)
	copy(img, pattern(4096, 1))
	backend := func(r bounce.Request) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if r.Write {
			copy(img[r.Arg:], r.Data)
			return nil, nil
		}
		return bytes.Clone(img[r.Arg : r.Arg+uint64(r.Len)]), nil
	}
	cfg := Config{Capacity: testCapacity, ID: "x"}
	e := bounce.NewEngine(backend)
	g := newGuest(t, cfg, e, 64)
	rd := g.read(0, 1024)        // 1
	g.write(10, pattern(512, 2)) // 2
	g.write(1, pattern(512, 3))  // 3: waits for 1
	g.flush()                    // 4: waits for 2 and 3
	g.notify()

	if err := e.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
	es, err := e.Save()
	if err != nil {
		t.Fatal(err)
	}
	if len(es.Ready) != 2 || len(es.Reissue) != 0 {
		t.Fatalf("engine saved %d ready and %d to re-issue, want 2 and 0", len(es.Ready), len(es.Reissue))
	}
	msb, err := mpack.Marshal(g.MMIO.Save())
	if err != nil {
		t.Fatal(err)
	}
	esb, err := mpack.Marshal(es)
	if err != nil {
		t.Fatal(err)
	}
	db, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}

	var ms virtio.MMIOState
	var es2 bounce.State
	if err := mpack.Unmarshal(msb, &ms); err != nil {
		t.Fatal(err)
	}
	if err := mpack.Unmarshal(esb, &es2); err != nil {
		t.Fatal(err)
	}
	e2 := bounce.NewEngine(backend)
	d2, err := New(cfg, e2)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := virtio.NewMMIO(d2, g.RAM, g.IRQ)
	if err != nil {
		t.Fatal(err)
	}
	d2.Attach(m2)
	for _, err := range []error{m2.Restore(ms), d2.RestoreState(db), e2.Restore(es2)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	g.dev, g.MMIO = d2, m2
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, c := range e2.Poll() {
			e2.Delivered(c.Tag)
			d2.Complete(c)
		}
		s := d2.Save()
		if len(s.InFlight) == 0 && len(s.Waiting) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests never completed: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
	g.Collect()
	if g.InFlight() != 0 {
		t.Fatalf("%d requests never used", g.InFlight())
	}
	if got := g.Mem(rd.dataAddr, 1024); !bytes.Equal(got, pattern(4096, 1)[:1024]) {
		t.Error("the read saved ready did not reach the guest's buffer")
	}
	want := make([]byte, 8192)
	copy(want, pattern(4096, 1))
	copy(want[512:], pattern(512, 3))
	copy(want[5120:], pattern(512, 2))
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(img[:8192], want) {
		t.Fatal("disk contents after the restored device finished")
	}
}
