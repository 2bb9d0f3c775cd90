package replay

// The handover from replaying a log to running live (an FT backup whose
// primary is gone): the draining and live drivers, the one place that
// swaps them in, and the device clock that follows.

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// logEnded reports whether the replay has used up a log that ends in a
// handover: GoLive is set, every received event is replayed, and no
// landmark is being reached.
func (r *Replayer) logEnded() bool {
	return r.cfg.GoLive != nil && !r.loc.busy() && r.usedUp()
}

// atHandover reports whether the replay has reached a handover: the end
// of a log that goes live, or a backup's Handover in a log of a whole run.
func (r *Replayer) atHandover() bool {
	return r.logEnded() || !r.loc.busy() && r.handoverAhead()
}

// drain swaps in the draining driver: the log ended (or a Handover is
// next) while the vCPU was handling an exit; what remains of it runs
// without the log until the next delivery point, where the handover
// happens.
func (r *Replayer) drain() { r.drv = draining{r} }

// draining is the Replayer's driver between the end of the log and the
// next delivery point. Clock reads stand at the last logged one, the TSC
// moves on by one tick a read, injections have no record to be checked
// against.
type draining struct{ r *Replayer }

func (d draining) deliver(vm vmm.Machine, p vmm.Point) (bool, error) {
	r := d.r
	if r.handoverAhead() {
		if err := r.join(vm, p); err != nil {
			return false, err
		}
		return r.drv.deliver(vm, p) // the backup's own events follow
	}
	if ok, err := r.goLive(vm, p); !ok || err != nil {
		return false, err // !ok: going live at the next exit (Continue)
	}
	return r.drv.deliver(vm, p)
}

func (d draining) halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error {
	r := d.r
	if r.handoverAhead() {
		if err := r.join(vm, p); err != nil {
			return err
		}
		// The backup waited here for its first live event, which the
		// next Deliver at this exit replays.
		if ev := r.peek(); ev.GetDeliver() != nil && ev.Exits == p.Exits {
			return nil
		}
		return r.haltedDiverged(p)
	}
	if ok, err := r.goLive(vm, p); !ok || err != nil {
		return err // halts are at exits, where the handover never waits
	}
	return r.drv.halted(ctx, vm, p)
}

func (d draining) stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) error {
	r := d.r
	if r.err != nil {
		return r.err
	}
	if runErr != nil {
		return runErr
	}
	// The log ended before the run did: go live at its very end.
	if r.handoverAhead() {
		if err := r.join(vm, p); err != nil {
			return err
		}
		return r.drv.stop(vm, p, res, runErr) // the backup's own log ends the run
	}
	if ok, err := r.goLive(vm, p); !ok || err != nil {
		return err // stopped between exits while draining (Continue)
	}
	return r.drv.stop(vm, p, res, runErr)
}

func (draining) injected(vmm.Machine, vmm.Point, uint8) error { return nil }

func (d draining) tsc(vmm.Machine, vmm.Point) (uint64, error) {
	return d.r.tsc.next(0), nil // by as little as it can
}

func (d draining) now() int64                                 { return d.r.clock.last }
func (d draining) read(vmm.Point, bool, uint64, []byte) error { return d.r.err }
func (d draining) output(vmm.Point, []byte) error             { return d.r.err }
func (draining) nextEntry() vmm.EntryMode                     { return vmm.EntryRun }
func (draining) windows() bool                                { return false }

// goLive goes live at p, a delivery point: GoLive decides (an FT backup
// claims the right to run there); then the device clock continues from
// the last logged reading or TSC on host time, the bounce engine
// re-issues the DMA requests the log did not complete, and the live
// driver is swapped in. It is the only place the replay goes live. It
// reports false, with no error, if the handover waits for the next exit.
// An error stops the run.
func (r *Replayer) goLive(vm vmm.Machine, p vmm.Point) (bool, error) {
	if r.cfg.GoLive == nil {
		// Draining toward a Handover that is not at this exit: the run
		// passed the point the backup went live at.
		return false, r.diverge(p, 0, "the replay passed a backup's go-live", describe(r.peek()), "a go-live here")
	}
	if e := vm.Bounce(); e != nil {
		e.WaitShadows() // every write this host performs on its copy is done, or failed
	}
	if err := r.shadowErr(vm); err != nil {
		return false, err
	}
	if r.cfg.Continue != nil && p.Kind != vmm.AtExit && p.Kind != 0 {
		// A kick while draining: go live at the next exit instead, a
		// point a replay of the whole log can reach.
		return false, nil
	}
	var mark *logpb.Event
	if r.cfg.Continue != nil {
		// The Handover's fingerprint is the state before going live.
		fp, err := vm.Fingerprint()
		if err != nil {
			r.err = err
			return false, err
		}
		h := &logpb.Handover{Kind: uint32(p.Kind), Fingerprint: &logpb.Fingerprint{Sha256: fp[:]}}
		if r.cfg.ContinueReason != nil {
			h.Reason = r.cfg.ContinueReason()
		}
		mark = &logpb.Event{Seq: r.lastSeq + 1, Exits: p.Exits, Kind: &logpb.Event_Handover{Handover: h}}
	}
	if err := r.cfg.GoLive(vm, p); err != nil {
		r.err = err
		return false, err
	}
	r.clock.goLive()
	if e := vm.Bounce(); e != nil {
		e.SetLive()
	}
	side, err := r.liveSide(vm, mark)
	if err == nil {
		err = side.Start(vm)
	}
	if err != nil {
		r.err = err
		return false, err
	}
	r.drv = live{r: r, side: side}
	at := p
	r.stats.LiveAt = &at
	return true, nil
}

