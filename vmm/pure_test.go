package vmm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/bobuhiro11/gokvm/kvm"
)

func TestStrings(t *testing.T) {
	for _, tc := range []struct {
		got  interface{ String() string }
		want string
	}{
		{Point{Exits: 0, Kind: AtExit}, "exit 0"},
		{Point{Exits: 12, Kind: AtExit}, "exit 12"},
		{Point{Exits: 12, Kind: Kicked}, "exit 12+kicked"},
		{Point{Exits: 12, Kind: Window}, "exit 12+window"},
		{Point{Exits: 3}, "exit 3+point?"},
		{PointKind(9), "point?"},
		{StopExitPort, "exit port"},
		{StopPowerOff, "power off"},
		{StopReset, "reset"},
		{StopReason(0), "StopReason(0)"},
		{ExitIOIn, "io-in"},
		{ExitRDMSR, "rdmsr"},
		{ExitOther, "other"},
		{ExitKind(0), "exit(0)"},
		{ExitKind(99), "exit(99)"},
	} {
		if s := tc.got.String(); s != tc.want {
			t.Errorf("%#v: %q, want %q", tc.got, s, tc.want)
		}
	}
	for k := ExitIOIn; k <= ExitOther; k++ {
		if strings.HasPrefix(k.String(), "exit(") {
			t.Errorf("ExitKind %d has no name", int(k))
		}
	}
}

func TestStatsAndAsync(t *testing.T) {
	var s Stats
	if s.SyncExits() != 0 {
		t.Error("zero Stats has exits")
	}
	s.Exits[ExitIOIn], s.Exits[ExitHLT], s.Exits[ExitOther] = 5, 2, 1
	s.Kicks, s.Windows = 100, 100 // not synchronous exits
	if n := s.SyncExits(); n != 8 {
		t.Errorf("SyncExits = %d, want 8", n)
	}
	if !(Async{}).Empty() || (Async{Timer: true}).Empty() || (Async{Input: []byte{1}}).Empty() {
		t.Error("Async.Empty")
	}
}

