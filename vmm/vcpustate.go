package vmm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bobuhiro11/gokvm/kvm"
	"golang.org/x/sys/unix"
)

// VCPUState is everything about the vCPU that guest instructions can
// change without an exit to the VMM: the general, segment, control and
// debug registers, the x87/SSE/AVX state, pending events (interrupt
// shadow, a queued exception or interrupt) and the MSRs the guest can
// write (system-call entry points, bases, PAT, ...). With the contents of
// the pages the guest wrote, it is what a state-transfer landmark carries:
// loading it reproduces the point where the recorder delivered an event,
// without locating that point by breakpoints or single steps.
type VCPUState struct {
	Regs   Regs
	Sregs  Sregs
	debug  kvm.DebugRegs
	events kvm.VCPUEvents
	// XSAVE is the kvm_xsave area with its trailing zero bytes dropped.
	XSAVE []byte
	// xcrs is nil where KVM has no KVM_GET_XCRS.
	xcrs *kvm.XCRS
	// MSRs maps MSR index to value.
	MSRIndex []uint32
	MSRValue []uint64
}

// stateMSRCandidates are the MSRs guest code can write without an exit
// (the time MSRs are trapped, so absent). VMs keep the ones their KVM can
// read (stateMSRs).
var stateMSRCandidates = []uint32{
	0x174, 0x175, 0x176, // SYSENTER_CS/ESP/EIP
	0x1a0,                                                                       // MISC_ENABLE
	0x277,                                                                       // PAT
	0x2ff,                                                                       // MTRR default type
	0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f, // fixed MTRRs
	0x200, 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207, // variable MTRRs 0-3
	0x48,       // SPEC_CTRL
	0xc0000081, // STAR
	0xc0000082, // LSTAR
	0xc0000083, // CSTAR
	0xc0000084, // SFMASK
	0xc0000102, // KERNEL_GS_BASE
	0xc0000103, // TSC_AUX
	0xc001011f, // VIRT_SPEC_CTRL
}

// probeStateMSRs returns the candidates this vCPU's KVM reads.
func probeStateMSRs(vcpuFd int) []uint32 {
	var keep []uint32
	for _, m := range stateMSRCandidates {
		if _, err := getMSRs(vcpuFd, []uint32{m}); err == nil {
			keep = append(keep, m)
		}
	}
	return keep
}

// CaptureVCPUState reads the vCPU's whole state. Call it on the vCPU
// thread between two entries.
func (v machine) CaptureVCPUState() (VCPUState, error) { return v.cpu.CaptureState() }

// CaptureState implements VCPU.
func (c *kvmVCPU) CaptureState() (VCPUState, error) {
	var s VCPUState
	var err error
	if s.Regs, err = c.Regs(); err != nil {
		return s, err
	}
	if s.Sregs, err = c.Sregs(); err != nil {
		return s, err
	}
	if err := kvm.GetDebugRegs(uintptr(c.fd), &s.debug); err != nil {
		return s, fmt.Errorf("KVM_GET_DEBUGREGS: %w", err)
	}
	if err := kvm.GetVCPUEvents(uintptr(c.fd), &s.events); err != nil {
		return s, fmt.Errorf("KVM_GET_VCPU_EVENTS: %w", err)
	}
	var x xsaveArea
	if err := getXSAVE(c.fd, &x); err != nil {
		return s, fmt.Errorf("KVM_GET_XSAVE: %w", err)
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, &x)
	s.XSAVE = bytes.TrimRight(buf.Bytes(), "\x00")
	var xcrs kvm.XCRS
	if kvm.GetXCRS(uintptr(c.fd), &xcrs) == nil {
		s.xcrs = &xcrs
	}
	s.MSRIndex = append([]uint32(nil), c.stateMSRs...)
	if s.MSRValue, err = getMSRs(c.fd, s.MSRIndex); err != nil {
		return s, fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	return s, nil
}

// Event flags of struct kvm_vcpu_events that ApplyVCPUState sets.
const (
	vcpuEventValidNMIPending = 0x1
	vcpuEventValidShadow     = 0x4
)

// ApplyVCPUState loads a captured state into the vCPU. Call it on the
// vCPU thread between two entries, with no exit pending completion.
func (v machine) ApplyVCPUState(s VCPUState) error {
	if err := v.cpu.ApplyState(s); err != nil {
		return err
	}
	// kvm_run's if_flag and ready_for_interrupt_injection still describe
	// the state before: an entry that returns at once (immediate_exit)
	// refreshes them, as the primary's kick did where it captured s.
	if errno := v.complete(); errno != unix.EINTR {
		return fmt.Errorf("refreshing kvm_run after loading the state: KVM_RUN returned %v, want EINTR", errno)
	}
	return nil
}

// ApplyState implements VCPU.
func (c *kvmVCPU) ApplyState(s VCPUState) error {
	// Sregs before events: KVM_SET_SREGS queues the interrupt its bitmap
	// names, and the events then say exactly what is pending.
	if err := kvm.SetSregs(uintptr(c.fd), kvmSregs(&s.Sregs)); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	if err := kvm.SetRegs(uintptr(c.fd), kvmRegs(&s.Regs)); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	if len(s.XSAVE) > 4096 {
		return fmt.Errorf("xsave area of %d bytes: at most 4096", len(s.XSAVE))
	}
	var x xsaveArea
	full := make([]byte, 4096)
	copy(full, s.XSAVE)
	binary.Read(bytes.NewReader(full), binary.LittleEndian, &x)
	if err := setXSAVE(c.fd, &x); err != nil {
		return fmt.Errorf("KVM_SET_XSAVE: %w", err)
	}
	if s.xcrs != nil {
		if err := kvm.SetXCRS(uintptr(c.fd), s.xcrs); err != nil {
			return fmt.Errorf("KVM_SET_XCRS: %w", err)
		}
	}
	if err := kvm.SetDebugRegs(uintptr(c.fd), &s.debug); err != nil {
		return fmt.Errorf("KVM_SET_DEBUGREGS: %w", err)
	}
	if err := setMSRs(c.fd, s.MSRIndex, s.MSRValue); err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	ev := s.events
	ev.Flags = vcpuEventValidNMIPending | vcpuEventValidShadow
	if err := kvm.SetVCPUEvents(uintptr(c.fd), &ev); err != nil {
		return fmt.Errorf("KVM_SET_VCPU_EVENTS: %w", err)
	}
	return nil
}

// vcpuStateVersion is the first byte of a marshalled VCPUState.
const vcpuStateVersion = 1

// MarshalBinary encodes s (a fixed layout, little-endian).
func (s *VCPUState) MarshalBinary() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte(vcpuStateVersion)
	for _, x := range []any{&s.Regs, &s.Sregs, &s.debug, &s.events} {
		if err := binary.Write(&b, binary.LittleEndian, x); err != nil {
			return nil, err
		}
	}
	binary.Write(&b, binary.LittleEndian, uint16(len(s.XSAVE)))
	b.Write(s.XSAVE)
	if s.xcrs != nil {
		b.WriteByte(1)
		binary.Write(&b, binary.LittleEndian, s.xcrs)
	} else {
		b.WriteByte(0)
	}
	binary.Write(&b, binary.LittleEndian, uint16(len(s.MSRIndex)))
	for i, m := range s.MSRIndex {
		binary.Write(&b, binary.LittleEndian, m)
		binary.Write(&b, binary.LittleEndian, s.MSRValue[i])
	}
	return b.Bytes(), nil
}

