package vmm

// This file holds the KVM ioctls and mappings that github.com/bobuhiro11/gokvm
// does not provide (or provides in a form unfit here: its Run swallows EINTR,
// which the run loop needs to see), plus the pointer conversions for the
// ioctls it does provide. Every unsafe.Pointer here points either at a Go
// value that outlives the syscall or into an mmap'd region whose size is
// checked before use.

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// ioctl request numbers for the calls gokvm lacks, by file descriptor.
const (
	kvmio = 0xAE

	// VM fd.
	ioctlGetDirtyLog    = (1 << 30) | (16 << 16) | (kvmio << 8) | 0x42  // _IOW(KVMIO, 0x42, kvm_dirty_log)
	ioctlSetIdentityMap = (1 << 30) | (8 << 16) | (kvmio << 8) | 0x48   // _IOW(KVMIO, 0x48, __u64)
	ioctlEnableCap      = (1 << 30) | (104 << 16) | (kvmio << 8) | 0xA3 // _IOW(KVMIO, 0xa3, kvm_enable_cap)
	ioctlSetMSRFilter   = (1 << 30) | (392 << 16) | (kvmio << 8) | 0xC6 // _IOW(KVMIO, 0xc6, kvm_msr_filter)

	// vCPU fd.
	ioctlRun       = (kvmio << 8) | 0x80                           // _IO(KVMIO, 0x80)
	ioctlInterrupt = (1 << 30) | (4 << 16) | (kvmio << 8) | 0x86   // _IOW(KVMIO, 0x86, kvm_interrupt)
	ioctlGetFPU    = (2 << 30) | (416 << 16) | (kvmio << 8) | 0x8C // _IOR(KVMIO, 0x8c, kvm_fpu)
)

func ioctl(fd int, req, arg uintptr) (uintptr, unix.Errno) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	return r, errno
}

func ioctlPtr[T any](fd int, req uintptr, p *T) error {
	// p points at a live Go value for the duration of the syscall.
	_, errno := ioctl(fd, req, uintptr(unsafe.Pointer(p)))
	if errno != 0 {
		return errno
	}
	return nil
}

const memLogDirtyPages = 1 << 0

func setUserMemoryRegion(vmFd int, slot uint32, gpa uint64, mem []byte, flags uint32) error {
	r := kvm.UserspaceMemoryRegion{
		Slot:          slot,
		Flags:         flags,
		GuestPhysAddr: gpa,
		MemorySize:    uint64(len(mem)),
		// mem is an mmap'd region that stays mapped until the VM is closed.
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
	}
	return kvm.SetUserMemoryRegion(uintptr(vmFd), &r)
}

// dirtyLog mirrors struct kvm_dirty_log.
type dirtyLog struct {
	Slot   uint32
	_      uint32
	Bitmap uint64 // userspace pointer
}

// getDirtyLog fills bitmap (one bit per page of the slot) and resets KVM's log.
func getDirtyLog(vmFd int, slot uint32, bitmap []uint64) error {
	d := dirtyLog{Slot: slot, Bitmap: uint64(uintptr(unsafe.Pointer(&bitmap[0])))}
	return ioctlPtr(vmFd, ioctlGetDirtyLog, &d)
}

// enableCap mirrors struct kvm_enable_cap.
type enableCap struct {
	Cap   uint32
	Flags uint32
	Args  [4]uint64
	_     [64]byte
}

const (
	capX86UserSpaceMSR    = 188
	msrExitReasonFilter   = 1 << 1
	msrFilterRead         = 1 << 0
	msrFilterWrite        = 1 << 1
	msrFilterMaxRanges    = 16
	msrFilterDefaultAllow = 0
)

// msrFilterRange mirrors struct kvm_msr_filter_range.
type msrFilterRange struct {
	Flags  uint32
	NMSRs  uint32
	Base   uint32
	_      uint32
	Bitmap uintptr
}

// msrFilter mirrors struct kvm_msr_filter.
type msrFilter struct {
	Flags  uint32
	_      uint32
	Ranges [msrFilterMaxRanges]msrFilterRange
}

