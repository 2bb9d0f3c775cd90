package virtio

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/ftkvm/ftkvm/internal/mpack"
)

// The fuzzed guest: fuzzRAM bytes of RAM at ramBase, the memory image
// taken from the fuzz input (zero-padded), and a queue of at most
// fuzzQueueMax entries.
const (
	fuzzRAM      = 0x3000
	fuzzQueueMax = 16
)

// countingMemory counts Memory calls, to bound the work one operation does.
type countingMemory struct {
	FlatMemory
	calls *int
}

func (c countingMemory) Slice(gpa uint64, n int) ([]byte, bool) {
	*c.calls++
	return c.FlatMemory.Slice(gpa, n)
}

type fuzzRig struct {
	t     *testing.T
	ram   FlatMemory
	calls int
	be    *testBackend
	irq   *irqLine
	m     *MMIO
	held  []Chain
	setup [4]byte
}

func newFuzzRig(t *testing.T, image []byte) *fuzzRig {
	f := &fuzzRig{t: t, ram: FlatMemory{Base: ramBase, Data: make([]byte, fuzzRAM)}, irq: &irqLine{}}
	copy(f.ram.Data, image)
	f.be = &testBackend{features: testFeatures, max: []uint16{fuzzQueueMax, 2}}
	f.be.onNotify = func(_ int, vq *Queue) { // serve everything at once
		for {
			c, ok := vq.Pop()
			if !ok {
				return
			}
			f.checkChain(c)
			if err := vq.Push(c.Head, c.WriteLen); err != nil {
				t.Fatalf("push of a fresh chain: %v", err)
			}
		}
	}
	m, err := NewMMIO(f.be, countingMemory{f.ram, &f.calls}, f.irq.set)
	if err != nil {
		t.Fatal(err)
	}
	f.m = m
	return f
}

func (f *fuzzRig) wr(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	f.m.Write(off, b[:])
}

// start brings the device up with queue 0 laid out by the setup bytes:
// size 1<<(s0%5), rings at multiples of 0x40, 0x20 and 0x40 into RAM.
func (f *fuzzRig) start() {
	s := f.setup
	f.wr(RegStatus, 0)
	f.wr(RegStatus, StatusAcknowledge|StatusDriver)
	f.wr(RegDriverFeaturesSel, 1)
	f.wr(RegDriverFeatures, 1)
	f.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	f.wr(RegQueueSel, 0)
	f.wr(RegQueueNum, 1<<(s[0]%5))
	f.wr(RegQueueDescLow, ramBase+uint32(s[1])*0x40)
	f.wr(RegQueueDriverLow, ramBase+uint32(s[2])*0x20)
	f.wr(RegQueueDeviceLow, ramBase+uint32(s[3])*0x40)
	f.wr(RegQueueReady, 1)
	f.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	f.held = nil
}

// checkChain: whatever Pop returns lies in RAM and within the bounds.
func (f *fuzzRig) checkChain(c Chain) {
	size := f.m.Queue(0).Size()
	if len(c.Segments) == 0 || len(c.Segments) > int(size) || uint64(c.ReadLen)+uint64(c.WriteLen) > MaxChainBytes {
		f.t.Fatalf("chain of %d segments, %d+%d bytes, queue size %d", len(c.Segments), c.ReadLen, c.WriteLen, size)
	}
	sawWritable := false
	for _, s := range c.Segments {
		end := s.Addr + uint64(s.Len)
		if s.Len > 0 && (s.Addr < ramBase || end > ramBase+fuzzRAM || end < s.Addr) {
			f.t.Fatalf("segment [%#x, +%#x) outside RAM", s.Addr, s.Len)
		}
		if sawWritable && !s.Writable {
			f.t.Fatal("readable segment after a writable one")
		}
		sawWritable = s.Writable
	}
}

// check asserts the invariants that hold between operations.
func (f *fuzzRig) check() {
	if f.irq.err != nil {
		f.t.Fatal(f.irq.err)
	}
	if f.irq.level != (f.m.interruptStatus != 0) {
		f.t.Fatalf("line %v with interrupt status %#x", f.irq.level, f.m.interruptStatus)
	}
	for _, q := range f.m.queues {
		if !q.ready {
			continue
		}
		owned := 0
		for _, o := range q.owned {
			if o {
				owned++
			}
		}
		descs := 0
		for _, e := range q.inflight {
			descs += len(e.Descs)
		}
		if owned != descs || len(q.inflight) != int(q.nextAvail-q.nextUsed) || len(q.inflight) > int(q.num) {
			f.t.Fatalf("queue %d: %d owned, %d in chains, %d chains, %d popped-pushed", q.idx, owned, descs,
				len(q.inflight), q.nextAvail-q.nextUsed)
		}
	}
}

