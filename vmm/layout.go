package vmm

// Guest physical memory layout used by the boot loaders. Everything the VMM
// itself places in the guest (GDT, page tables, zero page, command line)
// lives below 0x10000; the rest of RAM belongs to the guest.
const (
	pageSize = 0x1000

	gdtAddr       = 0x0500 // flat GDT: null, code64, data
	zeroPageAddr  = 0x1000 // Linux boot_params ("zero page")
	cmdlineAddr   = 0x2000 // kernel command line
	cmdlineMax    = 0x1000 // bytes, including the terminating NUL
	pml4Addr      = 0x9000 // identity page tables: PML4,
	pdptAddr      = 0xA000 // one PDPT,
	pdAddr        = 0xB000 // and four page directories of 2 MiB pages
	identityBytes = 4 << 30

	// BareLoadAddr is where a flat test-guest image is loaded and entered.
	BareLoadAddr = 0x100000
	// BareStackTop is a bare guest's initial RSP.
	BareStackTop = 0x100000

	// ebdaStart..highMemStart is the legacy hole (EBDA, VGA, BIOS) reported
	// as reserved in the e820 map so Linux leaves it alone.
	ebdaStart    = 0x9FC00
	highMemStart = 0x100000

	// MaxMemory is the largest guest RAM supported: one region below the
	// 32-bit MMIO hole.
	MaxMemory = 3 << 30

	// MMIOBase is the start of the MMIO window for devices (virtio-mmio,
	// test devices): above the largest RAM, inside the identity map.
	MMIOBase = 0xD000_0000

	// Addresses KVM needs for its own use on Intel hosts (real-mode TSS and
	// identity page); above any guest RAM.
	tssAddr         = 0xFFFB_D000
	identityMapAddr = 0xFFFB_C000
)

// Ports with a fixed meaning in ftkvm.
const (
	// ExitPort ends the run: a guest byte written here becomes the exit
	// status (like QEMU's isa-debug-exit, but the value is passed through).
	ExitPort = 0xF4
)
