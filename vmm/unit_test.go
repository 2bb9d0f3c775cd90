package vmm

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type recorder struct{ reads, writes []uint64 }

func (r *recorder) Read(off uint64, d []byte)  { r.reads = append(r.reads, off) }
func (r *recorder) Write(off uint64, d []byte) { r.writes = append(r.writes, off) }

func TestBusRoutesAndRejectsOverlap(t *testing.T) {
	b := newBus("pio")
	a, c := &recorder{}, &recorder{}
	if err := b.Register("a", 0x20, 2, a); err != nil {
		t.Fatal(err)
	}
	if err := b.Register("c", 0x40, 4, c); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct{ base, size uint64 }{{0x21, 1}, {0x10, 0x11}, {0x3f, 2}, {0x43, 8}, {0x50, 0}, {^uint64(0), 2}} {
		if err := b.Register("bad", bad.base, bad.size, &recorder{}); err == nil {
			t.Errorf("Register(%#x, %#x) succeeded, want overlap/range error", bad.base, bad.size)
		}
	}
	for _, tc := range []struct {
		addr uint64
		dev  *recorder
		off  uint64
	}{{0x20, a, 0}, {0x21, a, 1}, {0x40, c, 0}, {0x43, c, 3}} {
		d, off, ok := b.Lookup(tc.addr)
		if !ok || d != tc.dev || off != tc.off {
			t.Errorf("Lookup(%#x) = %v, %d, %v", tc.addr, d, off, ok)
		}
	}
	for _, miss := range []uint64{0, 0x1f, 0x22, 0x3f, 0x44, ^uint64(0)} {
		if _, _, ok := b.Lookup(miss); ok {
			t.Errorf("Lookup(%#x) found a device", miss)
		}
	}
}

func fakeRun() []byte { return make([]byte, 4096) }

func TestDecodeExitIO(t *testing.T) {
	run := fakeRun()
	le := binary.LittleEndian
	le.PutUint32(run[8:], exitIO)
	u := run[kvmRunExitOffset:]
	u[0] = 1 // out
	u[1] = 2 // size
	le.PutUint16(u[2:], 0x3f8)
	le.PutUint32(u[4:], 3)
	le.PutUint64(u[8:], 1024)
	e, err := decodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != ExitIOOut || e.Port != 0x3f8 || e.Size != 2 || e.Count != 3 || len(e.Data) != 6 {
		t.Fatalf("decoded %+v", e)
	}
	// A data offset pointing outside the mapping must be refused.
	le.PutUint64(u[8:], 4094)
	if _, err := decodeExit(run); err == nil {
		t.Fatal("out-of-range I/O data offset accepted")
	}
	le.PutUint64(u[8:], 1024)
	u[1] = 3
	if _, err := decodeExit(run); err == nil {
		t.Fatal("I/O size 3 accepted")
	}
}

func TestDecodeExitMMIO(t *testing.T) {
	run := fakeRun()
	le := binary.LittleEndian
	le.PutUint32(run[8:], exitMMIO)
	u := run[kvmRunExitOffset:]
	le.PutUint64(u[0:], 0xd0000008)
	le.PutUint32(u[16:], 4)
	u[20] = 0
	e, err := decodeExit(run)
	if err != nil || e.Kind != ExitMMIORead || e.Addr != 0xd0000008 || len(e.Data) != 4 {
		t.Fatalf("decoded %+v, %v", e, err)
	}
	le.PutUint32(u[16:], 9)
	if _, err := decodeExit(run); err == nil {
		t.Fatal("MMIO length 9 accepted")
	}
}

func TestDecodeExitOthers(t *testing.T) {
	for reason, kind := range map[uint32]ExitKind{exitHLT: ExitHLT, exitShutdown: ExitShutdown, exitIRQWindowOpen: ExitIRQWindow, exitInternalError: ExitInternalError, 99: ExitOther} {
		run := fakeRun()
		binary.LittleEndian.PutUint32(run[8:], reason)
		e, err := decodeExit(run)
		if err != nil || e.Kind != kind {
			t.Errorf("reason %d: %v, %v; want %v", reason, e.Kind, err, kind)
		}
	}
}

