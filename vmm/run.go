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

// Run runs the guest until it stops, fails, or ctx is cancelled. It locks
// the calling goroutine to its OS thread for the duration.
func (v *VM) Run(ctx context.Context) (res Result, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.tid.Store(int32(unix.Gettid()))
	defer v.tid.Store(0)
	began := time.Now()
	v.driver = v.cfg.Driver
	if v.driver == nil {
		v.driver = NewLiveDriver(v.cfg.ConsoleInput)
	}
	stopWatch := context.AfterFunc(ctx, v.Kick)
	defer stopWatch()
	defer func() {
		res.Stats, res.Duration = v.stats, time.Since(began)
		if derr := v.driver.Stop(v, v.point, res, err); derr != nil && err == nil {
			err = derr
		}
	}()
	if err := v.driver.Start(v); err != nil {
		return Result{}, err
	}
	v.point = Point{Kind: AtExit}
	for {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("run interrupted at %d exits: %w", v.point.Exits, err)
		}
		if v.point.Kind == AtExit {
			v.offerInput()
		}
		delivered, err := v.driver.Deliver(v, v.point)
		if err != nil {
			return Result{}, err
		}
		if v.point.Kind == AtExit || delivered {
			if err := v.injectInterrupt(); err != nil {
				return Result{}, err
			}
		}
		if v.driver.NextEntry() == EntryComplete {
			setImmediateExit(v.run, 1)
		}
		errno := runVCPU(v.vcpuFd)
		switch errno {
		case 0:
		case unix.EINTR:
			setImmediateExit(v.run, 0)
			v.stats.Kicks++
			v.point.Kind = Kicked
			continue
		case unix.EAGAIN:
			continue
		default:
			return Result{}, fmt.Errorf("KVM_RUN: %w", errno)
		}

		exit, err := decodeExit(v.run)
		if err != nil {
			return Result{}, v.guestError("malformed exit", err.Error())
		}
		if exit.Kind == ExitIRQWindow {
			// Not a synchronous exit: where it lands varies from run to run.
			v.stats.Windows++
			v.point.Kind = Window
			v.traceLine("window")
			continue
		}
		v.point = Point{Exits: v.point.Exits + 1, Kind: AtExit}
		v.lastExit = exit
		v.traceLine(v.LastExit())
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
	h := runHeader(v.run)
	if !v.PIC.Pending() {
		h.RequestInterruptWindow = 0
		return nil
	}
	if h.ReadyForInterruptInjection == 0 || h.IfFlag == 0 {
		h.RequestInterruptWindow = 0
		if v.driver.Windows() {
			h.RequestInterruptWindow = 1
		}
		return nil
	}
	vector := v.PIC.Acknowledge()
	if err := injectInterrupt(v.vcpuFd, vector); err != nil {
		return fmt.Errorf("KVM_INTERRUPT vector %#x: %w", vector, err)
	}
	v.stats.Interrupts++
	h.RequestInterruptWindow = 0
	v.traceLine(fmt.Sprintf("inject %#x", vector))
	return v.driver.Injected(v, v.point, vector)
}

// CancelWindow withdraws a request for an interrupt-window exit (a driver
// that declined a Window point asks again later, with a kick).
func (v *VM) CancelWindow() { runHeader(v.run).RequestInterruptWindow = 0 }
