package net

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// The test guest: RAM at ramBase; queue q's rings at ramBase+q*ringsSize,
// buffers after both.
const (
	ramBase   = 0x100000
	ramSize   = 1 << 20
	ringsSize = 0x4000
	availOff  = 0x1000
	usedOff   = 0x2000
	bufBase   = ramBase + 2*ringsSize
)

var testMAC = [6]byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

// ring is the driver's side of one virtqueue.
type ring struct {
	q        int
	size     uint16
	free     []uint16
	chains   map[uint16][]uint16 // head -> descriptors, in flight
	bufs     map[uint16]*buf     // head -> buffer, in flight
	availIdx uint16
	lastUsed uint16
	used     [][2]uint32 // every used entry seen, in order
}

func (r *ring) base() uint64 { return ramBase + uint64(r.q)*ringsSize }

// buf is a chain the guest posted.
type buf struct {
	head    uint16
	segs    []seg // with their addresses
	done    bool
	written uint32
}

// seg is one descriptor of a chain to post.
type seg struct {
	n        uint32
	writable bool
	fill     []byte // initial contents
	addr     uint64 // set by post
}

// guest is a virtio-net driver over byte-slice RAM, driving a Device
// through its MMIO registers.
type guest struct {
	t       testing.TB
	ram     virtio.FlatMemory
	dev     *Device
	mmio    *virtio.MMIO
	rises   int
	rings   [2]*ring
	bufNext uint64
	frames  [][]byte // frames received, in order
}

func newGuest(t testing.TB, engine *bounce.Engine, qsize uint16) *guest {
	t.Helper()
	g := &guest{t: t, ram: virtio.FlatMemory{Base: ramBase, Data: make([]byte, ramSize)}}
	dev, m, err := NewMMIO(Config{MAC: testMAC}, engine, g.ram, g.irq)
	if err != nil {
		t.Fatal(err)
	}
	g.dev, g.mmio = dev, m
	g.start(qsize)
	return g
}

func (g *guest) irq(high bool) {
	if high {
		g.rises++
	}
}

func (g *guest) rd(off uint64) uint32 {
	var b [4]byte
	g.mmio.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (g *guest) wr(off uint64, v uint32) {
	g.mmio.Write(off, binary.LittleEndian.AppendUint32(nil, v))
}

func (g *guest) mem(gpa uint64, n int) []byte {
	b, ok := g.ram.Slice(gpa, n)
	if !ok {
		g.t.Fatalf("guest memory [%#x, +%#x) outside RAM", gpa, n)
	}
	return b
}

// start resets the device and brings it up as Linux does, accepting every
// feature offered; it posts nothing and does not notify.
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
	for q := range 2 {
		g.wr(virtio.RegQueueSel, uint32(q))
		if max := g.rd(virtio.RegQueueNumMax); uint32(qsize) > max {
			g.t.Fatalf("queue size %d > QueueNumMax %d", qsize, max)
		}
		r := &ring{q: q, size: qsize}
		if old := g.rings[q]; old != nil {
			r.used = old.used // the device's counters span resets; so does this record
		}
		g.rings[q] = r
		g.wr(virtio.RegQueueNum, uint32(qsize))
		g.wr(virtio.RegQueueDescLow, uint32(r.base()))
		g.wr(virtio.RegQueueDriverLow, uint32(r.base()+availOff))
		g.wr(virtio.RegQueueDeviceLow, uint32(r.base()+usedOff))
		g.freshRing(r)
		g.wr(virtio.RegQueueReady, 1)
	}
	g.wr(virtio.RegStatus, 1|2|8|4)
	if !g.mmio.Active() {
		g.t.Fatalf("device not up: status %#x, fault %q", g.rd(virtio.RegStatus), g.mmio.Fault())
	}
	g.bufNext = bufBase
}

// freshRing empties r's rings in memory and its driver state.
func (g *guest) freshRing(r *ring) {
	clear(g.mem(r.base()+availOff, 4))
	clear(g.mem(r.base()+usedOff, 4))
	r.free = r.free[:0]
	for i := range r.size {
		r.free = append(r.free, i)
	}
	r.chains, r.bufs = map[uint16][]uint16{}, map[uint16]*buf{}
	r.availIdx, r.lastUsed = 0, 0
}

