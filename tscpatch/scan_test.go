package tscpatch

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// kernelLike is linked like a vmlinux: code at a high virtual address,
// loaded at a low physical one (paddr = vaddr - 0xffffffff80000000).
const kernelLike = `
ENTRY(f_rdtsc)
SECTIONS {
	. = 0xffffffff81000000;
	.text : AT(0x1000000) { *(.text) }
	.rodata : { *(.rodata) }
	. = ALIGN(4096);
	.init.text : { *(.init.text) }
	.altinstructions : { *(.altinstructions) }
	.altinstr_replacement : { *(.altinstr_replacement) }
}
`

const vaddrToPaddr = 0xffffffff80000000

// synthetic has every case Scan must get right: rdtsc and rdtscp in
// functions, decoys whose immediates or displacements contain the opcodes,
// code outside every function (found by the sweep only), a function that
// x86asm loses sync in, a site in a second executable section, opcodes in
// a non-executable section, and an alternative in the kernel's format
// (struct alt_instr of Linux 6.1) with two replacements, plus a replacement
// byte sequence no alternative refers to.
const synthetic = `
	.text
	.globl f_rdtsc
	.type f_rdtsc, @function
f_rdtsc:
	push %rbp
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	pop %rbp
	ret
	.size f_rdtsc, .-f_rdtsc

	.globl f_rdtscp
	.type f_rdtscp, @function
f_rdtscp:
	lfence
	rdtscp
	mov %ecx, (%rdi)
	ret
	.size f_rdtscp, .-f_rdtscp

	.globl f_decoy
	.type f_decoy, @function
f_decoy:
	mov $0x9090310f, %eax             /* b8 0f 31 90 90 */
	movabs $0x0f310ff9010f3100, %rax  /* 0f 01 f9 and 0f 31 in the immediate */
	mov 0x310f(%rax), %ecx            /* 0f 31 in the displacement */
	cmpl $0xf9010f, 0x310f(%rbx)
	ret
	.size f_decoy, .-f_decoy

	/* code no function symbol covers: only the sweep finds it */
	.globl gap_code
gap_code:
	nop
	rdtsc
	ret

	.globl f_desync
	.type f_desync, @function
f_desync:
	.byte 0x06                        /* invalid in 64-bit mode */
	rdtsc
	ret
	.size f_desync, .-f_desync

	.globl f_alt
	.type f_alt, @function
f_alt:
.Lorig:
	rdtsc                             /* rdtsc_ordered(): ALTERNATIVE_2 */
	nop
	nop
	nop
.Lorig_end:
	ret
	.size f_alt, .-f_alt

	.section .init.text, "ax"
	.globl f_init
	.type f_init, @function
f_init:
	rdtsc
	ret
	.size f_init, .-f_init

	.section .rodata, "a"
	.byte 0x0f, 0x31, 0x0f, 0x01, 0xf9  /* data, not code */

	.section .altinstr_replacement, "ax"
.Lrepl1:
	lfence
	rdtsc
.Lrepl1_end:
.Lrepl2:
	rdtscp
.Lrepl2_end:
	rdtsc                             /* no alt_instr refers to this one */

	.section .altinstructions, "a"
	.long .Lorig - .
	.long .Lrepl1 - .
	.word 0x0305                      /* X86_FEATURE_LFENCE_RDTSC */
	.byte .Lorig_end - .Lorig
	.byte .Lrepl1_end - .Lrepl1
	.long .Lorig - .
	.long .Lrepl2 - .
	.word 0x011b                      /* X86_FEATURE_RDTSCP */
	.byte .Lorig_end - .Lorig
	.byte .Lrepl2_end - .Lrepl2
`

// want is an expected site: symbol-relative so the test does not depend on
// the assembler's choices.
type want struct {
	kind      Kind
	section   string
	at        string // symbol the site's address is relative to
	off       uint64
	symbol    string
	symOffset uint64
	certain   bool
	altAt     string // for replacement sites: symbol of the copy's address
	altOff    uint64
}

