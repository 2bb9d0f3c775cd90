package replay

// The handover from replaying a log to running live (an FT backup whose
// primary is gone), and the device clock that follows it.

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// phase is where a replay with GoLive stands with its handover.
type phase uint8

const (
	// replaying: every input comes from the log.
	replaying phase = iota
	// draining: the log ended (GoLive is set) while the vCPU was handling
	// an exit; what remains of it runs without the log until the next
	// delivery point, where the handover happens.
	draining
	// live: GoLive succeeded; a vmm.LiveDriver drives the VM (or a
	// Recorder, with Continue).
	live
)

// liveSide drives the VM after the handover.
type liveSide interface {
	Start(vmm.Machine) error
	Deliver(vmm.Machine, vmm.Point) (bool, error)
	Halted(context.Context, vmm.Machine, vmm.Point) error
	Injected(vmm.Machine, vmm.Point, uint8) error
	TSC(vmm.Machine, vmm.Point) (uint64, error)
	Stop(vmm.Machine, vmm.Point, vmm.Result, error) error
}

// logEnded reports whether the replay has used up a log that ends in a
// handover: GoLive is set, every received event is replayed, and no
// landmark is being reached.
func (r *Replayer) logEnded() bool {
	return r.cfg.GoLive != nil && r.err == nil && !r.loc.busy() && r.peek() == nil && r.eof
}

// handoverAhead reports whether the next event is a Handover: the log goes
// on with what a backup recorded after going live there, and the replay
// must first get there the way the backup did (draining).
func (r *Replayer) handoverAhead() bool {
	return r.err == nil && !r.loc.busy() && r.peek().GetHandover() != nil
}

// atHandover reports whether the replay has reached a handover: the end
// of a log that goes live, or a backup's Handover in a log of a whole run.
func (r *Replayer) atHandover() bool { return r.logEnded() || r.handoverAhead() }

// handover goes live at p, a delivery point: GoLive decides (an FT backup
// claims the right to run there); then the device clock continues from the
// last logged reading or TSC on host time, the bounce engine re-issues
// the DMA requests the log did not complete, and a LiveDriver takes over.
// It is the only place the replay goes live. An error stops the run.
func (r *Replayer) handover(vm vmm.Machine, p vmm.Point) error {
	if r.phase == live {
		return nil
	}
	if r.handoverAhead() {
		return r.join(vm, p)
	}
	if r.cfg.GoLive == nil {
		// Draining toward a Handover that is not at this exit: the run
		// passed the point the backup went live at.
		return r.diverge(p, 0, "the replay passed a backup's go-live", describe(r.peek()), "a go-live here")
	}
	if e := vm.Bounce(); e != nil {
		e.WaitShadows() // every write this host performs on its copy is done, or failed
	}
	if err := r.shadowErr(vm); err != nil {
		return err
	}
	if r.cfg.Continue != nil && p.Kind != vmm.AtExit && p.Kind != 0 {
		// A kick while draining: go live at the next exit instead, a
		// point a replay of the whole log can reach.
		return nil
	}
	var mark *logpb.Event
	if r.cfg.Continue != nil {
		// The Handover's fingerprint is the state before going live.
		fp, err := vm.Fingerprint()
		if err != nil {
			r.err = err
			return err
		}
		h := &logpb.Handover{Kind: uint32(p.Kind), Fingerprint: &logpb.Fingerprint{Sha256: fp[:]}}
		if r.cfg.ContinueReason != nil {
			h.Reason = r.cfg.ContinueReason()
		}
		mark = &logpb.Event{Seq: r.lastSeq + 1, Exits: p.Exits, Kind: &logpb.Event_Handover{Handover: h}}
	}
	if err := r.cfg.GoLive(vm, p); err != nil {
		r.err = err
		return err
	}
	r.clock.goLive()
	if e := vm.Bounce(); e != nil {
		e.SetLive()
	}
	if mark != nil {
		if err := r.cfg.Continue.Append(mark); err != nil {
			r.err = fmt.Errorf("logging the handover: %w", err)
			return r.err
		}
		// Landmarks carry the pages written since the previous one: start
		// that count here.
		if _, err := vm.DirtyPages(); err != nil {
			r.err = err
			return err
		}
		rec, err := NewRecorder(RecorderConfig{Sink: r.cfg.Continue, Input: r.cfg.LiveInput, KickAfter: r.cfg.LiveKickAfter,
			Clock: liveClock{r.clock}})
		if err != nil {
			r.err = err
			return err
		}
		rec.seq, rec.lastTSC = mark.Seq, r.lastTSC
		r.rec, r.live = rec, rec
	} else {
		ld := vmm.NewLiveDriver(r.cfg.LiveInput)
		ld.KickAfter = r.cfg.LiveKickAfter
		ld.SchedClock = r.clock.Now
		r.live = ld
	}
	if err := r.live.Start(vm); err != nil {
		r.err = err
		return err
	}
	r.phase = live
	at := p
	r.stats.LiveAt = &at
	return nil
}

// join replays across a Handover at p: the backup went live here, in
// this state, and what follows is its own run.
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
	r.phase = replaying
	r.stats.Handovers++
	r.stats.JoinedAt = &at
	return nil
}

type replayClock struct {
	r    *Replayer
	last int64
	// After going live: host time since liveStart, added to liveBase.
	liveBase  int64
	liveStart time.Time
	isLive    bool
}

// goLive makes the clock continue from the last logged reading (or the
// last TSC, whichever is later) on host time. The clock never runs
// backwards across it.
func (c *replayClock) goLive() {
	base := c.last
	if t := int64(c.r.lastTSC / (vmm.TSCHz / 1_000_000_000)); t > base {
		base = t
	}
	c.liveBase, c.liveStart, c.isLive = base, time.Now(), true
}

// liveNow is the clock after going live, without logging.
func (c *replayClock) liveNow() int64 {
	v := c.liveBase + int64(time.Since(c.liveStart))
	if v > c.last {
		c.last = v
	}
	return c.last
}

// liveClock is a recorder's host clock after the handover.
type liveClock struct{ c *replayClock }

func (l liveClock) Now() int64 { return l.c.liveNow() }

func (c *replayClock) Now() int64 {
	r := c.r
	if r.vm == nil {
		return 0
	}
	if c.isLive {
		if r.rec != nil {
			return r.rec.clock.Now() // logged
		}
		return c.liveNow()
	}
	p := r.vm.Point()
	ev, err := r.expect(p, fmt.Sprintf("a clock read at %d exits", p.Exits), func(ev *logpb.Event) bool {
		_, ok := ev.Kind.(*logpb.Event_Clock)
		return ok
	})
	if err != nil {
		// Draining, the clock stands still until the handover; after a
		// divergence, the sticky error stops the run at the next point.
		return c.last
	}
	c.last = ev.GetClock()
	return c.last
}
