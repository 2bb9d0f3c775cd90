package vmm

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
)

// PointKind says where in the instruction stream a Point lies.
type PointKind uint8

const (
	// AtExit: right after synchronous exit number Point.Exits was handled.
	AtExit PointKind = iota + 1
	// Kicked: between exits, where a kick (EINTR) stopped the vCPU.
	Kicked
	// Window: between exits, where KVM reported that the guest can take
	// the interrupt the VM asked to inject (an interrupt-window exit). On
	// the kvm_pvm hosts such an exit did not land at a predictable
	// instruction (it came several instructions after the guest set IF;
	// not measured on the emulated hosts), so it is not a synchronous
	// exit: a recorder pins it down with a landmark like a kick, or, if
	// asked to (replay.RecorderConfig.WindowCounts), names it as the first
	// window after its exit and has the replay check that it lands there.
	Window
)

func (k PointKind) String() string {
	switch k {
	case AtExit:
		return "at-exit"
	case Kicked:
		return "kicked"
	case Window:
		return "window"
	}
	return "point?"
}

// Point is a position in a run that a recording and its replay can both
// name: the number of synchronous exits so far (exits are deterministic:
// the same guest state makes the same exits), and whether the vCPU is at
// that exit or somewhere after it. A point between exits is pinned down by
// a landmark (the vCPU registers and the pages written since the last point
// both sides agree on), which drivers handle.
type Point struct {
	Exits uint64
	Kind  PointKind
}

func (p Point) String() string {
	if p.Kind == AtExit {
		return fmt.Sprintf("exit %d", p.Exits)
	}
	return fmt.Sprintf("exit %d+%v", p.Exits, p.Kind)
}

// EntryMode is how the loop enters the guest.
type EntryMode uint8

const (
	// EntryRun runs the guest until its next exit or kick.
	EntryRun EntryMode = iota
	// EntryComplete completes a pending I/O or MMIO exit without running
	// any further instruction (immediate_exit); the loop then reaches a
	// Kicked point.
	EntryComplete
)

// Async is a batch of asynchronous events delivered at one point.
type Async struct {
	Timer bool                // the PIT's deadline has passed: the PIT reads the clock and may raise IRQ0
	Input []byte              // console bytes for COM1
	DMA   []bounce.Completion // filled bounce buffers for the DMA device
}

// Empty reports whether a has nothing to deliver.
func (a Async) Empty() bool { return !a.Timer && len(a.Input) == 0 && len(a.DMA) == 0 }

// Driver supplies every nondeterministic input of a run and decides where
// asynchronous events enter. LiveDriver takes them from the host; the
// replay package's recorder wraps a LiveDriver and logs them, and its
// replayer feeds them back from a log.
type Driver interface {
	// Start is called once, on the vCPU thread, before the first entry.
	Start(vm Machine) error
	// Deliver is called at every point before interrupts are injected.
	// It hands events due at p to vm.DeliverAsync and reports whether p is
	// a delivery point. At Kicked and Window points the VM
	// injects only if it is, so every injection between exits has a
	// landmark.
	Deliver(vm Machine, p Point) (bool, error)
	// Windows reports whether the VM may ask KVM for interrupt-window
	// exits (Window points) when an interrupt is pending but the guest
	// cannot take it yet. A replayer says yes only where the log has a
	// delivery at a window exit next: it injects only where the log says.
	Windows() bool
	// Halted is called when the guest waits in HLT with interrupts enabled
	// and no interrupt pending. It blocks until something is due at p (the
	// loop then calls Deliver again) or fails.
	Halted(ctx context.Context, vm Machine, p Point) error
	// Injected reports each vector injected at p.
	Injected(vm Machine, p Point, vector uint8) error
	// NextEntry says how the next KVM_RUN runs the guest.
	NextEntry() EntryMode
	// TSC returns what an rdtsc trapped at p reads.
	TSC(vm Machine, p Point) (uint64, error)
	// Read sees every value a PIO or MMIO read returned (verify mode);
	// it may return an error to stop the run.
	Read(vm Machine, p Point, mmio bool, addr uint64, data []byte) error
	// Stop is called once when the run ends, with its result or error.
	Stop(vm Machine, p Point, res Result, err error) error
}

