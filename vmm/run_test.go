package vmm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

// These tests run the real VM.Run on vmmtest's vCPU: the guest is a
// script of exits or a small model, and the driver below writes every call
// the loop makes on it into the vCPU's call log, so that the order of
// driver and vCPU calls can be checked as one sequence.

// loopDriver is a Driver whose answers a test sets and whose calls go to
// the vCPU's log.
type loopDriver struct {
	cpu *vmmtest.VCPU
	// deliver runs at each point (nil: nothing to deliver); its bool is
	// Deliver's: whether p is a delivery point.
	deliver func(vm *vmm.VM, p vmm.Point) (bool, error)
	// halted runs when the guest waits (nil: ErrNoWakeup).
	halted  func(ctx context.Context, vm *vmm.VM, p vmm.Point) error
	next    func(p vmm.Point) vmm.EntryMode
	windows bool
	tsc     uint64

	startErr, injectErr, stopErr error

	vm       *vmm.VM
	injected []string // "vector at point"
	stopErr2 error    // the error Stop was given
	stopRes  vmm.Result
}

func (d *loopDriver) note(format string, args ...any) {
	if d.cpu != nil {
		d.cpu.Note(fmt.Sprintf(format, args...))
	}
}

func (d *loopDriver) Start(m vmm.Machine) error {
	d.note("start")
	d.vm = vmm.MachineVM(m)
	return d.startErr
}

func (d *loopDriver) Deliver(m vmm.Machine, p vmm.Point) (bool, error) {
	d.note("deliver %v", p)
	if d.deliver == nil {
		return false, nil
	}
	return d.deliver(d.vm, p)
}

func (d *loopDriver) Windows() bool { return d.windows }

func (d *loopDriver) Halted(ctx context.Context, m vmm.Machine, p vmm.Point) error {
	d.note("halted %v", p)
	if d.halted == nil {
		return vmm.ErrNoWakeup
	}
	return d.halted(ctx, d.vm, p)
}

func (d *loopDriver) Injected(m vmm.Machine, p vmm.Point, vector uint8) error {
	d.note("injected %#x at %v", vector, p)
	d.injected = append(d.injected, fmt.Sprintf("%#x at %v", vector, p))
	return d.injectErr
}

func (d *loopDriver) NextEntry() vmm.EntryMode {
	d.note("entry")
	if d.next == nil {
		return vmm.EntryRun
	}
	return d.next(d.vm.Point())
}

func (d *loopDriver) TSC(vmm.Machine, vmm.Point) (uint64, error) { return d.tsc, nil }

func (d *loopDriver) Read(vmm.Machine, vmm.Point, bool, uint64, []byte) error { return nil }

func (d *loopDriver) Stop(m vmm.Machine, p vmm.Point, res vmm.Result, err error) error {
	d.note("stop %v", p)
	d.stopRes, d.stopErr2 = res, err
	return d.stopErr
}

// loopVM is a VM on a vCPU playing g, driven by d, with its console in
// the returned buffer.
func loopVM(t *testing.T, d *loopDriver, g vmmtest.Guest) (*vmm.VM, *vmmtest.VCPU, *bytes.Buffer) {
	t.Helper()
	console := &bytes.Buffer{}
	vm, cpu := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: d, Console: console}}, g)
	d.cpu = cpu
	initPIC(vm)
	return vm, cpu, console
}

// initPIC programs the master PIC as Linux does (vectors from 0x20), so
// that IRQ 0 is vector 0x20.
func initPIC(vm *vmm.VM) {
	pic := vm.PIC.Master()
	for _, w := range []struct {
		off uint64
		b   byte
	}{{0, 0x11}, {1, 0x20}, {1, 0x04}, {1, 0x01}} {
		pic.Write(w.off, []byte{w.b})
	}
}

// run runs vm with a deadline, so that a loop that never ends fails the
// test instead of hanging it.
func run(t *testing.T, vm *vmm.VM) (vmm.Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return vm.Run(ctx)
}

// model is a guest whose entries are functions, in order.
func model(entries ...func(c *vmmtest.VCPU) vmmtest.Step) vmmtest.Guest {
	i := 0
	return func(c *vmmtest.VCPU) vmmtest.Step {
		if i == len(entries) {
			return vmmtest.Failed(vmmtest.ErrScriptEnded)
		}
		i++
		return entries[i-1](c)
	}
}