// clone moves the device to a fresh transport through Save, the
// snapshot encoding and Restore.
func (f *fuzzRig) clone() {
	saved := f.m.Save()
	b, err := mpack.Marshal(saved)
	if err != nil {
		f.t.Fatal(err)
	}
	var s MMIOState
	if err := mpack.Unmarshal(b, &s); err != nil || !reflect.DeepEqual(s, saved) {
		f.t.Fatalf("state changed through its encoding (%v):\n%+v\n%+v", err, saved, s)
	}
	m, err := NewMMIO(f.be, countingMemory{f.ram, &f.calls}, f.irq.set)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := m.Restore(s); err != nil {
		f.t.Fatalf("restoring a reachable state: %v", err)
	}
	if got := m.Save(); !reflect.DeepEqual(got, s) {
		f.t.Fatalf("state changed through Save/Restore:\n%+v\n%+v", s, got)
	}
	f.m = m
}

// FuzzQueue runs a queue over guest memory taken from the input, with
// register writes, guest memory changes, pops, pushes, copies, notifies,
// resets and Save/Restore clones from the op stream. It checks that
// nothing panics, every chain lies in RAM, one Pop reads at most
// 2*size+2 pieces of guest memory, and the queue's invariants hold.
func FuzzQueue(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.image, s.ops)
	}
	f.Fuzz(runFuzzQueueOnce)
}

func runFuzzQueueOnce(t *testing.T, image, ops []byte) {
	{
		if len(image) > fuzzRAM || len(ops) > 4096 {
			return
		}
		r := newFuzzRig(t, image)
		pos := 0
		next := func() byte {
			if pos >= len(ops) {
				return 0
			}
			pos++
			return ops[pos-1]
		}
		for i := range r.setup {
			r.setup[i] = next()
		}
		r.start()
		for pos < len(ops) {
			r.calls = 0
			q := r.m.Queue(0)
			switch op := next() % 10; op {
			case 0:
				c, ok := q.Pop()
				if r.calls > 2*int(q.num)+2 {
					t.Fatalf("Pop made %d memory calls, queue size %d", r.calls, q.num)
				}
				if ok {
					r.checkChain(c)
					r.held = append(r.held, c)
				}
			case 1, 2:
				head, written := uint16(next())%32, uint32(next())
				if op == 1 && len(r.held) > 0 {
					c := r.held[0]
					r.held = r.held[1:]
					head, written = c.Head, min(written, c.WriteLen)
				}
				_ = q.Push(head, written)
			case 3:
				off := int(binary.LittleEndian.Uint16([]byte{next(), next()})) % fuzzRAM
				r.ram.Data[off] = next()
			case 4:
				if len(r.held) == 0 {
					continue
				}
				c := &r.held[int(next())%len(r.held)]
				buf := make([]byte, next()%64)
				if next()&1 == 0 {
					_, _ = q.Gather(c, uint64(next()), buf)
				} else {
					_, _ = q.Scatter(c, uint64(next()), buf)
				}
			case 5:
				r.wr(uint64(next()%64)*4, binary.LittleEndian.Uint32([]byte{next(), next(), next(), next()}))
			case 6:
				r.wr(RegQueueNotify, uint32(next()%3))
				if r.calls > 4*fuzzQueueMax*fuzzQueueMax {
					t.Fatalf("a notify made %d memory calls", r.calls)
				}
			case 7:
				r.start()
			case 8:
				r.clone()
			case 9: // the driver publishes more entries
				b, _ := r.ram.Slice(q.driver+2, 2)
				if q.ready && b != nil {
					binary.LittleEndian.PutUint16(b, q.nextAvail+uint16(next()%24))
				}
			}
			r.check()
		}
	}
}

type fuzzSeed struct{ image, ops []byte }

