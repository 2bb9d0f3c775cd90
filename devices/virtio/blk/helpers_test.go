package blk

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// The test guest: RAM at ramBase; the rings at its start, buffers after.
const (
	ramBase  = 0x100000
	ramSize  = 4 << 20
	descAddr = ramBase
	availOff = 0x1000
	usedOff  = 0x2000
	bufBase  = ramBase + 0x4000
)

// guest is a virtio-blk driver over byte-slice RAM, driving a Device
// through its MMIO registers.
type guest struct {
	t     testing.TB
	ram   virtio.FlatMemory
	dev   *Device
	mmio  *virtio.MMIO
	rises int
	level bool

	size     uint16
	free     []uint16            // free descriptors
	chains   map[uint16][]uint16 // head -> descriptors, in flight
	reqs     map[uint16]*req     // head -> request, in flight
	availIdx uint16
	lastUsed uint16
	bufNext  uint64
	used     [][2]uint32 // every used entry seen, in order
	hole     [2]uint64   // [start, end) of RAM the device cannot reach
}

// req is a request the guest posted.
type req struct {
	head       uint16
	statusAddr uint64 // 0: no writable byte
	dataAddr   uint64
	dataLen    uint32
	done       bool
	written    uint32
}

// newGuest builds the device over a fresh RAM and brings it up with a
// queue of size qsize, accepting every feature offered.
func newGuest(t testing.TB, cfg Config, engine *bounce.Engine, qsize uint16) *guest {
	t.Helper()
	return newGuestRAM(t, cfg, engine, qsize, ramSize)
}

// newGuestRAM is newGuest with ramBytes of RAM.
func newGuestRAM(t testing.TB, cfg Config, engine *bounce.Engine, qsize uint16, ramBytes int) *guest {
	t.Helper()
	g := &guest{t: t, ram: virtio.FlatMemory{Base: ramBase, Data: make([]byte, ramBytes)}}
	dev, m, err := NewMMIO(cfg, engine, virtio.MemoryFunc(g.slice), g.irq)
	if err != nil {
		t.Fatal(err)
	}
	g.dev, g.mmio = dev, m
	g.start(qsize)
	return g
}

// slice is the device's view of guest RAM: RAM but for the hole.
func (g *guest) slice(gpa uint64, n int) ([]byte, bool) {
	if gpa < g.hole[1] && g.hole[0] < gpa+uint64(n) {
		return nil, false
	}
	return g.ram.Slice(gpa, n)
}

func (g *guest) irq(high bool) {
	if high {
		g.rises++
	}
	g.level = high
}

