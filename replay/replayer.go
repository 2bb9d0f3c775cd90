package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

var errEOF = io.EOF

// ReplayerConfig configures a Replayer.
type ReplayerConfig struct {
	// Source yields the recorded events. Required.
	Source Source
	// GoLive, if set, makes the end of the Source a handover instead of a
	// divergence (an FT backup whose primary is gone). Once every received
	// event is replayed, the replayer calls GoLive on the vCPU thread at
	// the next delivery point (Deliver, Halted or Stop), never inside a
	// device's clock read. If the log ended in the middle of an exit's
	// handling, the rest of that exit is served without the log first:
	// the clock stands at its last logged reading and the TSC moves on
	// by one tick per read (see handover). If GoLive returns nil, the
	// replayer drives the VM from the host from then on, like a
	// vmm.LiveDriver (the device clock continues from the last logged
	// time, console input comes from LiveInput); if it returns an error,
	// the run stops with it.
	GoLive func(vm vmm.Machine, p vmm.Point) error
	// LiveInput is the console input after going live (may be nil).
	LiveInput interface{ Read([]byte) (int, error) }
	// LiveKickAfter is the LiveDriver's KickAfter after going live.
	LiveKickAfter time.Duration
	// Continue, with GoLive, records the run after going live, so that
	// the events replayed so far followed by those Continue receives are
	// the log of the whole run: first a Handover event (numbered on from
	// the last event replayed), then what a Recorder logs (without
	// console output). The VM keeps KVM's dirty log for the recorder's
	// landmarks. Errors from Continue stop the run, as a recorder's do:
	// give a Sink that never fails if the live run matters more than its
	// log. ContinueReason, if set, says why in the Handover event.
	Continue       Sink
	ContinueReason func() string
}

// Replayer is the backup's vmm.Driver: it never reads the host clock or
// host devices; every input comes from the log, at the point it was
// recorded, and every check the log carries (injections, TSC, read values,
// fingerprints, the end) is verified.
type Replayer struct {
	cfg   ReplayerConfig
	clock *replayClock
	vm    vmm.Machine
	next  *logpb.Event // peeked, not yet consumed
	eof   bool
	err   error // first divergence; sticky

	// loc reaches the landmark of the delivery being replayed, if any.
	loc   locator
	stats ReplayStats

	phase    phase
	live     liveSide  // set by handover
	rec      *Recorder // the live side when Continue is set
	lastSeq  uint64    // of the last event read from the Source
	lastTSC  uint64
	released uint64 // Released of the last Output event replayed
}

// ReplayStats counts what a replay did.
type ReplayStats struct {
	Events, Landmarks, Fingerprints, Outputs, Submits uint64
	// LandmarkPages counts the pages state-transfer landmarks loaded.
	LandmarkPages uint64
	// LiveAt is where the replay went live (Config.GoLive), if it did.
	LiveAt *vmm.Point
	// Handovers counts the Handover events replayed across (a backup's
	// log of a whole run), and JoinedAt is where the last one was.
	Handovers uint64
	JoinedAt  *vmm.Point
}

// NewReplayer returns a replayer. Create the VM with Options.Driver set
// to it: the VM then reads time through r.Clock() (vmm.ClockDriver).
func NewReplayer(cfg ReplayerConfig) (*Replayer, error) {
	if cfg.Source == nil {
		return nil, fmt.Errorf("replayer needs a Source")
	}
	r := &Replayer{cfg: cfg}
	r.clock = &replayClock{r: r}
	return r, nil
}

// Clock is the VM's device clock (vmm.ClockDriver): it answers from the
// log.
func (r *Replayer) Clock() devices.Clock { return r.clock }

// NeedsDirtyLog implements vmm.DirtyLogDriver: a replay that records its
// live run (Continue) captures landmarks after going live.
func (r *Replayer) NeedsDirtyLog() bool { return r.cfg.Continue != nil && r.cfg.GoLive != nil }

// Stats returns what the replay has done.
func (r *Replayer) Stats() ReplayStats { return r.stats }

