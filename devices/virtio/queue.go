package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ftkvm/ftkvm/bounce"
)

// MaxQueueSize is the largest split virtqueue the spec allows (virtio 1.1,
// 2.6). A backend's QueueMax must be a power of two no larger.
const MaxQueueSize = 32768

// MaxChainBytes bounds the total length of one descriptor chain, readable
// and writable segments together: one bounce.MaxLen transfer plus 4 KiB
// for request headers and status bytes. A longer chain is a malformed ring
// (the backend advertises smaller limits in its config space, e.g.
// virtio-blk's size_max and seg_max, so a well-behaved driver never builds
// one).
const MaxChainBytes = bounce.MaxLen + 4096

// Split virtqueue layout (virtio 1.1, 2.6). The descriptor table is an
// array of 16-byte descriptors {addr u64, len u32, flags u16, next u16};
// the driver ("available") ring is {flags u16, idx u16, ring [N]u16,
// used_event u16}; the device ("used") ring is {flags u16, idx u16,
// ring [N]{id u32, len u32}, avail_event u16}. All little-endian.
const (
	descSize   = 16
	descAlign  = 16
	availAlign = 2
	usedAlign  = 4

	// Descriptor flags (exported for drivers and tests): the chain goes
	// on at next, the buffer is device-writable, the buffer is a table of
	// descriptors (never offered here: a malformed ring).
	DescFNext     = 1
	DescFWrite    = 2
	DescFIndirect = 4

	availFNoInterrupt = 1
)

func availBytes(n uint64) uint64 { return 6 + 2*n }
func usedBytes(n uint64) uint64  { return 6 + 8*n }

// ErrStale is returned by Push, Gather and Scatter for a chain the queue
// does not hold in flight: already pushed, popped before the device was
// reset or the queue re-enabled, or the queue is broken. A backend gets it
// when a completion arrives for a request the guest has abandoned; it
// drops the completion.
var ErrStale = errors.New("virtio: chain is not in flight on this queue")

// ErrShortChain is returned by Gather and Scatter when the chain's
// segments of the requested kind end before the buffer does.
var ErrShortChain = errors.New("virtio: chain is shorter than the transfer")

// Segment is one descriptor's buffer: guest physical [Addr, Addr+Len),
// readable by the device (driver-written data) or, if Writable, written by
// the device. Pop checked that it is guest RAM.
type Segment struct {
	Addr     uint64
	Len      uint32
	Writable bool
}

// Chain is a descriptor chain taken from the available ring. Its
// driver-readable segments come first, then the device-writable ones. It
// is plain data; Epoch ties it to one incarnation of its queue, so a chain
// popped before a reset is refused afterwards.
type Chain struct {
	Head     uint16 // descriptor index to give back to Push
	Epoch    uint32
	Segments []Segment
	ReadLen  uint32 // total length of the readable segments
	WriteLen uint32 // total length of the writable segments
}

// InFlight is a chain the device has popped and not yet pushed: its
// descriptor indices, head first, and its writable length.
type InFlight struct {
	Descs    []uint16
	Writable uint32
}

// Queue is one split virtqueue of an MMIO transport. Its methods run on
// the vCPU thread, like the transport's.
//
// The device owns every descriptor of a popped chain until the chain is
// pushed back; a chain that reaches a descriptor the device already owns
// (a loop, or a descriptor shared with another chain in flight) is
// malformed. So one Pop reads at most Size descriptors, and all the chains
// in flight together hold at most Size.
type Queue struct {
	t   *MMIO
	idx int
	max uint16 // QueueNumMax

	// Registers, writable while the queue is not ready.
	num                  uint32
	desc, driver, device uint64

	ready     bool
	epoch     uint32 // bumped each time the queue is made ready
	nextAvail uint16 // free-running index of the next available entry to take
	nextUsed  uint16 // free-running used idx last published
	inflight  map[uint16]InFlight
	owned     []bool // per descriptor: part of a chain in flight
}

// Size is the queue size the driver chose; meaningful while Ready.
func (q *Queue) Size() uint16 { return uint16(q.num) }

// Ready reports whether the driver has enabled the queue.
func (q *Queue) Ready() bool { return q.ready }

// Broken reports whether the device is in DEVICE_NEEDS_RESET: Pop then
// returns nothing and Push, Gather and Scatter refuse until the guest
// resets the device.
func (q *Queue) Broken() bool { return q.t.status&StatusNeedsReset != 0 }

