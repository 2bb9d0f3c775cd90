package vmm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

// bootState is the initial vCPU state a loader produces.
type bootState struct {
	Regs  Regs
	Sregs Sregs
}

// Control register and EFER bits used to enter long mode.
const (
	cr0PE = 1 << 0
	cr0MP = 1 << 1
	cr0ET = 1 << 4
	cr0NE = 1 << 5
	cr0WP = 1 << 16
	cr0AM = 1 << 18
	cr0PG = 1 << 31

	cr4PAE        = 1 << 5
	cr4OSFXSR     = 1 << 9
	cr4OSXMMEXCPT = 1 << 10

	eferLME = 1 << 8
	eferLMA = 1 << 10

	pteP  = 1 << 0
	pteRW = 1 << 1
	ptePS = 1 << 7

	rflagsReserved = 1 << 1
	RFlagsIF       = 1 << 9
)

// setupLongMode writes the flat GDT and identity page tables into guest
// memory and returns special registers for 64-bit mode with paging on.
func setupLongMode(mem *Memory) (Sregs, error) {
	gdt := []uint64{
		0,                  // null
		0x00AF9B000000FFFF, // 0x08: code, 64-bit, DPL0, present
		0x00CF93000000FFFF, // 0x10: data, writable, present
	}
	for i, d := range gdt {
		if err := mem.Write64(GuestAddress(gdtAddr+8*i), d); err != nil {
			return Sregs{}, fmt.Errorf("writing GDT: %w", err)
		}
	}
	// Identity map: PML4[0] -> PDPT; PDPT[0..3] -> four PDs of 2 MiB pages.
	if err := mem.Write64(pml4Addr, pdptAddr|pteP|pteRW); err != nil {
		return Sregs{}, fmt.Errorf("writing page tables: %w", err)
	}
	for g := uint64(0); g < identityBytes>>30; g++ {
		pd := pdAddr + g*pageSize
		if err := mem.Write64(GuestAddress(pdptAddr+8*g), pd|pteP|pteRW); err != nil {
			return Sregs{}, fmt.Errorf("writing page tables: %w", err)
		}
		for i := uint64(0); i < 512; i++ {
			phys := g<<30 | i<<21
			if err := mem.Write64(GuestAddress(pd+8*i), phys|pteP|pteRW|ptePS); err != nil {
				return Sregs{}, fmt.Errorf("writing page tables: %w", err)
			}
		}
	}

	code := Segment{Base: 0, Limit: 0xFFFFFFFF, Selector: 0x08, Typ: 0xB, Present: 1, S: 1, L: 1, G: 1}
	data := Segment{Base: 0, Limit: 0xFFFFFFFF, Selector: 0x10, Typ: 0x3, Present: 1, S: 1, DB: 1, G: 1}
	var s Sregs
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = Segment{Base: 0, Limit: 0xFFFF, Selector: 0x18, Typ: 0xB, Present: 1}
	s.LDT = Segment{Typ: 0x2, Present: 1, Limit: 0xFFFF}
	s.GDT = Descriptor{Base: gdtAddr, Limit: uint16(8*len(gdt) - 1)}
	s.IDT = Descriptor{Base: 0, Limit: 0}
	s.CR0 = cr0PE | cr0MP | cr0ET | cr0NE | cr0WP | cr0AM | cr0PG
	s.CR3 = pml4Addr
	s.CR4 = cr4PAE | cr4OSFXSR | cr4OSXMMEXCPT
	s.EFER = eferLME | eferLMA
	return s, nil
}

// loadBare loads a flat binary test guest at BareLoadAddr and returns the
// state to enter it: 64-bit mode, RIP at the image, RSP just below it,
// interrupts disabled.
func loadBare(mem *Memory, image []byte) (bootState, error) {
	if len(image) == 0 {
		return bootState{}, errors.New("bare guest image is empty")
	}
	if uint64(len(image)) > mem.Size()-BareLoadAddr || mem.Size() < BareLoadAddr {
		return bootState{}, fmt.Errorf("bare guest image of %d bytes does not fit in %d bytes of memory above %#x", len(image), mem.Size(), BareLoadAddr)
	}
	if err := mem.WriteAt(image, BareLoadAddr); err != nil {
		return bootState{}, err
	}
	sregs, err := setupLongMode(mem)
	if err != nil {
		return bootState{}, err
	}
	return bootState{
		Regs:  Regs{RIP: BareLoadAddr, RSP: BareStackTop, RFLAGS: rflagsReserved},
		Sregs: sregs,
	}, nil
}

