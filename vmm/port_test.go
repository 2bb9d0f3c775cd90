package vmm_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/tscpatch"
	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

// These tests reach the vCPU's state through the port: what the replay
// package's drivers read and write at landmarks, and the trapped rdtsc.

func TestNewWithVCPURefusesWhatCannotWork(t *testing.T) {
	mem, err := vmm.NewMemory(2 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	cfg := vmm.Config{Spec: vmm.Spec{MemoryBytes: 4 << 20}}
	for name, f := range map[string]func() (*vmm.VM, error){
		"no vCPU": func() (*vmm.VM, error) {
			return vmm.NewWithVCPU(vmm.Config{Spec: vmm.Spec{MemoryBytes: 2 << 20}}, nil, mem)
		},
		"memory size":    func() (*vmm.VM, error) { return vmm.NewWithVCPU(cfg, vmmtest.NewVCPU(nil), mem) },
		"invalid config": func() (*vmm.VM, error) { return vmm.NewWithVCPU(vmm.Config{}, vmmtest.NewVCPU(nil), mem) },
	} {
		if _, err := f(); !errors.Is(err, vmm.ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", name, err)
		}
	}
}

func TestCloseClosesTheVCPU(t *testing.T) {
	vm, cpu := vmmtest.New(t, vmm.Config{}, nil)
	vm.Close()
	vm.Kick() // after Close: a no-op, and no use of the closed vCPU
	if !cpu.Closed() || cpu.ImmediateExit() {
		t.Errorf("closed %v, immediate_exit %v", cpu.Closed(), cpu.ImmediateExit())
	}
}

// TestStateThroughThePort: loading a guest sets the registers, a captured
// state loads back and refreshes kvm_run, and the dirty log, page hashes
// and fingerprint see what the guest changed.
func TestStateThroughThePort(t *testing.T) {
	vm, cpu := vmmtest.New(t, vmm.Config{Options: vmm.Options{TrackDirty: true}}, nil)
	if err := vm.LoadBare([]byte{0xF4}); err != nil {
		t.Fatal(err)
	}
	if cpu.Registers.RIP != vmm.BareLoadAddr || cpu.Special.CR0&1 == 0 {
		t.Fatalf("LoadBare: RIP %#x CR0 %#x", cpu.Registers.RIP, cpu.Special.CR0)
	}
	st, err := vm.Machine().CaptureVCPUState()
	if err != nil {
		t.Fatal(err)
	}
	print0, err := vm.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	cpu.Registers.RAX = 99
	if print1, _ := vm.Fingerprint(); print1 == print0 {
		t.Error("fingerprint ignores a register")
	}
	if err := vm.Machine().ApplyVCPUState(st); err != nil {
		t.Fatal(err)
	}
	if print2, _ := vm.Fingerprint(); print2 != print0 || cpu.ImmediateExit() {
		t.Errorf("state not restored (fingerprint changed: %v), or immediate_exit left set", print2 != print0)
	}
	if got := fmt.Sprint(cpu.Calls()); got != "[apply complete]" {
		t.Errorf("ApplyVCPUState made %s, want the state loaded and kvm_run refreshed", got)
	}
	if user, err := vm.UserMode(); err != nil || user {
		t.Errorf("user mode %v, %v", user, err)
	}

	if _, err := vm.Machine().DirtyPages(); err != nil {
		t.Fatal(err)
	}
	h0, err := vmm.HashPages(vm, []uint32{5})
	if err != nil {
		t.Fatal(err)
	}
	vm.Memory().WriteAt([]byte{1}, 5*4096+7)
	cpu.MarkDirty(5, 70)
	if pages, err := vm.Machine().DirtyPages(); err != nil || fmt.Sprint(pages) != "[5 70]" {
		t.Errorf("dirty pages %v, %v", pages, err)
	}
	if pages, _ := vm.Machine().DirtyPages(); len(pages) != 0 {
		t.Errorf("dirty log not reset: %v", pages)
	}
	if h1, _ := vmm.HashPages(vm, []uint32{5}); h1 == h0 {
		t.Error("page hash ignores a write")
	}
	if print3, _ := vm.Fingerprint(); print3 == print0 {
		t.Error("fingerprint ignores memory")
	}
	if tables, err := vmm.PageTablePages(vm); err != nil || len(tables) == 0 {
		t.Errorf("LoadBare's page tables: %v, %v", tables, err)
	}

	boom := errors.New("boom")
	cpu.Fail = map[string]error{"apply": boom, "capture": boom, "dirty-log": boom, "sregs": boom, "set-sregs": boom}
	if err := vm.Machine().ApplyVCPUState(st); !errors.Is(err, boom) {
		t.Errorf("ApplyVCPUState: %v", err)
	}
	if _, err := vm.Machine().CaptureVCPUState(); !errors.Is(err, boom) {
		t.Errorf("CaptureVCPUState: %v", err)
	}
	if _, err := vm.Machine().DirtyPages(); !errors.Is(err, boom) {
		t.Errorf("DirtyPages: %v", err)
	}
	if _, err := vm.Fingerprint(); !errors.Is(err, boom) {
		t.Errorf("Fingerprint: %v", err)
	}
	if _, err := vmm.HashPages(vm, nil); !errors.Is(err, boom) {
		t.Errorf("HashPages: %v", err)
	}
	if err := vm.LoadBare([]byte{0xF4}); err == nil {
		t.Error("LoadBare with failing registers")
	}
}

// TestLoadLinuxSetsTheVCPU: LoadLinux places the kernel and points the
// vCPU's registers at it.
func TestLoadLinuxSetsTheVCPU(t *testing.T) {
	vm, cpu := vmmtest.New(t, vmm.Config{Spec: vmm.Spec{MemoryBytes: 64 << 20}}, nil)
	if err := vm.LoadLinux(vmm.LinuxSpec{Kernel: vmm.MinimalKernel(t), Cmdline: "console=ttyS0"}); err != nil {
		t.Fatal(err)
	}
	if cpu.Registers.RIP != 0x1000000 || !strings.HasPrefix(vm.Cmdline(), "console=ttyS0") {
		t.Errorf("RIP %#x, command line %q", cpu.Registers.RIP, vm.Cmdline())
	}
	if vm.MemoryBytes() != 64<<20 || vm.Machine().InterruptPending() {
		t.Errorf("memory %d, interrupt pending %v", vm.MemoryBytes(), vm.Machine().InterruptPending())
	}
	if err := vm.LoadLinux(vmm.LinuxSpec{Kernel: []byte("not an ELF")}); err == nil {
		t.Error("a kernel that is not one loaded")
	}
}

func TestDirtyPagesNeedsTrackDirty(t *testing.T) {
	vm, _ := vmmtest.New(t, vmm.Config{}, nil)
	if _, err := vm.Machine().DirtyPages(); err == nil || !strings.Contains(err.Error(), "TrackDirty") {
		t.Errorf("%v", err)
	}
}

// TestRunTrappedRDTSC: an OUT from a patched rdtscp site completes and
// loads the driver's TSC into EDX:EAX and 0 into ECX; an OUT to the
// reserved port from anywhere else is the guest's error.
func TestRunTrappedRDTSC(t *testing.T) {
	const site = 0x2000
	port := uint16(tscpatch.DefaultRDTSCPPort)
	table, err := tscpatch.NewSiteTable([]tscpatch.Site{{Kind: tscpatch.RDTSCP, VAddr: site, PAddr: site, Len: 3}}, tscpatch.DefaultRDTSCPort, tscpatch.DefaultRDTSCPPort)
	if err != nil {
		t.Fatal(err)
	}
	var after vmm.Regs
	d := &loopDriver{tsc: 0x11223344_55667788}
	vm, cpu := vmmtest.New(t, vmm.Config{Spec: vmm.Spec{TSCSites: table}, Options: vmm.Options{Driver: d}}, model(
		func(c *vmmtest.VCPU) vmmtest.Step {
			c.Registers.RIP = site + 2 // where the completed out leaves it
			c.Registers.RCX = 7
			return vmmtest.Out(port, 0)
		},
		func(c *vmmtest.VCPU) vmmtest.Step {
			after = c.Registers
			c.Registers.RIP = 0x3002
			return vmmtest.Out(port, 0)
		},
	))
	d.cpu = cpu
	_, err = run(t, vm)
	var g *vmm.GuestError
	if !errors.As(err, &g) || g.What != "write to the reserved rdtsc port" || g.RIP != 0x3000 {
		t.Errorf("out from no site: %v", err)
	}
	if after.RAX != 0x55667788 || after.RDX != 0x11223344 || after.RCX != 0 {
		t.Errorf("after the trap RAX %#x RDX %#x RCX %#x", after.RAX, after.RDX, after.RCX)
	}
	if got := between(cpu.Calls(), "run", "deliver exit 1"); fmt.Sprint(got) != "[complete]" {
		t.Errorf("trap: %q, want the out completed first", got)
	}
	if d.stopRes.Stats.TSCReads != 1 {
		t.Errorf("TSC reads %d", d.stopRes.Stats.TSCReads)
	}
}

// TestGuestModelSeesWhatTheVMMWrote: a Guest reads an IN's value at its
// next entry, as a guest does in its register.
func TestGuestModelSeesWhatTheVMMWrote(t *testing.T) {
	var got []byte
	d := &loopDriver{}
	vm, cpu, _ := loopVM(t, d, model(
		step(vmmtest.In(0x3FD, 1)), // COM1's line status
		func(c *vmmtest.VCPU) vmmtest.Step {
			got = append(got, c.Last().Data...)
			return vmmtest.Out(vmm.ExitPort, 3)
		},
	))
	res, err := run(t, vm)
	if err != nil || res.Status != 3 || cpu.Entries() != 2 {
		t.Fatalf("%v %v", res, err)
	}
	if len(got) != 1 || got[0]&0x60 != 0x60 {
		t.Errorf("the guest read %x, want an idle transmitter (0x60)", got)
	}
}
