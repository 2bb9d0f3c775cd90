package vmm

import (
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
)

// sink is a port that ignores writes and reads as zero (POST code port 0x80
// used by Linux as an I/O delay).
type sink struct{}

func (sink) Read(_ uint64, d []byte) { clear(d) }
func (sink) Write(uint64, []byte)    {}

// exitPort latches the status byte a guest writes to ExitPort.
type exitPort struct{ v *VM }

func (e exitPort) Read(_ uint64, d []byte) { clear(d) }
func (e exitPort) Write(_ uint64, d []byte) {
	e.v.exitStatus = int(d[0])
	e.v.exitRequested = true
}

func (v *VM) attachDevices(epoch time.Time) error {
	v.PIO = newBus("pio")
	v.MMIO = newBus("mmio")
	v.PIC = devices.NewPIC()
	v.PIT = devices.NewPIT(v.clock, v.PIC)
	v.UART = devices.NewUART(v.PIC, 4, v.cfg.Console)
	v.CMOS = devices.NewCMOS(v.clock, epoch)
	v.I8042 = devices.NewI8042(func() { v.resetRequested = true })
	for _, r := range []struct {
		name       string
		base, size uint64
		dev        devices.Device
	}{
		{"pic-master", 0x20, 2, v.PIC.Master()},
		{"pit", 0x40, 4, v.PIT.Device()},
		{"i8042-data", 0x60, 1, v.I8042.DataPort()},
		{"port61", 0x61, 1, v.PIT.Port61()},
		{"i8042-cmd", 0x64, 1, v.I8042.CommandPort()},
		{"cmos", 0x70, 2, v.CMOS},
		{"post", 0x80, 1, sink{}},
		{"pic-slave", 0xA0, 2, v.PIC.Slave()},
		{"exit", ExitPort, 1, exitPort{v}},
		{"com1", 0x3F8, 8, v.UART},
		{"elcr", 0x4D0, 2, v.PIC.ELCR()},
	} {
		if err := v.PIO.Register(r.name, r.base, r.size, r.dev); err != nil {
			return err
		}
	}
	return nil
}

// DeliverAsync hands asynchronous events to the devices. Drivers call it
// from Deliver, on the vCPU thread.
func (v machine) DeliverAsync(a Async) {
	if a.Timer {
		v.PIT.Update()
	}
	if len(a.Input) > 0 {
		v.inputBacklog = append(v.inputBacklog, a.Input...)
	}
	v.offerInput()
	for _, c := range a.DMA {
		if v.bounce == nil {
			continue
		}
		v.bounce.Delivered(c.Tag)
		if slot := c.Tag >> TagShift; slot < uint64(len(v.bounceDevs)) {
			v.bounceDevs[slot].complete(c)
		} else {
			// Only a malformed log can name no device: nothing to deliver.
			v.stats.StrayCompletions++
		}
	}
}

// TagShift splits a bounce tag: the bits above it number the device
// (AddBounceDevice's order), the bits below are the device's own.
const TagShift = 56

// maxBounceDevices is how many devices TagShift leaves room for.
const maxBounceDevices = 1 << (64 - TagShift)

// bounceDevice is a device sharing the VM's bounce engine.
type bounceDevice struct {
	name         string
	backend      bounce.Backend
	complete     func(bounce.Completion)
	replayWrites bool // a replay performs its writes (virtio.Attachment.ReplayWrites)
}

