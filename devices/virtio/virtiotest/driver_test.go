package virtiotest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// shout is a two-queue device that serves each chain inside Notify: it
// writes the chain's readable bytes back in upper case. Queue 1 is
// smaller than queue 0, and the config space holds "SHOU".
type shout struct{}

func (shout) DeviceID() uint32 { return 0x7f }
func (shout) Features() uint64 { return 1 << 0 }
func (shout) NumQueues() int   { return 2 }
func (shout) QueueMax(q int) uint16 {
	return 8 >> q
}
func (shout) ReadConfig(off uint64, data []byte) { copy(data, "SHOU"[min(off, 4):]) }
func (shout) WriteConfig(uint64, []byte)         {}
func (shout) Reset()                             {}
func (shout) Notify(_ int, vq *virtio.Queue) {
	for {
		c, ok := vq.Pop()
		if !ok {
			return
		}
		in := make([]byte, c.ReadLen)
		vq.Gather(&c, 0, in)
		n, _ := vq.Scatter(&c, 0, bytes.ToUpper(in)[:min(c.ReadLen, c.WriteLen)])
		vq.Push(c.Head, uint32(n))
	}
}

func newShout(t *testing.T, ramBytes int) *Driver {
	d := New(t, ramBytes, func(mem virtio.Memory, irq func(bool)) (*virtio.MMIO, error) {
		return virtio.NewMMIO(shout{}, mem, irq)
	})
	d.Start(4)
	return d
}

func TestDriverBringsUpEveryQueue(t *testing.T) {
	d := newShout(t, 1<<16)
	if len(d.Rings) != 2 || d.Rings[0].Free() != 4 || d.Rings[1].Free() != 4 || !d.MMIO.Active() {
		t.Fatalf("%d rings, device active %v", len(d.Rings), d.MMIO.Active())
	}
	if f := d.MMIO.DriverFeatures(); f != 1|virtio.FeatureVersion1 {
		t.Errorf("negotiated %#x, want every feature offered", f)
	}
	if c := d.ReadConfig(0, 4); c != 0x554f4853 {
		t.Errorf("config %#x", c)
	}
	if c := d.ReadConfig(1, 1); c != 'H' {
		t.Errorf("config byte 1: %#x", c)
	}
}

func TestDriverPostsAndCollects(t *testing.T) {
	d := newShout(t, 1<<16)
	var seen []*Chain
	d.OnUsed = func(c *Chain) { seen = append(seen, c) }
	c := d.Post(1, Seg{N: 3, Fill: []byte("abc")}, Seg{N: 2, Fill: []byte("de")}, Seg{N: 4, Writable: true, Fill: []byte("zzzz")})
	if c == nil || c.Q != 1 || len(c.Segs) != 3 || c.Segs[2].Addr < RAMBase+2*RingsSize || d.InFlight() != 1 {
		t.Fatalf("posted %+v", c)
	}
	if !bytes.Equal(d.Mem(c.Segs[2].Addr, 4), []byte("zzzz")) {
		t.Error("a segment's fill is not in memory")
	}
	if d.Post(1, make([]Seg, 2)...) != nil {
		t.Error("a chain longer than the free descriptors was posted")
	}
	d.Notify(1)
	if d.Rises != 1 || !d.Level {
		t.Fatalf("%d rises, level %v", d.Rises, d.Level)
	}
	d.Collect()
	if !c.Done || c.Written != 4 || len(seen) != 1 || seen[0] != c || d.InFlight() != 0 || d.Level {
		t.Fatalf("after collecting: done %v, written %d, seen %d, in flight %d, level %v", c.Done, c.Written, len(seen), d.InFlight(), d.Level)
	}
	if got := d.Written(c, 3); string(got) != "ABC" {
		t.Errorf("written %q", got)
	}
	if d.Rings[1].Free() != 4 || len(d.Rings[1].Used) != 1 || d.Rings[1].Used[0] != [2]uint32{uint32(c.Head), 4} {
		t.Errorf("free %d, used %v", d.Rings[1].Free(), d.Rings[1].Used)
	}
}

// Restarts and resets forget the chains in flight and keep the record of
// used entries.
func TestDriverRestarts(t *testing.T) {
	d := newShout(t, 1<<16)
	d.Post(0, Seg{N: 1, Fill: []byte("x")}, Seg{N: 1, Writable: true})
	d.Notify(0)
	d.Collect()
	d.Post(0, Seg{N: 1})
	d.RestartQueue(0)
	if d.InFlight() != 0 || d.Rings[0].Free() != 4 || len(d.Rings[0].Used) != 1 {
		t.Fatalf("after a restart: %d in flight, %d free, used %v", d.InFlight(), d.Rings[0].Free(), d.Rings[0].Used)
	}
	d.Post(0, Seg{N: 1, Fill: []byte("y")}, Seg{N: 1, Writable: true})
	d.Notify(0)
	d.Collect()
	d.Post(0, Seg{N: 1})
	d.Start(2)
	if d.Rings[0].Size != 2 || d.InFlight() != 0 || len(d.Rings[0].Used) != 2 || !d.MMIO.Active() {
		t.Fatalf("after a reset: size %d, %d in flight, used %v", d.Rings[0].Size, d.InFlight(), d.Rings[0].Used)
	}
}

