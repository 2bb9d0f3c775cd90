// Package toyvm is a vmm.Machine made of plain values, for tests that
// drive a recorder, a replayer or a whole FT pair without KVM.
//
// The guest runs a program of Ops. RIP indexes the program, RSI counts
// iterations of a work op, and every input the drivers supply is folded
// into a register, so a replay that takes any input at another point ends
// in another state:
//
//	RAX  work iterations so far (each also writes a byte of memory)
//	RBX  clock readings           RCX  TSC readings
//	RDX  console bytes read       R8   interrupts taken, with RAX then
//
// Devices, as on a real machine, change memory and their own state, never
// the registers: the timer writes each clock reading it takes into page
// 14, DMA data lands in page 15.
//
// Machine.Run calls a vmm.Driver in the order vmm.VM.Run does: Deliver at
// every point, inject after it, NextEntry before entering, then the guest
// runs to its next exit or kick.
package toyvm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/vmm"
)

// Kind is what an Op does.
type Kind uint8

// The ops. Those marked "exit" end with a synchronous exit.
const (
	Work  Kind = iota + 1 // n iterations, no exit (kicks land here)
	Spin                  // a loop whose registers repeat: count a memory word up to n, no exit
	Cli                   // clear IF, no exit
	Sti                   // set IF, no exit
	Clock                 // exit whose handling reads the clock
	TSC                   // exit: a trapped rdtsc
	In                    // exit: read a console byte (verified by Read)
	Out                   // exit: write console byte n (the output hook)
	Arm                   // exit: program the timer to fire n µs from now, periodic
	DMA                   // exit: submit DMA read request n
	Halt                  // exit: hlt
	End                   // exit: the exit port, status n
	Store                 // exit: submit a 16-byte device write, tag n (an output, like a disk write)
)

// Op is one instruction of the toy guest.
type Op struct {
	Kind Kind
	N    int
}

// Pages is the toy's memory size in 4 KiB pages.
const Pages = 16

var spinSink uint64

// Machine is the toy. Set it up (SetClock, SetBounce, SetOutput, SetSpin)
// before Run; it is not safe for concurrent use, except Kick and Exits.
type Machine struct {
	prog  []Op
	regs  vmm.Regs
	mem   []byte
	dirty map[uint32]bool
	point vmm.Point
	exits atomic.Uint64
	clock devices.Clock

	irq      bool   // IRQ0 raised, not yet injected
	queued   bool   // injected, taken at the next entry (KVM_INTERRUPT)
	timerAt  int64  // next timer deadline in clock time; 0: none
	period   int64  // timer period (0: one-shot)
	console  []byte // COM1 receive buffer
	bounce   *bounce.Engine
	kicked   atomic.Bool
	windows  bool // model interrupt-window exits (SetWindows)
	window   bool // the driver asked for one: an interrupt waits for IF
	inRead   bool // inside a device's clock or TSC read
	spin     int  // busy iterations per work iteration (recordings want kicks to land mid-op)
	output   func(p vmm.Point, b []byte) error
	atExit   func(m *Machine)
	injected []vmm.Point
	tscs     []uint64
	ran      time.Duration // inside runGuest (RunTime)
}

// New returns a machine about to run prog from its first op, with
// interrupts enabled.
func New(prog []Op) *Machine {
	return &Machine{prog: prog, mem: make([]byte, Pages*4096), dirty: map[uint32]bool{},
		regs: vmm.Regs{RFLAGS: vmm.RFlagsIF | 2}}
}

// SetClock sets the devices' clock (a recorder's or replayer's Clock).
func (m *Machine) SetClock(c devices.Clock) { m.clock = c }

// SetBounce sets the DMA engine DMA and Store ops submit to.
func (m *Machine) SetBounce(e *bounce.Engine) { m.bounce = e }

// SetOutput sets what an Out op calls with its byte.
func (m *Machine) SetOutput(f func(p vmm.Point, b []byte) error) { m.output = f }

// SetSpin makes each work iteration busy for n more steps, so that kicks
// land in the middle of work ops.
func (m *Machine) SetSpin(n int) { m.spin = n }