func step(s vmmtest.Step) func(*vmmtest.VCPU) vmmtest.Step {
	return func(*vmmtest.VCPU) vmmtest.Step { return s }
}

// setIF sets or clears the guest's interrupt flag, then ends the entry
// with s.
func setIF(on bool, s vmmtest.Step) func(*vmmtest.VCPU) vmmtest.Step {
	return func(c *vmmtest.VCPU) vmmtest.Step {
		c.Registers.RFLAGS &^= vmm.RFlagsIF
		if on {
			c.Registers.RFLAGS |= vmm.RFlagsIF
		}
		return s
	}
}

// raiseAt makes the driver raise IRQ 0 at point p.
func raiseAt(p vmm.Point, delivery func(vmm.Point) bool) func(*vmm.VM, vmm.Point) (bool, error) {
	return func(vm *vmm.VM, at vmm.Point) (bool, error) {
		if at == p {
			vm.PIC.SetIRQ(0, true)
			vm.PIC.SetIRQ(0, false)
		}
		return delivery != nil && delivery(at), nil
	}
}

func at(exits uint64) vmm.Point { return vmm.Point{Exits: exits, Kind: vmm.AtExit} }
func kicked(exits uint64) vmm.Point {
	return vmm.Point{Exits: exits, Kind: vmm.Kicked}
}

// between returns the calls logged after the first from and before the
// first to that follows it.
func between(calls []string, from, to string) []string {
	for i, c := range calls {
		if c != from {
			continue
		}
		for j := i + 1; j < len(calls); j++ {
			if calls[j] == to {
				return calls[i+1 : j]
			}
		}
	}
	return nil
}

func TestRunPlaysExits(t *testing.T) {
	d := &loopDriver{}
	dev := &mmioRegs{}
	lsr := vmmtest.In(0x3FD, 1)
	read := vmmtest.MMIORead(vmm.MMIOBase+4, 4)
	vm, cpu, console := loopVM(t, d, vmmtest.Script(
		vmmtest.Out(0x3F8, 'o'),
		vmmtest.Out(0x3F8, 'k'),
		lsr,
		vmmtest.MMIOWrite(vmm.MMIOBase+4, 1, 2, 3, 4),
		read,
		vmmtest.Intr(),
		vmmtest.Out(vmm.ExitPort, 7),
	))
	if err := vm.MMIO.Register("regs", vmm.MMIOBase, 16, dev); err != nil {
		t.Fatal(err)
	}
	res, err := run(t, vm)
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != vmm.StopExitPort || res.Status != 7 {
		t.Errorf("result %v status %d, want exit port status 7", res.Reason, res.Status)
	}
	if console.String() != "ok" {
		t.Errorf("console %q", console.String())
	}
	if lsr.Exit.Data[0]&0x20 == 0 {
		t.Errorf("line status %#x: the IN's data was not filled", lsr.Exit.Data[0])
	}
	if !bytes.Equal(read.Exit.Data, []byte{1, 2, 3, 4}) {
		t.Errorf("MMIO read %v, want what was written", read.Exit.Data)
	}
	s := res.Stats
	if s.SyncExits() != 7 || s.Exits[vmm.ExitIOOut] != 3 || s.Exits[vmm.ExitIOIn] != 1 || s.Exits[vmm.ExitMMIOWrite] != 1 || s.Exits[vmm.ExitIntr] != 1 || s.Kicks != 0 {
		t.Errorf("stats %+v", s)
	}
	if vm.Exits() != 7 || vm.Point() != at(7) || cpu.Entries() != 7 {
		t.Errorf("exits %d point %v entries %d, want 7", vm.Exits(), vm.Point(), cpu.Entries())
	}
	if d.stopErr2 != nil || d.stopRes.Reason != vmm.StopExitPort || !strings.Contains(vm.Machine().LastExit(), "io-out") {
		t.Errorf("Stop saw %v %v; last exit %q", d.stopRes.Reason, d.stopErr2, vm.Machine().LastExit())
	}
}

// mmioRegs is 16 bytes of device registers.
type mmioRegs struct{ b [16]byte }

