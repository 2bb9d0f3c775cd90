package tscpatch

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/arch/x86/x86asm"
)

// altReplacementSection holds the kernel's alternatives replacement snippets;
// altInstructionsSection describes them (struct alt_instr).
const (
	altReplacementSection  = ".altinstr_replacement"
	altInstructionsSection = ".altinstructions"
)

// Scan finds every rdtsc and rdtscp instruction in the executable sections of
// an x86-64 ELF image (a vmlinux) and returns them in address order.
//
// Code is disassembled with x86asm in 64-bit mode, from known instruction
// starts only: each STT_FUNC symbol over [value, value+size); each
// alternatives replacement snippet that .altinstructions names (or, if that
// table is absent or unreadable, a linear sweep of .altinstr_replacement);
// then a linear sweep of the executable bytes no function covers, which
// resynchronises one byte after an undecodable byte and reports its finds
// with Certain false. A match counts only at a decoded instruction boundary,
// so 0f 31 inside another instruction (an immediate, a displacement) is not
// a site. Addresses are mapped to PAddr and FileOffset through the PT_LOAD
// program headers, as the VMM loads the kernel at p_paddr.
func Scan(vmlinux []byte) ([]Site, error) {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotELF, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("%w (class %v, machine %v)", ErrNotX86_64, f.Class, f.Machine)
	}
	syms, err := f.Symbols()
	if err != nil {
		if errors.Is(err, elf.ErrNoSymbols) {
			return nil, fmt.Errorf("%w (stripped? Scan needs function symbols)", ErrNoSymbols)
		}
		return nil, fmt.Errorf("tscpatch: reading ELF symbols: %w", err)
	}
	s := &elfScan{f: f, found: map[uint64]*Site{}}
	if err := s.loadSections(); err != nil {
		return nil, err
	}
	if s.indexSymbols(syms) == 0 {
		return nil, fmt.Errorf("%w (no sized STT_FUNC symbol in an executable section)", ErrNoSymbols)
	}
	alts := s.readAltInstructions() // nil when absent or unreadable

	for _, sec := range s.exec {
		if sec.name == altReplacementSection {
			// The snippets are concatenated whole instructions, so a sweep
			// from the section start stays in step; with .altinstructions
			// each snippet is decoded from its own start first, and the
			// sweep only adds (as uncertain) what no snippet holds.
			for _, a := range alts {
				if a.replLen > 0 {
					s.decodeRange(sec, a.repl, a.repl+uint64(a.replLen), true, true)
				}
			}
			s.decodeRange(sec, sec.addr, sec.end(), alts == nil, false)
			continue
		}
		var covered []span
		for _, fn := range s.funcs[sec.index] {
			s.decodeRange(sec, fn.start, fn.end, true, true)
			covered = append(covered, span{fn.start, fn.end})
		}
		s.sweepGaps(sec, covered)
	}

	sites := make([]Site, 0, len(s.found))
	for _, site := range s.found {
		sites = append(sites, *site)
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].VAddr < sites[j].VAddr })
	for i := range sites {
		st := &sites[i]
		if err := s.place(st); err != nil {
			return nil, err
		}
		if st.Section == altReplacementSection {
			s.attachAlternatives(st, alts)
		} else {
			st.Symbol, st.SymOffset = s.symbolFor(st.VAddr)
		}
	}
	return sites, nil
}

// ScanFlat finds rdtsc and rdtscp in a flat 64-bit image loaded (and
// entered) at base, such as ftkvm's bare test guests, by a linear sweep from
// the first byte that resynchronises one byte after an undecodable byte.
// Sites found before the first undecodable byte are Certain (the sweep
// follows the instruction stream from the entry point); later ones are not.
// VAddr and PAddr are base plus the offset; Section and Symbol are empty.
func ScanFlat(image []byte, base uint64) ([]Site, error) {
	if len(image) == 0 {
		return nil, errors.New("tscpatch: empty flat image")
	}
	if base+uint64(len(image)) < base {
		return nil, fmt.Errorf("tscpatch: flat image of %d bytes at %#x wraps the address space", len(image), base)
	}
	var sites []Site
	inSync := true
	sweep(image, func(off int, inst x86asm.Inst, err error) {
		if err != nil {
			inSync = false
			return
		}
		if k, ok := siteKind(image[off:], inst); ok {
			a := base + uint64(off)
			sites = append(sites, Site{Kind: k, VAddr: a, PAddr: a, FileOffset: int64(off), Len: inst.Len, Certain: inSync})
		}
	})
	return sites, nil
}