// LiveDriver delivers the host's events: the PIT's timer, fired by a host
// timer, and console input read on its own goroutine. It kicks the vCPU
// when an event has waited KickAfter for a synchronous exit.
type LiveDriver struct {
	// KickAfter is how long an event may wait for the next synchronous
	// exit before the vCPU is kicked to take it between exits. Zero kicks
	// at once.
	KickAfter time.Duration
	// Input, if set, is read on its own goroutine.
	Input interface{ Read([]byte) (int, error) }
	// SchedClock tells the driver the time in the devices' clock base
	// without being a device read (a recorder must not log it). Default:
	// the machine's Clock.
	SchedClock func() int64

	vm         Machine
	timerDue   atomic.Bool
	wake       chan struct{}
	mu         sync.Mutex
	timer      *time.Timer
	armedFor   int64
	armed      bool
	input      chan []byte
	inputEOF   bool
	pending    []byte
	kickTimer  *time.Timer
	kickArmed  atomic.Bool
	tscPerNano float64

	// The timer guard (share): the last timer interrupt delivered.
	ticked       bool
	tickDeadline int64         // its PIT deadline
	tickRun      time.Duration // Machine.RunTime when it was delivered
	idleSince    bool          // the guest halted since then
	holdKick     atomic.Bool   // a kick is set for the end of a hold
}

// maxShare bounds the guest run time the timer guard asks for between two
// timer interrupts (see share).
const maxShare = 5 * time.Millisecond

// share is the timer guard: how much longer the guest must run before the
// timer interrupt due now may be delivered (0: deliver it now).
//
// A timer interrupt costs the guest a few exits (the handler masks, acks
// and unmasks the PIC), and the VMM some work of its own (a recorder's
// landmark). Where exits are slow — an emulated host, about 0.6 ms each —
// that cost can exceed the timer's period: the next tick is then due
// before the handler returns, is injected as soon as the guest re-enables
// interrupts, and the guest does nothing but take ticks (measured: a
// Linux primary's boot slowed from 25 s to several minutes, five exits per
// tick, in 1 of 8 runs). So the driver delivers a timer interrupt only once
// the guest has run (Machine.RunTime, time inside KVM_RUN) for half the
// interval between this tick's deadline and the previous one's, at most
// maxShare, since the previous timer interrupt, unless it halted in
// between (an idle guest is not starved). A held tick coalesces like a
// missed one: the guest's clock is the PIT's and stays right; it gets
// fewer interrupts, as a guest on an overcommitted host does. On a host
// where exits are fast the guest always has its share by the next tick
// and nothing is held.
func (d *LiveDriver) share() time.Duration {
	if !d.ticked || d.idleSince || d.vm == nil {
		return 0
	}
	want := time.Duration(d.armedFor-d.tickDeadline) / 2
	want = min(want, maxShare)
	if ran := d.vm.RunTime() - d.tickRun; ran < want {
		return want - ran
	}
	return 0
}

// ticked records a timer interrupt delivered now (share).
func (d *LiveDriver) tick() {
	d.ticked, d.tickDeadline, d.idleSince = true, d.armedFor, false
	if d.vm != nil {
		d.tickRun = d.vm.RunTime()
	}
}

// NewLiveDriver returns a driver reading console input from in (may be nil).
func NewLiveDriver(in interface{ Read([]byte) (int, error) }) *LiveDriver {
	return &LiveDriver{Input: in}
}

// Start implements Driver.
func (d *LiveDriver) Start(vm Machine) error {
	d.vm = vm
	d.wake = make(chan struct{}, 1)
	if e := vm.Bounce(); e != nil {
		e.SetNotify(d.eventDue)
	}
	if d.Input == nil {
		d.inputEOF = true
		return nil
	}
	d.input = make(chan []byte, 16)
	go func(r interface{ Read([]byte) (int, error) }, out chan<- []byte) {
		defer close(out)
		for {
			buf := make([]byte, 256)
			n, err := r.Read(buf)
			if n > 0 {
				out <- buf[:n]
				d.eventDue()
			}
			if err != nil {
				d.wakeUp()
				return
			}
		}
	}(d.Input, d.input)
	return nil
}

func (d *LiveDriver) bounce() *bounce.Engine {
	if d.vm == nil {
		return nil
	}
	return d.vm.Bounce()
}

func (d *LiveDriver) wakeUp() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// eventDue is called from other goroutines when an event becomes due.
func (d *LiveDriver) eventDue() {
	d.wakeUp()
	if d.KickAfter <= 0 {
		d.vm.Kick()
		return
	}
	if d.kickArmed.CompareAndSwap(false, true) {
		time.AfterFunc(d.KickAfter, func() {
			if d.kickArmed.Swap(false) {
				d.vm.Kick()
			}
		})
	}
}

// KickSoon kicks the vCPU after KickAfter (a recorder that declined a
// point between exits asks for another).
func (d *LiveDriver) KickSoon() { d.eventDue() }

// Pending reports whether an event is due that Poll would return.
func (d *LiveDriver) Pending() bool {
	if e := d.bounce(); e != nil {
		if ready, _ := e.Pending(); ready {
			return true
		}
	}
	return d.timerDue.Load() || len(d.input) > 0
}