func (r *Replayer) peek() *logpb.Event {
	for {
		if r.next == nil && !r.eof && r.err == nil {
			ev, err := r.cfg.Source.Next()
			switch {
			case errors.Is(err, io.EOF):
				r.eof = true
			case err != nil:
				r.err = fmt.Errorf("reading the log: %w", err)
			default:
				r.next = ev
				r.lastSeq = ev.Seq
			}
		}
		// A device write's submission carries no input: it marks where
		// the primary submitted it (output commit). It is passed once the
		// replay has reached its exit, never before, so a backup that
		// goes live at the end of its log has replayed past every write
		// the primary let out.
		if r.next.GetSubmit() != nil && r.vm != nil && r.next.Exits <= r.vm.Point().Exits {
			r.next = nil
			r.stats.Events++
			r.stats.Submits++
			continue
		}
		return r.next
	}
}

// Live reports whether the replay has gone live.
func (r *Replayer) Live() bool { return r.phase == live }

// Released returns the Released count of the last Output event replayed:
// console bytes the primary is known to have let out.
func (r *Replayer) Released() uint64 { return r.released }

func (r *Replayer) consume() *logpb.Event {
	ev := r.peek()
	r.next = nil
	if ev != nil {
		r.stats.Events++
	}
	return ev
}

func (r *Replayer) diverge(p vmm.Point, seq uint64, what, expected, actual string) error {
	if r.err == nil {
		r.err = &DivergenceError{Seq: seq, Point: p, What: what, Expected: expected, Actual: actual}
	}
	return r.err
}

func describe(ev *logpb.Event) string {
	if ev == nil {
		return "the end of the log"
	}
	switch k := ev.Kind.(type) {
	case *logpb.Event_Clock:
		return fmt.Sprintf("a clock read (%d ns) at %d exits", k.Clock, ev.Exits)
	case *logpb.Event_Submit:
		return fmt.Sprintf("a device write submitted (tag %#x, %d bytes) at %d exits", k.Submit.Tag, k.Submit.Len, ev.Exits)
	case *logpb.Event_Deliver:
		if k.Deliver.Landmark != nil {
			return fmt.Sprintf("a delivery at a landmark (RIP %#x) after %d exits", k.Deliver.Landmark.Rip, ev.Exits)
		}
		return fmt.Sprintf("a delivery at exit %d", ev.Exits)
	case *logpb.Event_Inject:
		return fmt.Sprintf("injection of vector %#x at %d exits", k.Inject, ev.Exits)
	case *logpb.Event_Tsc:
		return fmt.Sprintf("an rdtsc at %d exits", ev.Exits)
	case *logpb.Event_Read:
		return fmt.Sprintf("a read of %#x at %d exits", k.Read.Addr, ev.Exits)
	case *logpb.Event_Fingerprint:
		return fmt.Sprintf("a fingerprint at %d exits", ev.Exits)
	case *logpb.Event_End:
		return fmt.Sprintf("the end of the run at %d exits", ev.Exits)
	case *logpb.Event_Handover:
		return fmt.Sprintf("a backup's go-live at %v", vmm.Point{Exits: ev.Exits, Kind: vmm.PointKind(k.Handover.Kind)})
	}
	return fmt.Sprintf("event %d", ev.Seq)
}

// expect consumes the next event if it is of the kind want at p.Exits, or
// reports a divergence. A log that ends in a handover (logEnded) puts the
// replay in the draining phase and returns errDraining: the caller answers
// without the log until the next delivery point.
func (r *Replayer) expect(p vmm.Point, want string, match func(*logpb.Event) bool) (*logpb.Event, error) {
	if r.phase != replaying || r.atHandover() {
		if r.phase == replaying {
			r.phase = draining
		}
		return nil, errDraining
	}
	ev := r.peek()
	if r.err != nil {
		return nil, r.err
	}
	if ev == nil || ev.Exits != p.Exits || !match(ev) {
		var seq uint64
		if ev != nil {
			seq = ev.Seq
		}
		return nil, r.diverge(p, seq, "the guest did something the log does not have next", describe(ev), want)
	}
	return r.consume(), nil
}

