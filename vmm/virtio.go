package vmm

import (
	"fmt"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/devices/virtio/blk"
	vnet "github.com/ftkvm/ftkvm/devices/virtio/net"
)

// Where virtio-mmio devices go: the i-th device added is mapped at
// VirtioBase + i*VirtioStride and raises the i-th line of VirtioIRQs on
// the PIC. LoadLinux tells the guest with a virtio_mmio.device= option
// per device (the kernel needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), so add
// the devices before LoadLinux.
const (
	VirtioBase   = MMIOBase + 0x20000
	VirtioStride = 0x1000
)

// VirtioIRQs are the PIC lines of the virtio devices, in the order added:
// lines a PC leaves to add-in cards (10, 11, 9) and then legacy ones no
// ftkvm device uses.
var VirtioIRQs = []int{10, 11, 9, 6, 3, 15}

// virtioDevice is what AddVirtioBlk and AddVirtioNet share: a device
// model behind a virtio-mmio transport whose data moves through the VM's
// bounce engine.
type virtioDevice interface {
	virtio.Backend
	Complete(bounce.Completion)
}

// addVirtio maps a virtio-mmio device built by build, which gets the
// VM's bounce engine and the device's tag base.
func (v *VM) addVirtio(kind, identity string, replayWrites bool, backend bounce.Backend, build func(e *bounce.Engine, tagBase uint64) (virtioDevice, error)) error {
	i := len(v.virtioArgs)
	if i >= len(VirtioIRQs) {
		return fmt.Errorf("%s: more than %d virtio devices", kind, len(VirtioIRQs))
	}
	if backend == nil {
		return fmt.Errorf("%s: no backend", kind)
	}
	base, irq := VirtioBase+uint64(i)*VirtioStride, VirtioIRQs[i]
	var dev virtioDevice
	e, tagBase, err := v.AddBounceDevice(kind, backend, func(c bounce.Completion) { dev.Complete(c) })
	if err != nil {
		return err
	}
	v.bounceDevs[len(v.bounceDevs)-1].replayWrites = replayWrites
	if dev, err = build(e, tagBase); err != nil {
		return err
	}
	m, err := virtio.NewMMIO(dev, virtio.MemoryFunc(v.guestRange), func(high bool) { v.PIC.SetIRQ(irq, high) })
	if err != nil {
		return err
	}
	switch d := dev.(type) {
	case *blk.Device:
		d.Attach(m)
	case *vnet.Device:
		d.Attach(m)
	}
	name := fmt.Sprintf("%s@%#x", kind, base)
	if err := v.MMIO.Register(name, base, virtio.WindowSize, m); err != nil {
		return err
	}
	v.virtioArgs = append(v.virtioArgs, fmt.Sprintf("virtio_mmio.device=%#x@%#x:%d", virtio.WindowSize, base, irq))
	// The log header pins the devices: a replay needs the same ones, and
	// the same disk.
	if identity != "" {
		name += " " + identity
	}
	v.extraDevices = append(v.extraDevices, name)
	v.virtio = append(v.virtio, m)
	return nil
}

// DiskOptions are AddVirtioBlk's choices beyond the device's config.
type DiskOptions struct {
	// Identity names the disk's content for the log header, which a
	// replay or an FT backup must match: the image's size and hash, or a
	// generation the user sets for a large image.
	Identity string
	// OwnCopy: this host has its own copy of the disk (FT's non-shared
	// mode), so a replaying VM (a backup) performs the guest's writes on
	// it, in order, while its reads still come from the log. Without it a
	// replay writes nothing: the primary's writes reach the one shared
	// image.
	OwnCopy bool
}

// AddVirtioBlk adds a virtio-blk disk (the guest's /dev/vda for the first
// one) whose transfers backend serves (blk.FileBackend for a raw image);
// cfg.TagBase is set by the VM.
func (v *VM) AddVirtioBlk(cfg blk.Config, backend bounce.Backend, opt DiskOptions) (*blk.Device, error) {
	var d *blk.Device
	err := v.addVirtio("virtio-blk", opt.Identity, opt.OwnCopy, backend, func(e *bounce.Engine, tagBase uint64) (virtioDevice, error) {
		cfg.TagBase = tagBase
		var err error
		d, err = blk.New(cfg, e)
		return d, err
	})
	return d, err
}

// ReplayWrites says whether a replaying VM performs the write req on its
// device's backend (a disk added with DiskOptions.OwnCopy). A replayer
// gives it to its bounce engine (bounce.Engine.SetReplayWrites).
func (v *VM) ReplayWrites(req bounce.Request) bool {
	slot := req.Tag >> TagShift
	return req.Write && slot < uint64(len(v.bounceDevs)) && v.bounceDevs[slot].replayWrites
}

// AddVirtioNet adds a virtio-net interface (the guest's eth0 for the
// first one) whose frames backend carries (vnet.Tap, or a vnet.Endpoint
// of an in-process link); cfg.TagBase is set by the VM.
func (v *VM) AddVirtioNet(cfg vnet.Config, backend bounce.Backend) (*vnet.Device, error) {
	var d *vnet.Device
	err := v.addVirtio("virtio-net", "mac="+macString(cfg.MAC), false, backend, func(e *bounce.Engine, tagBase uint64) (virtioDevice, error) {
		cfg.TagBase = tagBase
		var err error
		d, err = vnet.New(cfg, e)
		return d, err
	})
	return d, err
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
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
