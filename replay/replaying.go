package replay

// The replaying phase: every input comes from the log, and every check
// the log carries is made.

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// replaying is the Replayer's driver while the log has events to give.
type replaying struct{ r *Replayer }

// errDraining tells expect's callers that the log has ended here: the
// driver is now draining, and the call is answered by it.
var errDraining = errors.New("replay: the log has ended")

// expect consumes the next event if it is of the kind want at p.Exits, or
// reports a divergence. At a handover (the end of a log that goes live,
// or a backup's Handover) it swaps in the draining driver and returns
// errDraining: the caller hands the call to r.drv.
func (d replaying) expect(p vmm.Point, want string, match func(*logpb.Event) bool) (*logpb.Event, error) {
	if d.r.atHandover() {
		d.r.drain()
		return nil, errDraining
	}
	return d.r.match(p, want, match)
}

func (d replaying) deliver(vm vmm.Machine, p vmm.Point) (bool, error) {
	r := d.r
	if r.loc.busy() {
		return r.atLandmark(vm, p)
	}
	if p.Kind == vmm.Window {
		return r.atWindow(vm, p)
	}
	if p.Kind != vmm.AtExit {
		return false, nil // a kick from cancellation: nothing recorded here
	}
	if err := r.shadowErr(vm); err != nil {
		return false, err
	}
	delivered := false
	for {
		ev := r.peek()
		if r.err != nil {
			return false, r.err
		}
		if ev.GetHandover() != nil && ev.Exits == p.Exits {
			if err := r.join(vm, p); err != nil {
				return false, err
			}
			continue // the backup's own events follow
		}
		if ev == nil && r.logEnded() {
			r.drain()
			more, err := r.drv.deliver(vm, p)
			return delivered || more, err
		}
		if ev == nil || ev.Exits != p.Exits {
			if ev != nil && ev.Exits < p.Exits {
				return false, r.diverge(p, ev.Seq, "the replay passed a point the log still has events for", describe(ev), "a later exit")
			}
			return delivered, nil
		}
		switch k := ev.Kind.(type) {
		case *logpb.Event_Fingerprint:
			r.consume()
			fp, err := vm.Fingerprint()
			if err != nil {
				return false, err
			}
			if !bytes.Equal(fp[:], k.Fingerprint.Sha256) {
				return false, r.diverge(p, ev.Seq, "machine state fingerprint differs", fmt.Sprintf("%x", k.Fingerprint.Sha256), fmt.Sprintf("%x", fp))
			}
			r.stats.Fingerprints++
		case *logpb.Event_Deliver:
			if k.Deliver.AtWindow() {
				return delivered, r.err // at the window exit windows asks for
			}
			if k.Deliver.Landmark != nil {
				return delivered, r.startLandmark(vm, p, ev)
			}
			r.consume()
			vm.DeliverAsync(asyncOf(k.Deliver))
			delivered = true
		default:
			// Injections, TSC values, reads and the end are consumed
			// where they happen.
			return delivered, r.err
		}
	}
}

func (d replaying) nextEntry() vmm.EntryMode {
	r := d.r
	if r.err != nil {
		return vmm.EntryRun
	}
	if !r.loc.busy() && r.vm != nil {
		// A landmark can follow other events at the same exit (the
		// primary injected at the exit and was kicked before running an
		// instruction, or two landmarks share an exit).
		p := r.vm.Point()
		if ev := r.peek(); ev != nil && ev.Exits == p.Exits && ev.GetDeliver().AtLandmark() {
			if r.startLandmark(r.vm, p, ev) != nil {
				return vmm.EntryRun // the sticky error stops the run at the next point
			}
		}
	}
	return r.loc.entry()
}

// windows asks for an interrupt-window exit only where the log's next
// event is a delivery at one, after this exit (or the landmark loaded
// after it): the recording asked for it in the same state, so the guest
// opens the window at the same instruction.
func (d replaying) windows() bool {
	r := d.r
	if r.err != nil || r.loc.busy() || r.vm == nil {
		return false
	}
	ev := r.peek()
	return ev != nil && ev.Exits == r.vm.Point().Exits && ev.GetDeliver().AtWindow()
}

// atWindow replays the delivery at an interrupt-window exit: the log's
// next event must be one, after the same exit, and the registers must be
// those the recording had there.
func (r *Replayer) atWindow(vm vmm.Machine, p vmm.Point) (bool, error) {
	ev := r.peek()
	if r.err != nil {
		return false, r.err
	}
	if ev == nil || ev.Exits != p.Exits || !ev.GetDeliver().AtWindow() {
		return false, r.diverge(p, 0, "an interrupt-window exit the log does not have", "a delivery at a window exit after "+fmt.Sprint(p.Exits)+" exits", describe(ev))
	}
	d := ev.GetDeliver()
	regs, err := vm.Regs()
	if err != nil {
		return false, err
	}
	lm := d.Landmark
	if diff := regsDiff(exitRegs(regs), append([]uint64{lm.Rip, lm.Rflags}, lm.Gprs...)); diff != "" {
		return false, r.diverge(p, ev.Seq, "the replay's interrupt-window exit is at another instruction or in another state", "the recorded registers", "registers that differ:"+diff)
	}
	r.consume()
	r.stats.Windows++
	vm.DeliverAsync(asyncOf(d))
	return true, nil
}

