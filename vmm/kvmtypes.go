package vmm

// The register and CPUID structures of vmm's API are its own: they mirror
// the kernel's, field for field, so that KVM's ioctls take them through
// the conversions in kvm_unsafe.go (sizes and offsets checked there and
// in TestKVMMirrorLayouts), and an embedder imports no KVM binding.

// Regs mirrors struct kvm_regs: the general-purpose registers, RIP and
// RFLAGS.
type Regs struct {
	RAX, RBX, RCX, RDX uint64
	RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11   uint64
	R12, R13, R14, R15 uint64
	RIP, RFLAGS        uint64
}

// Sregs mirrors struct kvm_sregs: segments, descriptor tables, control
// registers, EFER, the APIC base and the pending-interrupt bitmap.
type Sregs struct {
	CS, DS, ES, FS, GS, SS Segment
	TR, LDT                Segment
	GDT, IDT               Descriptor
	CR0, CR2, CR3, CR4     uint64
	CR8                    uint64
	EFER                   uint64
	ApicBase               uint64
	InterruptBitmap        [4]uint64 // (KVM_NR_INTERRUPTS + 63) / 64
}

// Segment mirrors struct kvm_segment.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Typ      uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// Descriptor mirrors struct kvm_dtable (the GDT and IDT registers).
type Descriptor struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// CPUIDEntry mirrors struct kvm_cpuid_entry2: one leaf (Function) and
// subleaf (Index) of the guest's CPUID table.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	Eax      uint32
	Ebx      uint32
	Ecx      uint32
	Edx      uint32
	Padding  [3]uint32
}
