package replay

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	// Sink receives the events. Required.
	Sink Sink
	// Input is the console input (may be nil).
	Input interface{ Read([]byte) (int, error) }
	// KickAfter bounds how long an asynchronous event waits for the next
	// synchronous exit before the vCPU is kicked to take it at a landmark
	// (a state-transfer landmark). Default 2 ms.
	KickAfter time.Duration
	// Verify logs every PIO and MMIO read value, so a replay stops at the
	// first read that differs.
	Verify bool
	// FingerprintEvery logs the machine state's fingerprint after this many
	// events (at the next exit), so a replay that diverges silently is
	// caught near the cause. 0: only at the end.
	FingerprintEvery uint64
	// Clock is the host time source. Default: a vmm.HostClock.
	Clock devices.Clock
	// HoldWrite, if set, holds the guest's device writes (disk writes,
	// transmitted frames: bounce requests with Write) for output commit.
	// Every write is logged where the guest submits it (a Submit event);
	// HoldWrite gets that event's sequence number, on the vCPU thread, and
	// returns what the write's goroutine runs before the backend performs
	// it (bounce.Engine.SetGate): an FT primary waits there for the
	// backup's ack of the event. Without it writes are logged but not
	// held.
	HoldWrite func(seq uint64) func() error
	// WindowCounts logs a delivery at an interrupt-window exit as "at the
	// first window exit after the last synchronous exit or landmark",
	// with the registers there for the replay to check, instead of a
	// state-transfer landmark: the guest's own execution fixes where it
	// opens the window, so a replay that asks for a window at the same
	// point reaches the same instruction. That holds where KVM reports
	// the window at the instruction that opened it; where it does not (a
	// host on which window exits land at varying instructions) the
	// replay stops with a divergence at the window exit. Off: every
	// delivery between exits takes a landmark.
	WindowCounts bool
	// From, if set, continues a log that another driver began (a backup
	// that records its run after going live, ReplayerConfig.Continue):
	// the first event is numbered From.Seq+1, and every TSC value the
	// guest reads is above From.TSC.
	From *Position
}

// Position is where a log stands: the sequence number of its last event
// and the last TSC value the guest read.
type Position struct {
	Seq, TSC uint64
}

// Recorder is the primary's vmm.Driver: it runs the guest on live host
// inputs (a vmm.LiveDriver) and logs each one where it enters.
type Recorder struct {
	cfg   RecorderConfig
	live  *vmm.LiveDriver
	clock *recordingClock
	vm    vmm.Machine
	seq   uint64
	since uint64 // events since the last fingerprint
	err   error  // first failure to log; sticky
	pipe  *logPipe
	// exitRegs are the registers at exitAt, the last synchronous exit
	// (see logpb.Landmark.exit_regs).
	exitAt   vmm.Point
	exitRegs []uint64
	tsc      virtualTSC
	stats    RecordStats
}

// RecordStats counts what a recording logged.
type RecordStats struct {
	Events, Clock, Delivers, Landmarks, Injects, TSC, Reads, Fingerprints, Outputs, Submits uint64
	// Where the Delivers were: at a synchronous exit (no landmark),
	// between exits at a kick or an interrupt-window exit (each a
	// landmark: LandmarksAtKicks+LandmarksAtWindows == Landmarks), or at
	// a window exit named by its count (RecorderConfig.WindowCounts, no
	// landmark).
	DeliveriesAtExits, LandmarksAtKicks, LandmarksAtWindows, DeliveriesAtWindows uint64
	// LandmarkPages counts the pages state-transfer landmarks carried
	// (ZeroPages of them all zeros, sent without data; ZeroPages is
	// complete once the run has stopped).
	LandmarkPages, ZeroPages uint64
	// LandmarkTime is the time spent capturing the Landmarks on the vCPU
	// thread (vCPU state, dirty log, a copy of each dirty page): the
	// recording's own cost between exits. LandmarkMax is the longest
	// single capture.
	LandmarkTime, LandmarkMax time.Duration
	// LandmarkFinishTime is the time spent hashing and compressing the
	// landmarks' pages, off the vCPU thread, before they were logged.
	LandmarkFinishTime time.Duration
	// LogWait is how long the vCPU thread waited for landmarks still
	// being finished, when the guest ran too far ahead of its log.
	LogWait time.Duration
}