// AddBounceDevice connects a device that moves data through bounce
// buffers to the run. The VM has one bounce engine, which the driver polls
// and a recorder logs, shared by every such device: each gets a tag range
// (tagBase+1, tagBase+2, ... below tagBase+1<<TagShift), the engine's
// requests in that range go to backend, and their completions are
// delivered to complete on the vCPU thread at delivery points. Add every
// device before Run.
func (v *VM) AddBounceDevice(name string, backend bounce.Backend, complete func(bounce.Completion)) (e *bounce.Engine, tagBase uint64, err error) {
	if len(v.bounceDevs) >= maxBounceDevices {
		return nil, 0, fmt.Errorf("%s: more than %d bounce devices", name, maxBounceDevices)
	}
	if backend == nil || complete == nil {
		return nil, 0, fmt.Errorf("%s: a bounce device needs a backend and a completion handler", name)
	}
	if v.bounce == nil {
		v.bounce = bounce.NewEngine(v.serveBounce)
	}
	slot := uint64(len(v.bounceDevs))
	v.bounceDevs = append(v.bounceDevs, bounceDevice{name: name, backend: backend, complete: complete})
	return v.bounce, slot << TagShift, nil
}

// serveBounce is the shared engine's backend: it hands a request to its
// device's backend.
func (v *VM) serveBounce(req bounce.Request) ([]byte, error) {
	slot := req.Tag >> TagShift
	if slot >= uint64(len(v.bounceDevs)) {
		return nil, fmt.Errorf("bounce: tag %#x belongs to no device", req.Tag)
	}
	return v.bounceDevs[slot].backend(req)
}

// Bounce returns the VM's bounce engine, nil if no device uses one.
func (v machine) Bounce() *bounce.Engine { return v.bounce }

// DMABase is where AddDMATest maps the DMA test device; DMAIRQ its
// interrupt line.
const (
	DMABase = MMIOBase + 0x10000
	DMAIRQ  = 5
)

// AddDMATest maps the DMA test device (devices.DMATest) at DMABase on IRQ
// 5, with backend filling its bounce buffers.
func (v *VM) AddDMATest(backend bounce.Backend) (*devices.DMATest, error) {
	for _, n := range v.extraDevices {
		if n == "dma-test" {
			return nil, fmt.Errorf("a DMA test device is already added")
		}
	}
	if backend == nil {
		return nil, fmt.Errorf("the DMA test device needs a backend")
	}
	var d *devices.DMATest
	e, base, err := v.AddBounceDevice("dma-test", backend, func(c bounce.Completion) { d.Complete(c) })
	if err != nil {
		return nil, err
	}
	d = devices.NewDMATest(e, func(high bool) { v.PIC.SetIRQ(DMAIRQ, high) }, v.guestRange)
	d.SetTagBase(base)
	if err := v.MMIO.Register("dma-test", DMABase, 0x1000, d); err != nil {
		return nil, err
	}
	v.extraDevices = append(v.extraDevices, "dma-test")
	return d, nil
}

// guestRange returns guest RAM [addr, addr+n), or false if that is not
// all RAM: the only way devices reach guest memory.
func (v *VM) guestRange(addr uint64, n int) ([]byte, bool) {
	if n < 0 || addr >= v.mem.Size() || uint64(n) > v.mem.Size()-addr {
		return nil, false
	}
	b, err := v.mem.Slice(GuestAddress(addr), uint64(n))
	return b, err == nil
}

// ExtraDevices names the devices added beyond the standard PC set (a log
// header pins them: a replay needs the same devices).
func (v *VM) ExtraDevices() []string {
	return append([]string(nil), v.extraDevices...)
}

// offerInput gives COM1 what it will take of the console backlog. It runs
// only at exits and deliveries, which replay reproduces, never at other
// points between exits.
func (v *VM) offerInput() {
	if len(v.inputBacklog) > 0 {
		n := v.UART.Input(v.inputBacklog)
		v.inputBacklog = v.inputBacklog[n:]
	}
}

func (v *VM) pio(write bool, port uint16, data []byte) {
	dev, off, ok := v.PIO.Lookup(uint64(port))
	if !ok {
		// No device: reads float high, writes vanish, as on a PC's ISA bus.
		v.stats.UnhandledPorts++
		if !write {
			for i := range data {
				data[i] = 0xFF
			}
		}
		return
	}
	if write {
		dev.Write(off, data)
	} else {
		dev.Read(off, data)
	}
}
