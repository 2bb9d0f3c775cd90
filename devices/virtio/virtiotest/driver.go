// Package virtiotest is a virtio guest driver for device tests: it owns a
// byte-slice guest RAM, brings a device up through its virtio-mmio
// registers the way Linux does, posts descriptor chains and reads the used
// rings back. Device packages (blk, net) build their request helpers on
// it in their tests; it is a normal package only so that they can share
// it.
//
// Layout: RAM starts at RAMBase; queue q's rings sit at
// RAMBase + q*RingsSize (descriptor table, then the driver area at
// AvailOff and the device area at UsedOff); buffers come after every
// queue's rings and wrap around at the end of RAM.
package virtiotest

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// The driver's memory layout.
const (
	RAMBase   = 0x100000
	RingsSize = 0x4000
	AvailOff  = 0x1000
	UsedOff   = 0x2000
)

// Seg is one descriptor of a chain to post.
type Seg struct {
	N        uint32
	Writable bool
	Fill     []byte // initial contents; the rest is zero
	Addr     uint64 // where Post put the buffer
}

// Chain is a descriptor chain the driver posted.
type Chain struct {
	Q       int
	Head    uint16
	Segs    []Seg  // with their addresses
	Done    bool   // the device returned it
	Written uint32 // the used entry's length
	descs   []uint16
}

// Ring is the driver's side of one virtqueue.
type Ring struct {
	Q    int
	Size uint16
	// Used is every used entry seen, [head, length], in order. Like the
	// device's counters, it spans resets and queue restarts.
	Used     [][2]uint32
	free     []uint16
	chains   map[uint16]*Chain // head -> chain, in flight
	availIdx uint16
	lastUsed uint16
}

// Free returns how many descriptors the ring has free.
func (r *Ring) Free() int { return len(r.free) }

func (r *Ring) base() uint64 { return RAMBase + uint64(r.Q)*RingsSize }

// Driver is the guest driver of one device.
type Driver struct {
	T    testing.TB
	RAM  virtio.FlatMemory
	MMIO *virtio.MMIO
	// Rises counts the interrupt line's rises; Level is its level.
	Rises int
	Level bool
	// Hole is guest RAM [start, end) the device cannot reach (Memory
	// refuses it), though the driver can.
	Hole [2]uint64
	// Rings are the queues, set up by Start.
	Rings []*Ring
	// OnUsed, if set, sees each chain Collect finds used, before its
	// descriptors are freed.
	OnUsed  func(c *Chain)
	bufNext uint64
}

// New returns a driver with ramBytes of RAM, over the transport attach
// builds on the driver's Memory and IRQ (blk.NewMMIO, say). Call Start to
// bring the device up.
func New(t testing.TB, ramBytes int, attach func(mem virtio.Memory, irq func(high bool)) (*virtio.MMIO, error)) *Driver {
	t.Helper()
	d := &Driver{T: t, RAM: virtio.FlatMemory{Base: RAMBase, Data: make([]byte, ramBytes)}}
	m, err := attach(d.Memory(), d.IRQ)
	if err != nil {
		t.Fatal(err)
	}
	d.MMIO = m
	return d
}

// Memory is the device's view of guest RAM: RAM but for Hole.
func (d *Driver) Memory() virtio.Memory {
	return virtio.MemoryFunc(func(gpa uint64, n int) ([]byte, bool) {
		if gpa < d.Hole[1] && d.Hole[0] < gpa+uint64(n) {
			return nil, false
		}
		return d.RAM.Slice(gpa, n)
	})
}

// IRQ is the device's interrupt line.
func (d *Driver) IRQ(high bool) {
	if high {
		d.Rises++
	}
	d.Level = high
}

