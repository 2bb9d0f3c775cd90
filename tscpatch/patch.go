package tscpatch

import (
	"bytes"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// Patch returns a copy of image with every site replaced by a trapping
// "out imm8, al" to rdtscPort (rdtsc sites) or rdtscpPort (rdtscp sites),
// padded with nops to the original length: e6 PORT for rdtsc, e6 PORT 90 for
// rdtscp. image is the same bytes that were scanned (the ELF file for Scan,
// the flat image for ScanFlat); sites are addressed by FileOffset.
//
// Nothing is patched blindly: each site must still decode (x86asm, 64-bit) as
// its Kind with its Len and end in the plain opcode, else Patch fails with
// ErrSiteMismatch; after patching, each site must decode as OUT imm8, AL on
// the right port. The two ports may be equal: the VMM can tell the kinds
// apart by the site table. image itself is never modified.
func Patch(image []byte, sites []Site, rdtscPort, rdtscpPort uint8) ([]byte, error) {
	out := bytes.Clone(image)
	seen := make(map[int64]bool, len(sites))
	for _, s := range sites {
		port := rdtscPort
		if s.Kind == RDTSCP {
			port = rdtscpPort
		}
		op := s.Kind.opcode()
		if op == nil {
			return nil, fmt.Errorf("tscpatch: site at %#x has invalid kind %v", s.VAddr, s.Kind)
		}
		if s.Len < len(op) || s.Len > 15 {
			return nil, fmt.Errorf("tscpatch: %v has invalid length %d", s, s.Len)
		}
		if s.FileOffset < 0 || s.FileOffset+int64(s.Len) > int64(len(out)) {
			return nil, fmt.Errorf("tscpatch: %v: file offset %#x outside the %d-byte image", s, s.FileOffset, len(out))
		}
		for o := s.FileOffset; o < s.FileOffset+int64(s.Len); o++ {
			if seen[o] {
				return nil, fmt.Errorf("tscpatch: %v overlaps another site in the list", s)
			}
			seen[o] = true
		}
		code := out[s.FileOffset : s.FileOffset+int64(s.Len)]
		inst, err := x86asm.Decode(code, 64)
		if k, ok := siteKind(code, inst); err != nil || !ok || k != s.Kind || inst.Len != s.Len {
			return nil, fmt.Errorf("%w: %v: bytes % x at file offset %#x", ErrSiteMismatch, s, code, s.FileOffset)
		}
		code[0], code[1] = outImm8AL, port
		for i := outLen; i < len(code); i++ {
			code[i] = nop
		}
		if err := checkPatched(code, port); err != nil {
			return nil, fmt.Errorf("tscpatch: %v: patched bytes % x: %w", s, code, err)
		}
	}
	return out, nil
}

// checkPatched verifies code (one patched site) decodes as OUT imm8, AL to
// port followed by nops only.
func checkPatched(code []byte, port uint8) error {
	inst, err := x86asm.Decode(code, 64)
	if err != nil {
		return fmt.Errorf("does not decode: %v", err)
	}
	if inst.Op != x86asm.OUT || inst.Len != outLen || inst.Args[0] != x86asm.Imm(port) || inst.Args[1] != x86asm.AL {
		return fmt.Errorf("decodes as %v, not out %#x, al", inst, port)
	}
	for off := outLen; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Op != x86asm.NOP {
			return fmt.Errorf("padding at +%d is not a nop", off)
		}
		off += inst.Len
	}
	return nil
}