// LandmarkCost is the mean time one landmark took on the vCPU thread
// (0 without landmarks).
func (s RecordStats) LandmarkCost() time.Duration {
	if s.Landmarks == 0 {
		return 0
	}
	return s.LandmarkTime / time.Duration(s.Landmarks)
}

// NewRecorder returns a recorder. Create the VM with Options.Driver set
// to it: the VM then reads time through r.Clock() and keeps KVM's dirty
// log (vmm.ClockDriver, vmm.DirtyLogDriver).
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	if cfg.Sink == nil {
		return nil, fmt.Errorf("recorder needs a Sink")
	}
	if cfg.KickAfter == 0 {
		cfg.KickAfter = 2 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = vmm.NewHostClock()
	}
	r := &Recorder{cfg: cfg}
	if cfg.From != nil {
		r.seq, r.tsc.last = cfg.From.Seq, cfg.From.TSC
	}
	r.pipe = newLogPipe(cfg.Sink, r.seq)
	r.clock = &recordingClock{r: r, inner: cfg.Clock}
	r.live = vmm.NewLiveDriver(cfg.Input)
	r.live.KickAfter = cfg.KickAfter
	r.live.SchedClock = cfg.Clock.Now
	return r, nil
}

// Clock is the VM's device clock (vmm.ClockDriver): every reading is
// logged.
func (r *Recorder) Clock() devices.Clock { return r.clock }

// NeedsDirtyLog implements vmm.DirtyLogDriver: landmarks carry the pages
// written since the previous one.
func (r *Recorder) NeedsDirtyLog() bool { return true }

// Stats returns what has been logged so far. Call it on the vCPU thread
// or once the run has stopped.
func (r *Recorder) Stats() RecordStats {
	st := r.stats
	r.pipe.mu.Lock()
	st.ZeroPages, st.LandmarkFinishTime, st.LogWait = r.pipe.zeroPages, r.pipe.finishTime, r.pipe.waited
	r.pipe.mu.Unlock()
	return st
}

type recordingClock struct {
	r     *Recorder
	inner devices.Clock
	last  atomic.Int64
}

func (c *recordingClock) Now() int64 {
	v := c.inner.Now()
	// The devices' time never runs backwards, even if the host's does.
	if last := c.last.Load(); v < last {
		v = last
	}
	c.last.Store(v)
	if c.r.vm != nil {
		c.r.emit(c.r.vm.Point(), &logpb.Event{Kind: &logpb.Event_Clock{Clock: v}})
		c.r.stats.Clock++
	}
	return v
}

func (r *Recorder) emit(p vmm.Point, ev *logpb.Event) {
	r.emitLandmark(p, ev, nil)
}

// emitLandmark logs ev, a delivery whose landmark raw is finished off
// the vCPU thread (nil: ev is whole).
func (r *Recorder) emitLandmark(p vmm.Point, ev *logpb.Event, raw *rawLandmark) {
	if r.err != nil {
		return
	}
	r.seq++
	ev.Seq, ev.Exits = r.seq, p.Exits
	r.stats.Events++
	r.since++
	if err := r.pipe.append(ev, raw); err != nil {
		r.err = err
	}
}

// logErr is the first failure to log, also one the pipe's worker met
// after emit returned.
func (r *Recorder) logErr() error {
	if r.err == nil {
		r.err = r.pipe.failed()
	}
	return r.err
}