// enable validates the queue's registers and makes it ready, or returns
// why not.
func (q *Queue) enable() string {
	if q.num == 0 || q.num > uint32(q.max) || q.num&(q.num-1) != 0 {
		return fmt.Sprintf("queue %d: size %d is not a power of two in 1..%d", q.idx, q.num, q.max)
	}
	n := uint64(q.num)
	for _, a := range []struct {
		what        string
		addr, bytes uint64
		align       uint64
	}{
		{"descriptor table", q.desc, descSize * n, descAlign},
		{"driver area", q.driver, availBytes(n), availAlign},
		{"device area", q.device, usedBytes(n), usedAlign},
	} {
		if a.addr%a.align != 0 {
			return fmt.Sprintf("queue %d: %s at %#x is not %d-byte aligned", q.idx, a.what, a.addr, a.align)
		}
		if _, ok := guestSlice(q.t.mem, a.addr, int(a.bytes)); !ok {
			return fmt.Sprintf("queue %d: %s [%#x, +%#x) is not guest RAM", q.idx, a.what, a.addr, a.bytes)
		}
	}
	q.ready = true
	q.epoch++
	q.nextAvail, q.nextUsed = 0, 0
	q.inflight = make(map[uint16]InFlight)
	q.owned = make([]bool, n)
	return ""
}

// disable stops the queue; chains in flight become stale.
func (q *Queue) disable() {
	q.ready = false
	q.nextAvail, q.nextUsed = 0, 0
	q.inflight, q.owned = nil, nil
}

// reset is the queue's part of a device reset.
func (q *Queue) reset() {
	q.disable()
	q.num, q.desc, q.driver, q.device = 0, 0, 0, 0
}

// malformed marks the device broken because of the guest's ring.
func (q *Queue) malformed(format string, args ...any) {
	q.t.fail(fmt.Sprintf("queue %d: ", q.idx) + fmt.Sprintf(format, args...))
}

// Pop takes the next available descriptor chain, or returns false if there
// is none, the queue is not ready, or the device is broken. A malformed
// ring (see the package documentation) breaks the device: it enters
// DEVICE_NEEDS_RESET, raises a configuration change interrupt, and Pop
// returns false from then on until the guest resets it.
func (q *Queue) Pop() (Chain, bool) {
	if !q.ready || q.Broken() {
		return Chain{}, false
	}
	size := uint16(q.num)
	b, ok := guestSlice(q.t.mem, q.driver+2, 2)
	if !ok {
		q.malformed("avail idx at %#x is not guest RAM", q.driver+2)
		return Chain{}, false
	}
	availIdx := binary.LittleEndian.Uint16(b)
	pending := availIdx - q.nextAvail
	if pending == 0 {
		return Chain{}, false
	}
	if pending > size {
		q.malformed("avail idx %d is %d entries past the next one to take (%d), more than the queue size %d",
			availIdx, pending, q.nextAvail, size)
		return Chain{}, false
	}
	slot := uint64(q.nextAvail % size)
	b, ok = guestSlice(q.t.mem, q.driver+4+2*slot, 2)
	if !ok {
		q.malformed("avail ring entry %d is not guest RAM", slot)
		return Chain{}, false
	}
	head := binary.LittleEndian.Uint16(b)
	c, reason := q.walk(head)
	if reason != "" {
		q.malformed("chain at head %d: %s", head, reason)
		return Chain{}, false
	}
	q.nextAvail++
	return c, true
}

// walk follows the chain from head, validating each descriptor, and takes
// ownership of its descriptors; on failure it returns why and owns nothing
// new.
func (q *Queue) walk(head uint16) (c Chain, reason string) {
	size := uint16(q.num)
	var descs []uint16
	defer func() {
		if reason != "" {
			for _, d := range descs {
				q.owned[d] = false
			}
		}
	}()
	c = Chain{Head: head, Epoch: q.epoch}
	var total uint64
	sawWritable := false
	for i := head; ; {
		if i >= size {
			return Chain{}, fmt.Sprintf("descriptor index %d out of range (queue size %d)", i, size)
		}
		if q.owned[i] {
			return Chain{}, fmt.Sprintf("descriptor %d is already in use (a loop, or shared with a chain in flight)", i)
		}
		q.owned[i] = true
		descs = append(descs, i)
		b, ok := guestSlice(q.t.mem, q.desc+descSize*uint64(i), descSize)
		if !ok {
			return Chain{}, fmt.Sprintf("descriptor %d is not guest RAM", i)
		}
		var d [descSize]byte
		copy(d[:], b) // read once: the guest may change it under us
		addr := binary.LittleEndian.Uint64(d[0:])
		n := binary.LittleEndian.Uint32(d[8:])
		flags := binary.LittleEndian.Uint16(d[12:])
		next := binary.LittleEndian.Uint16(d[14:])

		if flags&DescFIndirect != 0 {
			return Chain{}, fmt.Sprintf("descriptor %d is indirect (VIRTIO_F_INDIRECT_DESC was not offered)", i)
		}
		writable := flags&DescFWrite != 0
		if !writable && sawWritable {
			return Chain{}, fmt.Sprintf("driver-readable descriptor %d follows a device-writable one", i)
		}
		sawWritable = sawWritable || writable
		total += uint64(n)
		if total > MaxChainBytes {
			return Chain{}, fmt.Sprintf("chain is longer than %d bytes", MaxChainBytes)
		}
		if n > 0 {
			if _, ok := guestSlice(q.t.mem, addr, int(n)); !ok {
				return Chain{}, fmt.Sprintf("buffer [%#x, +%#x) of descriptor %d is not guest RAM", addr, n, i)
			}
		}
		c.Segments = append(c.Segments, Segment{Addr: addr, Len: n, Writable: writable})
		if writable {
			c.WriteLen += n
		} else {
			c.ReadLen += n
		}
		if flags&DescFNext == 0 {
			break
		}
		i = next
	}
	q.inflight[head] = InFlight{Descs: descs, Writable: c.WriteLen}
	return c, ""
}

