package virtio

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPopPush(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)
	if _, ok := q.Pop(); ok {
		t.Fatal("Pop on an empty ring returned a chain")
	}

	// A virtio-blk style request: header, data, status byte.
	hdr, _ := r.mem.Slice(bufAddr, 16)
	copy(hdr, "0123456789abcdef")
	head := dq.post(buf{bufAddr, 16, false}, buf{bufAddr + 0x100, 512, true}, buf{bufAddr + 0x400, 1, true})
	c, ok := q.Pop()
	if !ok {
		t.Fatalf("no chain; fault %q", r.m.Fault())
	}
	want := Chain{Head: head, Epoch: 1, ReadLen: 16, WriteLen: 513, Segments: []Segment{
		{bufAddr, 16, false}, {bufAddr + 0x100, 512, true}, {bufAddr + 0x400, 1, true}}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Pop = %+v\nwant %+v", c, want)
	}
	if _, ok := q.Pop(); ok {
		t.Fatal("second Pop returned a chain")
	}

	got := make([]byte, 16)
	if n, err := q.Gather(&c, 0, got); n != 16 || err != nil || string(got) != "0123456789abcdef" {
		t.Fatalf("Gather = %d, %v, %q", n, err, got)
	}
	if n, err := q.Gather(&c, 10, got); n != 6 || !errors.Is(err, ErrShortChain) || string(got[:6]) != "abcdef" {
		t.Fatalf("Gather past the end = %d, %v, %q", n, err, got[:6])
	}
	data := bytes.Repeat([]byte{0x5a}, 512)
	if n, err := q.Scatter(&c, 0, data); n != 512 || err != nil {
		t.Fatalf("Scatter = %d, %v", n, err)
	}
	if n, err := q.Scatter(&c, 512, []byte{0}); n != 1 || err != nil { // the status byte
		t.Fatalf("Scatter status = %d, %v", n, err)
	}
	if n, err := q.Scatter(&c, 510, []byte{1, 2, 3, 4}); n != 3 || !errors.Is(err, ErrShortChain) {
		t.Fatalf("Scatter across segments and past the end = %d, %v", n, err)
	}
	mem, _ := r.mem.Slice(bufAddr+0x100, 512)
	if mem[509] != 0x5a || mem[510] != 1 || mem[511] != 2 {
		t.Fatalf("data segment ends %x", mem[508:])
	}
	if st, _ := r.mem.Slice(bufAddr+0x400, 1); st[0] != 3 {
		t.Fatalf("status byte %d", st[0])
	}
	if err := q.Push(c.Head, 514); err == nil {
		t.Fatal("Push with more written than writable accepted")
	}
	if err := q.Push(c.Head, 513); err != nil {
		t.Fatal(err)
	}
	if u := dq.takeUsed(); !reflect.DeepEqual(u, [][2]uint32{{uint32(head), 513}}) {
		t.Fatalf("used ring %v", u)
	}
	if err := q.Push(c.Head, 0); !errors.Is(err, ErrStale) {
		t.Fatalf("second Push of the same head: %v", err)
	}
	if _, err := q.Scatter(&c, 0, []byte{1}); !errors.Is(err, ErrStale) {
		t.Fatalf("Scatter after Push: %v", err)
	}
}

// TestRingWraps runs the 16-bit ring indices past 65535 with chains in
// flight at the wrap.
func TestRingWraps(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)
	var held []Chain
	for i := range 70000 {
		dq.post(buf{bufAddr, 8, false})
		c, ok := q.Pop()
		if !ok {
			t.Fatalf("round %d: no chain; fault %q", i, r.m.Fault())
		}
		held = append(held, c)
		if len(held) == 8 || i == 69999 {
			for _, h := range held {
				if err := q.Push(h.Head, 0); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
			}
			held = held[:0]
			if n := len(dq.takeUsed()); n == 0 {
				t.Fatalf("round %d: nothing used", i)
			}
		}
	}
	if s := q.saved(); s.NextAvail != uint16(70000%65536) || s.NextUsed != s.NextAvail {
		t.Fatalf("indices %d/%d", s.NextAvail, s.NextUsed)
	}
}

