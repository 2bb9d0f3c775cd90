package blk

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
)

const ramSize = 4 << 20

// seg is one descriptor of a request to post.
type seg = virtiotest.Seg

// guest is a virtio-blk driver over byte-slice RAM, driving a Device
// through its MMIO registers.
type guest struct {
	*virtiotest.Driver
	dev *Device
}

// req is a request the guest posted.
type req struct {
	*virtiotest.Chain
	statusAddr uint64 // 0: no writable byte
	dataAddr   uint64
	dataLen    uint32
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
	g := &guest{}
	g.Driver = virtiotest.New(t, ramBytes, func(mem virtio.Memory, irq func(bool)) (m *virtio.MMIO, err error) {
		g.dev, m, err = NewMMIO(cfg, engine, mem, irq)
		return m, err
	})
	g.OnUsed = g.checkUsed
	g.Start(qsize)
	return g
}

// statusAddr is where the device writes a request's status: the last byte
// of its last non-empty writable segment, 0 if there is none.
func statusAddr(c *virtiotest.Chain) uint64 {
	var a uint64
	for _, s := range c.Segs {
		if s.Writable && s.N > 0 {
			a = s.Addr + uint64(s.N) - 1
		}
	}
	return a
}

// checkUsed checks what the device wrote for a used request: a status
// byte exactly when the chain has one, and a status it defines.
func (g *guest) checkUsed(c *virtiotest.Chain) {
	st := statusAddr(c)
	if (c.Written == 0) != (st == 0) {
		g.T.Fatalf("head %d: %d bytes written, status byte at %#x", c.Head, c.Written, st)
	}
	if c.Written > 0 && g.Mem(st, 1)[0] > StatusUnsupp {
		g.T.Fatalf("head %d: status %d", c.Head, g.Mem(st, 1)[0])
	}
}

// post builds a chain of segs, offers it and returns its request; it does
// not notify.
func (g *guest) post(segs ...seg) *req {
	g.T.Helper()
	c := g.Post(0, segs...)
	if c == nil {
		g.T.Fatalf("%d descriptors wanted, %d free", len(segs), g.Rings[0].Free())
	}
	return &req{Chain: c, statusAddr: statusAddr(c)}
}

func header(typ uint32, sector uint64) []byte {
	h := binary.LittleEndian.AppendUint32(nil, typ)
	h = binary.LittleEndian.AppendUint32(h, 0)
	return binary.LittleEndian.AppendUint64(h, sector)
}

// read posts an IN request for n bytes at sector.
func (g *guest) read(sector uint64, n uint32) *req {
	r := g.post(seg{N: 16, Fill: header(TypeIn, sector)}, seg{N: n, Writable: true}, seg{N: 1, Writable: true, Fill: []byte{0xff}})
	r.dataAddr, r.dataLen = r.Segs[1].Addr, n
	return r
}

// write posts an OUT request of data at sector.
func (g *guest) write(sector uint64, data []byte) *req {
	r := g.post(seg{N: 16, Fill: header(TypeOut, sector)}, seg{N: uint32(len(data)), Fill: data}, seg{N: 1, Writable: true, Fill: []byte{0xff}})
	r.dataAddr, r.dataLen = r.Segs[1].Addr, uint32(len(data))
	return r
}

func (g *guest) flush() *req {
	return g.post(seg{N: 16, Fill: header(TypeFlush, 0)}, seg{N: 1, Writable: true, Fill: []byte{0xff}})
}

func (g *guest) notify() { g.Notify(0) }

// status returns r's status byte, failing the test if r is not done.
func (g *guest) status(r *req) byte {
	g.T.Helper()
	g.Collect()
	if !r.Done {
		g.T.Fatalf("request at head %d not completed", r.Head)
	}
	return g.Mem(r.statusAddr, 1)[0]
}

func (g *guest) data(r *req) []byte { return slices.Clone(g.Mem(r.dataAddr, int(r.dataLen))) }

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
func replayEngine(t testing.TB) *bounce.Engine { return virtiotest.ReplayEngine(t) }

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
	g.T.Helper()
	r, ok := g.dev.inflight[tag]
	if !ok {
		g.T.Fatalf("tag %d not in flight (in flight: %v)", tag, inflightTags(g.dev))
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
