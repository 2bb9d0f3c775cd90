package vmm

import (
	"strconv"
	"strings"
)

// On hosts whose KVM cannot hide CPUID feature bits from the guest
// (kvm_pvm, on which the project started, reports the host's leaf 1 and
// leaf 7 feature bits whatever KVM_SET_CPUID2 says; a standard KVM honours
// the table), Linux would use features the table hides: rdrand/rdseed/
// rdtscp are unlogged nondeterminism. Linux's
// clearcpuid= option makes the kernel itself ignore them. Linux 6.1 parses
// it into a 128-byte buffer, so only features the kernel acts on are
// listed, and features that depend on XSAVE (AVX, AVX2, AVX-512, ...) are
// left out: clearing XSAVE clears them.

// linuxFeature is a CPUID bit and its number in Linux's X86_FEATURE_ space
// (word*32 + bit, arch/x86/include/asm/cpufeatures.h in Linux 6.1).
type linuxFeature struct {
	name     string
	function uint32
	reg      byte // 'b', 'c' or 'd'
	bit      uint
	linux    int
}

var linuxHiddenFeatures = []linuxFeature{
	{"tsc", 1, 'd', 4, 0*32 + 4},
	{"rdtscp", 0x80000001, 'd', 27, 1*32 + 27},
	{"monitor", 1, 'c', 3, 4*32 + 3},
	{"cx16", 1, 'c', 13, 4*32 + 13},
	{"pcid", 1, 'c', 17, 4*32 + 17},
	{"x2apic", 1, 'c', 21, 4*32 + 21},
	{"popcnt", 1, 'c', 23, 4*32 + 23},
	{"tsc_deadline_timer", 1, 'c', 24, 4*32 + 24},
	{"xsave", 1, 'c', 26, 4*32 + 26},
	{"rdrand", 1, 'c', 30, 4*32 + 30},
	{"fsgsbase", 7, 'b', 0, 9*32 + 0},
	{"smep", 7, 'b', 7, 9*32 + 7},
	{"invpcid", 7, 'b', 10, 9*32 + 10},
	{"rdseed", 7, 'b', 18, 9*32 + 18},
	{"smap", 7, 'b', 20, 9*32 + 20},
	{"clflushopt", 7, 'b', 23, 9*32 + 23},
	{"clwb", 7, 'b', 24, 9*32 + 24},
	{"waitpkg", 7, 'c', 5, 16*32 + 5},
	{"rdpid", 7, 'c', 22, 16*32 + 22},
	{"serialize", 7, 'd', 14, 18*32 + 14},
}

func entryReg(e CPUIDEntry, reg byte) uint32 {
	switch reg {
	case 'b':
		return e.Ebx
	case 'c':
		return e.Ecx
	}
	return e.Edx
}

func findEntry(entries []CPUIDEntry, function uint32) (CPUIDEntry, bool) {
	for _, e := range entries {
		if e.Function == function && (e.Flags&1 == 0 || e.Index == 0) {
			return e, true
		}
	}
	return CPUIDEntry{}, false
}

// LinuxClearCPUID returns a "clearcpuid=..." kernel option naming every
// listed feature the guest table hides, or "" if there are none. It does
// not ask whether the host has them: on kvm_pvm the guest sees features
// that KVM_GET_SUPPORTED_CPUID does not report, and clearing a feature the
// CPU lacks is harmless.
func LinuxClearCPUID(guest CPUID) string {
	var nums []string
	for _, f := range linuxHiddenFeatures {
		if g, ok := findEntry(guest, f.function); ok && entryReg(g, f.reg)&(1<<f.bit) != 0 {
			continue
		}
		nums = append(nums, strconv.Itoa(f.linux))
	}
	if len(nums) == 0 {
		return ""
	}
	return "clearcpuid=" + strings.Join(nums, ",")
}

// linuxCmdline appends the clearcpuid= option unless the caller already
// gave one.
func linuxCmdline(cmdline string, guest CPUID) string {
	if strings.Contains(cmdline, "clearcpuid=") {
		return cmdline
	}
	if opt := LinuxClearCPUID(guest); opt != "" {
		return strings.TrimSpace(cmdline + " " + opt)
	}
	return cmdline
}
