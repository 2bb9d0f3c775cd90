package vmm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoWakeup is returned when the guest halts with interrupts enabled but
// no device can ever interrupt it (no timer armed, no console input).
var ErrNoWakeup = errors.New("guest halted with interrupts enabled, but no interrupt source is armed: it would wait forever")

// stopRun is a StopReason or an error, ending Run.
type stopRun struct {
	reason StopReason
	err    error
}

// exitClass is what one return from KVM_RUN means to the run: whether it
// is a synchronous exit, and so which Point the loop is at afterwards
// (classify).
type exitClass uint8

const (
	// classSync: a synchronous exit. It counts in Point.Exits and
	// Stats.Exits, is traced and handled (handleExit), and the loop is then
	// at Point{Exits+1, AtExit}.
	classSync exitClass = iota + 1
	// classKicked: the vCPU was stopped between exits (EINTR). The loop is
	// at Point{Exits, Kicked}.
	classKicked
	// classWindow: an interrupt-window exit. The loop is at
	// Point{Exits, Window}.
	classWindow
	// classRetry: KVM_RUN returned without running the guest (EAGAIN). The
	// point does not move.
	classRetry
	// classFailed: KVM_RUN failed; Run ends with a host error.
	classFailed
)

func (c exitClass) String() string {
	switch c {
	case classSync:
		return "sync"
	case classKicked:
		return "kicked"
	case classWindow:
		return "window"
	case classRetry:
		return "retry"
	case classFailed:
		return "failed"
	}
	return fmt.Sprintf("exitClass(%d)", int(c))
}

// classify decides what a KVM_RUN return is, from its errno and, when the
// errno is 0, its decoded exit (e is ignored otherwise: the exit union is
// stale after a failed KVM_RUN). It is the run's determinism contract: a
// recording and its replay number points alike only because both sides
// classify every return the same way.
//
//   - Synchronous exits (classSync): every successful return except an
//     interrupt-window exit — port and MMIO accesses, HLT, trapped MSR
//     accesses, KVM_EXIT_INTR, and the fatal ones (shutdown, internal
//     error, entry failure, debug, any other reason). The guest's own
//     instructions cause them, so the same guest state makes the same
//     exits at the same instructions: they are what Point.Exits counts.
//   - Kicked points (classKicked): EINTR, which is how KVM_RUN ends when a
//     kick's signal or immediate_exit stops the vCPU — including the
//     immediate_exit of EntryComplete, which completes a pending I/O or
//     MMIO exit without running a further instruction. Where a kick lands
//     depends on host timing: the point is pinned by a landmark, not a
//     count.
//   - Window points (classWindow): an interrupt-window exit. It is asked
//     for (injectInterrupt), not caused by an instruction, and on the
//     kvm_pvm hosts it came several instructions after the guest set IF, so
//     it is not counted either; a recorder pins it like a kick, or names it
//     as the first window after its exit and has the replay check it
//     (replay.RecorderConfig.WindowCounts).
//   - No point (classRetry): EAGAIN, KVM_RUN did not enter the guest; the
//     loop enters again at the same point.
//   - Failure (classFailed): any other errno.
func classify(errno unix.Errno, e Exit) exitClass {
	switch errno {
	case 0:
	case unix.EINTR:
		return classKicked
	case unix.EAGAIN:
		return classRetry
	default:
		return classFailed
	}
	if e.Kind == ExitIRQWindow {
		return classWindow
	}
	return classSync
}

// next is the point the loop is at after a return of class c at p.
func (c exitClass) next(p Point) Point {
	switch c {
	case classSync:
		return Point{Exits: p.Exits + 1, Kind: AtExit}
	case classKicked:
		return Point{Exits: p.Exits, Kind: Kicked}
	case classWindow:
		return Point{Exits: p.Exits, Kind: Window}
	}
	return p
}

// offersInput reports whether the loop hands COM1 console input it holds
// back at p: only at synchronous exits, which a replay reproduces, never
// between exits.
func offersInput(p Point) bool { return p.Kind == AtExit }

// mayInject reports whether the loop may inject an interrupt at p: at every
// synchronous exit, and between exits only at a delivery point (delivered:
// the driver's Deliver said so), so that every injection between exits has
// a landmark. Never at an exit whose instruction completes with an
// exception (faults: a rejected MSR access, which KVM completes with #GP
// at the next entry): KVM then delivers the exception and the interrupt
// queued with KVM_INTERRUPT is lost — measured on the emulated host, where
// a Linux guest's timer interrupt vanished at a wrmsr to an MSR it probes,
// its PIC kept IRQ0 in service for ever and the guest halted for good
// (1 boot in 8). The interrupt stays pending and is injected at the next
// exit, or at a kick.
func mayInject(p Point, delivered, faults bool) bool {
	return !faults && (p.Kind == AtExit || delivered)
}

