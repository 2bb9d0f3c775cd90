// Package vmmtest runs vmm's real run loop without KVM: VCPU implements
// the loop's port to the processor (vmm.VCPU) with a guest that a test
// scripts (Script: a list of exits) or models (a Guest function that, at
// each entry, changes registers and memory and says how the entry ends),
// and records every call the loop makes on it.
//
// # Usage
//
//	vm, cpu := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: d}},
//		vmmtest.Script(vmmtest.Out(0x3F8, 'h'), vmmtest.Kicked(), vmmtest.Out(vmm.ExitPort, 0)))
//	res, err := vm.Run(ctx)
//	// cpu.Calls(): "run", "interrupt 0x20", "window on", ... in the order made
//
// What the fake does as KVM does:
//
//  1. An entry with immediate_exit set runs no guest code: it completes the
//     previous exit and returns EINTR, without calling the Guest.
//  2. if_flag is RFLAGS.IF of Registers; ready_for_interrupt_injection is
//     if_flag unless Blocked (an interrupt shadow).
//  3. The Data of an exit is written by the VMM and seen by the Guest at
//     the next entry (Last): an IN's value, an RDMSR's result, a #GP set
//     in MSRError.
//
// Everything else (when a window exit comes, what an injected vector
// does) is the Guest's business: Window and Entering tell it what the
// VMM asked for. A kick that lands while a model runs (vm.Kick from
// another goroutine) shows as ImmediateExit; a model that stops there
// returns Kicked, as KVM_RUN returns EINTR, and one that does not finds
// its next entry cut short instead.
package vmmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/vmm"
)

// Step is how one entry into the guest ends.
type Step struct {
	// Errno, if not 0, is what KVM_RUN returns, with no exit: EINTR (a
	// kick's signal landed), EAGAIN (no entry), anything else a failure.
	Errno unix.Errno
	// Exit is the exit when Errno is 0.
	Exit vmm.Exit
	// ExitErr makes decoding the exit fail (a malformed kvm_run).
	ExitErr error
}

// Guest plays the guest for one entry: it may change c.Registers, c.Special and
// guest memory, and returns how the entry ends. It runs on the vCPU
// thread, inside Run.
type Guest func(c *VCPU) Step

// ErrScriptEnded is the errno a Script returns once its steps are used
// up: the run then ends with "KVM_RUN: ..." instead of hanging.
const ErrScriptEnded = unix.ENOTRECOVERABLE

// Script is a guest that ends its entries with steps, in order. A step's
// Exit Data is used as given (fill it for an OUT or MMIO write).
func Script(steps ...Step) Guest {
	i := 0
	return func(*VCPU) Step {
		if i == len(steps) {
			return Step{Errno: ErrScriptEnded}
		}
		i++
		return steps[i-1]
	}
}

// VCPU is a vmm.VCPU played by a Guest. Its exported fields are the
// guest's registers; a Guest may change them at each entry, a test
// before Run.
type VCPU struct {
	Guest     Guest
	Registers vmm.Regs
	Special   vmm.Sregs
	Blocked   bool // an interrupt shadow: not ready for injection although IF is set
	// Interruptibility, if set, replaces the rule of Interruptible (to
	// report a kvm_run no KVM would, e.g. ready with IF clear).
	Interruptibility func(c *VCPU) (ifFlag, ready bool)
	// Fail makes the named call fail with its error: "regs", "set-regs",
	// "sregs", "set-sregs", "interrupt", "capture", "apply", "dirty-log".
	Fail map[string]error

	immediate atomic.Bool
	window    bool
	cur       Step
	last      vmm.Exit
	injected  []uint8
	queued    []uint8 // injected since the last entry that ran the Guest
	entering  []uint8 // what this entry delivers (Entering)
	dirty     map[uint32]bool
	entries   int
	closed    bool

	mu    sync.Mutex
	calls []string
}

var _ vmm.VCPU = (*VCPU)(nil)

// NewVCPU returns a vCPU with zeroed registers but RFLAGS' fixed bit:
// interrupts disabled, paging off.
func NewVCPU(g Guest) *VCPU {
	c := &VCPU{Guest: g, dirty: map[uint32]bool{}}
	c.Registers.RFLAGS = 0x2
	return c
}

