package replay

// The handover from replaying a log to running live (an FT backup whose
// primary is gone), and the device clock that follows it.

import (
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
	// live: GoLive succeeded; a vmm.LiveDriver drives the VM.
	live
)

// logEnded reports whether the replay has used up a log that ends in a
// handover: GoLive is set, every received event is replayed, and no
// landmark is being reached.
func (r *Replayer) logEnded() bool {
	return r.cfg.GoLive != nil && r.err == nil && !r.loc.busy() && r.peek() == nil && r.eof
}

// handover goes live at p, a delivery point: GoLive decides (an FT backup
// claims the right to run there); then the device clock continues from the
// last logged reading or TSC on host time, the bounce engine re-issues
// the DMA requests the log did not complete, and a LiveDriver takes over.
// It is the only place the replay goes live. An error stops the run.
func (r *Replayer) handover(vm vmm.Machine, p vmm.Point) error {
	if r.phase == live {
		return nil
	}
	if err := r.cfg.GoLive(vm, p); err != nil {
		r.err = err
		return err
	}
	r.clock.goLive()
	if e := vm.Bounce(); e != nil {
		e.SetLive()
	}
	r.live = vmm.NewLiveDriver(r.cfg.LiveInput)
	r.live.KickAfter = r.cfg.LiveKickAfter
	r.live.SchedClock = r.clock.Now
	if err := r.live.Start(vm); err != nil {
		r.err = err
		return err
	}
	r.phase = live
	at := p
	r.stats.LiveAt = &at
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

func (c *replayClock) Now() int64 {
	r := c.r
	if r.vm == nil {
		return 0
	}
	if c.isLive {
		v := c.liveBase + int64(time.Since(c.liveStart))
		if v > c.last {
			c.last = v
		}
		return c.last
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