// SetWindows makes the machine model interrupt-window exits: when an
// interrupt is pending with IF clear and the driver's Windows says yes,
// the Sti that sets IF ends at a Window point, as KVM's exit would.
// Without it the interrupt waits for the next synchronous exit or kick.
func (m *Machine) SetWindows(on bool) { m.windows = on }

// SetPoint moves the run to p (tests of a driver alone).
func (m *Machine) SetPoint(p vmm.Point) { m.point = p; m.exits.Store(p.Exits) }

// OnExit sets a hook the run calls at every synchronous exit, after the
// exit's own handling, on the run's goroutine.
func (m *Machine) OnExit(f func(m *Machine)) { m.atExit = f }

// InRead reports whether the machine is inside a device's clock or TSC
// read (a driver must not hand over there).
func (m *Machine) InRead() bool { return m.inRead }

// TSCs are the values the guest's TSC reads returned, in order.
func (m *Machine) TSCs() []uint64 { return m.tscs }

// Injected lists the points where an interrupt was injected.
func (m *Machine) Injected() []vmm.Point { return m.injected }

// Exits counts the synchronous exits so far; safe from any goroutine.
func (m *Machine) Exits() uint64 { return m.exits.Load() }

// GuestWrite writes a byte of memory as the guest would (the page is
// dirtied), for tests that place the machine by hand.
func (m *Machine) GuestWrite(addr uint64, b byte) { m.write(addr, b) }

// SetIRQ raises or lowers IRQ0 by hand (an interrupt pending at a point).
func (m *Machine) SetIRQ(v bool) { m.irq = v }

// Console is the console input delivered and not yet read by the guest.
func (m *Machine) Console() []byte { return m.console }

// Close implements the machine's release; the toy holds nothing.
func (m *Machine) Close() error { return nil }

// The vmm.Machine methods.

func (m *Machine) Point() vmm.Point             { return m.point }
func (m *Machine) Regs() (vmm.Regs, error)      { return m.regs, nil }
func (m *Machine) MemoryBytes() uint64          { return uint64(len(m.mem)) }
func (m *Machine) Clock() devices.Clock         { return m.clock }
func (m *Machine) Bounce() *bounce.Engine       { return m.bounce }
func (m *Machine) RunTime() time.Duration       { return m.ran }
func (m *Machine) Kick()                        { m.kicked.Store(true) }
func (m *Machine) InterruptPending() bool       { return m.irq }
func (m *Machine) LastExit() string             { return fmt.Sprintf("toy op %d", m.regs.RIP) }
func (m *Machine) TimerDeadline() (int64, bool) { return m.timerAt, m.timerAt != 0 }

var _ vmm.Machine = (*Machine)(nil)

// Fingerprint hashes the registers and memory: the whole guest state.
func (m *Machine) Fingerprint() ([32]byte, error) {
	h := sha256.New()
	binary.Write(h, binary.LittleEndian, &m.regs)
	h.Write(m.mem)
	return [32]byte(h.Sum(nil)), nil
}

func (m *Machine) CaptureVCPUState() (vmm.VCPUState, error) {
	s := vmm.VCPUState{Regs: m.regs}
	if m.queued {
		s.QueueInterrupt(0x20)
	}
	return s, nil
}

func (m *Machine) ApplyVCPUState(s vmm.VCPUState) error {
	m.regs = s.Regs
	_, m.queued = s.QueuedInterrupt()
	return nil
}

func (m *Machine) DirtyPages() ([]uint32, error) {
	var pages []uint32
	for p := range m.dirty {
		pages = append(pages, p)
	}
	slices.Sort(pages)
	clear(m.dirty)
	return pages, nil
}

func (m *Machine) PageContents(pfn uint32) ([]byte, error) {
	if int(pfn) >= Pages {
		return nil, fmt.Errorf("page %d outside memory", pfn)
	}
	return slices.Clone(m.mem[pfn*4096 : (pfn+1)*4096]), nil
}

func (m *Machine) LoadPage(pfn uint32, data []byte) error {
	if int(pfn) >= Pages {
		return fmt.Errorf("page %d outside memory", pfn)
	}
	page := m.mem[pfn*4096 : (pfn+1)*4096]
	if data == nil {
		clear(page)
	} else {
		copy(page, data)
	}
	return nil
}