func (r *mmioRegs) Read(off uint64, p []byte)  { copy(p, r.b[off:]) }
func (r *mmioRegs) Write(off uint64, p []byte) { copy(r.b[off:], p) }

// TestRunCallOrder: Start first; at every point Deliver, then the
// injection, then the driver hears of it (Injected), then NextEntry, then
// the entry; Stop last.
func TestRunCallOrder(t *testing.T) {
	d := &loopDriver{deliver: raiseAt(at(2), nil)}
	vm, cpu, _ := loopVM(t, d, model(
		setIF(true, vmmtest.Out(0x200, 0)),
		step(vmmtest.Kicked()),
		step(vmmtest.Out(0x200, 0)),
		step(vmmtest.Window()),
		step(vmmtest.Out(vmm.ExitPort, 0)),
	))
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"start",
		"deliver exit 0", "entry", "run",
		"deliver exit 1", "entry", "run",
		"deliver exit 1+kicked", "entry", "run",
		"deliver exit 2", "interrupt 0x20", "injected 0x20 at exit 2", "entry", "run",
		"deliver exit 2+window", "entry", "run",
		"stop exit 3",
	}
	if got := cpu.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("calls\n%q\nwant\n%q", got, want)
	}
}

// TestRunInjectsOnlyWhenTheGuestCanTakeIt: a pending interrupt waits while
// IF is clear or the guest is in an interrupt shadow (and the VM asks for
// a window), is not injected at a point between exits the driver did not
// call a delivery point, and goes in at the first point that allows it.
func TestRunInjectsOnlyWhenTheGuestCanTakeIt(t *testing.T) {
	d := &loopDriver{windows: true, deliver: raiseAt(at(1), func(p vmm.Point) bool { return p.Kind == vmm.Kicked })}
	vm, cpu, _ := loopVM(t, d, model(
		setIF(false, vmmtest.Out(0x200, 0)), // exit 1: IF clear
		func(c *vmmtest.VCPU) vmmtest.Step { // exit 2: IF set, but in the shadow of sti
			c.Registers.RFLAGS |= vmm.RFlagsIF
			c.Blocked = true
			return vmmtest.Out(0x200, 0)
		},
		func(c *vmmtest.VCPU) vmmtest.Step { // the window opens; not a delivery point
			c.Blocked = false
			return vmmtest.Window()
		},
		step(vmmtest.Kicked()), // a delivery point: in it goes
		step(vmmtest.Out(vmm.ExitPort, 0)),
	))
	res, err := run(t, vm)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"0x20 at exit 2+kicked"}; fmt.Sprint(d.injected) != fmt.Sprint(want) || fmt.Sprint(cpu.Injected()) != "[32]" {
		t.Errorf("injected %q (vCPU %v), want %q", d.injected, cpu.Injected(), want)
	}
	if res.Stats.Interrupts != 1 || res.Stats.Windows != 1 || res.Stats.Kicks != 1 {
		t.Errorf("stats %+v", res.Stats)
	}
	calls := cpu.Calls()
	if w := between(calls, "deliver exit 1", "run"); fmt.Sprint(w) != "[window on entry]" {
		t.Errorf("at exit 1 (IF clear): %q, want a window request", w)
	}
	if got := between(calls, "interrupt 0x20", "run"); fmt.Sprint(got) != "[window off injected 0x20 at exit 2+kicked entry]" {
		t.Errorf("after the injection: %q, want the window request withdrawn", got)
	}
	if cpu.Window() {
		t.Error("window still requested with nothing pending")
	}
}

// TestRunChecksIFAndReadiness: the VM injects only if kvm_run reports
// both IF and readiness, each on its own.
func TestRunChecksIFAndReadiness(t *testing.T) {
	for _, st := range [][2]bool{{false, true}, {true, false}, {true, true}} {
		d := &loopDriver{deliver: raiseAt(at(0), nil)}
		vm, cpu, _ := loopVM(t, d, vmmtest.Script(vmmtest.Out(vmm.ExitPort, 0)))
		cpu.Interruptibility = func(*vmmtest.VCPU) (bool, bool) { return st[0], st[1] }
		if _, err := run(t, vm); err != nil {
			t.Fatal(err)
		}
		if got, want := len(cpu.Injected()), map[bool]int{true: 1}[st[0] && st[1]]; got != want {
			t.Errorf("IF %v ready %v: %d injected, want %d", st[0], st[1], got, want)
		}
	}
}