// Run runs the guest until it stops, fails, or ctx is cancelled. It locks
// the calling goroutine to its OS thread for the duration.
func (v *VM) Run(ctx context.Context) (res Result, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	began := v.hostTime()
	v.driver = v.cfg.Driver
	stopWatch := context.AfterFunc(ctx, v.Kick)
	defer stopWatch()
	defer func() {
		res.Stats, res.Duration = v.stats, v.hostTime().Sub(began)
		if derr := v.driver.Stop(machine{v}, v.point, res, err); derr != nil && err == nil {
			err = derr
		}
	}()
	if err := v.driver.Start(machine{v}); err != nil {
		return Result{}, err
	}
	v.point = Point{Kind: AtExit}
	stall := stallWatch{last: began}
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("run interrupted at %d exits: %w", v.point.Exits, err)
		}
		if offersInput(v.point) {
			v.offerInput()
		}
		delivered, err := v.driver.Deliver(machine{v}, v.point)
		if err != nil {
			return Result{}, err
		}
		if mayInject(v.point, delivered, v.exitFaults) {
			if err := v.injectInterrupt(); err != nil {
				return Result{}, err
			}
		}
		if v.driver.NextEntry() == EntryComplete {
			v.cpu.SetImmediateExit(true)
		}
		entered := v.hostTime()
		errno := v.cpu.Run()
		left := v.hostTime()
		v.runTime += left.Sub(entered)
		var exit Exit
		if errno == 0 {
			var derr error
			if exit, derr = v.cpu.Exit(); derr != nil {
				return Result{}, v.guestError("malformed exit", derr.Error())
			}
		}
		class := classify(errno, exit)
		switch class {
		case classFailed:
			return Result{}, fmt.Errorf("KVM_RUN: %w", errno)
		case classRetry:
			continue
		case classKicked:
			v.cpu.SetImmediateExit(false)
			v.stats.Kicks++
			v.point = class.next(v.point)
			stall.kicked(v, left)
			continue
		case classWindow:
			v.stats.Windows++
			v.point = class.next(v.point)
			v.traceLine("window")
			stall.kicked(v, left)
			continue
		}
		v.point = class.next(v.point)
		v.exits.Store(v.point.Exits)
		v.exitFaults = false
		stall.exited(left)
		v.lastExit = exit
		v.traceLine(machine{v}.LastExit())
		v.stats.Exits[exit.Kind]++
		if stop := v.handleExit(ctx, exit); stop != nil {
			if stop.err != nil {
				return Result{}, stop.err
			}
			return Result{Reason: stop.reason, Status: v.exitStatus}, nil
		}
	}
}

// injectInterrupt hands the PIC's highest-priority request to the vCPU if
// it can take one now, and otherwise asks KVM to exit when it can.
func (v *VM) injectInterrupt() error {
	if !v.PIC.Pending() {
		v.cpu.RequestWindow(false)
		return nil
	}
	if ifFlag, ready := v.cpu.Interruptible(); !ready || !ifFlag {
		v.cpu.RequestWindow(v.driver.Windows())
		return nil
	}
	vector := v.PIC.Acknowledge()
	if err := v.cpu.Interrupt(vector); err != nil {
		return err
	}
	v.stats.Interrupts++
	v.cpu.RequestWindow(false)
	v.traceLine(fmt.Sprintf("inject %#x", vector))
	return v.driver.Injected(machine{v}, v.point, vector)
}

// cancelWindow withdraws a request for an interrupt-window exit (a driver
// that declined a Window point asks again later, with a kick).
func (v *VM) cancelWindow() { v.cpu.RequestWindow(false) }

// complete enters the vCPU with immediate_exit set: KVM completes a
// pending I/O, MMIO or MSR exit, or refreshes kvm_run, and returns EINTR
// without running a guest instruction.
func (v *VM) complete() unix.Errno {
	v.cpu.SetImmediateExit(true)
	errno := v.cpu.Run()
	v.cpu.SetImmediateExit(false)
	return errno
}

// hostTime is the host's time as the run accounts it (RunTime, the stall
// watch, Result.Duration): never a guest input.
func (v *VM) hostTime() time.Time {
	if v.now == nil {
		return time.Now()
	}
	return v.now()
}

// StallAfter is how long a guest may run without a synchronous exit before
// the VM warns (Options.Warn). A guest that makes no exit for that long
// takes no interrupt either (every interrupt handler acknowledges the PIC
// with port I/O): it spins with interrupts disabled, or the host cannot
// run it.
const StallAfter = 30 * time.Second

// stallWatch notices a run that goes on without synchronous exits.
type stallWatch struct {
	last   time.Time // the last synchronous exit
	warned bool      // this stall was reported
}

func (s *stallWatch) exited(now time.Time) { s.last, s.warned = now, false }

// kicked warns once per stall, from a Kicked or Window point (the vCPU is
// stopped, so its registers can be read).
func (s *stallWatch) kicked(v *VM, now time.Time) {
	if s.warned || v.cfg.Warn == nil || now.Sub(s.last) < StallAfter {
		return
	}
	s.warned = true
	ifFlag, ready := v.cpu.Interruptible()
	msg := fmt.Sprintf("the guest has made no exit for %v (still at exit %d; %d interrupts injected, %d kicks, %d window exits so far): interrupt controller pending %v, guest IF %d, ready for injection %d",
		now.Sub(s.last).Round(time.Second), v.point.Exits, v.stats.Interrupts, v.stats.Kicks, v.stats.Windows, v.PIC.Pending(), flag(ifFlag), flag(ready))
	if r, err := v.Regs(); err == nil {
		msg += fmt.Sprintf("; RIP %#x RFLAGS %#x", r.RIP, r.RFLAGS)
	}
	if user, err := v.UserMode(); err == nil {
		msg += fmt.Sprintf(", user mode %v", user)
	}
	v.cfg.Warn(msg)
}