// LinuxSpec names what LoadLinux boots.
type LinuxSpec struct {
	Kernel  []byte // uncompressed vmlinux ELF (x86-64)
	Initrd  []byte // optional initramfs
	Cmdline string
}

// boot_params ("zero page") and setup_header offsets, from the Linux x86
// boot protocol (Documentation/arch/x86/boot.rst, zero-page.rst).
const (
	bpE820Entries    = 0x1E8
	bpBootFlag       = 0x1FE
	bpHeaderMagic    = 0x202
	bpVersion        = 0x206
	bpTypeOfLoader   = 0x210
	bpLoadFlags      = 0x211
	bpRamdiskImage   = 0x218
	bpRamdiskSize    = 0x21C
	bpHeapEndPtr     = 0x224
	bpCmdLinePtr     = 0x228
	bpInitrdAddrMax  = 0x22C
	bpCmdlineSize    = 0x238
	bpE820Table      = 0x2D0
	e820EntrySize    = 20
	e820MaxZeroPage  = 128
	e820RAM          = 1
	e820Reserved     = 2
	loadedHigh       = 0x01
	canUseHeap       = 0x80
	headerMagic      = 0x53726448 // "HdrS"
	bootProtoVersion = 0x020F
	initrdAddrMax    = 0x7FFFFFFF
)

// KernelError reports a kernel image the loader cannot boot.
type KernelError struct{ Reason string }

func (e *KernelError) Error() string { return "kernel image: " + e.Reason }