func TestScanSynthetic(t *testing.T) {
	image := assemble(t, synthetic, kernelLike)
	syms := symbols(t, image)
	sites, err := Scan(image)
	if err != nil {
		t.Fatal(err)
	}
	wants := []want{
		{kind: RDTSC, section: ".text", at: "f_rdtsc", off: 1, symbol: "f_rdtsc", symOffset: 1, certain: true},
		{kind: RDTSCP, section: ".text", at: "f_rdtscp", off: 3, symbol: "f_rdtscp", symOffset: 3, certain: true},
		{kind: RDTSC, section: ".text", at: "gap_code", off: 1, symbol: "gap_code", symOffset: 1, certain: false},
		{kind: RDTSC, section: ".text", at: "f_desync", off: 1, symbol: "f_desync", symOffset: 1, certain: false},
		{kind: RDTSC, section: ".text", at: "f_alt", off: 0, symbol: "f_alt", symOffset: 0, certain: true},
		{kind: RDTSC, section: ".init.text", at: "f_init", off: 0, symbol: "f_init", symOffset: 0, certain: true},
	}
	// The replacements have no symbols: find them by their bytes.
	var replAddr uint64
	for _, s := range sites {
		if s.Section == altReplacementSection {
			replAddr = s.VAddr
			break
		}
	}
	if replAddr == 0 {
		t.Fatalf("no site in %s: %v", altReplacementSection, sites)
	}
	// .Lrepl1 = lfence (3 bytes) + rdtsc; .Lrepl2 = rdtscp right after.
	syms["repl1"] = replAddr - 3
	wants = append(wants,
		want{kind: RDTSC, section: altReplacementSection, at: "repl1", off: 3, symbol: "f_alt", symOffset: 3, certain: true, altAt: "f_alt", altOff: 3},
		want{kind: RDTSCP, section: altReplacementSection, at: "repl1", off: 5, symbol: "f_alt", symOffset: 0, certain: true, altAt: "f_alt", altOff: 0},
		want{kind: RDTSC, section: altReplacementSection, at: "repl1", off: 8, certain: false},
	)

	if len(sites) != len(wants) {
		t.Errorf("%d sites, want %d:", len(sites), len(wants))
		for _, s := range sites {
			t.Logf("  %v", s)
		}
	}
	for _, w := range wants {
		va := syms[w.at] + w.off
		i := slices.IndexFunc(sites, func(s Site) bool { return s.VAddr == va })
		if i < 0 {
			t.Errorf("missing %s at %s+%d (%#x)", w.kind, w.at, w.off, va)
			continue
		}
		s := sites[i]
		wantLen := 2
		if w.kind == RDTSCP {
			wantLen = 3
		}
		if s.Kind != w.kind || s.Section != w.section || s.Symbol != w.symbol || s.SymOffset != w.symOffset || s.Certain != w.certain || s.Len != wantLen {
			t.Errorf("got %v len %d, want %s in %s at %s+%#x certain=%v", s, s.Len, w.kind, w.section, w.symbol, w.symOffset, w.certain)
		}
		if s.PAddr != s.VAddr-vaddrToPaddr {
			t.Errorf("%v: paddr %#x, want %#x", s, s.PAddr, s.VAddr-vaddrToPaddr)
		}
		if !bytes.Equal(image[s.FileOffset:s.FileOffset+int64(s.Len)], s.Kind.opcode()) {
			t.Errorf("%v: file offset %#x holds % x", s, s.FileOffset, image[s.FileOffset:s.FileOffset+4])
		}
		if w.altAt != "" {
			alt := syms[w.altAt] + w.altOff
			if !slices.Equal(s.AltVAddrs, []uint64{alt}) || !slices.Equal(s.AltPAddrs, []uint64{alt - vaddrToPaddr}) {
				t.Errorf("%v: alternative copies at %#x / %#x, want %#x", s, s.AltVAddrs, s.AltPAddrs, alt)
			}
		} else if len(s.AltVAddrs) != 0 {
			t.Errorf("%v: unexpected alternative copies %#x", s, s.AltVAddrs)
		}
	}
	for i := 1; i < len(sites); i++ {
		if sites[i-1].VAddr >= sites[i].VAddr {
			t.Errorf("sites not in address order: %v before %v", sites[i-1], sites[i])
		}
	}
}

