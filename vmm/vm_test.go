package vmm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/internal/kvmtest"
	"github.com/ftkvm/ftkvm/vmm"
)

// requireKVM: see internal/kvmtest (skips, or fails under CI=true).
func requireKVM(t *testing.T) {
	t.Helper()
	kvmtest.Require(t)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type bareRun struct {
	res    vmm.Result
	err    error
	out    string
	vm     *vmm.VM
	symbol map[string]uint64
}

// runBare assembles and runs a bare guest. setup may attach devices.
func runBare(t *testing.T, name string, cfg vmm.Config, timeout time.Duration, setup func(*vmm.VM)) bareRun {
	t.Helper()
	requireKVM(t)
	img, err := bare.Build(name)
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = 16 << 20
	}
	cfg.Console = out
	vm, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if setup != nil {
		setup(vm)
	}
	if err := vm.LoadBare(img.Binary); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := vm.Run(ctx)
	return bareRun{res: res, err: err, out: out.String(), vm: vm, symbol: img.Symbols}
}

func wantExit(t *testing.T, r bareRun, status int) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("run failed: %v (console %q)", r.err, r.out)
	}
	if r.res.Reason != vmm.StopExitPort || r.res.Status != status {
		t.Fatalf("stopped by %v with status %d, want exit port status %d (console %q)", r.res.Reason, r.res.Status, status, r.out)
	}
}

func TestBareHelloPIOAndStringIO(t *testing.T) {
	r := runBare(t, "hello", vmm.Config{}, time.Minute, nil)
	wantExit(t, r, 42)
	if r.out != "hello from a bare guest\nstring I/O works\n" {
		t.Errorf("console %q", r.out)
	}
}

// TestPITTicksDuringLongLoop: a guest spinning in a loop without exits
// under a 100 Hz PIT gets its ticks (kicks take them in between exits);
// it spins until it has counted 5.
func TestPITTicksDuringLongLoop(t *testing.T) {
	r := runBare(t, "pit_ticks", vmm.Config{}, 5*time.Minute, nil)
	wantExit(t, r, 0)
	m := regexp.MustCompile(`loops=\d+ ticks=(\d+) spurious=(\d+)`).FindStringSubmatch(r.out)
	if m == nil {
		t.Fatalf("console %q", r.out)
	}
	ticks, _ := strconv.ParseUint(m[1], 10, 64)
	spurious, _ := strconv.ParseUint(m[2], 10, 64)
	t.Logf("%d ticks, %d spurious in %v (%d exits)", ticks, spurious, r.res.Duration, r.res.Stats.SyncExits())
	if ticks < 5 {
		t.Fatalf("the guest stopped after %d ticks, before the 5 it waits for", ticks)
	}
	// Every injected interrupt is one the guest counted, and the PIT cannot
	// tick faster than 100 Hz of host time (missed ticks coalesce).
	if ticks+spurious != r.res.Stats.Interrupts {
		t.Errorf("guest counted %d+%d interrupts, VMM injected %d", ticks, spurious, r.res.Stats.Interrupts)
	}
	if limit := uint64(r.res.Duration/(10*time.Millisecond)) + 2; ticks > limit {
		t.Errorf("%d ticks in %v: faster than 100 Hz", ticks, r.res.Duration)
	}
}

func TestUARTInterruptDrivenInput(t *testing.T) {
	r := runBare(t, "uart_irq", vmm.Config{Options: vmm.Options{ConsoleInput: strings.NewReader("ftkvm ok\n")}}, time.Minute, nil)
	wantExit(t, r, 9)
	if r.out != "FTKVM OK\n" {
		t.Errorf("echo %q", r.out)
	}
	if r.res.Stats.Exits[vmm.ExitHLT] == 0 || r.res.Stats.Interrupts == 0 {
		t.Errorf("expected the guest to halt and be woken by IRQ4: %+v", r.res.Stats)
	}
}

// mmioTestDevice answers a read at offset 8 with the complement of what
// was written at offset 0, and records every write.
type mmioTestDevice struct {
	last   uint32
	writes map[uint64][]byte
}