// sweep decodes code linearly, calling visit for every decoded instruction
// (err nil) and for every undecodable byte (err set), after which it moves on
// by one byte.
//
// Instructions newer than x86asm's tables that the kernel uses (serialize,
// stgi, vmcall, rdseed, tpause, mwaitx, ...) are register forms of the
// 0f 01, 0f ae and 0f c7 groups, all three bytes after their prefixes; they
// are stepped over whole (see groupLen) instead of losing sync.
func sweep(code []byte, visit func(off int, inst x86asm.Inst, err error)) {
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len == 0 {
			if n := groupLen(code[off:]); n > 0 {
				off += n
				continue
			}
			visit(off, inst, errUndecodable)
			off++
			continue
		}
		visit(off, inst, nil)
		off += inst.Len
	}
}

// groupLen returns the length of a register-form (ModRM mod = 11)
// instruction of the 0f 01, 0f ae or 0f c7 group after legacy and REX
// prefixes, or 0. Every such form is opcode plus ModRM, with no
// displacement or immediate, so its length is certain even where x86asm
// does not know the mnemonic.
func groupLen(code []byte) int {
	i := 0
	for i < len(code) && i < 14 {
		switch code[i] {
		case 0x66, 0x67, 0xf2, 0xf3, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65, 0xf0:
			i++
			continue
		}
		break
	}
	if i < len(code) && code[i]&0xf0 == 0x40 { // REX
		i++
	}
	if i+3 > len(code) || code[i] != 0x0f || code[i+2] < 0xc0 {
		return 0
	}
	switch code[i+1] {
	case 0x01, 0xae, 0xc7:
		return i + 3
	}
	return 0
}

var errUndecodable = errors.New("undecodable")

// siteKind reports whether inst (decoded from code) is rdtsc or rdtscp whose
// bytes end in the plain opcode.
func siteKind(code []byte, inst x86asm.Inst) (Kind, bool) {
	var k Kind
	switch inst.Op {
	case x86asm.RDTSC:
		k = RDTSC
	case x86asm.RDTSCP:
		k = RDTSCP
	default:
		return 0, false
	}
	op := k.opcode()
	if inst.Len < len(op) || !bytes.Equal(code[inst.Len-len(op):inst.Len], op) {
		return 0, false
	}
	return k, true
}

type span struct{ start, end uint64 }

type execSection struct {
	index int
	name  string
	addr  uint64
	data  []byte
}

func (s *execSection) end() uint64 { return s.addr + uint64(len(s.data)) }

type funcSym struct {
	name       string
	start, end uint64
}

// altInstr mirrors the fields of the kernel's struct alt_instr that matter
// here, with the self-relative offsets resolved to addresses.
type altInstr struct {
	instr, repl       uint64
	instrLen, replLen uint8
}

type elfScan struct {
	f     *elf.File
	exec  []*execSection
	funcs map[int][]funcSym // by section index, sorted by start
	named map[int][]funcSym // every named symbol with an address, by section index, sorted
	found map[uint64]*Site  // by VAddr
}

func (s *elfScan) loadSections() error {
	for i, sec := range s.f.Sections {
		if sec.Type != elf.SHT_PROGBITS || sec.Flags&elf.SHF_EXECINSTR == 0 || sec.Flags&elf.SHF_ALLOC == 0 || sec.Size == 0 {
			continue
		}
		data, err := sec.Data()
		if err != nil {
			return fmt.Errorf("tscpatch: reading section %s: %w", sec.Name, err)
		}
		s.exec = append(s.exec, &execSection{index: i, name: sec.Name, addr: sec.Addr, data: data})
	}
	if len(s.exec) == 0 {
		return errors.New("tscpatch: ELF file has no executable section")
	}
	return nil
}

