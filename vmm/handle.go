package vmm

import (
	"context"
	"errors"
	"fmt"
)

// handleExit acts on one synchronous exit. It returns non-nil when the run
// is over.
func (v *VM) handleExit(ctx context.Context, e Exit) *stopRun {
	fail := func(err error) *stopRun { return &stopRun{err: err} }
	switch e.Kind {
	case ExitIOIn, ExitIOOut:
		if e.Kind == ExitIOOut && v.cfg.TSCSites != nil && v.cfg.TSCSites.Reserved(e.Port) {
			return v.trappedTSC(e)
		}
		for i := 0; i < e.Count; i++ {
			v.pio(e.Kind == ExitIOOut, e.Port, e.Data[i*e.Size:(i+1)*e.Size])
		}
		if e.Kind == ExitIOIn {
			if err := v.driver.Read(machine{v}, v.point, false, uint64(e.Port), e.Data); err != nil {
				return fail(err)
			}
		}
		switch {
		case v.exitRequested:
			return &stopRun{reason: StopExitPort}
		case v.resetRequested:
			return &stopRun{reason: StopReset}
		}
	case ExitMMIORead, ExitMMIOWrite:
		dev, off, ok := v.MMIO.Lookup(e.Addr)
		if !ok {
			what := "unmapped MMIO read"
			more := fmt.Sprintf("%d bytes at guest physical address %#x (guest RAM ends at %#x)", len(e.Data), e.Addr, v.mem.Size())
			if e.Kind == ExitMMIOWrite {
				what = "unmapped MMIO write"
				more += "; KVM has completed the store, so RIP is the next instruction"
			}
			return fail(v.guestError(what, more))
		}
		if e.Kind == ExitMMIOWrite {
			dev.Write(off, e.Data)
		} else {
			dev.Read(off, e.Data)
			if err := v.driver.Read(machine{v}, v.point, true, e.Addr, e.Data); err != nil {
				return fail(err)
			}
		}
	case ExitHLT:
		return v.halt(ctx)
	case ExitIntr:
		// Nothing to do: the loop injects before re-entering.
	case ExitRDMSR, ExitWRMSR:
		if err := v.timeMSR(e); err != nil {
			return fail(err)
		}
	case ExitShutdown:
		return fail(v.guestError("triple fault", "the vCPU shut down (an exception while delivering a double fault)"))
	case ExitInternalError:
		const emulationFailure = 1
		if e.Suberror == emulationFailure {
			return fail(v.guestError("emulation failure", "KVM's instruction emulator cannot execute this instruction"))
		}
		return fail(v.guestError("internal error", fmt.Sprintf("KVM internal error suberror %d data %#x", e.Suberror, e.InternalData)))
	case ExitFailEntry:
		return fail(v.guestError("entry failure", fmt.Sprintf("hardware entry failure reason %#x", e.HardwareCode)))
	case ExitDebug:
		return fail(v.guestError("unexpected debug exit", "the VMM sets no breakpoints and does not single-step"))
	default:
		return fail(v.guestError("unexpected exit", fmt.Sprintf("KVM exit reason %d", e.Reason)))
	}
	return nil
}

// halt handles a HLT exit: with interrupts disabled the guest is done;
// otherwise wait, delivering events at this exit, until an interrupt can
// be injected.
func (v *VM) halt(ctx context.Context) *stopRun {
	regs, err := v.Regs()
	if err != nil {
		return &stopRun{err: err}
	}
	if regs.RFLAGS&RFlagsIF == 0 {
		return &stopRun{reason: StopPowerOff}
	}
	for {
		if _, err := v.driver.Deliver(machine{v}, v.point); err != nil {
			return &stopRun{err: err}
		}
		if v.PIC.Pending() {
			return nil
		}
		if err := v.driver.Halted(ctx, machine{v}, v.point); err != nil {
			if errors.Is(err, ErrNoWakeup) {
				return &stopRun{err: &GuestError{What: "halt", RIP: regs.RIP, More: err.Error()}}
			}
			if ctx.Err() != nil {
				return &stopRun{err: fmt.Errorf("run interrupted while the guest was halted: %w", err)}
			}
			return &stopRun{err: err}
		}
	}
}