// New returns a VM on a VCPU playing g, with cfg's memory (2 MiB if
// unset), closed when the test ends.
func New(tb testing.TB, cfg vmm.Config, g Guest) (*vmm.VM, *VCPU) {
	tb.Helper()
	if cfg.MemoryBytes == 0 {
		cfg.MemoryBytes = 2 << 20
	}
	mem, err := vmm.NewMemory(cfg.MemoryBytes)
	if err != nil {
		tb.Fatal(err)
	}
	c := NewVCPU(g)
	vm, err := vmm.NewWithVCPU(cfg, c, mem)
	if err != nil {
		mem.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { vm.Close() })
	return vm, c
}

// Note adds a line to the call log (a test's driver records its own
// calls there, to check their order against the vCPU's).
func (c *VCPU) Note(s string) {
	c.mu.Lock()
	c.calls = append(c.calls, s)
	c.mu.Unlock()
}

// Calls returns the call log: "run" (the Guest ran), "complete" (an entry
// with immediate_exit set), "interrupt 0xNN", "window on", "window off",
// "apply", "close", and the lines Note added.
func (c *VCPU) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

// Entries is how many entries ran the Guest.
func (c *VCPU) Entries() int { return c.entries }

// Last is the previous exit as the VMM left it.
func (c *VCPU) Last() vmm.Exit { return c.last }

// Window reports whether the VMM asks for an interrupt-window exit.
func (c *VCPU) Window() bool { return c.window }

// Injected lists the vectors the VMM queued, in order.
func (c *VCPU) Injected() []uint8 { return append([]uint8(nil), c.injected...) }

// Entering lists the vectors queued since the previous entry that ran
// the Guest: what KVM delivers as the guest resumes at this one (a model
// jumps to their handlers). An entry with immediate_exit set delivers
// none; they wait for the next.
func (c *VCPU) Entering() []uint8 { return c.entering }

// ImmediateExit reports whether kvm_run.immediate_exit is set.
func (c *VCPU) ImmediateExit() bool { return c.immediate.Load() }

// MarkDirty records guest pages the Guest wrote, for DirtyLog.
func (c *VCPU) MarkDirty(pfns ...uint32) {
	for _, p := range pfns {
		c.dirty[p] = true
	}
}

// Closed reports whether the VM closed its vCPU.
func (c *VCPU) Closed() bool { return c.closed }

func (c *VCPU) fail(call string) error { return c.Fail[call] }

// Run implements vmm.VCPU.
func (c *VCPU) Run() unix.Errno {
	if c.cur.Errno == 0 {
		c.last = c.cur.Exit
	}
	c.cur = Step{}
	if c.immediate.Load() {
		c.Note("complete")
		return unix.EINTR
	}
	c.Note("run")
	c.entries++
	c.entering, c.queued = c.queued, nil
	c.cur = c.Guest(c)
	return c.cur.Errno
}

// Exit implements vmm.VCPU.
func (c *VCPU) Exit() (vmm.Exit, error) {
	if c.cur.Errno != 0 {
		return vmm.Exit{}, errors.New("vmmtest: no exit after a failed entry")
	}
	return c.cur.Exit, c.cur.ExitErr
}

// SetImmediateExit implements vmm.VCPU.
func (c *VCPU) SetImmediateExit(on bool) { c.immediate.Store(on) }

// Interruptible implements vmm.VCPU.
func (c *VCPU) Interruptible() (ifFlag, ready bool) {
	if c.Interruptibility != nil {
		return c.Interruptibility(c)
	}
	ifFlag = c.Registers.RFLAGS&vmm.RFlagsIF != 0
	return ifFlag, ifFlag && !c.Blocked
}

// RequestWindow implements vmm.VCPU; the log has each change.
func (c *VCPU) RequestWindow(on bool) {
	if on != c.window {
		c.Note(map[bool]string{true: "window on", false: "window off"}[on])
	}
	c.window = on
}

// Interrupt implements vmm.VCPU.
func (c *VCPU) Interrupt(vector uint8) error {
	if err := c.fail("interrupt"); err != nil {
		return err
	}
	c.Note(fmt.Sprintf("interrupt %#x", vector))
	c.injected = append(c.injected, vector)
	c.queued = append(c.queued, vector)
	return nil
}

// Regs implements vmm.VCPU.
func (c *VCPU) Regs() (vmm.Regs, error) { return c.Registers, c.fail("regs") }

// SetRegs implements vmm.VCPU.
func (c *VCPU) SetRegs(r vmm.Regs) error {
	if err := c.fail("set-regs"); err != nil {
		return err
	}
	c.Registers = r
	return nil
}

// Sregs implements vmm.VCPU.
func (c *VCPU) Sregs() (vmm.Sregs, error) { return c.Special, c.fail("sregs") }