// trapMSRs makes every read and write of the listed MSRs exit to
// userspace (KVM_EXIT_X86_RDMSR/WRMSR): KVM_CAP_X86_USER_SPACE_MSR with
// the filter reason, and a default-allow filter whose ranges deny each.
func trapMSRs(vmFd int, msrs []uint32) error {
	c := enableCap{Cap: capX86UserSpaceMSR}
	c.Args[0] = msrExitReasonFilter
	if err := ioctlPtr(vmFd, ioctlEnableCap, &c); err != nil {
		return fmt.Errorf("KVM_ENABLE_CAP(X86_USER_SPACE_MSR): %w", err)
	}
	if len(msrs) > msrFilterMaxRanges {
		return fmt.Errorf("%d MSRs to trap: at most %d", len(msrs), msrFilterMaxRanges)
	}
	var deny [1]byte // one MSR per range, its bit clear: denied
	f := msrFilter{Flags: msrFilterDefaultAllow}
	for i, m := range msrs {
		// deny outlives the ioctl, which copies the bitmaps.
		f.Ranges[i] = msrFilterRange{Flags: msrFilterRead | msrFilterWrite, NMSRs: 1, Base: m, Bitmap: uintptr(unsafe.Pointer(&deny[0]))}
	}
	err := ioctlPtr(vmFd, ioctlSetMSRFilter, &f)
	runtime.KeepAlive(&deny)
	if err != nil {
		return fmt.Errorf("KVM_X86_SET_MSR_FILTER: %w", err)
	}
	return nil
}

func setIdentityMapAddr(vmFd int, addr uint64) error {
	return ioctlPtr(vmFd, ioctlSetIdentityMap, &addr)
}

// kvmRunHeader mirrors the fixed head of struct kvm_run (x86) up to the exit
// union, which is decoded from bytes in exit.go.
type kvmRunHeader struct {
	RequestInterruptWindow     uint8
	ImmediateExit              uint8
	_                          [6]uint8
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	ApicBase                   uint64
}

const kvmRunExitOffset = 32 // offset of the exit union in struct kvm_run

// runHeader views the start of the mmap'd kvm_run page. The mapping is at
// least one page, far larger than the header, and lives as long as the vCPU.
func runHeader(run []byte) *kvmRunHeader {
	return (*kvmRunHeader)(unsafe.Pointer(&run[0]))
}

// setImmediateExit stores kvm_run.immediate_exit. It is called from other
// goroutines (the kicker) as well as the vCPU thread: a single-byte store is
// atomic on amd64, and KVM reads the byte on entry to KVM_RUN.
func setImmediateExit(run []byte, v uint8) {
	p := (*uint8)(unsafe.Pointer(&run[1]))
	*p = v
}

// runVCPU enters the guest. Unlike gokvm's Run it reports EINTR, which is how
// a kick (signal or immediate_exit) shows up.
func runVCPU(vcpuFd int) unix.Errno {
	_, errno := ioctl(vcpuFd, ioctlRun, 0)
	return errno
}

// pioData returns the data area of a KVM_EXIT_IO exit, checked against the
// mapping's size so a bogus offset can never reach outside it.
func pioData(run []byte, offset uint64, n int) ([]byte, bool) {
	if offset > uint64(len(run)) || uint64(n) > uint64(len(run))-offset {
		return nil, false
	}
	return run[offset : offset+uint64(n)], true
}

// injectInterrupt queues an external interrupt vector (KVM_INTERRUPT).
// gokvm's version passes the vector by value where KVM expects a pointer
// to struct kvm_interrupt, which fails with EFAULT.
func injectInterrupt(vcpuFd int, vector uint8) error {
	irq := uint32(vector)
	return ioctlPtr(vcpuFd, ioctlInterrupt, &irq)
}

// More vCPU-state ioctls (state-transfer landmarks, vcpustate.go).
const (
	ioctlGetXSAVE = (2 << 30) | (4096 << 16) | (kvmio << 8) | 0xA4 // _IOR(KVMIO, 0xa4, kvm_xsave)
	ioctlSetXSAVE = (1 << 30) | (4096 << 16) | (kvmio << 8) | 0xA5 // _IOW(KVMIO, 0xa5, kvm_xsave)
	ioctlGetMSRs  = (3 << 30) | (8 << 16) | (kvmio << 8) | 0x88    // _IOWR(KVMIO, 0x88, kvm_msrs)
	ioctlSetMSRs  = (1 << 30) | (8 << 16) | (kvmio << 8) | 0x89    // _IOW(KVMIO, 0x89, kvm_msrs)
)

