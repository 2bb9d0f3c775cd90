package virtio

import (
	"fmt"

	"github.com/ftkvm/ftkvm/bounce"
)

// Device is a virtio device model as a VMM attaches it: a Backend whose
// data moves through a bounce engine (package bounce), completing on the
// vCPU thread.
type Device interface {
	Backend
	// Attach tells the device which transport it sits behind, so that
	// its completions can reach the queues. Called once, after
	// NewMMIO(d, ...).
	Attach(m *MMIO)
	// Complete takes the completion of one of the device's bounce
	// transfers, on the vCPU thread at a delivery point. A completion
	// whose tag the device does not know is ignored.
	Complete(bounce.Completion)
}

// Attachment is what a VMM needs to add a virtio device beyond the
// transport: how to build the model on its bounce engine, and what it
// records about the device. Device packages provide one
// (blk.Attachment, net.Attachment), so that the VMM needs no change for
// a new kind of device.
type Attachment struct {
	// Kind names the device type on the VMM's bus and in a log header:
	// "virtio-blk".
	Kind string
	// Identity is what else a replay must match about the device, for
	// the log header (a disk's content, a MAC); "" for nothing.
	Identity string
	// Backend serves the device's bounce transfers, off the vCPU thread.
	Backend bounce.Backend
	// ReplayWrites: a replaying VM performs the device's write transfers
	// on Backend (a disk with a copy of its own). Otherwise a replay
	// performs none: the recorded run's writes already happened.
	ReplayWrites bool
	// New builds the device on engine, numbering its transfers
	// tagBase+1, tagBase+2, ...: the slot the VMM gives it on an engine
	// several devices share. With an error, the Device is not to be
	// used.
	New func(engine *bounce.Engine, tagBase uint64) (Device, error)
}

// Attach builds the transport for d with NewMMIO and attaches d to it.
func Attach(d Device, mem Memory, irq func(high bool)) (*MMIO, error) {
	m, err := NewMMIO(d, mem, irq)
	if err != nil {
		return nil, err
	}
	d.Attach(m)
	return m, nil
}

// KernelArg is the Linux command-line option that declares a device
// mapped at base on interrupt line irq (the kernel needs
// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), for example
// virtio_mmio.device=0x200@0xd0020000:10.
func KernelArg(base uint64, irq int) string {
	return fmt.Sprintf("virtio_mmio.device=%#x@%#x:%d", WindowSize, base, irq)
}
