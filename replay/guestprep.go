package replay

import (
	"time"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
)

// Default guest memory of PrepareLinux and PrepareBare.
const (
	DefaultLinuxMemory = 128 << 20
	DefaultBareMemory  = 16 << 20
)

// A PreparedGuest is a guest image ready to record and replay: its rdtsc
// and rdtscp instructions are patched to trapping OUTs (package tscpatch),
// so every TSC read is an exit the recorder logs and the replayer answers.
// A recording and its replay (or both sides of an FT pair) prepare the
// same image the same way; the log header pins what they loaded.
type PreparedGuest struct {
	// Guest is what the log header pins: the patched image, the initrd
	// and the number of patched sites.
	Guest
	// Cmdline is the kernel command line (Linux only). The VM appends
	// its own options (vmm.LinuxClearCPUID, virtio_mmio.device=).
	Cmdline string
	// Sites are the patched sites, the VM's vmm.Spec.TSCSites.
	Sites *tscpatch.SiteTable
	// MemoryBytes is the guest RAM (vmm.Spec.MemoryBytes).
	MemoryBytes uint64
	// Devices, if set, adds the guest's devices to a new VM before the
	// image is loaded (vm.AddVirtio: the VM adds their options to the
	// command line).
	Devices func(vm *vmm.VM) error
}

// PrepareBare patches a flat bare-guest image (entered at
// vmm.BareLoadAddr in 64-bit mode) with DefaultBareMemory. The image is
// not modified.
func PrepareBare(image []byte) (*PreparedGuest, error) {
	p, err := tscpatch.PrepareFlat(image, vmm.BareLoadAddr)
	if err != nil {
		return nil, err
	}
	return &PreparedGuest{
		Guest:       Guest{Bare: true, Kernel: p.Image, RDTSCSites: len(p.Sites)},
		Sites:       p.Table,
		MemoryBytes: DefaultBareMemory,
	}, nil
}

// PrepareLinux checks and patches an uncompressed vmlinux (64-bit ELF)
// with DefaultLinuxMemory; initrd may be nil. The kernel is not
// modified.
func PrepareLinux(kernel, initrd []byte, cmdline string) (*PreparedGuest, error) {
	if err := vmm.CheckKernel(kernel); err != nil {
		return nil, err
	}
	p, err := tscpatch.PrepareELF(kernel)
	if err != nil {
		return nil, err
	}
	return &PreparedGuest{
		Guest:       Guest{Kernel: p.Image, Initrd: initrd, RDTSCSites: len(p.Sites)},
		Cmdline:     cmdline,
		Sites:       p.Table,
		MemoryBytes: DefaultLinuxMemory,
	}, nil
}

// Spec is the machine to build for g: its memory and patched sites, with
// the given RTC epoch.
func (g *PreparedGuest) Spec(epoch time.Time) vmm.Spec {
	return vmm.Spec{MemoryBytes: g.MemoryBytes, TSCSites: g.Sites, Epoch: epoch}
}

// Load adds g's devices to vm and loads its image.
func (g *PreparedGuest) Load(vm *vmm.VM) error {
	if g.Devices != nil {
		if err := g.Devices(vm); err != nil {
			return err
		}
	}
	if g.Bare {
		return vm.LoadBare(g.Kernel)
	}
	return vm.LoadLinux(vmm.LinuxSpec{Kernel: g.Kernel, Initrd: g.Initrd, Cmdline: g.Cmdline})
}

// Header is the log header of vm loaded with g (NewHeader).
func (g *PreparedGuest) Header(vm HeaderVM, epoch time.Time, verify bool) *logpb.Header {
	return NewHeader(vm, g.Guest, epoch, verify)
}
