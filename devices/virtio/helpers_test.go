package virtio

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// testBackend is a device model for tests: 8 bytes of config space, a few
// feature bits (including ones the transport must refuse), and a Notify
// hook.
type testBackend struct {
	features uint64
	max      []uint16
	config   [8]byte
	resets   int
	notifies []int
	onNotify func(q int, vq *Queue)
}

const testFeatures = 1<<0 | 1<<5 | FeatureIndirectDesc | FeatureEventIdx | FeatureRingPacked | 1<<63

func newTestBackend() *testBackend {
	return &testBackend{features: testFeatures, max: []uint16{8, 4}}
}

func (b *testBackend) DeviceID() uint32      { return 2 }
func (b *testBackend) Features() uint64      { return b.features }
func (b *testBackend) NumQueues() int        { return len(b.max) }
func (b *testBackend) QueueMax(q int) uint16 { return b.max[q] }
func (b *testBackend) Reset()                { b.resets++ }

func (b *testBackend) ReadConfig(off uint64, data []byte) {
	if off < uint64(len(b.config)) {
		copy(data, b.config[off:])
	}
}

func (b *testBackend) WriteConfig(off uint64, data []byte) {
	if off < uint64(len(b.config)) {
		copy(b.config[off:], data)
	}
}

func (b *testBackend) Notify(q int, vq *Queue) {
	b.notifies = append(b.notifies, q)
	if b.onNotify != nil {
		b.onNotify(q, vq)
	}
}

// irqLine checks that the transport only drives level changes.
type irqLine struct {
	level bool
	rises int
	err   error
}

func (l *irqLine) set(high bool) {
	if high == l.level && l.err == nil {
		l.err = fmt.Errorf("interrupt line driven %v twice in a row", high)
	}
	l.level = high
	if high {
		l.rises++
	}
}

// Guest RAM in the tests, and where the default queue's rings go.
const (
	ramBase   = 0x10000
	ramSize   = 0x10000
	descAddr  = ramBase
	availAddr = ramBase + 0x1000
	usedAddr  = ramBase + 0x2000
	bufAddr   = ramBase + 0x4000
)

// rig is a transport with a test backend over FlatMemory, and the guest
// driver's side of it.
type rig struct {
	t   testing.TB
	mem FlatMemory
	be  *testBackend
	irq *irqLine
	m   *MMIO
}

func newRig(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, mem: FlatMemory{Base: ramBase, Data: make([]byte, ramSize)}, be: newTestBackend(), irq: &irqLine{}}
	m, err := NewMMIO(r.be, r.mem, r.irq.set)
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	return r
}

func (r *rig) rd(off uint64) uint32 {
	var b [4]byte
	r.m.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) wr(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.m.Write(off, b[:])
}

func (r *rig) wr64(lowOff uint64, v uint64) {
	r.wr(lowOff, uint32(v))
	r.wr(lowOff+4, uint32(v>>32))
}

// negotiate does the status and feature steps up to FEATURES_OK and
// returns the status read back.
func (r *rig) negotiate(features uint64) uint32 {
	r.wr(RegStatus, StatusAcknowledge)
	r.wr(RegStatus, StatusAcknowledge|StatusDriver)
	r.wr(RegDriverFeaturesSel, 0)
	r.wr(RegDriverFeatures, uint32(features))
	r.wr(RegDriverFeaturesSel, 1)
	r.wr(RegDriverFeatures, uint32(features>>32))
	r.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	return r.rd(RegStatus)
}

// driverQueue is the driver's view of one virtqueue.
type driverQueue struct {
	r                 *rig
	size              uint16
	desc, avail, used uint64
	nextDesc          uint16
	availIdx          uint16
	lastUsed          uint16
}

// programQueue selects queue q and writes its size and ring addresses.
func (r *rig) programQueue(q uint32, size uint32, desc, avail, used uint64) {
	r.wr(RegQueueSel, q)
	r.wr(RegQueueNum, size)
	r.wr64(RegQueueDescLow, desc)
	r.wr64(RegQueueDriverLow, avail)
	r.wr64(RegQueueDeviceLow, used)
}

// setupQueue programs queue q and writes QueueReady=1.
func (r *rig) setupQueue(q uint32, size uint16, desc, avail, used uint64) *driverQueue {
	r.programQueue(q, uint32(size), desc, avail, used)
	r.wr(RegQueueReady, 1)
	return &driverQueue{r: r, size: size, desc: desc, avail: avail, used: used}
}

// start brings the device up as a Linux driver would, with queue 0 of size
// 8 at the default addresses.
func (r *rig) start() *driverQueue {
	r.t.Helper()
	if s := r.negotiate(FeatureVersion1 | 1); s&StatusFeaturesOK == 0 {
		r.t.Fatalf("FEATURES_OK refused: status %#x", s)
	}
	dq := r.setupQueue(0, 8, descAddr, availAddr, usedAddr)
	r.wr(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if !r.m.Active() || !r.m.Queue(0).Ready() {
		r.t.Fatalf("device not up: status %#x, fault %q", r.rd(RegStatus), r.m.Fault())
	}
	return dq
}

func (r *rig) put16(gpa uint64, v uint16) {
	b, _ := r.mem.Slice(gpa, 2)
	binary.LittleEndian.PutUint16(b, v)
}

func (r *rig) get32(gpa uint64) uint32 {
	b, _ := r.mem.Slice(gpa, 4)
	return binary.LittleEndian.Uint32(b)
}

// setDesc writes descriptor i.
func (dq *driverQueue) setDesc(i uint16, addr uint64, n uint32, flags, next uint16) {
	b, ok := dq.r.mem.Slice(dq.desc+16*uint64(i), 16)
	if !ok {
		dq.r.t.Fatalf("descriptor %d outside test RAM", i)
	}
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// offer puts head in the avail ring and publishes it.
func (dq *driverQueue) offer(head uint16) {
	dq.r.put16(dq.avail+4+2*uint64(dq.availIdx%dq.size), head)
	dq.availIdx++
	dq.r.put16(dq.avail+2, dq.availIdx)
}

type buf struct {
	addr     uint64
	n        uint32
	writable bool
}

// post chains bufs through the next free descriptors and offers the chain.
func (dq *driverQueue) post(bufs ...buf) uint16 {
	head := dq.nextDesc % dq.size
	for i, b := range bufs {
		d := dq.nextDesc % dq.size
		dq.nextDesc++
		var flags uint16
		if b.writable {
			flags |= DescFWrite
		}
		if i < len(bufs)-1 {
			flags |= DescFNext
		}
		dq.setDesc(d, b.addr, b.n, flags, dq.nextDesc%dq.size)
	}
	dq.offer(head)
	return head
}

// takeUsed returns the used entries published since the last call.
func (dq *driverQueue) takeUsed() [][2]uint32 {
	b, _ := dq.r.mem.Slice(dq.used+2, 2)
	idx := binary.LittleEndian.Uint16(b)
	var out [][2]uint32
	for ; dq.lastUsed != idx; dq.lastUsed++ {
		e := dq.used + 4 + 8*uint64(dq.lastUsed%dq.size)
		out = append(out, [2]uint32{dq.r.get32(e), dq.r.get32(e + 4)})
	}
	return out
}