// loadLinux loads a vmlinux with the 64-bit boot protocol: PT_LOAD segments
// at their physical addresses, boot_params with an e820 map, the command
// line and the initrd, and RSI pointing at boot_params.
func loadLinux(mem *Memory, spec LinuxSpec) (bootState, error) {
	f, err := parseKernel(spec.Kernel)
	if err != nil {
		return bootState{}, err
	}
	entry := uint64(0)
	kernelEnd := uint64(0)
	loaded := 0
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return bootState{}, &KernelError{fmt.Sprintf("segment at %#x has file size %#x > memory size %#x", p.Paddr, p.Filesz, p.Memsz)}
		}
		if p.Paddr < highMemStart || p.Paddr+p.Memsz < p.Paddr || p.Paddr+p.Memsz > mem.Size() {
			return bootState{}, &KernelError{fmt.Sprintf("segment [%#x, %#x) does not fit in guest memory above 1 MiB (memory is %d MiB)", p.Paddr, p.Paddr+p.Memsz, mem.Size()>>20)}
		}
		dst, err := mem.Slice(GuestAddress(p.Paddr), p.Memsz)
		if err != nil {
			return bootState{}, err
		}
		n, err := p.ReadAt(dst[:p.Filesz], 0)
		if err != nil || uint64(n) != p.Filesz {
			return bootState{}, &KernelError{fmt.Sprintf("segment at %#x truncated: %v", p.Paddr, err)}
		}
		clear(dst[p.Filesz:])
		// The entry point may be given as a physical or a virtual address.
		if f.Entry >= p.Paddr && f.Entry < p.Paddr+p.Memsz {
			entry = f.Entry
		} else if f.Entry >= p.Vaddr && f.Entry < p.Vaddr+p.Memsz {
			entry = p.Paddr + (f.Entry - p.Vaddr)
		}
		kernelEnd = max(kernelEnd, p.Paddr+p.Memsz)
		loaded++
	}
	if loaded == 0 {
		return bootState{}, &KernelError{"no loadable segments"}
	}
	if entry == 0 {
		return bootState{}, &KernelError{fmt.Sprintf("entry point %#x is in no loaded segment", f.Entry)}
	}

	if len(spec.Cmdline)+1 > cmdlineMax {
		return bootState{}, fmt.Errorf("kernel command line is %d bytes, at most %d", len(spec.Cmdline), cmdlineMax-1)
	}
	zp, err := mem.Slice(zeroPageAddr, pageSize)
	if err != nil {
		return bootState{}, err
	}
	clear(zp)
	cl, err := mem.Slice(cmdlineAddr, cmdlineMax)
	if err != nil {
		return bootState{}, err
	}
	clear(cl)
	copy(cl, spec.Cmdline)

	le := binary.LittleEndian
	le.PutUint16(zp[bpBootFlag:], 0xAA55)
	le.PutUint32(zp[bpHeaderMagic:], headerMagic)
	le.PutUint16(zp[bpVersion:], bootProtoVersion)
	zp[bpTypeOfLoader] = 0xFF
	zp[bpLoadFlags] = loadedHigh | canUseHeap
	le.PutUint16(zp[bpHeapEndPtr:], 0xFE00)
	le.PutUint32(zp[bpCmdLinePtr:], cmdlineAddr)
	le.PutUint32(zp[bpCmdlineSize:], cmdlineMax-1)
	le.PutUint32(zp[bpInitrdAddrMax:], initrdAddrMax)

	if len(spec.Initrd) > 0 {
		top := min(mem.Size(), uint64(initrdAddrMax)+1, identityBytes)
		size := uint64(len(spec.Initrd))
		if size > top {
			return bootState{}, fmt.Errorf("initrd of %d bytes does not fit in memory", size)
		}
		addr := (top - size) &^ (pageSize - 1)
		if addr < kernelEnd {
			return bootState{}, fmt.Errorf("initrd of %d bytes does not fit between the kernel's end (%#x) and the top of memory (%#x); give the guest more memory", size, kernelEnd, top)
		}
		if err := mem.WriteAt(spec.Initrd, GuestAddress(addr)); err != nil {
			return bootState{}, err
		}
		le.PutUint32(zp[bpRamdiskImage:], uint32(addr))
		le.PutUint32(zp[bpRamdiskSize:], uint32(size))
	}

	e820 := [][3]uint64{
		{0, ebdaStart, e820RAM},
		{ebdaStart, highMemStart - ebdaStart, e820Reserved},
		{highMemStart, mem.Size() - highMemStart, e820RAM},
	}
	for i, e := range e820 {
		o := bpE820Table + i*e820EntrySize
		le.PutUint64(zp[o:], e[0])
		le.PutUint64(zp[o+8:], e[1])
		le.PutUint32(zp[o+16:], uint32(e[2]))
	}
	zp[bpE820Entries] = uint8(len(e820))

	sregs, err := setupLongMode(mem)
	if err != nil {
		return bootState{}, err
	}
	return bootState{
		Regs:  Regs{RIP: entry, RSI: zeroPageAddr, RFLAGS: rflagsReserved},
		Sregs: sregs,
	}, nil
}

// CheckKernel reports whether kernel looks like a vmlinux LoadLinux can
// boot, without loading it.
func CheckKernel(kernel []byte) error {
	_, err := parseKernel(kernel)
	return err
}

func parseKernel(kernel []byte) (*elf.File, error) {
	if len(kernel) >= 0x206 && binary.LittleEndian.Uint32(kernel[bpHeaderMagic:]) == headerMagic {
		return nil, &KernelError{"this is a bzImage; pass the uncompressed vmlinux ELF instead"}
	}
	f, err := elf.NewFile(bytes.NewReader(kernel))
	if err != nil {
		return nil, &KernelError{fmt.Sprintf("not an ELF file (%v); pass the uncompressed vmlinux", err)}
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, &KernelError{fmt.Sprintf("ELF is %v %v, want ELFCLASS64 x86-64", f.Class, f.Machine)}
	}
	if f.Type != elf.ET_EXEC {
		return nil, &KernelError{fmt.Sprintf("ELF type %v, want an executable vmlinux", f.Type)}
	}
	return f, nil
}

// ReadFileLimited reads a guest image file, refusing files larger than
// limit so a wrong path (a disk image, /dev/zero) fails fast and clearly.
func ReadFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, larger than the %d-byte limit", path, st.Size(), limit)
	}
	return os.ReadFile(path)
}