// ReadReg reads the 32-bit register at off.
func (d *Driver) ReadReg(off uint64) uint32 {
	var b [4]byte
	d.MMIO.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// WriteReg writes the 32-bit register at off.
func (d *Driver) WriteReg(off uint64, v uint32) {
	d.MMIO.Write(off, binary.LittleEndian.AppendUint32(nil, v))
}

// ReadConfig reads n bytes (1, 2 or 4) of config space at off, as a
// little-endian number.
func (d *Driver) ReadConfig(off uint64, n int) uint64 {
	var b [8]byte
	d.MMIO.Read(virtio.ConfigOffset+off, b[:n])
	return binary.LittleEndian.Uint64(b[:])
}

// Mem returns guest RAM [gpa, gpa+n), failing the test outside RAM.
func (d *Driver) Mem(gpa uint64, n int) []byte {
	b, ok := d.RAM.Slice(gpa, n)
	if !ok {
		d.T.Fatalf("guest memory [%#x, +%#x) outside RAM", gpa, n)
	}
	return b
}

// Start resets the device and brings it up as Linux does: every feature
// offered accepted, every queue the device has (QueueNumMax not 0) set up
// with qsize entries and empty rings. It posts nothing and does not
// notify.
func (d *Driver) Start(qsize uint16) {
	d.T.Helper()
	d.WriteReg(virtio.RegStatus, 0)
	d.WriteReg(virtio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	d.WriteReg(virtio.RegDeviceFeaturesSel, 0)
	offered := uint64(d.ReadReg(virtio.RegDeviceFeatures))
	d.WriteReg(virtio.RegDeviceFeaturesSel, 1)
	offered |= uint64(d.ReadReg(virtio.RegDeviceFeatures)) << 32
	d.WriteReg(virtio.RegDriverFeaturesSel, 0)
	d.WriteReg(virtio.RegDriverFeatures, uint32(offered))
	d.WriteReg(virtio.RegDriverFeaturesSel, 1)
	d.WriteReg(virtio.RegDriverFeatures, uint32(offered>>32))
	d.WriteReg(virtio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	old := d.Rings
	d.Rings = nil
	for q := 0; ; q++ {
		d.WriteReg(virtio.RegQueueSel, uint32(q))
		max := d.ReadReg(virtio.RegQueueNumMax)
		if max == 0 {
			break
		}
		if uint32(qsize) > max {
			d.T.Fatalf("queue %d: size %d > QueueNumMax %d", q, qsize, max)
		}
		r := &Ring{Q: q, Size: qsize}
		if q < len(old) {
			r.Used = old[q].Used
		}
		d.Rings = append(d.Rings, r)
		d.WriteReg(virtio.RegQueueNum, uint32(qsize))
		d.WriteReg(virtio.RegQueueDescLow, uint32(r.base()))
		d.WriteReg(virtio.RegQueueDriverLow, uint32(r.base()+AvailOff))
		d.WriteReg(virtio.RegQueueDeviceLow, uint32(r.base()+UsedOff))
		d.freshRing(r)
		d.WriteReg(virtio.RegQueueReady, 1)
	}
	d.WriteReg(virtio.RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if !d.MMIO.Active() {
		d.T.Fatalf("device not up: status %#x, fault %q", d.ReadReg(virtio.RegStatus), d.MMIO.Fault())
	}
	d.bufNext = d.bufBase()
}

// bufBase is where buffers start: after every queue's rings.
func (d *Driver) bufBase() uint64 { return RAMBase + uint64(len(d.Rings))*RingsSize }

// freshRing empties r's rings in memory and its driver state, as a
// driver allocating new rings would.
func (d *Driver) freshRing(r *Ring) {
	clear(d.Mem(r.base()+AvailOff, 4))
	clear(d.Mem(r.base()+UsedOff, 4))
	r.free = r.free[:0]
	for i := range r.Size {
		r.free = append(r.free, i)
	}
	r.chains = map[uint16]*Chain{}
	r.availIdx, r.lastUsed = 0, 0
}

// RestartQueue disables queue q and enables it again with empty rings, as
// a driver recovering a queue would: the chains in flight become stale.
func (d *Driver) RestartQueue(q int) {
	d.WriteReg(virtio.RegQueueSel, uint32(q))
	d.WriteReg(virtio.RegQueueReady, 0)
	d.freshRing(d.Rings[q])
	d.WriteReg(virtio.RegQueueReady, 1)
}

// alloc returns n bytes of buffer space, wrapping at the end of RAM.
func (d *Driver) alloc(n uint32) uint64 {
	if d.bufNext+uint64(n) > RAMBase+uint64(len(d.RAM.Data)) {
		d.bufNext = d.bufBase()
	}
	a := d.bufNext
	d.bufNext += (uint64(n) + 15) &^ 15
	return a
}

// Post builds a chain of segs on queue q and offers it; it does not
// notify. It returns nil if the ring has too few free descriptors.
func (d *Driver) Post(q int, segs ...Seg) *Chain {
	r := d.Rings[q]
	if len(segs) > len(r.free) {
		return nil
	}
	c := &Chain{Q: q, descs: slices.Clone(r.free[:len(segs)])}
	r.free = r.free[len(segs):]
	c.Head = c.descs[0]
	for i, s := range segs {
		s.Addr = d.alloc(s.N)
		m := d.Mem(s.Addr, int(s.N))
		clear(m)
		copy(m, s.Fill)
		var flags, next uint16
		if s.Writable {
			flags |= virtio.DescFWrite
		}
		if i+1 < len(segs) {
			flags |= virtio.DescFNext
			next = c.descs[i+1]
		}
		desc := d.Mem(r.base()+16*uint64(c.descs[i]), 16)
		binary.LittleEndian.PutUint64(desc[0:], s.Addr)
		binary.LittleEndian.PutUint32(desc[8:], s.N)
		binary.LittleEndian.PutUint16(desc[12:], flags)
		binary.LittleEndian.PutUint16(desc[14:], next)
		c.Segs = append(c.Segs, s)
	}
	r.chains[c.Head] = c
	avail := r.base() + AvailOff
	binary.LittleEndian.PutUint16(d.Mem(avail+4+2*uint64(r.availIdx%r.Size), 2), c.Head)
	r.availIdx++
	binary.LittleEndian.PutUint16(d.Mem(avail+2, 2), r.availIdx)
	return c
}

// Notify notifies queue q.
func (d *Driver) Notify(q int) { d.WriteReg(virtio.RegQueueNotify, uint32(q)) }

// Written returns the first n bytes of c's writable segments.
func (d *Driver) Written(c *Chain, n uint32) []byte {
	var out []byte
	for _, s := range c.Segs {
		if s.Writable && uint32(len(out)) < n {
			out = append(out, d.Mem(s.Addr, int(min(s.N, n-uint32(len(out)))))...)
		}
	}
	return out
}

// InFlight returns the number of chains posted and not yet used.
func (d *Driver) InFlight() int {
	n := 0
	for _, r := range d.Rings {
		n += len(r.chains)
	}
	return n
}

// Collect reads every used ring: each used chain is marked done, shown to
// OnUsed and its descriptors freed. Then it acknowledges the used buffer
// interrupt. A used entry for a chain not in flight fails the test.
func (d *Driver) Collect() {
	d.T.Helper()
	for _, r := range d.Rings {
		used := r.base() + UsedOff
		idx := binary.LittleEndian.Uint16(d.Mem(used+2, 2))
		for ; r.lastUsed != idx; r.lastUsed++ {
			e := d.Mem(used+4+8*uint64(r.lastUsed%r.Size), 8)
			head, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
			r.Used = append(r.Used, [2]uint32{head, n})
			c, ok := r.chains[uint16(head)]
			if !ok {
				d.T.Fatalf("queue %d: used entry for head %d, not in flight", r.Q, head)
			}
			c.Done, c.Written = true, n
			if d.OnUsed != nil {
				d.OnUsed(c)
			}
			r.free = append(r.free, c.descs...)
			delete(r.chains, uint16(head))
		}
	}
	d.WriteReg(virtio.RegInterruptACK, virtio.InterruptUsedBuffer)
}

// ReplayEngine returns a bounce engine in replay mode whose backend fails
// the test if it is ever called: the tests play the backend themselves and
// deliver completions in the order they choose.
func ReplayEngine(t testing.TB) *bounce.Engine {
	e := bounce.NewEngine(func(bounce.Request) ([]byte, error) {
		t.Error("the backend was called")
		return nil, fmt.Errorf("no backend")
	})
	e.SetReplay()
	return e
}
