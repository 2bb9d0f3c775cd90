package devices

import (
	"encoding/binary"

	"github.com/ftkvm/ftkvm/bounce"
)

// DMATest is a DMA test device for bare guests: the guest writes a guest
// physical address and a length, starts a transfer, and the device's
// backend fills that much guest memory later, through a bounce buffer, and
// raises an interrupt. Its registers (little-endian, MMIO; any access width,
// byte by byte as on the port devices):
//
//	0x00  ADDR    (8 bytes) where the data goes
//	0x08  LEN     (4 bytes) how much, 1..bounce.MaxLen
//	0x0C  CMD     (4 bytes) write 1: start a transfer with ADDR and LEN
//	0x10  STATUS  (4 bytes, read) 0 idle, 1 busy, 2 done, 3 error
//	0x14  COUNT   (4 bytes, read) transfers completed (done or error)
//
// A hostile guest gets STATUS 3, never a write outside guest memory: a bad
// length fails at CMD, a destination outside guest RAM at completion (the
// guest may change its mind about memory in between, so it is checked
// then). A CMD while busy is ignored.
type DMATest struct {
	engine *bounce.Engine
	irq    func(high bool)
	mem    func(addr uint64, n int) ([]byte, bool)

	regs   [0x18]byte
	busy   bool
	tag    uint64
	target uint64 // ADDR of the transfer in flight
}

// DMATest status values.
const (
	DMAIdle  = 0
	DMABusy  = 1
	DMADone  = 2
	DMAError = 3
)

// NewDMATest returns the device. irq drives its interrupt line; mem
// returns guest memory [addr, addr+n) or false if that is not all RAM.
func NewDMATest(engine *bounce.Engine, irq func(high bool), mem func(addr uint64, n int) ([]byte, bool)) *DMATest {
	return &DMATest{engine: engine, irq: irq, mem: mem}
}

// SetTagBase makes the device number its transfers base+1, base+2, ...
// (an engine shared with other devices gives each a tag range). Call it
// before the first transfer.
func (d *DMATest) SetTagBase(base uint64) { d.tag = base }

// Engine returns the device's bounce engine.
func (d *DMATest) Engine() *bounce.Engine { return d.engine }

func (d *DMATest) reg32(off int) uint32 { return binary.LittleEndian.Uint32(d.regs[off:]) }

func (d *DMATest) setReg32(off int, v uint32) { binary.LittleEndian.PutUint32(d.regs[off:], v) }

// Read implements Device.
func (d *DMATest) Read(offset uint64, data []byte) {
	readBytes(offset, data, func(off uint64) byte {
		if off >= uint64(len(d.regs)) {
			return 0xff
		}
		return d.regs[off]
	})
}

// Write implements Device.
func (d *DMATest) Write(offset uint64, data []byte) {
	start := false
	writeBytes(offset, data, func(off uint64, v byte) {
		switch {
		case off < 0x0C: // ADDR, LEN
			d.regs[off] = v
		case off == 0x0C:
			start = v&1 == 1
		}
	})
	if !start || d.busy {
		return
	}
	d.tag++
	d.target = binary.LittleEndian.Uint64(d.regs[0:])
	if err := d.engine.Submit(bounce.Request{Tag: d.tag, Len: int(d.reg32(0x08))}); err != nil {
		d.finish(DMAError)
		return
	}
	d.busy = true
	d.setReg32(0x10, DMABusy)
}

// Complete takes a filled bounce buffer (on the vCPU thread, at a delivery
// point): it copies it into guest memory and interrupts the guest. A
// completion for a transfer not in flight is ignored.
func (d *DMATest) Complete(c bounce.Completion) {
	if !d.busy || c.Tag != d.tag {
		return
	}
	d.busy = false
	if c.Err != "" {
		d.finish(DMAError)
		return
	}
	dst, ok := d.mem(d.target, len(c.Data))
	if !ok {
		d.finish(DMAError)
		return
	}
	copy(dst, c.Data)
	d.finish(DMADone)
}

func (d *DMATest) finish(status uint32) {
	d.setReg32(0x10, status)
	d.setReg32(0x14, d.reg32(0x14)+1)
	d.irq(true)
	d.irq(false)
}
