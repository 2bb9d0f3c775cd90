package vmm

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sort"
)

// CPUID is the explicit CPUID table a VM runs with. It is part of the VM
// configuration: primary and backup must run with identical tables.
type CPUID []CPUIDEntry

// Feature bits the guest may see, by leaf and register. Everything not
// listed is hidden. The choice follows the determinism rules: no TSC,
// RDTSCP, TSC-deadline, invariant TSC, APIC or x2APIC (the guest uses the
// 8259 PIC and the 8254 PIT, whose every input the VMM sees); no RDRAND or
// RDSEED; no kvmclock or other PV leaves; no PMU leaf; and nothing the KVM
// emulator on the project's machines fails on (CX16, XSAVE and the AVX
// family, VEX-encoded BMI/FMA). MONITOR/MWAIT is hidden so idle is a HLT exit.
var (
	// Leaf 1 EDX: FPU VME DE PSE MSR PAE CX8 SEP PGE CMOV PAT PSE36 CLFSH MMX FXSR SSE SSE2.
	allowLeaf1EDX = bits(0, 1, 2, 3, 5, 6, 8, 11, 13, 15, 16, 17, 19, 23, 24, 25, 26)
	// Leaf 1 ECX: nothing beyond the x86-64 baseline.
	allowLeaf1ECX = uint32(0)
	// Leaf 0x80000001 EDX: SYSCALL NX LM. ECX: LAHF/SAHF in long mode.
	allowExt1EDX = bits(11, 20, 29)
	allowExt1ECX = bits(0)
)

// Hidden feature bits, named for tests and documentation.
const (
	Leaf1EDXTSC      = 1 << 4
	Leaf1EDXAPIC     = 1 << 9
	Leaf1ECXCX16     = 1 << 13
	Leaf1ECXX2APIC   = 1 << 21
	Leaf1ECXTSCDead  = 1 << 24
	Leaf1ECXXSAVE    = 1 << 26
	Leaf1ECXOSXSAVE  = 1 << 27
	Leaf1ECXAVX      = 1 << 28
	Leaf1ECXRDRAND   = 1 << 30
	Leaf1ECXHypervis = 1 << 31
	Ext1EDXRDTSCP    = 1 << 27
	Leaf7EBXRDSEED   = 1 << 18
)

func bits(n ...uint) uint32 {
	var v uint32
	for _, b := range n {
		v |= 1 << b
	}
	return v
}

// brand is what the guest sees as its processor name (leaves 0x80000002-4).
const brand = "ftkvm deterministic vCPU"

// BuildCPUID derives the guest's table from the host's supported entries
// (KVM_GET_SUPPORTED_CPUID): vendor, family/model/stepping and address
// sizes come from the host; features are the allow-list above intersected
// with what the host supports.
func BuildCPUID(supported []CPUIDEntry) (CPUID, error) {
	get := func(fn, idx uint32) (CPUIDEntry, bool) {
		for _, e := range supported {
			if e.Function == fn && (e.Index == idx || e.Flags&1 == 0) {
				return e, true
			}
		}
		return CPUIDEntry{}, false
	}
	leaf0, ok := get(0, 0)
	if !ok {
		return nil, fmt.Errorf("host CPUID has no leaf 0")
	}
	leaf1, ok := get(1, 0)
	if !ok {
		return nil, fmt.Errorf("host CPUID has no leaf 1")
	}
	ext0, ok := get(0x80000000, 0)
	if !ok || ext0.Eax < 0x80000008 {
		return nil, fmt.Errorf("host CPUID lacks extended leaves up to 0x80000008")
	}
	ext1, _ := get(0x80000001, 0)
	ext8, _ := get(0x80000008, 0)
	if ext1.Edx&(1<<29) == 0 {
		return nil, fmt.Errorf("host CPU does not support long mode")
	}

	t := CPUID{
		// Max basic leaf 7 (leaf 7 present but empty: no extended features).
		{Function: 0, Eax: 7, Ebx: leaf0.Ebx, Ecx: leaf0.Ecx, Edx: leaf0.Edx},
		{
			Function: 1,
			Eax:      leaf1.Eax, // family, model, stepping
			Ebx:      8 << 8,    // CLFLUSH line 64 bytes; APIC ID 0; one logical CPU
			Ecx:      leaf1.Ecx & allowLeaf1ECX,
			Edx:      leaf1.Edx & allowLeaf1EDX,
		},
		{Function: 7, Index: 0, Flags: 1}, // significant index, all features hidden
		{Function: 0x80000000, Eax: 0x80000008},
		{Function: 0x80000001, Ecx: ext1.Ecx & allowExt1ECX, Edx: ext1.Edx & allowExt1EDX},
		{Function: 0x80000008, Eax: ext8.Eax & 0xFFFF}, // physical/linear address sizes only
	}
	var name [48]byte
	copy(name[:], brand)
	for i := uint32(0); i < 3; i++ {
		w := name[i*16:]
		t = append(t, CPUIDEntry{
			Function: 0x80000002 + i,
			Eax:      binary.LittleEndian.Uint32(w[0:]),
			Ebx:      binary.LittleEndian.Uint32(w[4:]),
			Ecx:      binary.LittleEndian.Uint32(w[8:]),
			Edx:      binary.LittleEndian.Uint32(w[12:]),
		})
	}
	sort.Slice(t, func(i, j int) bool {
		if t[i].Function != t[j].Function {
			return t[i].Function < t[j].Function
		}
		return t[i].Index < t[j].Index
	})
	return t, nil
}

// Lookup returns the entry for (function, index) as the guest would see it.
func (c CPUID) Lookup(function, index uint32) (CPUIDEntry, bool) {
	for _, e := range c {
		if e.Function == function && (e.Flags&1 == 0 || e.Index == index) {
			return e, true
		}
	}
	return CPUIDEntry{}, false
}

// Hash is a stable digest of the table, for comparing configurations.
func (c CPUID) Hash() [32]byte {
	h := sha256.New()
	var b [28]byte
	for _, e := range c {
		for i, v := range []uint32{e.Function, e.Index, e.Flags, e.Eax, e.Ebx, e.Ecx, e.Edx} {
			binary.LittleEndian.PutUint32(b[i*4:], v)
		}
		h.Write(b[:])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