func TestCPUIDHidesNondeterministicFeatures(t *testing.T) {
	all := ^uint32(0)
	supported := []CPUIDEntry{
		{Function: 0, Eax: 0x16, Ebx: 0x756e6547, Ecx: 0x6c65746e, Edx: 0x49656e69},
		{Function: 1, Eax: 0x906ea, Ebx: all, Ecx: all, Edx: all},
		{Function: 7, Flags: 1, Ebx: all, Ecx: all, Edx: all},
		{Function: 0x40000000, Eax: 0x40000001},
		{Function: 0x40000001, Eax: all},
		{Function: 0xA, Eax: all},
		{Function: 0x80000000, Eax: 0x80000008},
		{Function: 0x80000001, Ecx: all, Edx: all},
		{Function: 0x80000007, Edx: all},
		{Function: 0x80000008, Eax: 0x3027},
	}
	c, err := BuildCPUID(supported)
	if err != nil {
		t.Fatal(err)
	}
	l1, _ := c.Lookup(1, 0)
	for name, bit := range map[string]uint32{"TSC": Leaf1EDXTSC, "APIC": Leaf1EDXAPIC} {
		if l1.Edx&bit != 0 {
			t.Errorf("leaf 1 EDX exposes %s", name)
		}
	}
	for name, bit := range map[string]uint32{"CX16": Leaf1ECXCX16, "x2APIC": Leaf1ECXX2APIC, "TSC-deadline": Leaf1ECXTSCDead, "XSAVE": Leaf1ECXXSAVE, "OSXSAVE": Leaf1ECXOSXSAVE, "AVX": Leaf1ECXAVX, "RDRAND": Leaf1ECXRDRAND, "hypervisor": Leaf1ECXHypervis} {
		if l1.Ecx&bit != 0 {
			t.Errorf("leaf 1 ECX exposes %s", name)
		}
	}
	if l1.Edx&(1<<25) == 0 || l1.Edx&(1<<26) == 0 {
		t.Error("leaf 1 EDX lost SSE/SSE2, the x86-64 baseline")
	}
	if l7, ok := c.Lookup(7, 0); !ok || l7.Ebx != 0 || l7.Ecx != 0 || l7.Edx != 0 {
		t.Errorf("leaf 7 = %+v, want present and empty (no RDSEED, AVX2, ...)", l7)
	}
	if e1, _ := c.Lookup(0x80000001, 0); e1.Edx&Ext1EDXRDTSCP != 0 || e1.Edx&(1<<29) == 0 {
		t.Errorf("leaf 0x80000001 EDX %#x: want RDTSCP hidden and LM kept", e1.Edx)
	}
	for _, fn := range []uint32{0x40000000, 0x40000001, 0xA, 0x80000007} {
		if e, ok := c.Lookup(fn, 0); ok && (e.Eax|e.Ebx|e.Ecx|e.Edx) != 0 {
			t.Errorf("leaf %#x present: %+v", fn, e)
		}
	}
	if l0, _ := c.Lookup(0, 0); l0.Eax != 7 || l0.Ebx != 0x756e6547 {
		t.Errorf("leaf 0 = %+v; want max leaf 7 and the host vendor", l0)
	}
	// The same host gives the same table, and the hash tells tables apart.
	c2, _ := BuildCPUID(supported)
	if c.Hash() != c2.Hash() {
		t.Error("same input, different CPUID hash")
	}
	supported[1].Eax = 0x906eb
	c3, _ := BuildCPUID(supported)
	if c.Hash() == c3.Hash() {
		t.Error("different stepping, same CPUID hash")
	}
}

func TestCPUIDRejectsHostWithoutLongMode(t *testing.T) {
	_, err := BuildCPUID([]CPUIDEntry{{Function: 0}, {Function: 1}, {Function: 0x80000000, Eax: 0x80000008}, {Function: 0x80000001}})
	if err == nil || !strings.Contains(err.Error(), "long mode") {
		t.Fatalf("err = %v", err)
	}
}

// minimalELF builds a tiny ELF64 executable with one PT_LOAD segment.
func minimalELF(t *testing.T, class elf.Class, machine elf.Machine, paddr uint64, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	hdr := elf.Header64{
		Ident:     [16]byte{0x7f, 'E', 'L', 'F', byte(class), 1, 1},
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(machine),
		Version:   1,
		Entry:     paddr,
		Phoff:     64,
		Ehsize:    64,
		Phentsize: 56,
		Phnum:     1,
	}
	binary.Write(&b, le, hdr)
	binary.Write(&b, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Off: 120, Vaddr: 0xffffffff80000000 + paddr, Paddr: paddr, Filesz: uint64(len(payload)), Memsz: uint64(len(payload)) + 0x100})
	b.Write(payload)
	return b.Bytes()
}