// fuzzSeeds builds seed inputs with the test driver: well-formed chains
// and a few malformed ones, rings laid out as setup bytes {3, 0, 0x40,
// 0x40} say (size 8, desc at RAM start, avail at +0x800, used at +0x1000).
func fuzzSeeds() []fuzzSeed {
	setup := []byte{3, 0, 0x40, 0x40}
	const buf0 = ramBase + 0x2000
	build := func(post func(dq *driverQueue), ops ...byte) fuzzSeed {
		r := &rig{mem: FlatMemory{Base: ramBase, Data: make([]byte, fuzzRAM)}}
		dq := &driverQueue{r: r, size: 8, desc: ramBase, avail: ramBase + 0x800, used: ramBase + 0x1000}
		post(dq)
		img := r.mem.Data
		for len(img) > 0 && img[len(img)-1] == 0 {
			img = img[:len(img)-1]
		}
		return fuzzSeed{append([]byte(nil), img...), append(append([]byte(nil), setup...), ops...)}
	}
	valid := func(dq *driverQueue) {
		dq.post(buf{buf0, 16, false}, buf{buf0 + 0x100, 64, true}, buf{buf0 + 0x200, 1, true})
		dq.post(buf{buf0 + 0x300, 32, false})
		dq.post(buf{buf0 + 0x400, 128, true})
	}
	return []fuzzSeed{
		build(valid, 0, 0, 4, 0, 1, 20, 4, 1, 1, 9, 1, 0, 0, 8, 0, 1, 0, 2, 5, 6),
		build(valid, 6, 0, 9, 2, 6, 0, 3, 0x10, 0x08, 0xff, 0),
		build(valid, 0, 3, 0x0e, 0, 0xff, 0, 0, 7, 0, 0),
		build(func(dq *driverQueue) { // loop
			dq.setDesc(0, buf0, 8, DescFNext, 1)
			dq.setDesc(1, buf0, 8, DescFNext, 0)
			dq.offer(0)
		}, 0, 0, 7, 0),
		build(func(dq *driverQueue) { // indirect
			dq.setDesc(0, buf0, 16, DescFIndirect, 0)
			dq.offer(0)
		}, 0, 7, 0),
		build(func(dq *driverQueue) { // readable after writable, then avail jump
			dq.setDesc(0, buf0, 8, DescFWrite|DescFNext, 1)
			dq.setDesc(1, buf0, 8, 0, 0)
			dq.offer(0)
		}, 0, 7, 9, 23, 0),
	}
}

// FuzzMMIO throws register accesses of every width at the window of an
// idle device and checks the line discipline, the register rules, and
// that every state reached survives Save/Restore.
func FuzzMMIO(f *testing.F) {
	// Triples: offset/2; flags (0x80 wrapping offset, 0x40 read, 0x20
	// value in every byte) + width code; value.
	f.Add([]byte{0x38, 0, 1, 0x38, 0, 3, 0x12, 0, 1, 0x10, 0, 1, 0x38, 0, 0xb, 0x1c, 0, 8, 0x22, 0, 1})
	f.Add([]byte{0x00, 0x42, 0, 0x80, 2, 7, 0x81, 3, 9, 0x80, 0x41, 0, 0x32, 0x20, 3, 0x28, 4, 1, 3, 0x80, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := newFuzzRig(t, nil)
		for i := 0; i+2 < len(ops) && i < 3*2000; i += 3 {
			off := uint64(ops[i]) * 2
			if ops[i+1]&0x80 != 0 {
				off = ^uint64(0) - uint64(ops[i]) // offsets that wrap
			}
			width := []int{4, 4, 1, 2, 8, 3, 0}[int(ops[i+1]&0x1f)%7]
			data := make([]byte, width)
			for j := range data {
				if j == 0 || ops[i+1]&0x20 != 0 {
					data[j] = ops[i+2]
				}
			}
			if ops[i+1]&0x40 != 0 {
				r.m.Read(off, data)
				if off < ConfigOffset && (width != 4 || off%4 != 0) {
					for _, b := range data {
						if b != 0 {
							t.Fatalf("%d-byte read at %#x returned %x", width, off, data)
						}
					}
				}
			} else {
				r.m.Write(off, data)
			}
			if s := r.m.status; s&StatusDriverOK != 0 && s&StatusFeaturesOK == 0 {
				t.Fatalf("status %#x", s)
			}
			r.check()
		}
		r.clone()
		r.check()
	})
}