// errDraining tells expect's callers that the log has ended: answer
// without it (the handover follows at the next delivery point).
var errDraining = errors.New("replay: the log has ended")

// asyncOf turns a logged delivery back into the events it delivered.
func asyncOf(d *logpb.Deliver) vmm.Async {
	a := vmm.Async{Timer: d.Timer, Input: d.Input}
	for _, c := range d.Dma {
		a.DMA = append(a.DMA, bounce.Completion{Tag: c.Tag, Data: c.Data, Err: c.Error})
	}
	return a
}

// Start implements vmm.Driver. A DMA device's bounce engine is put in
// replay mode: its backend is never called, the log has its data.
func (r *Replayer) Start(vm vmm.Machine) error {
	r.vm = vm
	if e := vm.Bounce(); e != nil {
		e.SetReplay()
		// A disk this host has its own copy of is written as the log is
		// replayed (FT's non-shared disk mode).
		if w, ok := vm.(interface{ ReplayWrites(bounce.Request) bool }); ok {
			e.SetReplayWrites(w.ReplayWrites)
		}
	}
	return nil
}

// Deliver implements vmm.Driver.
func (r *Replayer) Deliver(vm vmm.Machine, p vmm.Point) (bool, error) {
	if r.err != nil {
		return false, r.err
	}
	if r.phase != replaying {
		if err := r.handover(vm, p); err != nil {
			return false, err
		}
		switch r.phase {
		case live:
			return r.live.Deliver(vm, p)
		case draining:
			return false, nil // going live at the next exit (Continue)
		}
		// Joined a Handover: the backup's own events follow.
	}
	if r.loc.busy() {
		return r.atLandmark(vm, p)
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
		if ev == nil && r.logEnded() || ev.GetHandover() != nil && ev.Exits == p.Exits {
			if err := r.handover(vm, p); err != nil {
				return false, err
			}
			if r.phase == replaying {
				continue // joined: the backup's own events follow
			}
			more, err := r.live.Deliver(vm, p)
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

// NextEntry implements vmm.Driver: run freely, except when a landmark
// is next: then complete the exit without running on (see locator).
func (r *Replayer) NextEntry() vmm.EntryMode {
	if r.err != nil || r.phase != replaying {
		return vmm.EntryRun
	}
	if !r.loc.busy() && r.vm != nil {
		// A landmark can follow other events at the same exit (the
		// primary injected at the exit and was kicked before running an
		// instruction, or two landmarks share an exit).
		p := r.vm.Point()
		if ev := r.peek(); ev != nil && ev.Exits == p.Exits && ev.GetDeliver().GetLandmark() != nil {
			if r.startLandmark(r.vm, p, ev) != nil {
				return vmm.EntryRun // the sticky error stops the run at the next point
			}
		}
	}
	return r.loc.entry()
}

// Windows implements vmm.Driver: a replay injects only where the log
// says, so it never asks for interrupt-window exits.
func (r *Replayer) Windows() bool { return r.phase == live }

// Halted implements vmm.Driver. The recording left this halt only when an
// event arrived at this exit, and Deliver has delivered all of them: a
// replay still halted has diverged (or its log ended).
func (r *Replayer) Halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error {
	if r.err != nil {
		return r.err
	}
	if r.phase != replaying || r.atHandover() {
		if err := r.handover(vm, p); err != nil {
			return err
		}
		if r.phase != replaying {
			return r.live.Halted(ctx, vm, p) // halts are at exits: live
		}
		// Joined: the backup waited here for its first live event, which
		// the next Deliver at this exit replays.
		if ev := r.peek(); ev.GetDeliver() != nil && ev.Exits == p.Exits {
			return nil
		}
	}
	ev := r.peek()
	return r.diverge(p, 0, "the guest halted and the log has nothing to wake it", "an event at this exit", describe(ev))
}

// Injected implements vmm.Driver.
func (r *Replayer) Injected(vm vmm.Machine, p vmm.Point, vector uint8) error {
	if r.phase == live {
		return r.live.Injected(vm, p, vector)
	}
	_, err := r.expect(p, fmt.Sprintf("injection of vector %#x at %d exits", vector, p.Exits), func(ev *logpb.Event) bool {
		v, ok := ev.Kind.(*logpb.Event_Inject)
		return ok && v.Inject == uint32(vector)
	})
	if err == errDraining {
		return nil // no record to check it against
	}
	return err
}

// TSC implements vmm.Driver.
func (r *Replayer) TSC(vm vmm.Machine, p vmm.Point) (uint64, error) {
	var v uint64
	var err error
	switch r.phase {
	case replaying:
		ev, err := r.expect(p, fmt.Sprintf("an rdtsc at %d exits", p.Exits), func(ev *logpb.Event) bool {
			_, ok := ev.Kind.(*logpb.Event_Tsc)
			return ok
		})
		if err != errDraining {
			if err != nil {
				return 0, err
			}
			r.lastTSC = ev.GetTsc()
			return r.lastTSC, nil
		}
		v = r.lastTSC + 1 // draining: the TSC moves on, by as little as it can
	case draining:
		v = r.lastTSC + 1
	case live:
		v, err = r.live.TSC(vm, p)
		if r.rec != nil {
			r.lastTSC = v // logged as it is: the recorder keeps it above the replay's last
			return v, err
		}
	}
	if v <= r.lastTSC { // the TSC never runs backwards across the handover
		v = r.lastTSC + 1
	}
	r.lastTSC = v
	return v, err
}

// Output checks what the guest wrote to its console against the log's
// Output event at this exit, if the log has one there (a recording that
// did not log output has none), and remembers its Released count. After
// going live it does nothing.
func (r *Replayer) Output(p vmm.Point, data []byte) error {
	if r.err != nil || r.phase != replaying {
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

// Read implements vmm.Driver: in verify mode the log holds every read's
// value, and the first that differs stops the replay.
func (r *Replayer) Read(_ vmm.Machine, p vmm.Point, mmio bool, addr uint64, data []byte) error {
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

// Stop implements vmm.Driver: the run must end where the recording ended,
// the same way, in the same state.
func (r *Replayer) Stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) error {
	if e := vm.Bounce(); e != nil {
		e.WaitShadows() // the writes of a non-shared disk reach it before the run ends
	}
	if r.phase == live {
		if err := r.live.Stop(vm, p, res, runErr); err != nil && runErr == nil {
			return err
		}
		return runErr
	}
	if r.err != nil {
		return r.err
	}
	if runErr != nil {
		return runErr
	}
	ev, err := r.expect(p, fmt.Sprintf("the end of the run (%v) at %d exits", res.Reason, p.Exits), func(ev *logpb.Event) bool {
		_, ok := ev.Kind.(*logpb.Event_End)
		return ok
	})
	if err == errDraining {
		// The log ended before the run did: go live at its very end.
		if err := r.handover(vm, p); err != nil {
			return err
		}
		switch r.phase {
		case live:
			return r.live.Stop(vm, p, res, runErr)
		case draining: // stopped between exits while draining (Continue)
			return runErr
		}
		// Joined: the backup's own log ends the run.
		ev, err = r.expect(p, fmt.Sprintf("the end of the run (%v) at %d exits", res.Reason, p.Exits), func(ev *logpb.Event) bool {
			_, ok := ev.Kind.(*logpb.Event_End)
			return ok
		})
	}
	if err != nil {
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
	return nil
}

// shadowErr stops the replay if this host's copy of a disk missed a write
// the log has (the engine performs them, SetReplayWrites): a backup with
// that copy must not take over, and the sooner it stops, the sooner its
// primary knows it runs unprotected.
func (r *Replayer) shadowErr(vm vmm.Machine) error {
	e := vm.Bounce()
	if e == nil {
		return nil
	}
	if err := e.ShadowErr(); err != nil {
		r.err = fmt.Errorf("this host's copy of the disk is not the primary's: %w", err)
		return r.err
	}
	return nil
}