func TestDescribeExit(t *testing.T) {
	for _, tc := range []struct {
		e    Exit
		want string
	}{
		{Exit{Kind: ExitIOOut, Port: 0x3f8}, "io-out port 0x3f8"},
		{Exit{Kind: ExitIOIn, Port: 0x61}, "io-in port 0x61"},
		{Exit{Kind: ExitMMIORead, Addr: 0xd0010000}, "mmio-read 0xd0010000"},
		{Exit{Kind: ExitMMIOWrite, Addr: 0xd0010008}, "mmio-write 0xd0010008"},
		{Exit{Kind: ExitHLT}, "hlt"},
		{Exit{Kind: ExitWRMSR, MSR: 0x10}, "wrmsr"},
	} {
		if got := describeExit(tc.e); got != tc.want {
			t.Errorf("describeExit(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
	v := &VM{lastExit: Exit{Kind: ExitIOIn, Port: 0x71}}
	if got := v.Machine().LastExit(); got != "io-in port 0x71" {
		t.Errorf("LastExit = %q", got)
	}
}

func TestTraceText(t *testing.T) {
	r := Regs{RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RSP: 7, RBP: 8, R8: 9, R9: 10, R10: 11, R11: 12, R12: 13, R13: 14, R14: 15, R15: 0xdeadbeef, RIP: 0x100010, RFLAGS: 0x202}
	got := traceText(Point{Exits: 42, Kind: AtExit}, "io-out port 0x3f8", r, "")
	want := "exit 42 io-out port 0x3f8 rip=0x100010 rflags=0x202 gprs=[1 2 3 4 5 6 7 8 9 a b c d e f deadbeef]\n"
	if got != want {
		t.Errorf("traceText:\n got %q\nwant %q", got, want)
	}
	got = traceText(Point{Exits: 42, Kind: Window}, "window", Regs{}, traceMemField(0xabc, nil))
	if !strings.HasPrefix(got, "exit 42+window window rip=0x0 rflags=0x0 gprs=[0 0") || !strings.HasSuffix(got, "] mem=00000abc\n") {
		t.Errorf("traceText with memory: %q", got)
	}
	if got := traceMemField(0, errors.New("boom")); got != " mem=boom" {
		t.Errorf("traceMemField error: %q", got)
	}
	if got := traceErrorText(Point{Exits: 1, Kind: Kicked}, "inject 0x20", errors.New("EBADF")); got != "exit 1+kicked inject 0x20: EBADF\n" {
		t.Errorf("traceErrorText: %q", got)
	}
}

// TestTraceLine runs traceLine on a VM without a vCPU: reading the
// registers fails, and the line says so.
func TestTraceLine(t *testing.T) {
	var b bytes.Buffer
	v := &VM{cpu: &kvmVCPU{fd: -1}, point: Point{Exits: 3, Kind: AtExit}}
	v.traceLine("hlt") // no ExitTrace: nothing happens
	v.cfg.ExitTrace = &b
	v.traceLine("hlt")
	if got := b.String(); !strings.HasPrefix(got, "exit 3 hlt: KVM_GET_REGS") || strings.Count(got, "\n") != 1 {
		t.Errorf("trace %q", got)
	}
}

func TestGPRsOrder(t *testing.T) {
	r := Regs{RAX: 1, RBX: 2, RCX: 3, RDX: 4, RSI: 5, RDI: 6, RSP: 7, RBP: 8, R8: 9, R9: 10, R10: 11, R11: 12, R12: 13, R13: 14, R14: 15, R15: 16}
	for i, x := range GPRs(r) {
		if x != uint64(i+1) {
			t.Fatalf("GPRs = %v", GPRs(r))
		}
	}
}

// pagingMemory builds 64 KiB of guest memory with a 4-level hierarchy:
// PML4 at frame 1 -> PDPT at frame 2 -> PD at frame 3 -> PTs at frames 4
// and 7 -> data at frame 5. It also has entries that the walk must skip: not
// present, 1 GiB and 2 MiB pages, frames beyond memory, and a loop back to
// the PML4.
func pagingMemory() ([]byte, Sregs) {
	mem := make([]byte, 16*pageSize)
	put := func(frame, index int, e uint64) {
		binary.LittleEndian.PutUint64(mem[frame*pageSize+8*index:], e)
	}
	put(1, 0, 2*pageSize|pteP|pteRW|pteAccessed)
	put(1, 1, 9*pageSize)                            // not present
	put(1, 2, 0x100000*pageSize|pteP)                // beyond memory
	put(1, 511, 1*pageSize|pteP)                     // the PML4 again (a recursive slot)
	put(2, 0, 3*pageSize|pteP|pteAccessed)           // PD
	put(2, 1, 10*pageSize|pteP|ptePS)                // 1 GiB page
	put(3, 0, 4*pageSize|pteP|pteDirty)              // PT
	put(3, 1, 11*pageSize|pteP|ptePS)                // 2 MiB page
	put(3, 2, 0xFFF0_0000_0000_0000|7*pageSize|pteP) // PT, with bits above the address mask
	put(4, 0, 5*pageSize|pteP|pteAccessed)           // data: PT entries are not followed
	put(5, 0, 12*pageSize|pteP|pteAccessed)          // data that looks like an entry
	sregs := Sregs{CR0: cr0PG, CR3: 1*pageSize | 0x18, EFER: eferLMA}
	return mem, sregs
}

func TestPageTableFrames(t *testing.T) {
	mem, sregs := pagingMemory()
	got := pageTableFrames(mem, sregs)
	want := map[uint32]bool{1: true, 2: true, 3: true, 4: true, 7: true}
	if len(got) != len(want) {
		t.Errorf("tables %v, want %v", got, want)
	}
	for pfn := range want {
		if !got[pfn] {
			t.Errorf("tables %v lack frame %d", got, pfn)
		}
	}
	for _, off := range []Sregs{{CR3: sregs.CR3, EFER: eferLMA}, {CR0: cr0PG, CR3: sregs.CR3}} {
		if got := pageTableFrames(mem, off); len(got) != 0 {
			t.Errorf("paging off (%+v): tables %v", off, got)
		}
	}
	// A CR3 beyond memory yields nothing, without reading outside it.
	if got := pageTableFrames(mem, Sregs{CR0: cr0PG, EFER: eferLMA, CR3: 16 * pageSize}); len(got) != 0 {
		t.Errorf("CR3 outside memory: tables %v", got)
	}
}

func TestMaskAD(t *testing.T) {
	page := make([]byte, pageSize)
	binary.LittleEndian.PutUint64(page[8:], 0x1234000|pteP|pteAccessed|pteDirty|ptePS)
	dst := make([]byte, pageSize)
	maskAD(dst, page)
	if got := binary.LittleEndian.Uint64(dst[8:]); got != 0x1234000|pteP|ptePS {
		t.Errorf("masked entry %#x", got)
	}
	if binary.LittleEndian.Uint64(page[8:])&pteAccessed == 0 {
		t.Error("maskAD changed its source")
	}
}

// TestMaskedHashesIgnoreTableADBits: the memory CRC and page hash do not
// see Accessed/Dirty bits in page tables, and see every other change.
func TestMaskedHashesIgnoreTableADBits(t *testing.T) {
	mem, sregs := pagingMemory()
	tables := pageTableFrames(mem, sregs)
	m := &Memory{buf: mem}
	pages := []uint32{1, 2, 3, 4, 5, 6, 7}
	crc0 := maskedCRC(mem, tables)
	h0, err := hashPages(m, tables, pages)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(off int, bit byte) {
		mem[off] ^= bit
	}
	for _, tc := range []struct {
		name    string
		off     int
		bit     byte
		changes bool
	}{
		{"accessed bit in the PML4", 1 * pageSize, pteAccessed, false},
		{"dirty bit in the PT", 4*pageSize + 8, pteDirty, false},
		{"writable bit in the PD", 3 * pageSize, pteRW, true},
		{"accessed-bit position in a data page", 5 * pageSize, pteAccessed, true},
		{"a byte of a data page", 6*pageSize + 100, 1, true},
	} {
		flip(tc.off, tc.bit)
		crc := maskedCRC(mem, tables)
		h, err := hashPages(m, tables, pages)
		if err != nil {
			t.Fatal(err)
		}
		if (crc != crc0) != tc.changes || (h != h0) != tc.changes {
			t.Errorf("%s: CRC changed %v, hash changed %v, want %v", tc.name, crc != crc0, h != h0, tc.changes)
		}
		flip(tc.off, tc.bit)
	}
	if crc := maskedCRC(mem, tables); crc != crc0 {
		t.Error("CRC not restored")
	}
	// The hash covers frame numbers too, and refuses frames outside memory.
	if h, _ := hashPages(m, tables, []uint32{7, 6, 5, 4, 3, 2, 1}); h == h0 {
		t.Error("page order does not change the hash")
	}
	if _, err := hashPages(m, tables, []uint32{1, 16}); err == nil {
		t.Error("frame beyond memory hashed")
	}
}

// TestFingerprintScheme pins Fingerprint's value for a fixed state: a log
// header names FingerprintScheme, so the computation must not drift.
func TestFingerprintScheme(t *testing.T) {
	mem, sregs := pagingMemory()
	regs := Regs{RAX: 1, R15: 2, RIP: 0x100000, RFLAGS: 0x2}
	sregs.CS.Selector, sregs.CS.Base, sregs.GS.Base, sregs.IDT.Base = 0x10, 0, 0xffff888000000000, 0x2000
	f := fingerprint(regs, sregs, mem)
	const golden = "03e095f55239825e5ef596087127a0883b861e2c8a6c74a539507bc40933ea22"
	if got := hex.EncodeToString(f[:]); got != golden {
		t.Errorf("fingerprint %s, want %s (FingerprintScheme %q changed?)", got, golden, FingerprintScheme)
	}
	for name, change := range map[string]func(){
		"a register":         func() { regs.RBX++ },
		"a segment selector": func() { sregs.FS.Selector++ },
		"CR4":                func() { sregs.CR4 ^= 1 << 5 },
		"a memory byte":      func() { mem[15*pageSize+4095] ^= 1 },
	} {
		change()
		if fingerprint(regs, sregs, mem) == f {
			t.Errorf("changing %s leaves the fingerprint", name)
		}
		f = fingerprint(regs, sregs, mem)
	}
}

func TestCodeAt(t *testing.T) {
	mem := make([]byte, 3*pageSize)
	for i := range mem {
		mem[i] = byte(i)
	}
	for _, tc := range []struct {
		gpa  uint64
		want int
	}{
		{0, 15},
		{pageSize + 100, 15},
		{pageSize - 15, 15},
		{pageSize - 4, 4},     // stops at the page's end
		{3*pageSize - 1, 1},   // and at memory's end
		{3 * pageSize, -1},    // outside memory
		{^uint64(0) - 3, -1},  // far outside
		{2*pageSize - 14, 14}, // one short of the page
	} {
		got := codeAt(mem, tc.gpa)
		if tc.want < 0 {
			if got != nil {
				t.Errorf("codeAt(%#x) = %x, want nil", tc.gpa, got)
			}
			continue
		}
		if len(got) != tc.want || !bytes.Equal(got, mem[tc.gpa:tc.gpa+uint64(tc.want)]) {
			t.Errorf("codeAt(%#x) = %x, want %d bytes", tc.gpa, got, tc.want)
		}
	}
	b := codeAt(mem, 0)
	b[0] = 0xEE
	if mem[0] == 0xEE {
		t.Error("codeAt aliases guest memory")
	}
}

func TestGuestErrorText(t *testing.T) {
	for _, tc := range []struct {
		e    GuestError
		want string
	}{
		{GuestError{What: "triple fault", RIP: 0x1000}, "guest triple fault at RIP 0x1000"},
		{GuestError{What: "emulation failure", RIP: 0x10, Bytes: []byte{0x0f, 0x0b}}, "guest emulation failure at RIP 0x10 (instruction bytes 0f 0b)"},
		{GuestError{What: "halt", RIP: 0x20, More: "no wakeup"}, "guest halt at RIP 0x20: no wakeup"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
	}
}

func TestVCPUStateRoundTrip(t *testing.T) {
	for _, xcrs := range []*kvm.XCRS{nil, {NrXRCS: 1, Registers: [16]kvm.XRC{{XRC: 0, Value: 7}}}} {
		s := VCPUState{
			Regs:     Regs{RAX: 1, RIP: 0x100000, RFLAGS: 0x202},
			Sregs:    Sregs{CR0: cr0PG, CR3: 0x1000, EFER: eferLMA},
			XSAVE:    []byte{1, 2, 3, 0, 5},
			xcrs:     xcrs,
			MSRIndex: []uint32{0x174, 0xc0000082},
			MSRValue: []uint64{0x10, 0xffffffff81000000},
		}
		s.events.SipiVector, s.events.TripleFault = 0x99, 1
		b, err := s.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got VCPUState
		if err := got.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, s)
		}
		// Every truncation and a trailing byte are refused, without a panic.
		for n := 0; n < len(b); n++ {
			if err := new(VCPUState).UnmarshalBinary(b[:n]); !errors.Is(err, errBadState) {
				t.Fatalf("%d of %d bytes: %v", n, len(b), err)
			}
		}
		if err := new(VCPUState).UnmarshalBinary(append(b, 0)); !errors.Is(err, errBadState) {
			t.Errorf("trailing byte: %v", err)
		}
	}
	bad := []byte{vcpuStateVersion + 1}
	if err := new(VCPUState).UnmarshalBinary(bad); !errors.Is(err, errBadState) {
		t.Errorf("version %d: %v", bad[0], err)
	}
}