// xsaveArea mirrors struct kvm_xsave (the legacy 4 KiB form: enough for
// the features the CPUID table exposes, which excludes AMX).
type xsaveArea struct{ Region [1024]uint32 }

func getXSAVE(vcpuFd int, x *xsaveArea) error { return ioctlPtr(vcpuFd, ioctlGetXSAVE, x) }
func setXSAVE(vcpuFd int, x *xsaveArea) error { return ioctlPtr(vcpuFd, ioctlSetXSAVE, x) }

// msrEntry mirrors struct kvm_msr_entry.
type msrEntry struct {
	Index uint32
	_     uint32
	Data  uint64
}

// maxStateMSRs bounds msrBuffer; stateMSRs is far shorter.
const maxStateMSRs = 64

// msrBuffer mirrors struct kvm_msrs followed by its entries.
type msrBuffer struct {
	NMSRs   uint32
	_       uint32
	Entries [maxStateMSRs]msrEntry
}

// getMSRs reads the listed MSRs; it fails unless KVM read all of them.
func getMSRs(vcpuFd int, index []uint32) ([]uint64, error) {
	if len(index) > maxStateMSRs {
		return nil, fmt.Errorf("%d MSRs: at most %d", len(index), maxStateMSRs)
	}
	var b msrBuffer
	b.NMSRs = uint32(len(index))
	for i, m := range index {
		b.Entries[i].Index = m
	}
	// KVM reads NMSRs entries after the header: all inside b.
	n, errno := ioctl(vcpuFd, ioctlGetMSRs, uintptr(unsafe.Pointer(&b)))
	if errno != 0 {
		return nil, errno
	}
	if int(n) != len(index) {
		return nil, fmt.Errorf("KVM read %d of %d MSRs (stopped at %#x)", n, len(index), index[n])
	}
	out := make([]uint64, len(index))
	for i := range out {
		out[i] = b.Entries[i].Data
	}
	return out, nil
}

// setMSRs writes the MSRs; it fails unless KVM wrote all of them.
func setMSRs(vcpuFd int, index []uint32, values []uint64) error {
	if len(index) > maxStateMSRs || len(values) != len(index) {
		return fmt.Errorf("%d MSRs with %d values (at most %d)", len(index), len(values), maxStateMSRs)
	}
	var b msrBuffer
	b.NMSRs = uint32(len(index))
	for i, m := range index {
		b.Entries[i] = msrEntry{Index: m, Data: values[i]}
	}
	n, errno := ioctl(vcpuFd, ioctlSetMSRs, uintptr(unsafe.Pointer(&b)))
	if errno != 0 {
		return errno
	}
	if int(n) != len(index) {
		return fmt.Errorf("KVM wrote %d of %d MSRs (refused %#x = %#x)", n, len(index), index[n], values[n])
	}
	return nil
}

// vmm's mirrors of the kernel's structures (kvmtypes.go) have gokvm's
// layouts, field for field; these fail to compile if a size differs, and
// TestKVMMirrorLayouts compares the offsets.
var (
	_ [unsafe.Sizeof(Sregs{}) - unsafe.Sizeof(kvm.Sregs{})]byte
	_ [unsafe.Sizeof(kvm.Sregs{}) - unsafe.Sizeof(Sregs{})]byte
)

// kvmRegs and kvmSregs view vmm's registers as gokvm's for its ioctls.
// Regs converts (same fields); Sregs' Segment and Descriptor are vmm's
// own types, so it is the same memory seen through the other type, safe
// because the layouts are equal.
func kvmRegs(r *Regs) *kvm.Regs { return (*kvm.Regs)(r) }

func kvmSregs(s *Sregs) *kvm.Sregs { return (*kvm.Sregs)(unsafe.Pointer(s)) }

func fromKVMSregs(s *kvm.Sregs) *Sregs { return (*Sregs)(unsafe.Pointer(s)) }

// kvmCPUID and fromKVMCPUID copy a CPUID table between the two entry
// types (once per VM).
func kvmCPUID(c CPUID) []kvm.CPUIDEntry2 {
	out := make([]kvm.CPUIDEntry2, len(c))
	for i, e := range c {
		out[i] = kvm.CPUIDEntry2(e)
	}
	return out
}

func fromKVMCPUID(es []kvm.CPUIDEntry2) []CPUIDEntry {
	out := make([]CPUIDEntry, len(es))
	for i, e := range es {
		out[i] = CPUIDEntry(e)
	}
	return out
}