// TestRunAsksForNoWindowIfTheDriverSaysNo: a replayer injects only where
// its log says; the VM then never asks for window exits.
func TestRunAsksForNoWindowIfTheDriverSaysNo(t *testing.T) {
	d := &loopDriver{windows: false, deliver: raiseAt(at(1), nil)}
	vm, cpu, _ := loopVM(t, d, vmmtest.Script(vmmtest.Out(0x200, 0), vmmtest.Out(0x200, 0), vmmtest.Out(vmm.ExitPort, 0)))
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	for _, c := range cpu.Calls() {
		if c == "window on" || strings.HasPrefix(c, "interrupt") {
			t.Fatalf("%q with IF clear and Windows() false", c)
		}
	}
}

// TestRunNeverInjectsAtAnExitThatFaults: after a WRMSR the VM refused
// (#GP at the next entry) the pending interrupt waits, through kicks, for
// the next synchronous exit; an RDMSR, which completes normally, takes it
// at once.
func TestRunNeverInjectsAtAnExitThatFaults(t *testing.T) {
	var gp byte
	d := &loopDriver{deliver: raiseAt(at(1), func(p vmm.Point) bool { return p.Kind == vmm.Kicked })}
	vm, _, _ := loopVM(t, d, model(
		setIF(true, vmmtest.WRMSR(0x10, 5)),
		func(c *vmmtest.VCPU) vmmtest.Step {
			gp = c.Last().MSRError[0]
			return vmmtest.Kicked()
		},
		step(vmmtest.Out(0x200, 0)),
		step(vmmtest.Out(vmm.ExitPort, 0)),
	))
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	if gp != 1 {
		t.Errorf("WRMSR completed with error byte %d, want 1 (#GP)", gp)
	}
	if fmt.Sprint(d.injected) != "[0x20 at exit 2]" {
		t.Errorf("injected %q, want only at exit 2", d.injected)
	}

	rd := vmmtest.RDMSR(0x10)
	d = &loopDriver{tsc: 0x1234, deliver: raiseAt(at(1), nil)}
	vm, _, _ = loopVM(t, d, model(setIF(true, rd), step(vmmtest.Out(vmm.ExitPort, 0))))
	res, err := run(t, vm)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.injected) != "[0x20 at exit 1]" || rd.Exit.MSRData[0] != 0x34 || rd.Exit.MSRError[0] != 0 || res.Stats.TSCReads != 1 {
		t.Errorf("RDMSR: injected %q, data % x error %d", d.injected, rd.Exit.MSRData, rd.Exit.MSRError[0])
	}
}

// TestRunOffersInputOnlyAtExits: console input the UART had no room for
// is offered again at synchronous exits, never between them.
func TestRunOffersInputOnlyAtExits(t *testing.T) {
	var backlog []string
	d := &loopDriver{}
	d.deliver = func(vm *vmm.VM, p vmm.Point) (bool, error) {
		if p == at(0) {
			vm.Machine().DeliverAsync(vmm.Async{Input: bytes.Repeat([]byte{'x'}, devices.UARTInputLimit+2)})
		}
		if p.Kind == vmm.Kicked {
			var b [1]byte
			vm.UART.Read(0, b[:]) // make room
		}
		backlog = append(backlog, fmt.Sprintf("%v:%d", p, vmm.InputBacklog(vm)))
		return false, nil
	}
	vm, _, _ := loopVM(t, d, vmmtest.Script(vmmtest.Kicked(), vmmtest.Kicked(), vmmtest.Out(0x200, 0), vmmtest.Out(vmm.ExitPort, 0)))
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	want := "[exit 0:2 exit 0+kicked:2 exit 0+kicked:2 exit 1:0]"
	if fmt.Sprint(backlog) != want {
		t.Errorf("backlog at each point %v, want %v", backlog, want)
	}
}

