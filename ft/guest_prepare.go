package ft

import (
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// A GuestOption adjusts the Guest that LinuxGuest or BareGuest prepares.
type GuestOption func(*guestSetup)

type guestSetup struct {
	memory  uint64
	devices func(vm *vmm.VM) error
	options vmm.Options
}

// WithMemory sets the guest RAM (default replay.DefaultLinuxMemory or
// replay.DefaultBareMemory).
func WithMemory(bytes uint64) GuestOption { return func(s *guestSetup) { s.memory = bytes } }

// WithDevices adds the guest's devices (vm.AddVirtio) to each VM before
// its image is loaded. Both sides add the same devices: the header pins
// them.
func WithDevices(add func(vm *vmm.VM) error) GuestOption {
	return func(s *guestSetup) { s.devices = add }
}

// WithOptions sets the VM's diagnostics (Guest.Options).
func WithOptions(o vmm.Options) GuestOption { return func(s *guestSetup) { s.options = o } }

// LinuxGuest reads an uncompressed vmlinux and an initramfs (initrd may
// be "") and prepares them for a pair: their rdtsc sites patched
// (replay.PrepareLinux), a VM of the prepared memory, and the header both
// sides compare. Neither file may exceed the guest's memory.
func LinuxGuest(kernel, initrd, cmdline string, opts ...GuestOption) (Guest, error) {
	s := setup(replay.DefaultLinuxMemory, opts)
	k, err := vmm.ReadFileLimited(kernel, int64(s.memory))
	if err != nil {
		return Guest{}, fmt.Errorf("reading kernel: %w", err)
	}
	var rd []byte
	if initrd != "" {
		if rd, err = vmm.ReadFileLimited(initrd, int64(s.memory)); err != nil {
			return Guest{}, fmt.Errorf("reading initrd: %w", err)
		}
	}
	p, err := replay.PrepareLinux(k, rd, cmdline)
	if err != nil {
		return Guest{}, fmt.Errorf("%s: %w", kernel, err)
	}
	return s.guest(p), nil
}

// BareGuest prepares a flat bare-guest image (entered at
// vmm.BareLoadAddr in 64-bit mode; package guest/bare builds the
// project's) for a pair, as LinuxGuest does a kernel.
func BareGuest(image []byte, opts ...GuestOption) (Guest, error) {
	p, err := replay.PrepareBare(image)
	if err != nil {
		return Guest{}, err
	}
	return setup(replay.DefaultBareMemory, opts).guest(p), nil
}

// GuestOf is the Guest that runs p, a guest prepared with
// replay.PrepareLinux or replay.PrepareBare (and the same guest a
// recording of replay.RecordFile runs): its memory and devices are p's,
// its diagnostics o.
func GuestOf(p *replay.PreparedGuest, o vmm.Options) Guest {
	return Guest{
		Spec:    p.Spec(time.Time{}),
		Options: o,
		Load:    p.Load,
		Header:  func(vm *vmm.VM, epoch time.Time) *logpb.Header { return p.Header(vm, epoch, false) },
		Bare:    p.Bare,
	}
}

func setup(memory uint64, opts []GuestOption) *guestSetup {
	s := &guestSetup{memory: memory}
	for _, o := range opts {
		o(s)
	}
	return s
}

func (s *guestSetup) guest(p *replay.PreparedGuest) Guest {
	p.MemoryBytes, p.Devices = s.memory, s.devices
	return GuestOf(p, s.options)
}