// Buffers wrap around at the end of RAM, and never reach the rings.
func TestDriverBuffersWrap(t *testing.T) {
	d := newShout(t, 3*RingsSize)
	first := d.Post(0, Seg{N: 4000})
	for range 3 {
		c := d.Post(1, Seg{N: 4000})
		d.RestartQueue(1)
		if c.Segs[0].Addr < RAMBase+2*RingsSize || c.Segs[0].Addr+4000 > RAMBase+3*RingsSize {
			t.Fatalf("buffer at %#x", c.Segs[0].Addr)
		}
	}
	if d.Post(1, Seg{N: 4000}).Segs[0].Addr != first.Segs[0].Addr {
		t.Error("allocation did not wrap to the start")
	}
}

func TestDriverHole(t *testing.T) {
	d := newShout(t, 1<<16)
	mem := d.Memory()
	d.Hole = [2]uint64{RAMBase + 0x9000, RAMBase + 0x9001}
	if _, ok := mem.Slice(RAMBase+0x8fff, 2); ok {
		t.Error("the device reached the hole")
	}
	if _, ok := mem.Slice(RAMBase+0x8fff, 1); !ok {
		t.Error("the device cannot reach RAM below the hole")
	}
	if _, ok := mem.Slice(RAMBase+0x9001, 1); !ok {
		t.Error("the device cannot reach RAM above the hole")
	}
	if len(d.Mem(RAMBase+0x9000, 1)) != 1 {
		t.Error("the driver cannot reach the hole")
	}
}

func TestReplayEngineNeverCallsItsBackend(t *testing.T) {
	e := ReplayEngine(t)
	if err := e.Submit(bounce.Request{Tag: 1, Len: 4}); err != nil {
		t.Fatal(err)
	}
	if ready, inflight := e.Pending(); ready || inflight {
		t.Error("a replaying engine started a transfer")
	}
}

// failures is a testing.TB that records failures; Fatal ends the
// goroutine, as the real one does.
type failures struct {
	testing.TB
	mu   sync.Mutex
	msgs []string
}

func (f *failures) Helper() {}
func (f *failures) Error(args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs = append(f.msgs, fmt.Sprint(args...))
}
func (f *failures) Errorf(format string, args ...any) { f.Error(fmt.Sprintf(format, args...)) }
func (f *failures) Fatal(args ...any)                 { f.Error(args...); runtime.Goexit() }
func (f *failures) Fatalf(format string, args ...any) { f.Fatal(fmt.Sprintf(format, args...)) }

// fails runs body against a failures and returns what it recorded.
func fails(t *testing.T, body func(tb testing.TB)) []string {
	f := &failures{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		body(f)
	}()
	<-done
	return f.msgs
}

// The driver fails its test where a real driver would find the device
// misbehaving, or the test misusing it.
func TestDriverFailsTheTest(t *testing.T) {
	attach := func(mem virtio.Memory, irq func(bool)) (*virtio.MMIO, error) {
		return virtio.NewMMIO(shout{}, mem, irq)
	}
	for name, body := range map[string]func(tb testing.TB){
		"no transport": func(tb testing.TB) {
			New(tb, 1<<16, func(virtio.Memory, func(bool)) (*virtio.MMIO, error) { return nil, errors.New("no device") })
		},
		"outside RAM":     func(tb testing.TB) { New(tb, 1<<16, attach).Mem(RAMBase+1<<16, 1) },
		"queue too large": func(tb testing.TB) { New(tb, 1<<16, attach).Start(16) },
		"device not up":   func(tb testing.TB) { New(tb, 1<<16, attach).Start(3) },
		"unknown used head": func(tb testing.TB) {
			d := New(tb, 1<<16, attach)
			d.Start(4)
			used := uint64(RAMBase + UsedOff)
			binary.LittleEndian.PutUint32(d.Mem(used+4, 4), 3) // head 3, never posted
			binary.LittleEndian.PutUint16(d.Mem(used+2, 2), 1)
			d.Collect()
		},
		"backend called": func(tb testing.TB) {
			e := ReplayEngine(tb)
			e.Submit(bounce.Request{Tag: 1, Len: 4})
			e.SetLive() // a replay engine going live runs what is in flight
			for ready, inflight := e.Pending(); inflight && !ready; ready, inflight = e.Pending() {
				runtime.Gosched()
			}
		},
	} {
		if msgs := fails(t, body); len(msgs) != 1 {
			t.Errorf("%s: failures %q, want one", name, msgs)
		}
	}
}