// restartQueue disables queue q and enables it again with empty rings:
// the chains in flight become stale.
func (g *guest) restartQueue(q int) {
	g.wr(virtio.RegQueueSel, uint32(q))
	g.wr(virtio.RegQueueReady, 0)
	g.freshRing(g.rings[q])
	g.wr(virtio.RegQueueReady, 1)
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

// post builds a chain of segs on queue q and offers it; it does not
// notify. It returns nil if the ring has too few free descriptors.
func (g *guest) post(q int, segs ...seg) *buf {
	r := g.rings[q]
	if len(segs) > len(r.free) {
		return nil
	}
	descs := slices.Clone(r.free[:len(segs)])
	r.free = r.free[len(segs):]
	b := &buf{head: descs[0]}
	for i, s := range segs {
		s.addr = g.alloc(s.n)
		m := g.mem(s.addr, int(s.n))
		clear(m)
		copy(m, s.fill)
		var flags, next uint16
		if s.writable {
			flags |= virtio.DescFWrite
		}
		if i+1 < len(segs) {
			flags |= virtio.DescFNext
			next = descs[i+1]
		}
		d := g.mem(r.base()+16*uint64(descs[i]), 16)
		binary.LittleEndian.PutUint64(d[0:], s.addr)
		binary.LittleEndian.PutUint32(d[8:], s.n)
		binary.LittleEndian.PutUint16(d[12:], flags)
		binary.LittleEndian.PutUint16(d[14:], next)
		b.segs = append(b.segs, s)
	}
	r.chains[b.head] = descs
	r.bufs[b.head] = b
	avail := r.base() + availOff
	binary.LittleEndian.PutUint16(g.mem(avail+4+2*uint64(r.availIdx%r.size), 2), b.head)
	r.availIdx++
	binary.LittleEndian.PutUint16(g.mem(avail+2, 2), r.availIdx)
	return b
}

// postRx posts a receive buffer of n bytes.
func (g *guest) postRx(n uint32) *buf { return g.post(RxQueue, seg{n: n, writable: true}) }

// sendFrame posts frame behind a zero header, as Linux does: header and
// frame in one descriptor, or split in two.
func (g *guest) sendFrame(frame []byte, split bool) *buf {
	if split {
		return g.post(TxQueue, seg{n: HeaderLen}, seg{n: uint32(len(frame)), fill: frame})
	}
	return g.post(TxQueue, seg{n: uint32(HeaderLen + len(frame)), fill: append(make([]byte, HeaderLen), frame...)})
}

func (g *guest) notify(q int) { g.wr(virtio.RegQueueNotify, uint32(q)) }

// writtenBytes returns the first n bytes of b's writable segments.
func (g *guest) writtenBytes(b *buf, n uint32) []byte {
	var out []byte
	for _, s := range b.segs {
		if s.writable && uint32(len(out)) < n {
			out = append(out, g.mem(s.addr, int(min(s.n, n-uint32(len(out)))))...)
		}
	}
	return out
}

// collect reads both used rings: each used buffer is marked done and its
// descriptors freed; a received frame's header is checked and the frame
// appended to g.frames.
func (g *guest) collect() {
	g.t.Helper()
	for _, r := range g.rings {
		used := r.base() + usedOff
		idx := binary.LittleEndian.Uint16(g.mem(used+2, 2))
		for ; r.lastUsed != idx; r.lastUsed++ {
			e := g.mem(used+4+8*uint64(r.lastUsed%r.size), 8)
			head, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
			r.used = append(r.used, [2]uint32{head, n})
			b, ok := r.bufs[uint16(head)]
			if !ok {
				g.t.Fatalf("queue %d: used entry for head %d, not in flight", r.q, head)
			}
			b.done, b.written = true, n
			if r.q == TxQueue && n != 0 {
				g.t.Fatalf("transmit chain %d: %d bytes written", head, n)
			}
			if r.q == RxQueue && n != 0 {
				if err := checkReceived(g.writtenBytes(b, n)); err != nil {
					g.t.Fatalf("receive buffer %d: %v", head, err)
				}
				g.frames = append(g.frames, g.writtenBytes(b, n)[HeaderLen:])
			}
			r.free = append(r.free, r.chains[uint16(head)]...)
			delete(r.bufs, uint16(head))
			delete(r.chains, uint16(head))
		}
	}
	g.wr(virtio.RegInterruptACK, 1)
}

// checkReceived checks what the device wrote into a receive buffer: a
// header with nothing but num_buffers 1, then a frame.
func checkReceived(b []byte) error {
	want := make([]byte, HeaderLen)
	want[hdrNumBuffers] = 1
	switch {
	case len(b) < HeaderLen+MinFrame || len(b) > HeaderLen+MaxFrame:
		return fmt.Errorf("%d bytes written", len(b))
	case !bytes.Equal(b[:HeaderLen], want):
		return fmt.Errorf("header % x", b[:HeaderLen])
	}
	return nil
}

// replayEngine is an engine that never calls its backend: the tests play
// the backend themselves, delivering completions with deliver and
// completeTx.
func replayEngine(t testing.TB) *bounce.Engine {
	e := bounce.NewEngine(func(bounce.Request) ([]byte, error) {
		t.Error("the backend was called")
		return nil, fmt.Errorf("no backend")
	})
	e.SetReplay()
	return e
}

// deliver completes the standing receive with a batch of frames, as the
// VMM does at a delivery point.
func (g *guest) deliver(frames ...[]byte) {
	g.t.Helper()
	var batch []byte
	for _, f := range frames {
		batch = AppendFrame(batch, f)
	}
	g.deliverRaw(batch, "")
}

// deliverRaw completes the standing receive with data or err.
func (g *guest) deliverRaw(data []byte, err string) {
	g.t.Helper()
	if g.dev.rxTag == 0 {
		g.t.Fatal("no receive standing")
	}
	g.complete(bounce.Completion{Tag: g.dev.rxTag, Data: data, Err: err})
}

// completeTx completes the oldest transmitted frame in flight and returns
// it.
func (g *guest) completeTx(err string) []byte {
	g.t.Helper()
	s := g.dev.Save()
	if len(s.Tx) == 0 {
		g.t.Fatal("no frame in flight")
	}
	g.complete(bounce.Completion{Tag: s.Tx[0].Tag, Err: err})
	return s.Tx[0].Frame
}

func (g *guest) complete(c bounce.Completion) {
	g.dev.Engine().Delivered(c.Tag)
	g.dev.Complete(c)
	g.collect()
}

// frame returns an Ethernet frame of n bytes (at least MinFrame) from the
// test MAC to a peer, with seed in its payload.
func frame(n int, seed byte) []byte {
	f := make([]byte, n)
	copy(f, []byte{0x52, 0x54, 0, 0, 0, 1})
	copy(f[6:], testMAC[:])
	binary.BigEndian.PutUint16(f[12:], 0x88b5) // IEEE local experimental
	for i := 14; i < n; i++ {
		f[i] = seed + byte(i*7)
	}
	return f
}

func bounceCompletion(tag uint64, data []byte) bounce.Completion {
	return bounce.Completion{Tag: tag, Data: data}
}