// errBadState is wrapped by every UnmarshalBinary failure.
var errBadState = errors.New("malformed vCPU state")

// UnmarshalBinary decodes what MarshalBinary encoded. Untrusted input
// (a log file, a peer) gets an error, never a panic or a huge allocation.
func (s *VCPUState) UnmarshalBinary(data []byte) error {
	r := bytes.NewReader(data)
	fail := func(what string) error { return fmt.Errorf("%w: %s", errBadState, what) }
	ver, err := r.ReadByte()
	if err != nil || ver != vcpuStateVersion {
		return fail(fmt.Sprintf("version %d, want %d", ver, vcpuStateVersion))
	}
	for _, x := range []any{&s.Regs, &s.Sregs, &s.debug, &s.events} {
		if err := binary.Read(r, binary.LittleEndian, x); err != nil {
			return fail("registers truncated")
		}
	}
	var n uint16
	if binary.Read(r, binary.LittleEndian, &n) != nil || n > 4096 || int(n) > r.Len() {
		return fail("xsave area length")
	}
	s.XSAVE = make([]byte, n)
	r.Read(s.XSAVE)
	has, err := r.ReadByte()
	if err != nil || has > 1 {
		return fail("xcrs flag")
	}
	s.xcrs = nil
	if has == 1 {
		s.xcrs = new(kvm.XCRS)
		if binary.Read(r, binary.LittleEndian, s.xcrs) != nil {
			return fail("xcrs truncated")
		}
	}
	if binary.Read(r, binary.LittleEndian, &n) != nil || n > maxStateMSRs || int(n)*12 != r.Len() {
		return fail("MSR list length")
	}
	s.MSRIndex, s.MSRValue = make([]uint32, n), make([]uint64, n)
	for i := range s.MSRIndex {
		binary.Read(r, binary.LittleEndian, &s.MSRIndex[i])
		binary.Read(r, binary.LittleEndian, &s.MSRValue[i])
	}
	return nil
}

// PageContents returns a copy of guest page frame pfn.
func (v machine) PageContents(pfn uint32) ([]byte, error) {
	b, err := v.mem.Slice(GuestAddress(uint64(pfn)*pageSize), pageSize)
	if err != nil {
		return nil, fmt.Errorf("page %#x: %w", pfn, err)
	}
	return append([]byte(nil), b...), nil
}

// LoadPage overwrites guest page frame pfn with data (4096 bytes, or nil
// for zeros).
func (v machine) LoadPage(pfn uint32, data []byte) error {
	if data != nil && len(data) != pageSize {
		return fmt.Errorf("page %#x: %d bytes of data, want %d", pfn, len(data), pageSize)
	}
	b, err := v.mem.Slice(GuestAddress(uint64(pfn)*pageSize), pageSize)
	if err != nil {
		return fmt.Errorf("page %#x: %w", pfn, err)
	}
	if data == nil {
		clear(b)
	} else {
		copy(b, data)
	}
	return nil
}

// QueuedInterrupt reports the external interrupt the state has queued for
// injection (KVM's vcpu_events), if any.
func (s *VCPUState) QueuedInterrupt() (vector uint8, ok bool) {
	return s.events.I.Nr, s.events.I.Inject == 1
}

// QueueInterrupt queues vector for injection, as KVM_INTERRUPT does (a
// machine other than KVM's, such as a test's, keeps its pending
// interrupt in the state this way).
func (s *VCPUState) QueueInterrupt(vector uint8) {
	s.events.I.Inject, s.events.I.Nr = 1, vector
}