// TestRunKick: a kick sets immediate_exit; the next entry runs no guest
// code and comes back as a Kicked point, after which the guest runs
// again.
func TestRunKick(t *testing.T) {
	d := &loopDriver{}
	var vm *vmm.VM
	var cpu *vmmtest.VCPU
	vm, cpu, _ = loopVM(t, d, model(
		func(c *vmmtest.VCPU) vmmtest.Step {
			done := make(chan struct{})
			go func() { vm.Kick(); close(done) }() // a kick from another goroutine, while the guest runs
			<-done
			return vmmtest.Out(0x200, 0)
		},
		step(vmmtest.Out(vmm.ExitPort, 0)),
	))
	res, err := run(t, vm)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Kicks != 1 || res.Stats.SyncExits() != 2 || cpu.Entries() != 2 {
		t.Errorf("kicks %d exits %d entries %d, want 1 2 2", res.Stats.Kicks, res.Stats.SyncExits(), cpu.Entries())
	}
	if got := between(cpu.Calls(), "deliver exit 1", "stop exit 2"); fmt.Sprint(got) != "[entry complete deliver exit 1+kicked entry run]" {
		t.Errorf("after the kick: %q", got)
	}
	if cpu.ImmediateExit() {
		t.Error("immediate_exit left set")
	}
}

// TestRunEntryComplete: NextEntry EntryComplete enters with immediate_exit
// (no guest instruction) and reaches a Kicked point.
func TestRunEntryComplete(t *testing.T) {
	d := &loopDriver{next: func(p vmm.Point) vmm.EntryMode {
		if p == at(1) {
			return vmm.EntryComplete
		}
		return vmm.EntryRun
	}}
	vm, cpu, _ := loopVM(t, d, vmmtest.Script(vmmtest.Out(0x200, 0), vmmtest.Out(vmm.ExitPort, 0)))
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	if got := between(cpu.Calls(), "deliver exit 1", "stop exit 2"); fmt.Sprint(got) != "[entry complete deliver exit 1+kicked entry run]" {
		t.Errorf("after exit 1: %q", got)
	}
	if cpu.ImmediateExit() || cpu.Entries() != 2 {
		t.Errorf("immediate_exit %v, entries %d", cpu.ImmediateExit(), cpu.Entries())
	}
}

// TestRunRetriesEAGAIN: an entry that did not run leaves the point where
// it was.
func TestRunRetriesEAGAIN(t *testing.T) {
	d := &loopDriver{}
	vm, cpu, _ := loopVM(t, d, vmmtest.Script(vmmtest.Retry(), vmmtest.Out(vmm.ExitPort, 0)))
	res, err := run(t, vm)
	if err != nil {
		t.Fatal(err)
	}
	want := "[start deliver exit 0 entry run deliver exit 0 entry run stop exit 1]"
	if got := fmt.Sprint(cpu.Calls()); got != want || res.Stats.Kicks != 0 {
		t.Errorf("calls %s, want %s (kicks %d)", got, want, res.Stats.Kicks)
	}
}

// TestRunHalt: HLT with IF clear powers off; with IF set the VM waits in
// the driver, delivering at the HLT's exit, until an interrupt is
// pending, and injects it there.
func TestRunHalt(t *testing.T) {
	d := &loopDriver{}
	vm, _, _ := loopVM(t, d, vmmtest.Script(vmmtest.HLT()))
	if res, err := run(t, vm); err != nil || res.Reason != vmm.StopPowerOff {
		t.Fatalf("HLT with IF clear: %v, %v", res.Reason, err)
	}

	d = &loopDriver{}
	waits := 0
	d.halted = func(_ context.Context, vm *vmm.VM, p vmm.Point) error {
		if waits > 5 {
			return errors.New("still halted with an interrupt pending")
		}
		if waits++; waits == 2 {
			vm.PIC.SetIRQ(0, true)
			vm.PIC.SetIRQ(0, false)
		}
		return nil
	}
	vm, cpu, _ := loopVM(t, d, model(setIF(true, vmmtest.HLT()), step(vmmtest.Out(vmm.ExitPort, 0))))
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	want := "[deliver exit 1 halted exit 1 deliver exit 1 halted exit 1 deliver exit 1 deliver exit 1 interrupt 0x20 injected 0x20 at exit 1 entry]"
	if got := between(cpu.Calls(), "run", "run"); fmt.Sprint(got) != want {
		t.Errorf("halt\n%q\nwant\n%s", got, want)
	}

	d = &loopDriver{} // Halted: ErrNoWakeup
	vm, _, _ = loopVM(t, d, model(setIF(true, vmmtest.HLT())))
	var g *vmm.GuestError
	if _, err := run(t, vm); !errors.As(err, &g) || g.What != "halt" {
		t.Errorf("halt with no wake-up: %v", err)
	}
}