// Available returns how many chains the driver has made available that
// Pop has not taken yet: 0 if the queue is not ready or the device is
// broken, at most the queue size (an avail idx further ahead is a
// malformed ring, which the next Pop reports). It reads the avail idx from
// guest memory, so it is deterministic only where Pop is: on the vCPU
// thread, at a point a replay reproduces. A device uses it to ask its
// backend for no more data than the guest has room for.
func (q *Queue) Available() int {
	if !q.ready || q.Broken() {
		return 0
	}
	b, ok := guestSlice(q.t.mem, q.driver+2, 2)
	if !ok {
		return 0
	}
	return int(min(binary.LittleEndian.Uint16(b)-q.nextAvail, uint16(q.num)))
}

// Valid reports whether c is in flight on this queue: popped from its
// current incarnation and not yet pushed, with the device not broken.
func (q *Queue) Valid(c *Chain) bool {
	if !q.ready || q.Broken() || c.Epoch != q.epoch {
		return false
	}
	_, ok := q.inflight[c.Head]
	return ok
}

// Push returns the chain with head index head to the driver: it writes the
// used ring entry {head, written}, publishes the new used idx, and raises
// the used-buffer interrupt unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
// written is the number of bytes the device wrote into the chain's
// writable segments, which must not exceed its WriteLen.
//
// Push refuses (ErrStale, nothing written) a head that is not in flight on
// the queue. A head is only an index: a backend holding a chain across
// a reset must check Valid(&chain) before pushing it, since the new
// incarnation may have the same head in flight.
func (q *Queue) Push(head uint16, written uint32) error {
	if !q.ready || q.Broken() {
		return ErrStale
	}
	e, ok := q.inflight[head]
	if !ok {
		return fmt.Errorf("%w: head %d", ErrStale, head)
	}
	if written > e.Writable {
		return fmt.Errorf("virtio: queue %d: push of head %d with %d bytes written, more than its %d writable bytes",
			q.idx, head, written, e.Writable)
	}
	slot := uint64(q.nextUsed % uint16(q.num))
	elem, ok := guestSlice(q.t.mem, q.device+4+8*slot, 8)
	idx, ok2 := guestSlice(q.t.mem, q.device+2, 2)
	if !ok || !ok2 {
		q.malformed("used ring is no longer guest RAM")
		return ErrStale
	}
	binary.LittleEndian.PutUint32(elem[0:], uint32(head))
	binary.LittleEndian.PutUint32(elem[4:], written)
	q.nextUsed++
	binary.LittleEndian.PutUint16(idx, q.nextUsed)
	for _, d := range e.Descs {
		q.owned[d] = false
	}
	delete(q.inflight, head)

	if f, ok := guestSlice(q.t.mem, q.driver, 2); ok && binary.LittleEndian.Uint16(f)&availFNoInterrupt != 0 {
		return nil
	}
	q.t.interrupt(InterruptUsedBuffer)
	return nil
}

// Gather copies the chain's driver-readable bytes, starting off bytes into
// them, into dst. It returns the number of bytes copied and ErrShortChain
// if the readable segments ended first.
func (q *Queue) Gather(c *Chain, off uint64, dst []byte) (int, error) {
	return q.copyChain(c, false, off, dst)
}

// Scatter copies src into the chain's device-writable bytes, starting off
// bytes into them. It returns the number of bytes copied and ErrShortChain
// if the writable segments ended first. The caller reports what it wrote
// in Push.
func (q *Queue) Scatter(c *Chain, off uint64, src []byte) (int, error) {
	return q.copyChain(c, true, off, src)
}

func (q *Queue) copyChain(c *Chain, writable bool, off uint64, buf []byte) (int, error) {
	if !q.Valid(c) {
		return 0, ErrStale
	}
	n := 0
	for _, s := range c.Segments {
		if n == len(buf) {
			break
		}
		if s.Writable != writable {
			continue
		}
		if off >= uint64(s.Len) {
			off -= uint64(s.Len)
			continue
		}
		k := int(min(uint64(s.Len)-off, uint64(len(buf)-n)))
		g, ok := guestSlice(q.t.mem, s.Addr+off, k)
		if !ok {
			return n, fmt.Errorf("virtio: queue %d: segment [%#x, +%#x) is no longer guest RAM", q.idx, s.Addr, s.Len)
		}
		if writable {
			copy(g, buf[n:n+k])
		} else {
			copy(buf[n:n+k], g)
		}
		n += k
		off = 0
	}
	if n < len(buf) {
		return n, ErrShortChain
	}
	return n, nil
}