// indexSymbols records the function and label symbols of the executable
// sections and returns the number of functions.
func (s *elfScan) indexSymbols(syms []elf.Symbol) int {
	s.funcs = map[int][]funcSym{}
	s.named = map[int][]funcSym{}
	execByIndex := map[int]*execSection{}
	for _, sec := range s.exec {
		execByIndex[sec.index] = sec
	}
	for _, sym := range syms {
		sec, ok := execByIndex[int(sym.Section)]
		if !ok || sym.Value < sec.addr || sym.Value >= sec.end() {
			continue
		}
		t := elf.ST_TYPE(sym.Info)
		if sym.Name != "" && (t == elf.STT_FUNC || t == elf.STT_NOTYPE) {
			s.named[sec.index] = append(s.named[sec.index], funcSym{name: sym.Name, start: sym.Value})
		}
		if t == elf.STT_FUNC && sym.Size > 0 {
			end := min(sym.Value+sym.Size, sec.end())
			s.funcs[sec.index] = append(s.funcs[sec.index], funcSym{name: sym.Name, start: sym.Value, end: end})
		}
	}
	for _, m := range []map[int][]funcSym{s.funcs, s.named} {
		for i, l := range m {
			sort.SliceStable(l, func(a, b int) bool { return l[a].start < l[b].start })
			m[i] = dedupe(l)
		}
	}
	n := 0
	for _, l := range s.funcs {
		n += len(l)
	}
	return n
}

// dedupe drops exact repeats (aliases of one function).
func dedupe(l []funcSym) []funcSym {
	out := l[:0]
	for _, x := range l {
		if len(out) > 0 && out[len(out)-1].start == x.start && out[len(out)-1].end == x.end {
			continue
		}
		out = append(out, x)
	}
	return out
}

// decodeRange decodes [start, end) of sec from start, recording sites. A site
// is certain if certain is set and, when loseOnError is set, no undecodable
// byte came before it in the range.
func (s *elfScan) decodeRange(sec *execSection, start, end uint64, certain, loseOnError bool) {
	if start < sec.addr || end > sec.end() || start >= end {
		return
	}
	code := sec.data[start-sec.addr : end-sec.addr]
	sweep(code, func(off int, inst x86asm.Inst, err error) {
		if err != nil {
			if loseOnError {
				certain = false
			}
			return
		}
		k, ok := siteKind(code[off:], inst)
		if !ok {
			return
		}
		va := start + uint64(off)
		if old, dup := s.found[va]; dup {
			old.Certain = old.Certain || certain
			return
		}
		s.found[va] = &Site{Kind: k, VAddr: va, Len: inst.Len, Section: sec.name, Certain: certain}
	})
}

// sweepGaps sweeps the parts of sec not in covered, reporting finds as
// uncertain.
func (s *elfScan) sweepGaps(sec *execSection, covered []span) {
	sort.Slice(covered, func(i, j int) bool { return covered[i].start < covered[j].start })
	pos := sec.addr
	for _, c := range covered {
		if c.start > pos {
			s.decodeRange(sec, pos, c.start, false, false)
		}
		pos = max(pos, c.end)
	}
	if pos < sec.end() {
		s.decodeRange(sec, pos, sec.end(), false, false)
	}
}

// place fills PAddr and FileOffset from the PT_LOAD segment holding the site.
func (s *elfScan) place(st *Site) error {
	for _, p := range s.f.Progs {
		if p.Type != elf.PT_LOAD || st.VAddr < p.Vaddr || st.VAddr+uint64(st.Len) > p.Vaddr+p.Filesz {
			continue
		}
		d := st.VAddr - p.Vaddr
		st.PAddr = p.Paddr + d
		st.FileOffset = int64(p.Off + d)
		return nil
	}
	return fmt.Errorf("tscpatch: %s at %#x in %s lies in no PT_LOAD segment's file image", st.Kind, st.VAddr, st.Section)
}