// Start implements vmm.Driver.
func (r *Recorder) Start(vm vmm.Machine) error {
	r.vm = vm
	if e := vm.Bounce(); e != nil {
		e.SetGate(r.submitted)
	}
	return r.live.Start(vm)
}

// submitted is the bounce engine's gate: it logs a device write where the
// guest submitted it, so that a backup acknowledging the event has
// replayed past the submission, and holds it with HoldWrite.
func (r *Recorder) submitted(req bounce.Request) func() error {
	r.emit(r.vm.Point(), &logpb.Event{Kind: &logpb.Event_Submit{Submit: &logpb.Submit{Tag: req.Tag, Len: uint32(req.Len)}}})
	r.stats.Submits++
	if r.err != nil {
		err := r.err
		return func() error { return err }
	}
	// The submission may still be queued behind a landmark: the write
	// waits, on its own goroutine, until it is logged.
	seq, pipe := r.seq, r.pipe
	logged := func() error { return pipe.waitAppended(seq) }
	if r.cfg.HoldWrite == nil {
		return logged
	}
	hold := r.cfg.HoldWrite(seq)
	return func() error {
		if err := logged(); err != nil {
			return err
		}
		return hold()
	}
}

// Deliver implements vmm.Driver.
func (r *Recorder) Deliver(vm vmm.Machine, p vmm.Point) (bool, error) {
	if err := r.logErr(); err != nil {
		return false, err
	}
	if p.Kind == vmm.AtExit && p != r.exitAt {
		regs, err := vm.Regs()
		if err != nil {
			return false, err
		}
		r.exitAt, r.exitRegs = p, exitRegs(regs)
	}
	if p.Kind == vmm.AtExit && r.cfg.FingerprintEvery > 0 && r.since >= r.cfg.FingerprintEvery {
		fp, err := vm.Fingerprint()
		if err != nil {
			return false, err
		}
		r.emit(p, &logpb.Event{Kind: &logpb.Event_Fingerprint{Fingerprint: &logpb.Fingerprint{Sha256: fp[:]}}})
		r.stats.Fingerprints++
		r.since = 0
	}
	r.live.Arm()
	a := r.live.Poll()
	if a.Empty() && p.Kind != vmm.Window && !(p.Kind == vmm.Kicked && vm.InterruptPending()) {
		return false, r.err
	}
	d := &logpb.Deliver{Timer: a.Timer, Input: a.Input}
	for _, c := range a.DMA {
		d.Dma = append(d.Dma, &logpb.Dma{Tag: c.Tag, Data: c.Data, Error: c.Err})
	}
	var raw *rawLandmark
	switch {
	case p.Kind == vmm.Window && r.cfg.WindowCounts:
		regs, err := vm.Regs()
		if err != nil {
			return false, err
		}
		d.Landmark = &logpb.Landmark{Rip: regs.RIP, Rflags: regs.RFLAGS, Gprs: vmm.GPRs(regs)}
		r.stats.DeliveriesAtWindows++
	case p.Kind != vmm.AtExit:
		began := time.Now()
		var err error
		raw, err = captureLandmark(vm, r.pipe.buffer())
		took := time.Since(began)
		r.stats.LandmarkTime += took
		r.stats.LandmarkMax = max(r.stats.LandmarkMax, took)
		if err != nil {
			return false, err
		}
		raw.lm.ExitRegs = r.exitRegs
		r.stats.Landmarks++
		if p.Kind == vmm.Window {
			r.stats.LandmarksAtWindows++
		} else {
			r.stats.LandmarksAtKicks++
		}
		r.stats.LandmarkPages += uint64(len(raw.lm.Pages))
	default:
		r.stats.DeliveriesAtExits++
	}
	r.emitLandmark(p, &logpb.Event{Kind: &logpb.Event_Deliver{Deliver: d}}, raw)
	r.stats.Delivers++
	vm.DeliverAsync(a)
	return true, r.err
}