func (d replaying) halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error {
	if d.r.atHandover() {
		d.r.drain()
		return d.r.drv.halted(ctx, vm, p)
	}
	return d.r.haltedDiverged(p)
}

// haltedDiverged reports a halt the log has nothing to end.
func (r *Replayer) haltedDiverged(p vmm.Point) error {
	return r.diverge(p, 0, "the guest halted and the log has nothing to wake it", "an event at this exit", describe(r.peek()))
}

func (d replaying) injected(vm vmm.Machine, p vmm.Point, vector uint8) error {
	_, err := d.expect(p, fmt.Sprintf("injection of vector %#x at %d exits", vector, p.Exits), func(ev *logpb.Event) bool {
		v, ok := ev.Kind.(*logpb.Event_Inject)
		return ok && v.Inject == uint32(vector)
	})
	if err == errDraining {
		return d.r.drv.injected(vm, p, vector)
	}
	return err
}

func (d replaying) tsc(vm vmm.Machine, p vmm.Point) (uint64, error) {
	ev, err := d.expect(p, fmt.Sprintf("an rdtsc at %d exits", p.Exits), func(ev *logpb.Event) bool {
		_, ok := ev.Kind.(*logpb.Event_Tsc)
		return ok
	})
	switch {
	case err == errDraining:
		return d.r.drv.tsc(vm, p)
	case err != nil:
		return 0, err
	}
	return d.r.tsc.replayed(ev.GetTsc()), nil
}

func (d replaying) now() int64 {
	r := d.r
	p := r.vm.Point()
	ev, err := d.expect(p, fmt.Sprintf("a clock read at %d exits", p.Exits), func(ev *logpb.Event) bool {
		_, ok := ev.Kind.(*logpb.Event_Clock)
		return ok
	})
	switch {
	case err == errDraining:
		return r.drv.now()
	case err != nil:
		return r.clock.last // the sticky error stops the run at the next point
	}
	r.clock.last = ev.GetClock()
	return r.clock.last
}

func (d replaying) output(p vmm.Point, data []byte) error {
	r := d.r
	if r.err != nil {
		return r.err
	}
	ev := r.peek()
	out := ev.GetOutput()
	if out == nil || ev.Exits != p.Exits {
		return r.err
	}
	if !bytes.Equal(out.Data, data) {
		return r.diverge(p, ev.Seq, "the guest wrote different output", fmt.Sprintf("%q", out.Data), fmt.Sprintf("%q", data))
	}
	r.consume()
	r.released = out.Released
	r.stats.Outputs++
	return nil
}

func (d replaying) read(p vmm.Point, mmio bool, addr uint64, data []byte) error {
	r := d.r
	ev := r.peek()
	if ev == nil || ev.GetRead() == nil {
		return r.err // not a verify-mode log (or nothing here)
	}
	rd := ev.GetRead()
	if ev.Exits != p.Exits || rd.Mmio != mmio || rd.Addr != addr || !bytes.Equal(rd.Data, data) {
		return r.diverge(p, ev.Seq, "a device read returned a different value",
			fmt.Sprintf("%s %#x = %x", space(rd.Mmio), rd.Addr, rd.Data), fmt.Sprintf("%s %#x = %x", space(mmio), addr, data))
	}
	r.consume()
	return nil
}

func space(mmio bool) string {
	if mmio {
		return "MMIO"
	}
	return "port"
}

func (d replaying) stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) error {
	r := d.r
	if r.err != nil {
		return r.err
	}
	if runErr != nil {
		return runErr
	}
	ev, err := d.expect(p, fmt.Sprintf("the end of the run (%v) at %d exits", res.Reason, p.Exits), func(ev *logpb.Event) bool {
		_, ok := ev.Kind.(*logpb.Event_End)
		return ok
	})
	switch {
	case err == errDraining:
		return r.drv.stop(vm, p, res, runErr) // the log ended before the run did
	case err != nil:
		return err
	}
	end := ev.GetEnd()
	if end.Reason != uint32(res.Reason) || end.Status != uint32(res.Status) {
		return r.diverge(p, ev.Seq, "the run ended differently",
			fmt.Sprintf("%v status %d", vmm.StopReason(end.Reason), end.Status), fmt.Sprintf("%v status %d", res.Reason, res.Status))
	}
	fp, err := vm.Fingerprint()
	if err != nil {
		return err
	}
	if !bytes.Equal(fp[:], end.Fingerprint.GetSha256()) {
		return r.diverge(p, ev.Seq, "final machine state fingerprint differs", fmt.Sprintf("%x", end.Fingerprint.GetSha256()), fmt.Sprintf("%x", fp))
	}
	if extra := r.peek(); extra != nil {
		return r.diverge(p, extra.Seq, "the log goes on after its end", "nothing", describe(extra))
	}
	return r.err // reading past the end may have found a misnumbered event
}