// Without .altinstructions, .altinstr_replacement is swept whole and its
// sites carry no symbol and no alternative addresses.
func TestScanReplacementWithoutTable(t *testing.T) {
	src := `
	.text
	.globl f
	.type f, @function
f:	ret
	.size f, .-f
	.section .altinstr_replacement, "ax"
	lfence
	rdtsc
	rdtscp
`
	image := assemble(t, src, kernelLike)
	sites, err := Scan(image)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 2 || sites[0].Kind != RDTSC || sites[1].Kind != RDTSCP {
		t.Fatalf("sites %v", sites)
	}
	for _, s := range sites {
		if !s.Certain || s.Section != altReplacementSection || len(s.AltPAddrs) != 0 {
			t.Errorf("%v: certain %v alt %#x", s, s.Certain, s.AltPAddrs)
		}
	}
}

func TestScanErrors(t *testing.T) {
	arm64 := assemble(t, synthetic, kernelLike)
	arm64[18], arm64[19] = byte(elf.EM_AARCH64), 0 // e_machine
	stripped := assemble(t, synthetic, kernelLike, "-s")
	cases := []struct {
		name  string
		image []byte
		want  error
	}{
		{"empty", nil, ErrNotELF},
		{"text", []byte("#!/bin/sh\necho not a kernel\n"), ErrNotELF},
		{"arm64", arm64, ErrNotX86_64},
		{"stripped", stripped, ErrNoSymbols},
	}
	for _, c := range cases {
		_, err := Scan(c.image)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestScanFlat(t *testing.T) {
	const base = 0x100000
	image := []byte{
		0x90,       // 0: nop
		0x0f, 0x31, //          // 1: rdtsc
		0xb8, 0x0f, 0x31, 0x90, 0x90, // 3: mov $0x9090310f, %eax (decoy)
		0x0f, 0x01, 0xf9, // 8: rdtscp
		0x0f, 0x01, 0xe8, // 11: serialize (x86asm does not know it; stepped over whole)
		0x0f, 0x31, // 14: rdtsc, still in sync
		0x06,       // 16: invalid in 64-bit mode: sync lost from here
		0x0f, 0x31, // 17: rdtsc, found by resync but uncertain
		0xc3, // 19: ret
	}
	sites, err := ScanFlat(image, base)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		kind    Kind
		off     int64
		certain bool
	}
	var g []got
	for _, s := range sites {
		if s.VAddr != base+uint64(s.FileOffset) || s.PAddr != s.VAddr || s.Section != "" {
			t.Errorf("%v: addresses do not match file offset %#x", s, s.FileOffset)
		}
		g = append(g, got{s.Kind, s.FileOffset, s.Certain})
	}
	want := []got{{RDTSC, 1, true}, {RDTSCP, 8, true}, {RDTSC, 14, true}, {RDTSC, 17, false}}
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("sites %v, want %v", g, want)
	}
	if _, err := ScanFlat(nil, base); err == nil {
		t.Error("empty image accepted")
	}
}

// A real flat binary, assembled like ftkvm's bare guests.
func TestScanFlatAssembled(t *testing.T) {
	src := `
	.code64
	.globl _start
_start:
	rdtsc
	mov $0x310f, %eax
	jmp 1f
1:	rdtscp
	hlt
`
	elfImage := assemble(t, src, "ENTRY(_start) SECTIONS { . = 0x100000; .text : { *(.text) } }")
	if _, err := Scan(elfImage); !errors.Is(err, ErrNoSymbols) { // _start is a label, not a function
		t.Errorf("ELF without function symbols: err = %v, want ErrNoSymbols", err)
	}
	flat := flatText(t, elfImage)
	fs, err := ScanFlat(flat, 0x100000)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 || fs[0].Kind != RDTSC || fs[0].VAddr != 0x100000 || fs[1].Kind != RDTSCP || fs[1].VAddr != 0x100000+2+5+2 || !fs[0].Certain || !fs[1].Certain {
		t.Errorf("flat sites %v", fs)
	}
}
