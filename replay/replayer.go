package replay

import (
	"context"
	"fmt"
	"time"

	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/vmm"
)

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
//
// It is a log cursor plus the driver of the phase the run is in:
// replaying, draining (the log ended inside an exit's handling) or live
// (host inputs, recorded with Continue). Only the handover (handover.go)
// swaps the driver; the methods below hand every call to it.
type Replayer struct {
	cursor
	cfg   ReplayerConfig
	clock *replayClock
	drv   phaseDriver

	// loc reaches the landmark of the delivery being replayed, if any.
	loc      locator
	tsc      virtualTSC // the last TSC handed out, replayed or not
	released uint64     // Released of the last Output event replayed
}

// phaseDriver is how the Replayer behaves in one phase: its vmm.Driver
// methods, the device clock's reading and console output.
type phaseDriver interface {
	deliver(vm vmm.Machine, p vmm.Point) (bool, error)
	halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error
	injected(vm vmm.Machine, p vmm.Point, vector uint8) error
	tsc(vm vmm.Machine, p vmm.Point) (uint64, error)
	read(p vmm.Point, mmio bool, addr uint64, data []byte) error
	output(p vmm.Point, data []byte) error
	nextEntry() vmm.EntryMode
	windows() bool
	stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) error
	now() int64
}

// ReplayStats counts what a replay did.
type ReplayStats struct {
	Events, Landmarks, Fingerprints, Outputs, Submits uint64
	// LandmarkPages counts the pages state-transfer landmarks loaded.
	LandmarkPages uint64
	// Windows counts the deliveries replayed at interrupt-window exits
	// the log named by their count (RecorderConfig.WindowCounts).
	Windows uint64
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
	r := &Replayer{cfg: cfg, cursor: cursor{src: cfg.Source}}
	r.clock = &replayClock{r: r}
	r.drv = replaying{r}
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

// Live reports whether the replay has gone live.
func (r *Replayer) Live() bool { return r.stats.LiveAt != nil }

// Released returns the Released count of the last Output event replayed:
// console bytes the primary is known to have let out.
func (r *Replayer) Released() uint64 { return r.released }

// Start implements vmm.Driver. A DMA device's bounce engine is put in
// replay mode: its backend is never called, the log has its data.
func (r *Replayer) Start(vm vmm.Machine) error {
	r.vm = vm
	if e := vm.Bounce(); e != nil {
		e.SetReplay()
		// A disk this host has its own copy of is written as the log is
		// replayed (FT's non-shared disk mode).
		if w, ok := vm.(vmm.WriteReplayer); ok {
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
	return r.drv.deliver(vm, p)
}

// NextEntry implements vmm.Driver: while replaying, run freely except
// when a landmark is next: then complete the exit without running on
// (see locator).
func (r *Replayer) NextEntry() vmm.EntryMode { return r.drv.nextEntry() }

// Windows implements vmm.Driver: a replay injects only where the log
// says, so it asks for interrupt-window exits only where the log has a
// delivery at one, and once live.
func (r *Replayer) Windows() bool { return r.drv.windows() }

// Halted implements vmm.Driver. The recording left this halt only when an
// event arrived at this exit, and Deliver has delivered all of them: a
// replay still halted has diverged (or its log ended).
func (r *Replayer) Halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error {
	if r.err != nil {
		return r.err
	}
	return r.drv.halted(ctx, vm, p)
}

// Injected implements vmm.Driver.
func (r *Replayer) Injected(vm vmm.Machine, p vmm.Point, vector uint8) error {
	return r.drv.injected(vm, p, vector)
}

// TSC implements vmm.Driver.
func (r *Replayer) TSC(vm vmm.Machine, p vmm.Point) (uint64, error) { return r.drv.tsc(vm, p) }

// Output checks what the guest wrote to its console against the log's
// Output event at this exit, if the log has one there (a recording that
// did not log output has none), and remembers its Released count. After
// going live it does nothing.
func (r *Replayer) Output(p vmm.Point, data []byte) error { return r.drv.output(p, data) }

// Read implements vmm.Driver: in verify mode the log holds every read's
// value, and the first that differs stops the replay.
func (r *Replayer) Read(_ vmm.Machine, p vmm.Point, mmio bool, addr uint64, data []byte) error {
	return r.drv.read(p, mmio, addr, data)
}

// Stop implements vmm.Driver: the run must end where the recording ended,
// the same way, in the same state.
func (r *Replayer) Stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) error {
	if e := vm.Bounce(); e != nil {
		e.WaitShadows() // the writes of a non-shared disk reach it before the run ends
	}
	return r.drv.stop(vm, p, res, runErr)
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