// paddrOf maps a virtual address through PT_LOAD (memory size, not file size:
// only the address is needed).
func (s *elfScan) paddrOf(va uint64) (uint64, bool) {
	for _, p := range s.f.Progs {
		if p.Type == elf.PT_LOAD && va >= p.Vaddr && va < p.Vaddr+p.Memsz {
			return p.Paddr + (va - p.Vaddr), true
		}
	}
	return 0, false
}

// symbolFor names the function holding va, or else the nearest named symbol
// before it in the same section.
func (s *elfScan) symbolFor(va uint64) (string, uint64) {
	for _, sec := range s.exec {
		if va < sec.addr || va >= sec.end() {
			continue
		}
		fns := s.funcs[sec.index]
		i := sort.Search(len(fns), func(i int) bool { return fns[i].start > va })
		for j := i - 1; j >= 0 && j >= i-8; j-- { // nested or overlapping symbols are rare and close
			if va < fns[j].end {
				return fns[j].name, va - fns[j].start
			}
		}
		nm := s.named[sec.index]
		i = sort.Search(len(nm), func(i int) bool { return nm[i].start > va })
		if i > 0 {
			return nm[i-1].name, va - nm[i-1].start
		}
	}
	return "", 0
}

// attachAlternatives records where the kernel copies a replacement site.
func (s *elfScan) attachAlternatives(st *Site, alts []altInstr) {
	for _, a := range alts {
		if st.VAddr < a.repl || st.VAddr+uint64(st.Len) > a.repl+uint64(a.replLen) {
			continue
		}
		dst := a.instr + (st.VAddr - a.repl)
		pa, ok := s.paddrOf(dst)
		if !ok {
			continue
		}
		st.AltVAddrs = append(st.AltVAddrs, dst)
		st.AltPAddrs = append(st.AltPAddrs, pa)
		if st.Symbol == "" {
			st.Symbol, st.SymOffset = s.symbolFor(dst)
		}
	}
}

// readAltInstructions decodes .altinstructions, an array of the kernel's
// packed struct alt_instr:
//
//	s32 instr_offset;   // original instruction, relative to this field
//	s32 repl_offset;    // replacement, relative to this field
//	u16 cpuid;          // Linux <= 6.2; u32 ft_flags from 6.3 on
//	u8  instrlen;
//	u8  replacementlen;
//
// Both layouts (12 and 14 bytes) are tried; one is accepted only if every
// entry points its original into an executable section and its replacement
// into .altinstr_replacement. It returns nil when the section is absent or
// neither layout fits, in which case Scan falls back to a sweep.
func (s *elfScan) readAltInstructions() []altInstr {
	sec := s.f.Section(altInstructionsSection)
	var repl *execSection
	for _, e := range s.exec {
		if e.name == altReplacementSection {
			repl = e
		}
	}
	if sec == nil || repl == nil || sec.Type != elf.SHT_PROGBITS {
		return nil
	}
	data, err := sec.Data()
	if err != nil || len(data) == 0 {
		return nil
	}
	var accepted [][]altInstr
	for _, size := range []int{12, 14} {
		if len(data)%size != 0 {
			continue
		}
		var alts []altInstr
		ok := true
		for off := 0; off < len(data) && ok; off += size {
			e := data[off : off+size]
			at := sec.Addr + uint64(off)
			a := altInstr{
				instr:    at + uint64(int64(int32(binary.LittleEndian.Uint32(e[0:])))),
				repl:     at + 4 + uint64(int64(int32(binary.LittleEndian.Uint32(e[4:])))),
				instrLen: e[size-2],
				replLen:  e[size-1],
			}
			ok = s.inExec(a.instr, uint64(a.instrLen)) &&
				(a.replLen == 0 || (a.repl >= repl.addr && a.repl+uint64(a.replLen) <= repl.end()))
			alts = append(alts, a)
		}
		if ok {
			accepted = append(accepted, alts)
		}
	}
	if len(accepted) != 1 {
		return nil
	}
	return accepted[0]
}

func (s *elfScan) inExec(va, n uint64) bool {
	for _, e := range s.exec {
		if va >= e.addr && va+n <= e.end() {
			return true
		}
	}
	return false
}