// write is the guest storing a byte: KVM's dirty log sees it.
func (m *Machine) write(addr uint64, b byte) {
	addr %= uint64(len(m.mem))
	m.mem[addr] = b
	m.dirty[uint32(addr/4096)] = true
}

// deviceWrite is the VMM storing a byte into guest memory: like KVM's,
// the dirty log does not see it.
func (m *Machine) deviceWrite(addr uint64, b byte) { m.mem[addr%uint64(len(m.mem))] = b }

func (m *Machine) readClock() int64 {
	m.inRead = true
	defer func() { m.inRead = false }()
	return m.clock.Now()
}

// DeliverAsync is the toy's devices taking events: the timer reads the
// clock (a logged device read, as the PIT's is) and raises IRQ0; console
// bytes queue; DMA data lands in memory.
func (m *Machine) DeliverAsync(a vmm.Async) {
	if a.Timer {
		now := m.readClock()
		m.latch(now)
		m.irq = true
		m.timerAt = 0
		if m.period > 0 {
			m.timerAt = now + m.period
		}
	}
	m.console = append(m.console, a.Input...)
	for _, c := range a.DMA {
		for i, b := range c.Data {
			m.deviceWrite(uint64(15*4096+int(c.Tag)*64+i), b)
		}
		m.bounce.Delivered(c.Tag)
	}
}

// latch is the timer folding a clock reading into memory the guest can
// see (XOR into one of 512 slots, so no later reading erases it).
func (m *Machine) latch(now int64) {
	off := 14*4096 + uint64(now%512)*8
	for i := range 8 {
		m.deviceWrite(off+uint64(i), m.mem[off+uint64(i)]^byte(now>>(8*i)))
	}
}

// Run is the toy's vmm.VM.Run, with d as the driver.
func (m *Machine) Run(ctx context.Context, d vmm.Driver) (res vmm.Result, err error) {
	defer func() {
		if derr := d.Stop(m, m.point, res, err); derr != nil && err == nil {
			err = derr
		}
	}()
	if err := d.Start(m); err != nil {
		return vmm.Result{}, err
	}
	m.point = vmm.Point{Kind: vmm.AtExit}
	for {
		if err := ctx.Err(); err != nil {
			return vmm.Result{}, fmt.Errorf("run interrupted at %d exits: %w", m.point.Exits, err)
		}
		delivered, err := d.Deliver(m, m.point)
		if err != nil {
			return vmm.Result{}, err
		}
		if m.point.Kind == vmm.AtExit || delivered {
			if err := m.inject(d); err != nil {
				return vmm.Result{}, err
			}
		}
		if d.NextEntry() == vmm.EntryComplete {
			m.point.Kind = vmm.Kicked // the exit completed, no instruction ran
			continue
		}
		entered := time.Now()
		res, done, err := m.runGuest(ctx, d)
		m.ran += time.Since(entered)
		if err != nil || done {
			return res, err
		}
	}
}

func (m *Machine) inject(d vmm.Driver) error {
	m.window = false
	if !m.irq || m.queued {
		return nil
	}
	if m.regs.RFLAGS&vmm.RFlagsIF == 0 {
		m.window = m.windows && d.Windows()
		return nil
	}
	m.irq, m.queued = false, true
	m.injected = append(m.injected, m.point)
	return d.Injected(m, m.point, 0x20)
}