func TestMalformedRings(t *testing.T) {
	const (
		next, write, indirect = DescFNext, DescFWrite, DescFIndirect
	)
	type desc struct {
		addr        uint64
		n           uint32
		flags, next uint16
	}
	for _, c := range []struct {
		name     string
		descs    []desc
		heads    []uint16 // offered in order; all but the last pop cleanly
		availIdx int      // if not 0, overrides the avail idx
		want     string   // in the fault
	}{
		{"self loop", []desc{{bufAddr, 8, next, 0}}, []uint16{0}, 0, "already in use"},
		{"loop", []desc{{bufAddr, 8, next, 1}, {bufAddr, 8, next, 2}, {bufAddr, 8, next, 1}}, []uint16{0}, 0, "already in use"},
		{"shared with a chain in flight", []desc{{bufAddr, 8, next, 1}, {bufAddr, 8, 0, 0}}, []uint16{0, 1}, 0, "already in use"},
		{"head offered twice", []desc{{bufAddr, 8, 0, 0}}, []uint16{0, 0}, 0, "already in use"},
		{"head out of range", nil, []uint16{8}, 0, "out of range"},
		{"next out of range", []desc{{bufAddr, 8, next, 0xffff}}, []uint16{0}, 0, "out of range"},
		{"buffer outside RAM", []desc{{ramBase - 8, 8, 0, 0}}, []uint16{0}, 0, "not guest RAM"},
		{"buffer runs off RAM", []desc{{ramBase + ramSize - 8, 9, 0, 0}}, []uint16{0}, 0, "not guest RAM"},
		{"buffer wraps", []desc{{^uint64(7), 16, 0, 0}}, []uint16{0}, 0, "not guest RAM"},
		{"readable after writable", []desc{{bufAddr, 8, next | write, 1}, {bufAddr, 8, 0, 0}}, []uint16{0}, 0, "follows a device-writable"},
		{"indirect", []desc{{bufAddr, 16, indirect, 0}}, []uint16{0}, 0, "indirect"},
		{"indirect writable", []desc{{bufAddr, 16, indirect | write, 0}}, []uint16{0}, 0, "indirect"},
		{"too long", []desc{{ramBase, MaxChainBytes, next, 1}, {ramBase, 1, 0, 0}}, []uint16{0}, 0, "longer than"},
		{"huge length", []desc{{ramBase, 0xffffffff, 0, 0}}, []uint16{0}, 0, "longer than"},
		{"avail idx jump", []desc{{bufAddr, 8, 0, 0}}, []uint16{0}, 9, "past the next one"},
		{"avail idx backwards", []desc{{bufAddr, 8, 0, 0}}, []uint16{0}, 0xffff, "past the next one"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			if c.name == "too long" || c.name == "huge length" {
				// Make RAM big enough that only the length rule can fail.
				r.mem.Data = make([]byte, MaxChainBytes+0x10000)
				r.m.mem = r.mem
			}
			dq := r.start()
			q := r.m.Queue(0)
			for i, d := range c.descs {
				dq.setDesc(uint16(i), d.addr, d.n, d.flags, d.next)
			}
			for _, h := range c.heads {
				dq.offer(h)
			}
			if c.availIdx != 0 {
				r.put16(availAddr+2, uint16(c.availIdx))
			}
			var popped []Chain
			for range c.heads[1:] {
				ch, ok := q.Pop()
				if !ok {
					t.Fatalf("a clean chain failed: %q", r.m.Fault())
				}
				popped = append(popped, ch)
			}
			r.wr(RegInterruptACK, 3)
			if ch, ok := q.Pop(); ok {
				t.Fatalf("Pop returned %+v", ch)
			}
			if !strings.Contains(r.m.Fault(), c.want) {
				t.Errorf("fault %q does not say %q", r.m.Fault(), c.want)
			}
			if r.rd(RegStatus)&StatusNeedsReset == 0 || r.rd(RegInterruptStatus) != InterruptConfigChange || !r.irq.level {
				t.Errorf("status %#x, interrupt status %#x, line %v", r.rd(RegStatus), r.rd(RegInterruptStatus), r.irq.level)
			}
			// Broken until reset: nothing pops, nothing pushes.
			dq.post(buf{bufAddr, 8, false})
			if _, ok := q.Pop(); ok {
				t.Error("Pop after the device broke")
			}
			for _, ch := range popped {
				if err := q.Push(ch.Head, 0); !errors.Is(err, ErrStale) {
					t.Errorf("Push on a broken queue: %v", err)
				}
				if _, err := q.Gather(&ch, 0, []byte{0}); !errors.Is(err, ErrStale) {
					t.Errorf("Gather on a broken queue: %v", err)
				}
			}
			r.wr(RegQueueNotify, 0)
			if len(r.be.notifies) != 0 {
				t.Error("notify reached the backend of a broken device")
			}
			// A reset recovers.
			r.wr(RegStatus, 0)
			clear(r.mem.Data)
			dq = r.start()
			dq.post(buf{bufAddr, 8, false})
			if _, ok := q.Pop(); !ok {
				t.Errorf("no chain after reset: %q", r.m.Fault())
			}
		})
	}
}