// SetSregs implements vmm.VCPU.
func (c *VCPU) SetSregs(s vmm.Sregs) error {
	if err := c.fail("set-sregs"); err != nil {
		return err
	}
	c.Special = s
	return nil
}

// Translate implements vmm.VCPU: an identity map (the VM asks only with
// paging on).
func (c *VCPU) Translate(linear uint64) (uint64, bool) { return linear, true }

// CaptureState implements vmm.VCPU: the registers are the whole state.
func (c *VCPU) CaptureState() (vmm.VCPUState, error) {
	return vmm.VCPUState{Regs: c.Registers, Sregs: c.Special}, c.fail("capture")
}

// ApplyState implements vmm.VCPU.
func (c *VCPU) ApplyState(s vmm.VCPUState) error {
	if err := c.fail("apply"); err != nil {
		return err
	}
	c.Note("apply")
	c.Registers, c.Special = s.Regs, s.Sregs
	return nil
}

// DirtyLog implements vmm.VCPU with the pages MarkDirty named.
func (c *VCPU) DirtyLog(bitmap []uint64) error {
	if err := c.fail("dirty-log"); err != nil {
		return err
	}
	clear(bitmap)
	for p := range c.dirty {
		if int(p/64) >= len(bitmap) {
			return fmt.Errorf("vmmtest: dirty page %#x outside memory", p)
		}
		bitmap[p/64] |= 1 << (p % 64)
	}
	clear(c.dirty)
	return nil
}

// Close implements vmm.VCPU.
func (c *VCPU) Close() error {
	c.Note("close")
	c.closed = true
	return nil
}

// Exits a Script is made of.

// In is an IN of size bytes from port; the VMM fills its Data.
func In(port uint16, size int) Step {
	return exit(vmm.Exit{Kind: vmm.ExitIOIn, Port: port, Size: size, Count: 1, Data: make([]byte, size)})
}

// Out is an OUT of data (1, 2 or 4 bytes) to port.
func Out(port uint16, data ...byte) Step {
	return exit(vmm.Exit{Kind: vmm.ExitIOOut, Port: port, Size: len(data), Count: 1, Data: data})
}

// MMIORead is a read of n bytes at addr; the VMM fills its Data.
func MMIORead(addr uint64, n int) Step {
	return exit(vmm.Exit{Kind: vmm.ExitMMIORead, Addr: addr, Data: make([]byte, n)})
}

// MMIOWrite is a write of data at addr.
func MMIOWrite(addr uint64, data ...byte) Step {
	return exit(vmm.Exit{Kind: vmm.ExitMMIOWrite, Addr: addr, Data: data})
}

// RDMSR is a trapped read of msr; the VMM fills MSRData.
func RDMSR(msr uint32) Step {
	return exit(vmm.Exit{Kind: vmm.ExitRDMSR, MSR: msr, MSRData: make([]byte, 8), MSRError: make([]byte, 1)})
}

// WRMSR is a trapped write of val to msr.
func WRMSR(msr uint32, val uint64) Step {
	e := vmm.Exit{Kind: vmm.ExitWRMSR, MSR: msr, MSRData: make([]byte, 8), MSRError: make([]byte, 1)}
	binary.LittleEndian.PutUint64(e.MSRData, val)
	return exit(e)
}

// HLT is a HLT exit.
func HLT() Step { return exit(vmm.Exit{Kind: vmm.ExitHLT}) }

// Window is an interrupt-window exit.
func Window() Step { return exit(vmm.Exit{Kind: vmm.ExitIRQWindow}) }

// Intr is KVM_EXIT_INTR (a signal ended the entry at an exit).
func Intr() Step { return exit(vmm.Exit{Kind: vmm.ExitIntr}) }

// Shutdown is a triple fault.
func Shutdown() Step { return exit(vmm.Exit{Kind: vmm.ExitShutdown}) }

// EmulationFailure is KVM's internal error "emulation failure".
func EmulationFailure() Step {
	return exit(vmm.Exit{Kind: vmm.ExitInternalError, Suberror: 1})
}

// Kicked is an entry a kick stopped (EINTR).
func Kicked() Step { return Step{Errno: unix.EINTR} }

// Retry is an entry that did not run (EAGAIN).
func Retry() Step { return Step{Errno: unix.EAGAIN} }

// Failed is an entry that failed with errno.
func Failed(errno unix.Errno) Step { return Step{Errno: errno} }

func exit(e vmm.Exit) Step { return Step{Exit: e} }