// Poll collects the events due now without delivering them.
func (d *LiveDriver) Poll() Async {
	var a Async
	if d.timerDue.Load() {
		d.mu.Lock()
		wait := d.share()
		if wait == 0 {
			d.timerDue.Store(false)
			d.armed = false
			d.tick()
		}
		d.mu.Unlock()
		if wait == 0 {
			a.Timer = true
		} else if d.holdKick.CompareAndSwap(false, true) {
			// Come back when the guest has had its share.
			time.AfterFunc(wait, func() {
				d.holdKick.Store(false)
				d.vm.Kick()
			})
		}
	}
	for !d.inputEOF {
		select {
		case b, ok := <-d.input:
			if !ok {
				d.inputEOF = true
				continue
			}
			a.Input = append(a.Input, b...)
			continue
		default:
		}
		break
	}
	if e := d.bounce(); e != nil {
		a.DMA = e.Poll()
	}
	if !a.Empty() {
		d.kickArmed.Store(false)
	}
	return a
}

// Deliver implements Driver. A Window point is always a delivery point:
// the guest opened the window the VM asked for.
func (d *LiveDriver) Deliver(vm Machine, p Point) (bool, error) {
	d.Arm()
	a := d.Poll()
	if a.Empty() {
		return p.Kind == Window, nil
	}
	vm.DeliverAsync(a)
	return true, nil
}

// Windows implements Driver.
func (d *LiveDriver) Windows() bool { return true }

// Arm makes sure a host timer fires when the PIT's channel 0 next produces
// an interrupt. The PIT's deadline is in Clock time; the host timer runs
// on the host's own monotonic clock, which a live VM's Clock follows.
func (d *LiveDriver) Arm() {
	deadline, ok := d.vm.TimerDeadline()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !ok {
		if d.armed && d.timer != nil {
			d.timer.Stop()
		}
		d.armed = false
		return
	}
	if d.armed && d.armedFor == deadline {
		return
	}
	if d.timer != nil {
		d.timer.Stop()
	}
	d.armed, d.armedFor = true, deadline
	now := d.vm.Clock().Now
	if d.SchedClock != nil {
		now = d.SchedClock
	}
	delay := time.Duration(deadline - now())
	if delay <= 0 {
		// Due already: a halted guest must not wait for a wake-up that
		// no timer will send.
		d.timerDue.Store(true)
		d.armed = false
		d.wakeUp()
		return
	}
	d.timer = time.AfterFunc(delay, func() {
		d.timerDue.Store(true)
		d.eventDue()
	})
}

// Halted implements Driver.
func (d *LiveDriver) Halted(ctx context.Context, vm Machine, p Point) error {
	d.mu.Lock()
	d.idleSince = true // the guest has no work a timer tick would starve
	d.mu.Unlock()
	d.Arm()
	d.mu.Lock()
	armed := d.armed
	d.mu.Unlock()
	dma := false
	if e := vm.Bounce(); e != nil {
		ready, inflight := e.Pending()
		dma = ready || inflight
	}
	if !armed && !dma && !d.timerDue.Load() && d.inputEOF && len(d.input) == 0 {
		return ErrNoWakeup
	}
	if d.timerDue.Load() {
		return nil // the caller delivers it
	}
	// Wake up now and then even if no event said so: the caller re-arms
	// and polls, so a lost wake-up costs at most haltRecheck. (A Linux
	// guest once stayed halted until its run's deadline in an emulated
	// host, with its PIT armed; the cause is not known.)
	recheck := time.NewTimer(haltRecheck)
	defer recheck.Stop()
	select {
	case <-d.wake:
		return nil
	case <-recheck.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// haltRecheck bounds how long Halted waits without looking again.
const haltRecheck = 50 * time.Millisecond

// Injected implements Driver.
func (d *LiveDriver) Injected(Machine, Point, uint8) error { return nil }

// NextEntry implements Driver.
func (d *LiveDriver) NextEntry() EntryMode { return EntryRun }

// TSCHz is the frequency of the guest's virtual TSC: the value an rdtsc
// returns is the device clock scaled to it.
const TSCHz = 2_000_000_000

// TSC implements Driver: the virtual TSC follows the device clock.
func (d *LiveDriver) TSC(vm Machine, p Point) (uint64, error) {
	return uint64(vm.Clock().Now()) * (TSCHz / 1_000_000_000), nil
}

// Read implements Driver.
func (d *LiveDriver) Read(Machine, Point, bool, uint64, []byte) error { return nil }

// Stop implements Driver.
func (d *LiveDriver) Stop(Machine, Point, Result, error) error {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
	}
	d.armed = false
	d.mu.Unlock()
	return nil
}