// liveSide makes what drives the VM after the handover: a LiveDriver, or
// with Continue a Recorder that numbers its events on from mark.
func (r *Replayer) liveSide(vm vmm.Machine, mark *logpb.Event) (liveSide, error) {
	if mark == nil {
		ld := vmm.NewLiveDriver(r.cfg.LiveInput)
		ld.KickAfter = r.cfg.LiveKickAfter
		ld.SchedClock = r.clock.Now
		return hostSide{ld, &r.tsc, r.clock}, nil
	}
	if err := r.cfg.Continue.Append(mark); err != nil {
		return nil, fmt.Errorf("logging the handover: %w", err)
	}
	// Landmarks carry the pages written since the previous one: start
	// that count here.
	if _, err := vm.DirtyPages(); err != nil {
		return nil, err
	}
	return NewRecorder(RecorderConfig{Sink: r.cfg.Continue, Input: r.cfg.LiveInput, KickAfter: r.cfg.LiveKickAfter,
		Clock: liveClock{r.clock}, From: &Position{Seq: mark.Seq, TSC: r.tsc.last}})
}

// join replays across a Handover at p: the backup went live here, in
// this state, and what follows is its own run, replayed.
func (r *Replayer) join(vm vmm.Machine, p vmm.Point) error {
	ev := r.peek()
	h := ev.GetHandover()
	at := vmm.Point{Exits: ev.Exits, Kind: vmm.PointKind(h.Kind)}
	if at != p {
		return r.diverge(p, ev.Seq, "the replay reached a backup's go-live at another point", at.String(), p.String())
	}
	fp, err := vm.Fingerprint()
	if err != nil {
		return err
	}
	if !bytes.Equal(fp[:], h.GetFingerprint().GetSha256()) {
		return r.diverge(p, ev.Seq, "machine state fingerprint differs where the backup went live", fmt.Sprintf("%x", h.GetFingerprint().GetSha256()), fmt.Sprintf("%x", fp))
	}
	r.consume()
	r.drv = replaying{r}
	r.stats.Handovers++
	r.stats.JoinedAt = &at
	return nil
}

// liveSide drives the VM after the handover: a vmm.LiveDriver, or a
// Recorder with Continue.
type liveSide interface {
	Start(vmm.Machine) error
	Deliver(vmm.Machine, vmm.Point) (bool, error)
	Halted(context.Context, vmm.Machine, vmm.Point) error
	Injected(vmm.Machine, vmm.Point, uint8) error
	TSC(vmm.Machine, vmm.Point) (uint64, error)
	Clock() devices.Clock
	Stop(vmm.Machine, vmm.Point, vmm.Result, error) error
}

// live is the Replayer's driver after the handover: host inputs, through
// side. The log is done with: console output and reads are not checked.
type live struct {
	r    *Replayer
	side liveSide
}

func (d live) deliver(vm vmm.Machine, p vmm.Point) (bool, error) { return d.side.Deliver(vm, p) }
func (d live) halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error {
	return d.side.Halted(ctx, vm, p)
}
func (d live) injected(vm vmm.Machine, p vmm.Point, v uint8) error { return d.side.Injected(vm, p, v) }
func (d live) tsc(vm vmm.Machine, p vmm.Point) (uint64, error)     { return d.side.TSC(vm, p) }
func (d live) read(vmm.Point, bool, uint64, []byte) error          { return d.r.err }
func (d live) output(vmm.Point, []byte) error                      { return d.r.err }
func (live) nextEntry() vmm.EntryMode                              { return vmm.EntryRun }
func (live) windows() bool                                         { return true }
func (d live) now() int64                                          { return d.side.Clock().Now() }

func (d live) stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) error {
	if err := d.side.Stop(vm, p, res, runErr); err != nil && runErr == nil {
		return err
	}
	return runErr
}

// hostSide is the LiveDriver after a plain handover: its device clock
// continues the replay's (liveNow, not logged), and the TSC never runs
// backwards across the handover.
type hostSide struct {
	*vmm.LiveDriver
	tsc   *virtualTSC
	clock *replayClock
}

func (h hostSide) TSC(vm vmm.Machine, p vmm.Point) (uint64, error) {
	v, err := h.LiveDriver.TSC(vm, p)
	return h.tsc.next(v), err
}

func (h hostSide) Clock() devices.Clock { return liveClock{h.clock} }

type replayClock struct {
	r    *Replayer
	last int64
	// After going live: host time since liveStart, added to liveBase.
	liveBase  int64
	liveStart time.Time
}

// Now is the device clock: the log's readings while replaying, then the
// live driver's.
func (c *replayClock) Now() int64 {
	if c.r.vm == nil {
		return 0
	}
	return c.r.drv.now()
}

// goLive makes the clock continue from the last logged reading (or the
// last TSC, whichever is later) on host time. The clock never runs
// backwards across it.
func (c *replayClock) goLive() {
	base := c.last
	if t := int64(c.r.tsc.last / (vmm.TSCHz / 1_000_000_000)); t > base {
		base = t
	}
	c.liveBase, c.liveStart = base, time.Now()
}

// liveNow is the clock after going live, without logging.
func (c *replayClock) liveNow() int64 {
	v := c.liveBase + int64(time.Since(c.liveStart))
	if v > c.last {
		c.last = v
	}
	return c.last
}

// liveClock is the host clock after the handover: a recorder's (which
// logs it) or a LiveDriver's.
type liveClock struct{ c *replayClock }

func (l liveClock) Now() int64 { return l.c.liveNow() }