func TestZeroLengthSegments(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)
	dq.post(buf{0, 0, false}, buf{bufAddr, 4, true}, buf{^uint64(0), 0, true})
	c, ok := q.Pop()
	if !ok || c.ReadLen != 0 || c.WriteLen != 4 || len(c.Segments) != 3 {
		t.Fatalf("chain %+v, %v; fault %q", c, ok, r.m.Fault())
	}
	if n, err := q.Scatter(&c, 0, []byte{1, 2, 3, 4}); n != 4 || err != nil {
		t.Fatalf("Scatter = %d, %v", n, err)
	}
}

func TestStaleChains(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)
	dq.post(buf{bufAddr, 8, true})
	old, _ := q.Pop()

	// Disable and re-enable the queue: same head in flight again, new epoch.
	r.wr(RegQueueReady, 0)
	r.wr(RegQueueReady, 1)
	dq = &driverQueue{r: r, size: 8, desc: descAddr, avail: availAddr, used: usedAddr}
	r.put16(availAddr+2, 0)
	dq.post(buf{bufAddr, 8, true})
	cur, ok := q.Pop()
	if !ok || cur.Head != old.Head || cur.Epoch == old.Epoch {
		t.Fatalf("re-enabled queue popped %+v (old %+v)", cur, old)
	}
	if q.Valid(&old) || !q.Valid(&cur) {
		t.Fatal("Valid does not tell the incarnations apart")
	}
	if _, err := q.Scatter(&old, 0, []byte{1}); !errors.Is(err, ErrStale) {
		t.Fatalf("Scatter into a stale chain: %v", err)
	}
	if err := q.Push(99, 0); !errors.Is(err, ErrStale) {
		t.Fatalf("Push of an unknown head: %v", err)
	}
}