// TestRunCancel: cancelling the context ends the run, whether the guest
// runs or waits in HLT; Stop sees the error.
func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := &loopDriver{}
	vm, cpu, _ := loopVM(t, d, model(
		step(vmmtest.Out(0x200, 0)),
		func(*vmmtest.VCPU) vmmtest.Step {
			cancel()
			return vmmtest.Kicked() // the kick cancellation sends
		},
		step(vmmtest.Out(0x200, 0)),
	))
	_, err := vm.Run(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "at 1 exits") || !errors.Is(d.stopErr2, context.Canceled) {
		t.Errorf("cancelled run: %v (Stop saw %v)", err, d.stopErr2)
	}
	if cpu.Entries() != 2 {
		t.Errorf("%d entries after the cancellation, want none", cpu.Entries()-2)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	d = &loopDriver{halted: func(ctx context.Context, _ *vmm.VM, _ vmm.Point) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}}
	vm, _, _ = loopVM(t, d, model(setIF(true, vmmtest.HLT())))
	if _, err := vm.Run(ctx); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "while the guest was halted") {
		t.Errorf("cancelled while halted: %v", err)
	}
}

// TestRunStallWarning: with the host's time moving 20 s per entry, a run
// of kicks warns once per stall, and a synchronous exit ends the stall.
func TestRunStallWarning(t *testing.T) {
	now := time.Unix(1000, 0)
	var warnings []string
	d := &loopDriver{}
	tick := func(s vmmtest.Step) func(*vmmtest.VCPU) vmmtest.Step {
		return func(*vmmtest.VCPU) vmmtest.Step {
			now = now.Add(20 * time.Second)
			return s
		}
	}
	console := &bytes.Buffer{}
	vm, cpu := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: d, Console: console, Warn: func(m string) { warnings = append(warnings, m) }, HostTime: func() time.Time { return now }}}, model(
		tick(vmmtest.Kicked()), tick(vmmtest.Kicked()), tick(vmmtest.Window()),
		tick(vmmtest.Out(0x200, 0)),
		tick(vmmtest.Kicked()), tick(vmmtest.Kicked()),
		step(vmmtest.Out(vmm.ExitPort, 0)),
	))
	d.cpu = cpu
	cpu.Registers.RIP = 0x1234
	res, err := run(t, vm)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 2 {
		t.Fatalf("warnings %q, want 2", warnings)
	}
	for i, want := range []string{"no exit for 40s (still at exit 0", "no exit for 40s (still at exit 1"} {
		if !strings.Contains(warnings[i], want) || !strings.Contains(warnings[i], "RIP 0x1234") {
			t.Errorf("warning %d: %q, want %q and the RIP", i, warnings[i], want)
		}
	}
	if res.Duration != 120*time.Second || vm.Machine().RunTime() != 120*time.Second {
		t.Errorf("duration %v, run time %v: want the host time's 120s", res.Duration, vm.Machine().RunTime())
	}
}

func TestRunErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		steps []vmmtest.Step
		setup func(d *loopDriver, cpu *vmmtest.VCPU)
		is    error  // errors.Is
		what  string // a GuestError's What
		text  string
	}{
		{name: "KVM_RUN fails", steps: []vmmtest.Step{vmmtest.Failed(unix.EIO)}, is: unix.EIO, text: "KVM_RUN: "},
		{name: "script ended", is: vmmtest.ErrScriptEnded},
		{name: "malformed exit", steps: []vmmtest.Step{{ExitErr: boom}}, what: "malformed exit", text: "boom"},
		{name: "triple fault", steps: []vmmtest.Step{vmmtest.Shutdown()}, what: "triple fault"},
		{name: "unmapped MMIO", steps: []vmmtest.Step{vmmtest.MMIOWrite(vmm.MMIOBase, 1)}, what: "unmapped MMIO write"},
		{name: "driver start", setup: func(d *loopDriver, _ *vmmtest.VCPU) { d.startErr = boom }, is: boom},
		{name: "driver deliver", setup: func(d *loopDriver, _ *vmmtest.VCPU) {
			d.deliver = func(*vmm.VM, vmm.Point) (bool, error) { return false, boom }
		}, is: boom},
		{name: "driver stop", steps: []vmmtest.Step{vmmtest.Out(vmm.ExitPort, 0)}, setup: func(d *loopDriver, _ *vmmtest.VCPU) { d.stopErr = boom }, is: boom},
		{name: "driver injected", setup: func(d *loopDriver, cpu *vmmtest.VCPU) {
			d.deliver, d.injectErr = raiseAt(at(0), nil), boom
			cpu.Registers.RFLAGS |= vmm.RFlagsIF
		}, is: boom},
		{name: "KVM_INTERRUPT fails", setup: func(d *loopDriver, cpu *vmmtest.VCPU) {
			d.deliver, cpu.Fail = raiseAt(at(0), nil), map[string]error{"interrupt": boom}
			cpu.Registers.RFLAGS |= vmm.RFlagsIF
		}, is: boom},
		{name: "registers unreadable at HLT", steps: []vmmtest.Step{vmmtest.HLT()}, setup: func(_ *loopDriver, cpu *vmmtest.VCPU) {
			cpu.Fail = map[string]error{"regs": boom}
		}, is: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &loopDriver{}
			vm, cpu, _ := loopVM(t, d, vmmtest.Script(tc.steps...))
			if tc.setup != nil {
				tc.setup(d, cpu)
			}
			_, err := run(t, vm)
			var g *vmm.GuestError
			switch {
			case err == nil:
				t.Fatal("no error")
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Errorf("%v, want %v", err, tc.is)
			case tc.what != "" && (!errors.As(err, &g) || g.What != tc.what):
				t.Errorf("%v, want a guest %s", err, tc.what)
			case !strings.Contains(err.Error(), tc.text):
				t.Errorf("%v, want %q in it", err, tc.text)
			}
		})
	}
}

// TestRunEmulationFailureNamesTheInstruction: a GuestError carries the
// bytes at RIP, read through the vCPU's registers and guest memory.
func TestRunEmulationFailureNamesTheInstruction(t *testing.T) {
	d := &loopDriver{}
	vm, cpu, _ := loopVM(t, d, vmmtest.Script(vmmtest.EmulationFailure()))
	cpu.Registers.RIP = 0x3000
	if err := vm.Memory().WriteAt([]byte{0x0F, 0xA2}, 0x3000); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, vm)
	var g *vmm.GuestError
	if !errors.As(err, &g) || g.What != "emulation failure" || g.RIP != 0x3000 || !bytes.HasPrefix(g.Bytes, []byte{0x0F, 0xA2}) {
		t.Errorf("%v", err)
	}
}

// TestRunTraces: ExitTrace has a line per synchronous exit, window and
// injection, with the registers and, from TraceMemoryFrom on, the memory
// CRC.
func TestRunTraces(t *testing.T) {
	var trace bytes.Buffer
	d := &loopDriver{deliver: raiseAt(at(1), nil)}
	vm, cpu := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: d, ExitTrace: &trace, TraceMemory: true, TraceMemoryFrom: 2}}, model(
		setIF(true, vmmtest.Out(0x80, 0)),
		step(vmmtest.Window()),
		step(vmmtest.Out(vmm.ExitPort, 0)),
	))
	d.cpu = cpu
	initPIC(vm)
	if _, err := run(t, vm); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(trace.String()), "\n")
	want := []string{"exit 1 io-out port 0x80 rip=0x0 rflags=0x202 ", "exit 1 inject 0x20 ", "exit 1+window window ", "exit 2 io-out port 0xf4 rip="}
	if len(lines) != len(want) {
		t.Fatalf("trace\n%s", trace.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) || strings.Contains(lines[i], "mem=") != (i == 3) {
			t.Errorf("line %d %q, want %q (memory CRC only from exit 2)", i, lines[i], w)
		}
	}
}