func (g *guest) rd(off uint64) uint32 {
	var b [4]byte
	g.mmio.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (g *guest) wr(off uint64, v uint32) {
	g.mmio.Write(off, binary.LittleEndian.AppendUint32(nil, v))
}

// start resets the device and brings it up as Linux does.
func (g *guest) start(qsize uint16) {
	g.t.Helper()
	g.wr(virtio.RegStatus, 0)
	g.wr(virtio.RegStatus, 1|2)
	g.wr(virtio.RegDeviceFeaturesSel, 0)
	offered := uint64(g.rd(virtio.RegDeviceFeatures))
	g.wr(virtio.RegDeviceFeaturesSel, 1)
	offered |= uint64(g.rd(virtio.RegDeviceFeatures)) << 32
	g.wr(virtio.RegDriverFeaturesSel, 0)
	g.wr(virtio.RegDriverFeatures, uint32(offered))
	g.wr(virtio.RegDriverFeaturesSel, 1)
	g.wr(virtio.RegDriverFeatures, uint32(offered>>32))
	g.wr(virtio.RegStatus, 1|2|8)
	g.wr(virtio.RegQueueSel, 0)
	if max := g.rd(virtio.RegQueueNumMax); uint32(qsize) > max {
		g.t.Fatalf("queue size %d > QueueNumMax %d", qsize, max)
	}
	g.size = qsize
	clear(g.mem(ramBase+availOff, 4)) // fresh rings, as a driver allocates them
	clear(g.mem(ramBase+usedOff, 4))
	g.wr(virtio.RegQueueNum, uint32(qsize))
	g.wr(virtio.RegQueueDescLow, descAddr)
	g.wr(virtio.RegQueueDriverLow, ramBase+availOff)
	g.wr(virtio.RegQueueDeviceLow, ramBase+usedOff)
	g.wr(virtio.RegQueueReady, 1)
	g.wr(virtio.RegStatus, 1|2|8|4)
	if !g.mmio.Active() {
		g.t.Fatalf("device not up: status %#x, fault %q", g.rd(virtio.RegStatus), g.mmio.Fault())
	}
	g.free = g.free[:0]
	for i := range qsize {
		g.free = append(g.free, i)
	}
	g.chains, g.reqs = map[uint16][]uint16{}, map[uint16]*req{}
	g.availIdx, g.lastUsed = 0, 0
	g.bufNext = bufBase
}

func (g *guest) mem(gpa uint64, n int) []byte {
	b, ok := g.ram.Slice(gpa, n)
	if !ok {
		g.t.Fatalf("guest memory [%#x, +%#x) outside RAM", gpa, n)
	}
	return b
}

// alloc returns n bytes of fresh buffer space, wrapping at the end of RAM.
func (g *guest) alloc(n uint32) uint64 {
	if g.bufNext+uint64(n) > ramBase+uint64(len(g.ram.Data)) {
		g.bufNext = bufBase
	}
	a := g.bufNext
	g.bufNext += (uint64(n) + 15) &^ 15
	return a
}

// seg is one descriptor of a chain to post; addr 0 allocates a buffer.
type seg struct {
	n        uint32
	writable bool
	fill     []byte // initial contents
}

// post builds a chain of segs, offers it and returns its request; it does
// not notify.
func (g *guest) post(segs ...seg) *req {
	g.t.Helper()
	if len(segs) > len(g.free) {
		g.t.Fatalf("%d descriptors wanted, %d free", len(segs), len(g.free))
	}
	descs := slices.Clone(g.free[:len(segs)])
	g.free = g.free[len(segs):]
	r := &req{head: descs[0]}
	for i, s := range segs {
		addr := g.alloc(s.n)
		copy(g.mem(addr, int(s.n)), s.fill)
		var flags, next uint16
		if s.writable {
			flags |= virtio.DescFWrite
			if s.n > 0 {
				r.statusAddr = addr + uint64(s.n) - 1
			}
		}
		if i+1 < len(segs) {
			flags |= virtio.DescFNext
			next = descs[i+1]
		}
		d := g.mem(descAddr+16*uint64(descs[i]), 16)
		binary.LittleEndian.PutUint64(d[0:], addr)
		binary.LittleEndian.PutUint32(d[8:], s.n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
	}
	g.chains[r.head] = descs
	g.reqs[r.head] = r
	avail := uint64(ramBase + availOff)
	binary.LittleEndian.PutUint16(g.mem(avail+4+2*uint64(g.availIdx%g.size), 2), r.head)
	g.availIdx++
	binary.LittleEndian.PutUint16(g.mem(avail+2, 2), g.availIdx)
	return r
}

func header(typ uint32, sector uint64) []byte {
	h := binary.LittleEndian.AppendUint32(nil, typ)
	h = binary.LittleEndian.AppendUint32(h, 0)
	return binary.LittleEndian.AppendUint64(h, sector)
}

// read posts an IN request for n bytes at sector.
func (g *guest) read(sector uint64, n uint32) *req {
	r := g.post(seg{n: 16, fill: header(TypeIn, sector)}, seg{n: n, writable: true}, seg{n: 1, writable: true, fill: []byte{0xff}})
	r.dataAddr, r.dataLen = g.reqData(r, 1), n
	return r
}

// write posts an OUT request of data at sector.
func (g *guest) write(sector uint64, data []byte) *req {
	r := g.post(seg{n: 16, fill: header(TypeOut, sector)}, seg{n: uint32(len(data)), fill: data}, seg{n: 1, writable: true, fill: []byte{0xff}})
	r.dataAddr, r.dataLen = g.reqData(r, 1), uint32(len(data))
	return r
}

func (g *guest) flush() *req {
	return g.post(seg{n: 16, fill: header(TypeFlush, 0)}, seg{n: 1, writable: true, fill: []byte{0xff}})
}

// reqData returns the address of the i-th descriptor's buffer of r.
func (g *guest) reqData(r *req, i int) uint64 {
	d := g.mem(descAddr+16*uint64(g.chains[r.head][i]), 8)
	return binary.LittleEndian.Uint64(d)
}

func (g *guest) notify() { g.wr(virtio.RegQueueNotify, 0) }

// restartQueue disables queue 0 and enables it again with empty rings, as
// a driver recovering a queue would: the chains in flight become stale.
func (g *guest) restartQueue() {
	g.wr(virtio.RegQueueSel, 0)
	g.wr(virtio.RegQueueReady, 0)
	clear(g.mem(ramBase+availOff, 4))
	clear(g.mem(ramBase+usedOff, 4))
	g.wr(virtio.RegQueueReady, 1)
	g.free = g.free[:0]
	for i := range g.size {
		g.free = append(g.free, i)
	}
	g.chains, g.reqs = map[uint16][]uint16{}, map[uint16]*req{}
	g.availIdx, g.lastUsed = 0, 0
}

// collect reads the used ring: each used request is marked done and its
// descriptors freed.
func (g *guest) collect() {
	used := uint64(ramBase + usedOff)
	idx := binary.LittleEndian.Uint16(g.mem(used+2, 2))
	for ; g.lastUsed != idx; g.lastUsed++ {
		e := g.mem(used+4+8*uint64(g.lastUsed%g.size), 8)
		head, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
		g.used = append(g.used, [2]uint32{head, n})
		r, ok := g.reqs[uint16(head)]
		if !ok {
			g.t.Fatalf("used entry for head %d, not in flight", head)
		}
		r.done, r.written = true, n
		if (n == 0) != (r.statusAddr == 0) {
			g.t.Fatalf("head %d: %d bytes written, status byte at %#x", head, n, r.statusAddr)
		}
		if n > 0 && g.mem(r.statusAddr, 1)[0] > StatusUnsupp {
			g.t.Fatalf("head %d: status %d", head, g.mem(r.statusAddr, 1)[0])
		}
		g.free = append(g.free, g.chains[uint16(head)]...)
		delete(g.reqs, uint16(head))
		delete(g.chains, uint16(head))
	}
	g.wr(virtio.RegInterruptACK, 1)
}

// status returns r's status byte, failing the test if r is not done.
func (g *guest) status(r *req) byte {
	g.t.Helper()
	g.collect()
	if !r.done {
		g.t.Fatalf("request at head %d not completed", r.head)
	}
	return g.mem(r.statusAddr, 1)[0]
}

func (g *guest) data(r *req) []byte { return slices.Clone(g.mem(r.dataAddr, int(r.dataLen))) }

// memDisk is a disk image in memory that answers the device's transfers
// by hand: the tests run the engine in replay mode (so it never calls a
// backend) and play the backend themselves, in the order they choose.
type memDisk struct {
	img   []byte
	fail  map[uint64]bool // tags whose transfer fails
	calls int
}

// serve performs r on the image and returns its completion.
func (m *memDisk) serve(r *Request) bounce.Completion {
	m.calls++
	c := bounce.Completion{Tag: r.Tag}
	if m.fail[r.Tag] {
		c.Err = "injected failure"
		return c
	}
	switch r.Op {
	case OpRead:
		c.Data = slices.Clone(m.img[r.Offset : r.Offset+uint64(r.Len)])
	case OpWrite:
		copy(m.img[r.Offset:], r.Data)
	}
	return c
}

// replayEngine is an engine that never calls its backend.
func replayEngine(t testing.TB) *bounce.Engine {
	e := bounce.NewEngine(func(bounce.Request) ([]byte, error) {
		t.Error("the backend was called")
		return nil, fmt.Errorf("no backend")
	})
	e.SetReplay()
	return e
}

// inflightTags returns the tags the device has submitted, in order.
func inflightTags(d *Device) []uint64 {
	var tags []uint64
	for _, r := range d.Save().InFlight {
		tags = append(tags, r.Tag)
	}
	return tags
}

// complete serves the transfer with tag on disk and delivers its
// completion to the device, as the VMM does at a delivery point.
func (g *guest) complete(disk *memDisk, tag uint64) bounce.Completion {
	g.t.Helper()
	r, ok := g.dev.inflight[tag]
	if !ok {
		g.t.Fatalf("tag %d not in flight (in flight: %v)", tag, inflightTags(g.dev))
	}
	c := disk.serve(r)
	g.dev.Engine().Delivered(tag)
	g.dev.Complete(c)
	return c
}

// drain completes every transfer, oldest first, until none is in flight.
func (g *guest) drain(disk *memDisk) {
	for {
		tags := inflightTags(g.dev)
		if len(tags) == 0 {
			return
		}
		g.complete(disk, tags[0])
	}
}