func TestRingLeavesRAM(t *testing.T) {
	// Memory that shrinks under a ready queue (a hostile Memory, or a
	// host unmapping RAM) breaks the device instead of faulting.
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)
	dq.post(buf{bufAddr, 8, true})
	c, _ := q.Pop()
	r.m.mem = FlatMemory{Base: ramBase, Data: r.mem.Data[:0x1000]} // rings and buffers gone
	if _, err := q.Scatter(&c, 0, []byte{1}); err == nil || errors.Is(err, ErrStale) {
		t.Fatalf("Scatter into vanished RAM: %v", err)
	}
	if err := q.Push(c.Head, 0); !errors.Is(err, ErrStale) || !q.Broken() {
		t.Fatalf("Push into a vanished used ring: %v, broken %v", err, q.Broken())
	}
	// Each ring access checks RAM again: punch a hole over one thing at a
	// time after the queue is up.
	for _, c := range []struct {
		hole uint64
		want string
	}{
		{availAddr + 2, "avail idx"},
		{availAddr + 4, "avail ring entry"},
		{descAddr, "descriptor 0 is not guest RAM"},
	} {
		r.m.mem = r.mem
		r.wr(RegStatus, 0)
		dq = r.start()
		dq.post(buf{bufAddr, 8, true})
		r.m.mem = holeMemory{r.mem, c.hole}
		if _, ok := q.Pop(); ok || !strings.Contains(r.m.Fault(), c.want) {
			t.Errorf("hole at %#x: fault %q, want %q", c.hole, r.m.Fault(), c.want)
		}
	}
}

// holeMemory is RAM without the 2 bytes at hole.
type holeMemory struct {
	FlatMemory
	hole uint64
}

func (h holeMemory) Slice(gpa uint64, n int) ([]byte, bool) {
	if gpa <= h.hole+1 && h.hole < gpa+uint64(n) {
		return nil, false
	}
	return h.FlatMemory.Slice(gpa, n)
}

func TestMemoryAdaptors(t *testing.T) {
	ram := FlatMemory{Base: 0x1000, Data: make([]byte, 0x100)}
	for _, c := range []struct {
		gpa uint64
		n   int
		ok  bool
	}{
		{0x1000, 0x100, true}, {0x10ff, 1, true}, {0x1100, 0, true}, {0x1100, 1, false},
		{0xfff, 1, false}, {0x1000, -1, false}, {0x1000, 0x101, false}, {^uint64(0), 2, false},
	} {
		b, ok := MemoryFunc(ram.Slice).Slice(c.gpa, c.n)
		if ok != c.ok || ok && (len(b) != c.n || cap(b) != c.n) {
			t.Errorf("Slice(%#x, %d) = len %d cap %d, %v; want ok %v", c.gpa, c.n, len(b), cap(b), ok, c.ok)
		}
	}
	short := MemoryFunc(func(gpa uint64, n int) ([]byte, bool) { return make([]byte, n/2), true })
	if _, ok := guestSlice(short, 0, 8); ok {
		t.Error("a short slice from Memory accepted")
	}
	long := MemoryFunc(func(gpa uint64, n int) ([]byte, bool) { return make([]byte, n+8), true })
	if b, ok := guestSlice(long, 0, 8); !ok || len(b) != 8 || cap(b) != 8 {
		t.Error("a long slice from Memory not trimmed")
	}
	if _, ok := guestSlice(long, ^uint64(3), 8); ok {
		t.Error("a wrapping range reached Memory")
	}
}

func TestAvailable(t *testing.T) {
	r := newRig(t)
	q := r.m.Queue(0)
	if n := q.Available(); n != 0 {
		t.Fatalf("not ready: %d available", n)
	}
	dq := r.start()
	dq.post(buf{bufAddr, 8, true})
	dq.post(buf{bufAddr + 8, 8, true})
	if n := q.Available(); n != 2 {
		t.Fatalf("%d available, want 2", n)
	}
	q.Pop()
	if n := q.Available(); n != 1 {
		t.Fatalf("after a Pop: %d available, want 1", n)
	}
	r.put16(availAddr+2, 1+100) // a driver claiming more than the ring holds
	if n := q.Available(); n != 8 {
		t.Fatalf("avail idx far ahead: %d available, want the queue size 8", n)
	}
	q.Pop() // breaks the device
	if n := q.Available(); n != 0 || !q.Broken() {
		t.Fatalf("broken: %d available", n)
	}
	r.wr(RegStatus, 0)
	r.start()
	r.m.mem = holeMemory{r.mem, availAddr + 2}
	if n := q.Available(); n != 0 {
		t.Fatalf("avail idx not RAM: %d available", n)
	}
}
