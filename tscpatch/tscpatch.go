package tscpatch

import (
	"errors"
	"fmt"
)

// Kind says which time-stamp-counter instruction a site holds.
type Kind int

const (
	// RDTSC is "rdtsc" (0f 31): EDX:EAX = TSC.
	RDTSC Kind = iota + 1
	// RDTSCP is "rdtscp" (0f 01 f9): EDX:EAX = TSC, ECX = IA32_TSC_AUX.
	RDTSCP
)

// String returns the mnemonic.
func (k Kind) String() string {
	switch k {
	case RDTSC:
		return "rdtsc"
	case RDTSCP:
		return "rdtscp"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// opcode returns the instruction's opcode bytes (without prefixes).
func (k Kind) opcode() []byte {
	switch k {
	case RDTSC:
		return []byte{0x0f, 0x31}
	case RDTSCP:
		return []byte{0x0f, 0x01, 0xf9}
	}
	return nil
}

// Reserved ports for the trapping "out imm8, al" that replaces each site.
//
// 0xE0–0xEF has no device on the PC/AT and Linux probes nothing there;
// the neighbours that are used are avoided: 0x80 (POST code, Linux's default
// io_delay port), 0xED (Linux's io_delay=0xed alternative), 0xE9 (the
// Bochs/QEMU debug console, which some guests write to blindly) and 0xF0–0xFF
// (x87 FPU; 0xF4 is ftkvm's exit port, vmm.ExitPort). Linux never touches
// 0xE3 or 0xE4, so an exit there comes from a patched site or from a guest
// doing it on purpose, which SiteTable.Check detects.
const (
	DefaultRDTSCPort  = 0xE3
	DefaultRDTSCPPort = 0xE4
)

// outImm8AL is the opcode of "out imm8, al"; the patched instruction is
// outImm8AL, port, then 0x90 (nop) up to the original instruction's length.
const (
	outImm8AL = 0xe6
	nop       = 0x90
	outLen    = 2
)

// Site is one rdtsc or rdtscp instruction in a guest image.
type Site struct {
	Kind Kind
	// VAddr is the instruction's link-time virtual address; for a flat
	// image it equals PAddr.
	VAddr uint64
	// PAddr is the guest physical address of the instruction once the image
	// is loaded (ELF: at its PT_LOAD p_paddr; flat: at the base). After
	// patching, the trapping "out" starts here.
	PAddr uint64
	// FileOffset is the instruction's offset in the image bytes given to
	// Scan or ScanFlat, which is where Patch writes.
	FileOffset int64
	// Len is the instruction's length in bytes: 2 for rdtsc and 3 for
	// rdtscp, more if the compiler put prefixes in front of the opcode.
	Len int
	// Section is the ELF section holding the site ("" for a flat image).
	Section string
	// Symbol is the function holding the site and SymOffset the site's
	// offset in it. For a site outside every function it is the nearest
	// symbol before the site. For a site in .altinstr_replacement it is
	// the function the replacement is copied into when the kernel applies
	// the alternative, and SymOffset is where the instruction lands there.
	Symbol    string
	SymOffset uint64
	// Certain is true when the site was found by decoding from a known
	// instruction start (a function symbol, an alternatives replacement
	// snippet named by .altinstructions; for flat images, the image start)
	// with no undecodable byte before it. Sites found by sweeping code that
	// nothing describes, or after the decoder lost sync, have Certain false:
	// the bytes may be data or the middle of another instruction. Missing a
	// real site breaks determinism and patching data corrupts it, so look at
	// uncertain sites (Section, Symbol) before deciding; Patch's checks
	// cannot tell code from data that happens to decode.
	Certain bool
	// AltVAddrs and AltPAddrs, for a site in .altinstr_replacement, are the
	// addresses where the instruction lands when the kernel applies the
	// alternative at boot (apply_alternatives copies the replacement over
	// the original instruction): the patched "out" then executes there,
	// not at PAddr. Usually one address; more if several alternatives
	// share the replacement. Empty when .altinstructions could not be read.
	AltVAddrs []uint64
	AltPAddrs []uint64
}

func (s Site) String() string {
	sym := ""
	if s.Symbol != "" {
		sym = fmt.Sprintf(" %s+%#x", s.Symbol, s.SymOffset)
	}
	cert := ""
	if !s.Certain {
		cert = " (uncertain)"
	}
	return fmt.Sprintf("%s at %#x (paddr %#x, %s)%s%s", s.Kind, s.VAddr, s.PAddr, s.Section, sym, cert)
}

// Errors, matched with errors.Is; the returned errors wrap them with detail.
var (
	// ErrNotELF: the image is not an ELF file.
	ErrNotELF = errors.New("tscpatch: not an ELF file")
	// ErrNotX86_64: the ELF file is not a 64-bit x86 one.
	ErrNotX86_64 = errors.New("tscpatch: not an x86-64 ELF file")
	// ErrNoSymbols: the ELF file has no symbol table (a stripped vmlinux);
	// without function boundaries the scan would be a guess.
	ErrNoSymbols = errors.New("tscpatch: ELF file has no symbol table")
	// ErrSiteMismatch: Patch found bytes at a site that are not the
	// expected instruction (the image changed since Scan, or the site list
	// belongs to another image).
	ErrSiteMismatch = errors.New("tscpatch: site does not hold the expected instruction")
)
