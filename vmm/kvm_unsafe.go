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
	ioctlRun           = (kvmio << 8) | 0x80                           // _IO(KVMIO, 0x80)
	ioctlInterrupt     = (1 << 30) | (4 << 16) | (kvmio << 8) | 0x86   // _IOW(KVMIO, 0x86, kvm_interrupt)
	ioctlGetFPU        = (2 << 30) | (416 << 16) | (kvmio << 8) | 0x8C // _IOR(KVMIO, 0x8c, kvm_fpu)
	ioctlSetGuestDebug = (1 << 30) | (72 << 16) | (kvmio << 8) | 0x9B  // _IOW(KVMIO, 0x9b, kvm_guest_debug)
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

// guestDebug mirrors struct kvm_guest_debug (x86: 8 debug registers).
type guestDebug struct {
	Control  uint32
	_        uint32
	DebugReg [8]uint64
}

const (
	guestDebugEnable     = 0x1
	guestDebugSingleStep = 0x2
)

func setGuestDebug(vcpuFd int, control uint32) error {
	g := guestDebug{Control: control}
	return ioctlPtr(vcpuFd, ioctlSetGuestDebug, &g)
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

// fpuState mirrors struct kvm_fpu.
type fpuState struct {
	FPR        [8][16]uint8
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

func getFPU(vcpuFd int) (fpuState, error) {
	var f fpuState
	err := ioctlPtr(vcpuFd, ioctlGetFPU, &f)
	return f, err
}