// runGuest runs the program to its next exit (handled here) or kick. As
// on KVM, an injected interrupt is taken on entry: its handler folds RAX
// into R8.
func (m *Machine) runGuest(ctx context.Context, d vmm.Driver) (vmm.Result, bool, error) {
	if m.queued {
		m.queued = false
		m.regs.R8 = m.regs.R8*31 + m.regs.RAX + 0x20
	}
	for {
		if m.kicked.Swap(false) {
			m.point.Kind = vmm.Kicked
			return vmm.Result{}, false, nil
		}
		if m.regs.RIP >= uint64(len(m.prog)) {
			return vmm.Result{}, true, errors.New("toy guest ran off its program")
		}
		op := m.prog[m.regs.RIP]
		switch op.Kind {
		case Work:
			if m.regs.RSI < uint64(op.N) {
				m.regs.RSI++
				m.regs.RAX++
				m.write(m.regs.RAX*97%(14*4096), byte(m.regs.RAX)) // pages 14 and 15 are the devices'
				for i := 0; i < m.spin; i++ {
					m.regs.RBP += uint64(i) // busy, deterministic
				}
				continue
			}
			m.regs.RSI = 0
			m.regs.RIP++
			continue
		case Spin:
			// The progress is in memory only: every iteration has the
			// same registers, which defeats locating a point by them.
			const word = 13 * 4096
			if v := int(m.mem[word]) | int(m.mem[word+1])<<8; v < op.N {
				m.write(word, byte(v+1))
				m.write(word+1, byte((v+1)>>8))
				for i := 0; i < m.spin; i++ {
					spinSink += uint64(i) // as busy as a work iteration, registers unchanged
				}
				continue
			}
			m.write(word, 0)
			m.write(word+1, 0)
			m.regs.RIP++
			continue
		case Cli:
			m.regs.RFLAGS &^= vmm.RFlagsIF
			m.regs.RIP++
			continue
		case Sti:
			m.regs.RFLAGS |= vmm.RFlagsIF
			m.regs.RIP++
			if m.window && m.irq {
				m.window = false
				m.point.Kind = vmm.Window
				return vmm.Result{}, false, nil
			}
			continue
		}
		m.point = vmm.Point{Exits: m.point.Exits + 1, Kind: vmm.AtExit}
		m.exits.Store(m.point.Exits)
		m.regs.RIP++
		res, done, err := m.exit(ctx, d, op)
		if err == nil && !done && m.atExit != nil {
			m.atExit(m)
		}
		return res, done, err
	}
}

// exit handles the synchronous exit op ends with.
func (m *Machine) exit(ctx context.Context, d vmm.Driver, op Op) (vmm.Result, bool, error) {
	switch op.Kind {
	case Clock:
		m.regs.RBX = m.regs.RBX*131 + uint64(m.readClock())
	case TSC:
		m.inRead = true
		v, err := d.TSC(m, m.point)
		m.inRead = false
		if err != nil {
			return vmm.Result{}, true, err
		}
		m.tscs = append(m.tscs, v)
		m.regs.RCX = m.regs.RCX*131 + v
	case In:
		b := byte(0xff)
		if len(m.console) > 0 {
			b, m.console = m.console[0], m.console[1:]
		}
		m.regs.RDX = m.regs.RDX*7 + uint64(b)
		if err := d.Read(m, m.point, false, 0x3f8, []byte{b}); err != nil {
			return vmm.Result{}, true, err
		}
	case Out:
		if m.output != nil {
			if err := m.output(m.point, []byte{byte(op.N)}); err != nil {
				return vmm.Result{}, true, err
			}
		}
	case Arm:
		m.period = int64(op.N) * 1000
		now := m.readClock()
		m.latch(now)
		m.timerAt = now + m.period
	case DMA:
		if err := m.bounce.Submit(bounce.Request{Tag: uint64(op.N), Len: 16}); err != nil {
			return vmm.Result{}, true, err
		}
	case Store:
		data := make([]byte, 16)
		binary.LittleEndian.PutUint64(data, m.regs.RAX)
		if err := m.bounce.Submit(bounce.Request{Tag: uint64(op.N), Len: 16, Write: true, Data: data}); err != nil {
			return vmm.Result{}, true, err
		}
	case Halt:
		if m.regs.RFLAGS&vmm.RFlagsIF == 0 {
			return vmm.Result{Reason: vmm.StopPowerOff}, true, nil
		}
		for {
			if _, err := d.Deliver(m, m.point); err != nil {
				return vmm.Result{}, true, err
			}
			if m.irq {
				break
			}
			if err := d.Halted(ctx, m, m.point); err != nil {
				return vmm.Result{}, true, err
			}
		}
	case End:
		return vmm.Result{Reason: vmm.StopExitPort, Status: op.N}, true, nil
	}
	return vmm.Result{}, false, nil
}
