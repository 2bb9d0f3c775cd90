package vmm

import (
	"fmt"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// VCPU is the run loop's port to the processor: every call the VM makes
// on its vCPU (KVM_RUN, the kvm_run page's interrupt fields, the register
// and state ioctls) and the dirty log of guest memory. New gives the VM
// the real KVM vCPU; NewWithVCPU takes any other, so that the real run
// loop (Run, exit handling, injection) runs against a scripted or
// modelled guest in tests (package vmmtest). The VM calls every method on
// the vCPU thread, except SetImmediateExit, which Kick calls from any
// goroutine.
type VCPU interface {
	// Run enters the guest once (KVM_RUN) and returns its errno: 0 when
	// the guest made an exit (Exit decodes it), EINTR when a kick or
	// immediate_exit stopped it, EAGAIN when it did not enter, anything
	// else when it failed. Entered with immediate_exit set, it completes
	// a pending I/O or MMIO exit and returns EINTR without running a
	// guest instruction.
	Run() unix.Errno
	// Exit decodes the exit of the last Run that returned 0. Its Data,
	// MSRData and MSRError stay valid until the next Run, which completes
	// the access with what the VM wrote there (an IN's value, a #GP).
	Exit() (Exit, error)
	// SetImmediateExit sets kvm_run.immediate_exit.
	SetImmediateExit(on bool)
	// Interruptible is kvm_run's if_flag and ready_for_interrupt_injection
	// as of the last return from Run.
	Interruptible() (ifFlag, ready bool)
	// RequestWindow sets kvm_run.request_interrupt_window: the next Run
	// ends with an interrupt-window exit once the guest can take an
	// interrupt.
	RequestWindow(on bool)
	// Interrupt queues an external interrupt (KVM_INTERRUPT), delivered
	// at the next entry.
	Interrupt(vector uint8) error

	Regs() (Regs, error)
	SetRegs(Regs) error
	Sregs() (Sregs, error)
	SetSregs(Sregs) error
	// Translate maps a linear address through the guest's page tables
	// (KVM_TRANSLATE); ok is false where nothing maps it.
	Translate(linear uint64) (gpa uint64, ok bool)
	// CaptureState and ApplyState read and load the whole vCPU state
	// (VCPUState). ApplyState need not refresh kvm_run: the VM does, with
	// a Run entered with immediate_exit set.
	CaptureState() (VCPUState, error)
	ApplyState(VCPUState) error
	// DirtyLog fills bitmap, one bit per page of guest memory, with the
	// pages written since the previous call, and resets the log
	// (KVM_GET_DIRTY_LOG; the VM asks only with Config.TrackDirty).
	DirtyLog(bitmap []uint64) error
	// Close releases the vCPU. The VM calls it once, in Close, under the
	// lock that keeps Kick away.
	Close() error
}

// kvmVCPU is the KVM vCPU: its file descriptor, its mmap'd kvm_run page,
// and the VM's descriptor for the dirty log (owned by the VM).
type kvmVCPU struct {
	fd, vmFd int
	run      []byte
	// stateMSRs: the MSRs a VCPUState carries (those of
	// stateMSRCandidates this KVM reads).
	stateMSRs []uint32
}

var _ VCPU = (*kvmVCPU)(nil)

// newKVMVCPU creates vCPU 0 of the VM vmFd and maps its kvm_run page.
func newKVMVCPU(sysFd, vmFd int) (c *kvmVCPU, err error) {
	fd, err := kvm.CreateVCPU(uintptr(vmFd), 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU: %w", err)
	}
	c = &kvmVCPU{fd: int(fd), vmFd: vmFd}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	size, err := kvm.GetVCPUMMmapSize(uintptr(sysFd))
	if err != nil || size < pageSize {
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %d, %v", size, err)
	}
	c.run, err = unix.Mmap(c.fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping kvm_run: %w", err)
	}
	return c, nil
}

// The methods below implement VCPU with the ioctl or kvm_run field each
// names.

func (c *kvmVCPU) Run() unix.Errno       { return runVCPU(c.fd) }
func (c *kvmVCPU) Exit() (Exit, error)   { return decodeExit(c.run) }
func (c *kvmVCPU) RequestWindow(on bool) { runHeader(c.run).RequestInterruptWindow = flag(on) }

func (c *kvmVCPU) SetImmediateExit(on bool) { setImmediateExit(c.run, flag(on)) }

func (c *kvmVCPU) Interruptible() (ifFlag, ready bool) {
	h := runHeader(c.run)
	return h.IfFlag != 0, h.ReadyForInterruptInjection != 0
}

func (c *kvmVCPU) Interrupt(vector uint8) error {
	if err := injectInterrupt(c.fd, vector); err != nil {
		return fmt.Errorf("KVM_INTERRUPT vector %#x: %w", vector, err)
	}
	return nil
}

func (c *kvmVCPU) Regs() (Regs, error) {
	r, err := kvm.GetRegs(uintptr(c.fd))
	if err != nil {
		return Regs{}, fmt.Errorf("KVM_GET_REGS: %w", err)
	}
	return Regs(*r), nil
}

func (c *kvmVCPU) SetRegs(r Regs) error {
	if err := kvm.SetRegs(uintptr(c.fd), kvmRegs(&r)); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

func (c *kvmVCPU) Sregs() (Sregs, error) {
	s, err := kvm.GetSregs(uintptr(c.fd))
	if err != nil {
		return Sregs{}, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	return *fromKVMSregs(s), nil
}

func (c *kvmVCPU) SetSregs(s Sregs) error {
	if err := kvm.SetSregs(uintptr(c.fd), kvmSregs(&s)); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	return nil
}

func (c *kvmVCPU) Translate(linear uint64) (uint64, bool) {
	t := kvm.Translation{LinearAddress: linear}
	if err := kvm.Translate(uintptr(c.fd), &t); err != nil || t.Valid == 0 {
		return 0, false
	}
	return t.PhysicalAddress, true
}

func (c *kvmVCPU) DirtyLog(bitmap []uint64) error {
	if err := getDirtyLog(c.vmFd, 0, bitmap); err != nil {
		return fmt.Errorf("KVM_GET_DIRTY_LOG: %w", err)
	}
	return nil
}

// Close unmaps kvm_run and closes the vCPU's descriptor (not the VM's).
func (c *kvmVCPU) Close() error {
	if c.run != nil {
		unix.Munmap(c.run)
		c.run = nil
	}
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
	return nil
}

func flag(on bool) uint8 {
	if on {
		return 1
	}
	return 0
}