func TestLoadLinuxPlacesKernelBootParamsAndInitrd(t *testing.T) {
	mem, err := NewMemory(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	payload := []byte{0xf4, 0x90, 0x90, 0x90}
	k := minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x1000000, payload)
	initrd := bytes.Repeat([]byte{0xab}, 10000)
	st, err := loadLinux(mem, LinuxSpec{Kernel: k, Initrd: initrd, Cmdline: "console=ttyS0"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Regs.RIP != 0x1000000 || st.Regs.RSI != zeroPageAddr || st.Regs.RFLAGS&RFlagsIF != 0 {
		t.Errorf("regs %+v", st.Regs)
	}
	got := make([]byte, 4)
	mem.ReadAt(got, 0x1000000)
	if !bytes.Equal(got, payload) {
		t.Errorf("kernel bytes %x", got)
	}
	zp, _ := mem.Slice(zeroPageAddr, pageSize)
	le := binary.LittleEndian
	if le.Uint32(zp[bpHeaderMagic:]) != headerMagic || le.Uint16(zp[bpBootFlag:]) != 0xAA55 {
		t.Error("setup header magic missing")
	}
	rdAddr, rdSize := le.Uint32(zp[bpRamdiskImage:]), le.Uint32(zp[bpRamdiskSize:])
	if rdSize != uint32(len(initrd)) || rdAddr%pageSize != 0 || uint64(rdAddr)+uint64(rdSize) > mem.Size() {
		t.Errorf("initrd at %#x size %d", rdAddr, rdSize)
	}
	rd, _ := mem.Slice(GuestAddress(rdAddr), uint64(rdSize))
	if !bytes.Equal(rd, initrd) {
		t.Error("initrd bytes differ")
	}
	cl, _ := mem.Slice(GuestAddress(le.Uint32(zp[bpCmdLinePtr:])), 14)
	if string(cl) != "console=ttyS0\x00" {
		t.Errorf("cmdline %q", cl)
	}
	if n := zp[bpE820Entries]; n != 3 {
		t.Fatalf("%d e820 entries", n)
	}
	last := zp[bpE820Table+2*e820EntrySize:]
	if le.Uint64(last) != highMemStart || le.Uint64(last[8:]) != mem.Size()-highMemStart || le.Uint32(last[16:]) != e820RAM {
		t.Errorf("high RAM entry %x", last[:20])
	}
}

func TestLoadLinuxRejectsWrongKernels(t *testing.T) {
	mem, err := NewMemory(32 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	bz := make([]byte, 0x1000)
	binary.LittleEndian.PutUint32(bz[bpHeaderMagic:], headerMagic)
	cases := map[string]struct {
		kernel []byte
		want   string
	}{
		"bzImage":     {bz, "bzImage"},
		"garbage":     {[]byte("this is not a kernel"), "not an ELF"},
		"empty":       {nil, "not an ELF"},
		"arm64":       {minimalELF(t, elf.ELFCLASS64, elf.EM_AARCH64, 0x1000000, []byte{1}), "x86-64"},
		"beyond RAM":  {minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x4000000, []byte{1}), "does not fit"},
		"below 1 MiB": {minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x8000, []byte{1}), "does not fit"},
	}
	for name, tc := range cases {
		_, err := loadLinux(mem, LinuxSpec{Kernel: tc.kernel})
		var ke *KernelError
		if !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want a KernelError mentioning %q", name, err, tc.want)
		}
	}
	// A truncated ELF (segment data cut off) must not load silently.
	k := minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x1000000, bytes.Repeat([]byte{1}, 64))
	if _, err := loadLinux(mem, LinuxSpec{Kernel: k[:len(k)-32]}); err == nil {
		t.Error("truncated kernel loaded")
	}
	// A command line too long for its page.
	k = minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x1000000, []byte{1})
	if _, err := loadLinux(mem, LinuxSpec{Kernel: k, Cmdline: strings.Repeat("x", cmdlineMax)}); err == nil {
		t.Error("oversized command line accepted")
	}
	// An initrd larger than memory.
	if _, err := loadLinux(mem, LinuxSpec{Kernel: k, Initrd: make([]byte, 40<<20)}); err == nil {
		t.Error("oversized initrd accepted")
	}
}

func TestMemoryBoundsChecks(t *testing.T) {
	mem, err := NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for _, tc := range []struct{ addr, n uint64 }{{1 << 20, 1}, {1<<20 - 1, 2}, {^uint64(0), 2}, {0, 1<<20 + 1}} {
		if _, err := mem.Slice(GuestAddress(tc.addr), tc.n); err == nil {
			t.Errorf("Slice(%#x, %d) succeeded", tc.addr, tc.n)
		}
	}
	if _, err := mem.Slice(1<<20-4, 4); err != nil {
		t.Error(err)
	}
	if _, err := NewMemory(12345); err == nil {
		t.Error("unaligned memory size accepted")
	}
}