// Halted implements vmm.Driver.
func (r *Recorder) Halted(ctx context.Context, vm vmm.Machine, p vmm.Point) error {
	return r.live.Halted(ctx, vm, p)
}

// Injected implements vmm.Driver.
func (r *Recorder) Injected(_ vmm.Machine, p vmm.Point, vector uint8) error {
	r.emit(p, &logpb.Event{Kind: &logpb.Event_Inject{Inject: uint32(vector)}})
	r.stats.Injects++
	return r.err
}

// NextEntry implements vmm.Driver.
func (r *Recorder) NextEntry() vmm.EntryMode { return vmm.EntryRun }

// Windows implements vmm.Driver: the recorder landmarks Window points.
func (r *Recorder) Windows() bool { return true }

// TSC implements vmm.Driver: the virtual TSC follows the host clock (not a
// device read, so not a clock event) and is logged as a TSC event.
func (r *Recorder) TSC(_ vmm.Machine, p vmm.Point) (uint64, error) {
	v := r.tsc.next(uint64(r.clock.inner.Now()) * (vmm.TSCHz / 1_000_000_000))
	r.emit(p, &logpb.Event{Kind: &logpb.Event_Tsc{Tsc: v}})
	r.stats.TSC++
	return v, r.err
}

// Read implements vmm.Driver.
func (r *Recorder) Read(_ vmm.Machine, p vmm.Point, mmio bool, addr uint64, data []byte) error {
	if !r.cfg.Verify {
		return nil
	}
	r.emit(p, &logpb.Event{Kind: &logpb.Event_Read{Read: &logpb.Read{Mmio: mmio, Addr: addr, Data: append([]byte(nil), data...)}}})
	r.stats.Reads++
	return r.err
}

// Output logs what the guest wrote to its console at the current point
// and returns the event's sequence number: an FT primary holds the bytes
// until the backup has acknowledged that event, so a backup that goes live
// has replayed past every output the outside world has seen. released is
// how many console bytes the caller has let out so far (a backup going
// live re-sends from there). Call it on the vCPU thread (from the VM's
// Console writer).
func (r *Recorder) Output(data []byte, released uint64) (uint64, error) {
	if r.vm == nil {
		return 0, fmt.Errorf("recorder: output before the run started")
	}
	r.emit(r.vm.Point(), &logpb.Event{Kind: &logpb.Event_Output{Output: &logpb.Output{Data: append([]byte(nil), data...), Released: released}}})
	r.stats.Outputs++
	return r.seq, r.err
}

// Stop implements vmm.Driver: it logs the end of the run with the final
// fingerprint. Every event is in the Sink when it returns.
func (r *Recorder) Stop(vm vmm.Machine, p vmm.Point, res vmm.Result, runErr error) (err error) {
	defer func() {
		if ferr := r.pipe.flush(); ferr != nil && err == nil {
			err = ferr
		}
	}()
	r.live.Stop(vm, p, res, runErr)
	end := &logpb.End{Reason: uint32(res.Reason), Status: uint32(res.Status)}
	if runErr != nil {
		end.Error = runErr.Error()
	}
	fp, err := vm.Fingerprint()
	if err != nil {
		return err
	}
	end.Fingerprint = &logpb.Fingerprint{Sha256: fp[:]}
	r.emit(p, &logpb.Event{Kind: &logpb.Event_End{End: end}})
	return r.err
}

// virtualTSC holds the rule every TSC value the guest reads obeys, on
// either side and across a handover: it never runs backwards, nor stands
// still.
type virtualTSC struct{ last uint64 }

// next returns v, or one tick past the last value if v is not above it.
func (t *virtualTSC) next(v uint64) uint64 {
	if v <= t.last {
		v = t.last + 1
	}
	t.last = v
	return v
}

// replayed takes a value from the log as it is: the recording obeyed the
// rule, and a replay must read what it read.
func (t *virtualTSC) replayed(v uint64) uint64 {
	t.last = v
	return v
}