func (d *mmioTestDevice) Read(off uint64, p []byte) {
	clear(p)
	if off == 8 && len(p) == 4 {
		v := ^d.last
		p[0], p[1], p[2], p[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
}

func (d *mmioTestDevice) Write(off uint64, p []byte) {
	d.writes[off] = append([]byte(nil), p...)
	if off == 0 && len(p) == 4 {
		d.last = uint32(p[0]) | uint32(p[1])<<8 | uint32(p[2])<<16 | uint32(p[3])<<24
	}
}

func TestMMIODevice(t *testing.T) {
	dev := &mmioTestDevice{writes: map[uint64][]byte{}}
	r := runBare(t, "mmio", vmm.Config{}, time.Minute, func(vm *vmm.VM) {
		if err := vm.MMIO.Register("test", vmm.MMIOBase, 0x1000, dev); err != nil {
			t.Fatal(err)
		}
	})
	wantExit(t, r, 0)
	if dev.last != 0x12345678 {
		t.Errorf("device saw %#x", dev.last)
	}
	if w := dev.writes[16]; !bytes.Equal(w, []byte{0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11}) {
		t.Errorf("8-byte write at 16: %x", w)
	}
}

func TestInt3ReachesGuestHandler(t *testing.T) {
	r := runBare(t, "int3", vmm.Config{}, time.Minute, nil)
	wantExit(t, r, 3)
}

func TestLongLoopWithoutExits(t *testing.T) {
	r := runBare(t, "loop", vmm.Config{}, 5*time.Minute, nil)
	wantExit(t, r, 7)
}

func TestHostileDeviceAccessesAreSurvived(t *testing.T) {
	r := runBare(t, "hostile", vmm.Config{}, 5*time.Minute, nil)
	wantExit(t, r, 0)
}

func TestPowerOffIsHaltWithInterruptsDisabled(t *testing.T) {
	r := runBare(t, "poweroff", vmm.Config{}, time.Minute, nil)
	if r.err != nil || r.res.Reason != vmm.StopPowerOff {
		t.Fatalf("res %+v err %v", r.res, r.err)
	}
	if r.out != "powering off\n" {
		t.Errorf("console %q", r.out)
	}
}

func guestError(t *testing.T, r bareRun, what string) *vmm.GuestError {
	t.Helper()
	var ge *vmm.GuestError
	if !errors.As(r.err, &ge) {
		t.Fatalf("err = %v (result %+v), want a GuestError (%s)", r.err, r.res, what)
	}
	if ge.What != what {
		t.Fatalf("GuestError %q, want %q: %v", ge.What, what, ge)
	}
	return ge
}

func TestTripleFaultIsAClearError(t *testing.T) {
	r := runBare(t, "triple_fault", vmm.Config{}, time.Minute, nil)
	ge := guestError(t, r, "triple fault")
	t.Log(ge)
}

func TestWriteOutsideMemoryIsAClearError(t *testing.T) {
	r := runBare(t, "badmem", vmm.Config{}, time.Minute, nil)
	ge := guestError(t, r, "unmapped MMIO write")
	// KVM completes an MMIO store before exiting: RIP is past the 11-byte movl.
	if want := uint64(vmm.BareLoadAddr + 11); !strings.Contains(ge.Error(), "0x30000000") || ge.RIP != want {
		t.Errorf("error %q should name the address and RIP %#x", ge, want)
	}
}

func TestUnsupportedInstructionIsAClearError(t *testing.T) {
	r := runBare(t, "cx16", vmm.Config{}, time.Minute, nil)
	if r.err == nil {
		// A KVM that runs guest code natively (every standard one: VMX or
		// SVM) executes cmpxchg16b and the guest runs to its end; only an
		// emulating KVM (kvm_pvm) fails, and must say so clearly.
		wantExit(t, r, 0)
		return
	}
	ge := guestError(t, r, "emulation failure")
	if ge.RIP != r.symbol["cx16_insn"] || !bytes.HasPrefix(ge.Bytes, []byte{0x48, 0x0f, 0xc7, 0x0f}) {
		t.Errorf("error %v: want RIP %#x and bytes 48 0f c7 0f", ge, r.symbol["cx16_insn"])
	}
	if !strings.Contains(ge.Error(), "48 0f c7 0f") {
		t.Errorf("message %q lacks the instruction bytes", ge)
	}
}

func TestHaltWithNothingToWakeIsAClearError(t *testing.T) {
	r := runBare(t, "halt_forever", vmm.Config{}, time.Minute, nil)
	ge := guestError(t, r, "halt")
	if !strings.Contains(ge.Error(), "wait forever") {
		t.Error(ge)
	}
}

// TestCancelStopsARunningGuest: a guest spinning forever without exits
// stops when the run's context is cancelled (a kick ends KVM_RUN).
func TestCancelStopsARunningGuest(t *testing.T) {
	start := time.Now()
	r := runBare(t, "spin_forever", vmm.Config{}, 200*time.Millisecond, nil)
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", r.err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("cancellation took %v", d)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, mem := range []uint64{0, 1 << 20, 3<<30 + 4096, 5<<20 + 1} {
		if _, err := vmm.New(vmm.Config{Spec: vmm.Spec{MemoryBytes: mem}}); err == nil {
			t.Errorf("memory %d accepted", mem)
		}
	}
}

// TestGuestSeesCPUIDTable runs a guest that prints CPUID and compares it
// with the table. Leaves 1 and 7 feature bits are only logged: kvm_pvm
// shows the guest the host's bits there whatever the table says (which is
// why Linux guests get clearcpuid=).
func TestGuestSeesCPUIDTable(t *testing.T) {
	r := runBare(t, "cpuid", vmm.Config{}, time.Minute, nil)
	wantExit(t, r, 0)
	table := r.vm.CPUID()
	seen := map[[2]uint32][4]uint32{}
	for _, line := range strings.Split(strings.TrimSpace(r.out), "\n") {
		var fn, idx uint32
		var v [4]uint32
		if _, err := fmt.Sscanf(line, "%x.%x %x %x %x %x", &fn, &idx, &v[0], &v[1], &v[2], &v[3]); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		seen[[2]uint32{fn, idx}] = v
	}
	check := func(fn uint32, reg int, mask uint32) {
		t.Helper()
		e, _ := table.Lookup(fn, 0)
		want := [4]uint32{e.Eax, e.Ebx, e.Ecx, e.Edx}[reg] & mask
		if got := seen[[2]uint32{fn, 0}][reg] & mask; got != want {
			t.Errorf("leaf %#x reg %d: guest sees %#x, table says %#x", fn, reg, got, want)
		}
	}
	check(0, 0, ^uint32(0))          // max basic leaf
	check(0, 1, ^uint32(0))          // vendor
	check(1, 0, ^uint32(0))          // family/model/stepping
	check(0x80000000, 0, ^uint32(0)) // max extended leaf
	check(0x80000001, 3, ^uint32(0)) // SYSCALL, NX, LM only: no RDTSCP
	for _, fn := range []uint32{1, 7} {
		e, _ := table.Lookup(fn, 0)
		got := seen[[2]uint32{fn, 0}]
		if leaked := [3]uint32{got[1] &^ e.Ebx, got[2] &^ e.Ecx, got[3] &^ e.Edx}; leaked != [3]uint32{} {
			t.Logf("leaf %#x: host feature bits the table hides but the guest sees (EBX, ECX, EDX): %#x", fn, leaked)
		}
	}
}

// TestTimeMSRsAreTrapped: a guest's rdmsr of IA32_TSC or kvmclock never
// reads the host's time. Where KVM hands filtered MSR accesses to the VMM
// they read the driver's TSC (1000 reads, none faulting, the write
// faulting); on kvm_pvm, which turns a filtered access into #GP instead,
// every access faults. Both are deterministic; a read of the host TSC
// (no fault on reads) is the failure.
func TestTimeMSRsAreTrapped(t *testing.T) {
	r := runBare(t, "msr_tsc", vmm.Config{}, time.Minute, nil)
	wantExit(t, r, 0)
	trapped := strings.Contains(r.out, " faults=1\n") && r.res.Stats.TSCReads == 1000
	denied := strings.Contains(r.out, "msr_tsc: sum=0 faults=1002\n") && r.res.Stats.TSCReads == 0
	if !trapped && !denied {
		t.Fatalf("time MSRs neither answered by the VMM nor denied: console %q, %d TSC reads through the driver", r.out, r.res.Stats.TSCReads)
	}
	t.Logf("console %q: handed to the VMM %v, denied with #GP %v", r.out, trapped, denied)
}