func TestLoadBareChecksFit(t *testing.T) {
	mem, err := NewMemory(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if _, err := loadBare(mem, make([]byte, 1<<20+1)); err == nil {
		t.Error("image larger than memory above 1 MiB accepted")
	}
	if _, err := loadBare(mem, nil); err == nil {
		t.Error("empty image accepted")
	}
	st, err := loadBare(mem, []byte{0xf4})
	if err != nil {
		t.Fatal(err)
	}
	if st.Regs.RIP != BareLoadAddr || st.Regs.RSP != BareStackTop || st.Sregs.EFER&eferLMA == 0 || st.Sregs.CS.L != 1 {
		t.Errorf("bare state %+v", st)
	}
}

func TestLinuxClearCPUIDFitsLinuxBuffer(t *testing.T) {
	all := ^uint32(0)
	c, err := BuildCPUID([]CPUIDEntry{
		{Function: 0, Eax: 7}, {Function: 1, Ecx: all, Edx: all}, {Function: 7, Flags: 1, Ebx: all, Ecx: all, Edx: all},
		{Function: 0x80000000, Eax: 0x80000008}, {Function: 0x80000001, Ecx: all, Edx: all}, {Function: 0x80000008},
	})
	if err != nil {
		t.Fatal(err)
	}
	opt := LinuxClearCPUID(c)
	// Linux 6.1 reads the option into a 128-byte buffer (arg[128] in
	// cpu_parse_early_param); a longer value would be cut silently.
	if len(opt)-len("clearcpuid=") >= 128 {
		t.Errorf("%d bytes: %s", len(opt), opt)
	}
	for _, want := range []string{",151,", ",308", ",158,", ",306,", ",141,", "=4,"} {
		if !strings.Contains(opt+",", want) {
			t.Errorf("%s lacks %s", opt, want)
		}
	}
	// A feature the table exposes is not cleared, and a caller's own
	// clearcpuid= is left alone.
	c2 := append(CPUID(nil), c...)
	for i := range c2 {
		if c2[i].Function == 1 {
			c2[i].Ecx |= 1 << 23 // popcnt
		}
	}
	if strings.Contains(LinuxClearCPUID(c2)+",", ",151,") {
		t.Error("exposed popcnt is cleared")
	}
	if got := linuxCmdline("console=ttyS0 clearcpuid=1", c); got != "console=ttyS0 clearcpuid=1" {
		t.Errorf("cmdline %q", got)
	}
	if got := linuxCmdline("console=ttyS0", c); got != "console=ttyS0 "+opt {
		t.Errorf("cmdline %q", got)
	}
}

func TestCheckKernel(t *testing.T) {
	if err := CheckKernel(minimalELF(t, elf.ELFCLASS64, elf.EM_X86_64, 0x1000000, []byte{0xf4})); err != nil {
		t.Errorf("a 64-bit vmlinux: %v", err)
	}
	bz := make([]byte, 0x300)
	binary.LittleEndian.PutUint32(bz[bpHeaderMagic:], headerMagic)
	var ke *KernelError
	for name, k := range map[string][]byte{
		"bzImage": bz,
		"32-bit":  minimalELF(t, elf.ELFCLASS32, elf.EM_386, 0x1000000, []byte{0xf4}),
		"garbage": []byte("garbage"),
	} {
		if err := CheckKernel(k); !errors.As(err, &ke) {
			t.Errorf("%s: %v, want a KernelError", name, err)
		}
	}
}

func TestReadFileLimited(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "image")
	if err := os.WriteFile(path, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFileLimited(path, 5); err != nil || string(b) != "12345" {
		t.Errorf("within the limit: %q, %v", b, err)
	}
	for name, tc := range map[string]struct {
		path  string
		limit int64
	}{"too large": {path, 4}, "a directory": {dir, 1 << 20}, "missing": {filepath.Join(dir, "none"), 1 << 20}} {
		if _, err := ReadFileLimited(tc.path, tc.limit); err == nil {
			t.Errorf("%s: read", name)
		}
	}
}

func TestHostClockMoves(t *testing.T) {
	c := NewHostClock()
	a := c.Now()
	time.Sleep(time.Millisecond)
	if b := c.Now(); a < 0 || b <= a {
		t.Errorf("host clock %d then %d", a, b)
	}
}
