package vmm

import (
	"fmt"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// Where virtio-mmio devices go: the i-th device added is mapped at
// VirtioBase + i*VirtioStride and raises the i-th line of VirtioIRQs on
// the PIC. LoadLinux tells the guest with a virtio_mmio.device= option
// per device (virtio.KernelArg), so add the devices before LoadLinux.
const (
	VirtioBase   = MMIOBase + 0x20000
	VirtioStride = 0x1000
)

// VirtioIRQs are the PIC lines of the virtio devices, in the order added:
// lines a PC leaves to add-in cards (10, 11, 9) and then legacy ones no
// ftkvm device uses.
var VirtioIRQs = []int{10, 11, 9, 6, 3, 15}

// AddVirtio adds the virtio device a describes (blk.Attachment,
// net.Attachment...) and returns it: the i-th device added is mapped at
// VirtioBase + i*VirtioStride on the i-th line of VirtioIRQs, gets a slot
// of its own on the VM's bounce engine (AddBounceDevice), and is named
// "<kind>@<base> <identity>" in ExtraDevices, which a log header pins.
func (v *VM) AddVirtio(a virtio.Attachment) (virtio.Device, error) {
	i := len(v.virtio)
	if i >= len(VirtioIRQs) {
		return nil, fmt.Errorf("%s: more than %d virtio devices", a.Kind, len(VirtioIRQs))
	}
	if a.Backend == nil || a.New == nil {
		return nil, fmt.Errorf("%s: no backend", a.Kind)
	}
	base, irq := VirtioBase+uint64(i)*VirtioStride, VirtioIRQs[i]
	var dev virtio.Device
	e, tagBase, err := v.AddBounceDevice(a.Kind, a.Backend, func(c bounce.Completion) { dev.Complete(c) })
	if err != nil {
		return nil, err
	}
	v.bounceDevs[len(v.bounceDevs)-1].replayWrites = a.ReplayWrites
	if dev, err = a.New(e, tagBase); err != nil {
		return nil, err
	}
	m, err := virtio.Attach(dev, virtio.MemoryFunc(v.guestRange), func(high bool) { v.PIC.SetIRQ(irq, high) })
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("%s@%#x", a.Kind, base)
	if err := v.MMIO.Register(name, base, virtio.WindowSize, m); err != nil {
		return nil, err
	}
	v.virtioArgs = append(v.virtioArgs, virtio.KernelArg(base, irq))
	// The log header pins the devices: a replay needs the same ones, and
	// the same disk.
	if a.Identity != "" {
		name += " " + a.Identity
	}
	v.extraDevices = append(v.extraDevices, name)
	v.virtio = append(v.virtio, m)
	v.virtioDevs = append(v.virtioDevs, dev)
	return dev, nil
}

// ReplayWrites says whether a replaying VM performs the write req on its
// device's backend (a device whose Attachment says ReplayWrites: a disk
// with its own copy). A replayer gives it to its bounce engine
// (bounce.Engine.SetReplayWrites).
func (v machine) ReplayWrites(req bounce.Request) bool {
	slot := req.Tag >> TagShift
	return req.Write && slot < uint64(len(v.bounceDevs)) && v.bounceDevs[slot].replayWrites
}

// VirtioFaults returns, for each virtio device in the order added, why
// the device stopped serving its guest driver (a malformed ring or
// register write put it in DEVICE_NEEDS_RESET), or "" if it did not.
func (v *VM) VirtioFaults() []string {
	out := make([]string, len(v.virtio))
	for i, m := range v.virtio {
		out[i] = m.Fault()
	}
	return out
}
