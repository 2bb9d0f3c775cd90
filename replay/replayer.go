package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

var errEOF = io.EOF

// BreakpointMode says where the replayer may set breakpoints.
type BreakpointMode int

const (
	// BreakKernel: only at kernel-half addresses (Linux guests: their
	// kernel code is emulated here, so an int3 there exits to the VMM; user
	// code runs natively and would take the int3 itself).
	BreakKernel BreakpointMode = iota
	// BreakAll: at any address (bare guests, which run only in kernel mode).
	BreakAll
	// BreakNever: always single-step.
	BreakNever
)

func (m BreakpointMode) allows(rip uint64) bool {
	switch m {
	case BreakAll:
		return true
	case BreakKernel:
		return rip >= 0xFFFF_8000_0000_0000
	}
	return false
}

// ReplayerConfig configures a Replayer.
type ReplayerConfig struct {
	// Source yields the recorded events. Required.
	Source Source
	// MaxSteps bounds the single steps spent looking for one landmark
	// before the replay is declared diverged. Default 50 M.
	MaxSteps uint64
	// Breakpoints says where landmarks may be located with a breakpoint
	// (run to an int3 at the landmark's RIP) instead of single-stepping
	// all the way: faster, and it sees code that runs with TF cleared
	// (interrupt handlers entered while stepping). Default BreakKernel.
	Breakpoints BreakpointMode
	// NearMiss, if set, is called when the registers match a landmark's
	// but the written pages do not (for diagnosing a divergence).
	NearMiss func(vm *vmm.VM, lm *logpb.Landmark)

	// GoLive, if set, makes the end of the Source a handover instead of a
	// divergence (an FT backup whose primary is gone): at the first point
	// where the replay needs an event the log does not have, the replayer
	// calls GoLive on the vCPU thread. If it returns nil, the replayer
	// drives the VM from the host from then on, like a vmm.LiveDriver
	// (the device clock continues from the last logged time, console
	// input comes from LiveInput); if it returns an error, the run stops
	// with it. GoLive is never called while a received landmark is being
	// located: every received event is replayed first.
	GoLive func(vm *vmm.VM, p vmm.Point) error
	// LiveInput is the console input after going live (may be nil).
	LiveInput interface{ Read([]byte) (int, error) }
	// LiveKickAfter is the LiveDriver's KickAfter after going live.
	LiveKickAfter time.Duration
}

// Replayer is the backup's vmm.Driver: it never reads the host clock or
// host devices; every input comes from the log, at the point it was
// recorded, and every check the log carries (injections, TSC, read values,
// fingerprints, the end) is verified.
type Replayer struct {
	cfg   ReplayerConfig
	clock *replayClock
	vm    *vmm.VM
	next  *logpb.Event // peeked, not yet consumed
	eof   bool
	err   error // first divergence; sticky

	target *logpb.Event // a delivery with a landmark being located
	phase  int          // see the phase constants
	steps  uint64
	hits   uint64 // breakpoint hits for this landmark
	near   string // the closest miss so far, for the divergence report
	burst  uint64 // steps in the current stepping burst (see atCandidate)
	// burstSawRIP: the landmark's RIP came round during the burst.
	burstSawRIP bool
	stats       ReplayStats

	live     *vmm.LiveDriver // non-nil once the replay has gone live
	lastTSC  uint64
	released uint64 // Released of the last Output event replayed
}

// ReplayStats counts what a replay did.
type ReplayStats struct {
	Events, Landmarks, Steps, Breakpoints, Fingerprints, Outputs uint64
	// LiveAt is where the replay went live (Config.GoLive), if it did.
	LiveAt *vmm.Point
}

// NewReplayer returns a replayer. Create the VM with Config.Clock set to
// r.Clock() and Config.Driver set to r.
func NewReplayer(cfg ReplayerConfig) (*Replayer, error) {
	if cfg.Source == nil {
		return nil, fmt.Errorf("replayer needs a Source")
	}
	if cfg.MaxSteps == 0 {
		cfg.MaxSteps = 50_000_000
	}
	r := &Replayer{cfg: cfg}
	r.clock = &replayClock{r: r}
	return r, nil
}

// Clock is the device clock to give the VM: it answers from the log.
func (r *Replayer) Clock() devices.Clock { return r.clock }

// Stats returns what the replay has done.
func (r *Replayer) Stats() ReplayStats { return r.stats }

func (r *Replayer) peek() *logpb.Event {
	if r.next == nil && !r.eof && r.err == nil {
		ev, err := r.cfg.Source.Next()
		switch {
		case errors.Is(err, io.EOF):
			r.eof = true
		case err != nil:
			r.err = fmt.Errorf("reading the log: %w", err)
		default:
			r.next = ev
		}
	}
	return r.next
}

// ended reports whether the replay has gone live, going live now if the
// log has ended, GoLive is set and no landmark is being located. An error
// from GoLive becomes the replay's sticky error.
func (r *Replayer) ended(p vmm.Point) bool {
	if r.live != nil {
		return true
	}
	if r.cfg.GoLive == nil || r.err != nil || r.target != nil || r.peek() != nil || !r.eof {
		return false
	}
	if err := r.cfg.GoLive(r.vm, p); err != nil {
		r.err = err
		return false
	}
	r.clock.goLive()
	if e := r.vm.Bounce(); e != nil {
		e.SetLive()
	}
	r.live = vmm.NewLiveDriver(r.cfg.LiveInput)
	r.live.KickAfter = r.cfg.LiveKickAfter
	r.live.SchedClock = r.clock.Now
	if err := r.live.Start(r.vm); err != nil {
		r.err = err
		return false
	}
	at := p
	r.stats.LiveAt = &at
	return true
}

// Live reports whether the replay has gone live.
func (r *Replayer) Live() bool { return r.live != nil }

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
	}
	return fmt.Sprintf("event %d", ev.Seq)
}

// expect consumes the next event if it is of the kind want at p.Exits, or
// reports a divergence.
func (r *Replayer) expect(p vmm.Point, want string, match func(*logpb.Event) bool) (*logpb.Event, error) {
	if r.ended(p) {
		return nil, errLive
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

// errLive tells expect's callers that the replay has just gone live.
var errLive = errors.New("replay: live")

type replayClock struct {
	r    *Replayer
	last int64
	// After going live: host time since liveStart, added to liveBase.
	liveBase  int64
	liveStart time.Time
	isLive    bool
}

// goLive makes the clock continue from the last logged reading (or the
// last TSC, whichever is later) on host time.
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
	if !c.isLive {
		r.ended(r.vm.Point())
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
	if err == errLive {
		return c.Now()
	}
	if err != nil {
		return c.last // the sticky error stops the run at the next point
	}
	c.last = ev.GetClock()
	return c.last
}

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
func (r *Replayer) Start(vm *vmm.VM) error {
	r.vm = vm
	if e := vm.Bounce(); e != nil {
		e.SetReplay()
	}
	return nil
}

// Deliver implements vmm.Driver.
func (r *Replayer) Deliver(vm *vmm.VM, p vmm.Point) (bool, error) {
	if r.err != nil {
		return false, r.err
	}
	if r.live != nil {
		return r.live.Deliver(vm, p)
	}
	if r.target != nil {
		return r.atCandidate(vm, p)
	}
	if p.Kind != vmm.AtExit {
		return false, nil // a kick from cancellation: nothing recorded here
	}
	delivered := false
	for {
		ev := r.peek()
		if r.err != nil {
			return false, r.err
		}
		if ev == nil && !delivered && r.ended(p) {
			return r.live.Deliver(vm, p)
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
				r.target, r.phase, r.steps, r.hits, r.near = ev, phaseComplete, 0, 0, ""
				return delivered, nil
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

// maxHits breakpoint hits on one landmark's RIP without finding it switch
// the replayer to single steps for at least stepBurst steps.
const (
	maxHits   = 32
	stepBurst = 256
)

// rflagsRF is RFLAGS.RF, set when an instruction was interrupted midway.
const rflagsRF = 1 << 16

// Phases of locating a landmark.
const (
	phaseComplete = iota // complete the exit without running on
	phaseChoose          // arm a breakpoint if allowed, else step
	phaseStepping        // single-stepping towards it
	phaseArmed           // running to the breakpoint
	phaseStepOver        // at the breakpoint but not the landmark: step one instruction, then re-arm
)

// atCandidate checks whether the vCPU has reached the target landmark.
func (r *Replayer) atCandidate(vm *vmm.VM, p vmm.Point) (bool, error) {
	ev := r.target
	lm := ev.GetDeliver().Landmark
	if p.Exits != ev.Exits {
		near := r.near
		if near == "" {
			near = "RIP never matched"
		}
		return false, r.diverge(p, ev.Seq, fmt.Sprintf("the replay reached a synchronous exit (%s) before the landmark (%d steps; %s)", vm.LastExit(), r.steps, near),
			fmt.Sprintf("RIP %#x after %d exits", lm.Rip, ev.Exits), fmt.Sprintf("exit %d", p.Exits))
	}
	if p.Kind == vmm.AtExit {
		return false, nil // about to complete and step towards it
	}
	switch {
	case p.Kind == vmm.Kicked:
		r.phase = phaseChoose // after the completion entry
	case r.phase == phaseArmed:
		r.phase = phaseStepOver // the breakpoint was hit
		r.steps++
		r.hits++
		r.stats.Breakpoints++
	case r.phase == phaseStepOver:
		r.steps++
		r.stats.Steps++
		// Stepped over it. A rep-prefixed string instruction stays at the
		// same RIP for each iteration: keep stepping until it moves on,
		// then arm the breakpoint again.
		if regs, err := vm.Regs(); err != nil || regs.RIP != lm.Rip {
			r.phase = phaseChoose
		}
	default:
		r.steps++
		r.stats.Steps++
	}
	if r.steps > r.cfg.MaxSteps {
		return false, r.diverge(p, ev.Seq, fmt.Sprintf("landmark not found within %d single steps", r.cfg.MaxSteps), fmt.Sprintf("RIP %#x", lm.Rip), "")
	}
	regs, err := vm.Regs()
	if err != nil {
		return false, err
	}
	if r.phase == phaseStepping && r.hits >= maxHits {
		// Stepping because the breakpoint was hit too often. A loop
		// short enough that its RIP comes round within stepBurst steps
		// is cheaper to step; otherwise go back to the breakpoint.
		r.burst++
		if regs.RIP == lm.Rip {
			r.burstSawRIP = true
		}
		if r.burst >= stepBurst {
			if !r.burstSawRIP {
				r.hits, r.phase = 0, phaseChoose
			}
			r.burst, r.burstSawRIP = 0, false
		}
	}
	if regs.RIP != lm.Rip {
		return false, nil
	}
	if regs.RFLAGS != lm.Rflags || !slices.Equal(vmm.GPRs(regs), lm.Gprs) {
		r.near = fmt.Sprintf("at RIP %#x after %d steps: %s", regs.RIP, r.steps, regDiff(regs, lm))
		return false, nil
	}
	h, err := vm.HashPages(lm.Pages)
	if err != nil {
		return false, r.diverge(p, ev.Seq, "landmark names pages outside guest memory", "", err.Error())
	}
	if !bytes.Equal(h[:], lm.PagesSha256) {
		// Same registers, different memory: a later iteration of a loop.
		if r.cfg.NearMiss != nil {
			r.cfg.NearMiss(vm, lm)
		}
		r.near = fmt.Sprintf("at RIP %#x after %d steps the registers matched but %d written pages differed", regs.RIP, r.steps, len(lm.Pages))
		return false, nil
	}
	r.target = nil
	r.consume()
	r.stats.Landmarks++
	d := ev.GetDeliver()
	vm.DeliverAsync(asyncOf(d))
	return true, nil
}

// NextEntry implements vmm.Driver: run freely, except when a landmark is
// being located: first complete the exit without running on (the primary
// may have been kicked right there), then single-step.
func (r *Replayer) NextEntry() vmm.EntryMode {
	if r.err != nil || r.live != nil {
		return vmm.EntryRun
	}
	if r.target == nil && r.vm != nil {
		// A landmark can follow other events at the same exit: the
		// primary injected at the exit and was kicked before the vector
		// reached the guest, so the landmark is zero instructions on.
		p := r.vm.Point()
		if ev := r.peek(); ev != nil && ev.Exits == p.Exits && ev.GetDeliver().GetLandmark() != nil {
			r.target, r.phase, r.steps, r.hits, r.near = ev, phaseComplete, 0, 0, ""
		}
	}
	if r.target == nil {
		return vmm.EntryRun
	}
	switch r.phase {
	case phaseComplete:
		return vmm.EntryComplete
	case phaseChoose:
		rip := r.target.GetDeliver().GetLandmark().GetRip()
		// In a tight loop the breakpoint is hit every iteration and each
		// hit costs a step over it as well: past maxHits, step a while
		// (see atCandidate for the way back to breakpoints).
		// A landmark inside a rep string instruction (RF set: the kick
		// stopped it between iterations) is stepped to from the exit: the
		// emulator runs such an instruction in chunks, and arriving at it
		// by a breakpoint gave different chunks than the recording's.
		midRep := r.target.GetDeliver().GetLandmark().GetRflags()&rflagsRF != 0 && r.repStringAt(rip)
		if r.cfg.Breakpoints.allows(rip) && r.hits < maxHits && !midRep {
			if ok, err := r.vm.SetBreakpoint(rip); err == nil && ok {
				r.phase = phaseArmed
				return vmm.EntryRun
			}
		}
		r.phase = phaseStepping
		return vmm.EntryStep
	case phaseArmed:
		return vmm.EntryRun
	}
	return vmm.EntryStep
}

// Windows implements vmm.Driver: a replay injects only where the log
// says, so it never asks for interrupt-window exits.
func (r *Replayer) Windows() bool { return r.live != nil }

// Halted implements vmm.Driver. The recording left this halt only when an
// event arrived at this exit, and Deliver has delivered all of them: a
// replay still halted has diverged (or its log ended).
func (r *Replayer) Halted(ctx context.Context, vm *vmm.VM, p vmm.Point) error {
	if r.err != nil {
		return r.err
	}
	if r.ended(p) {
		return r.live.Halted(ctx, vm, p)
	}
	ev := r.peek()
	return r.diverge(p, 0, "the guest halted and the log has nothing to wake it", "an event at this exit", describe(ev))
}

// Injected implements vmm.Driver.
func (r *Replayer) Injected(_ *vmm.VM, p vmm.Point, vector uint8) error {
	if r.live != nil {
		return nil
	}
	_, err := r.expect(p, fmt.Sprintf("injection of vector %#x at %d exits", vector, p.Exits), func(ev *logpb.Event) bool {
		v, ok := ev.Kind.(*logpb.Event_Inject)
		return ok && v.Inject == uint32(vector)
	})
	if err == errLive {
		return nil
	}
	return err
}

// TSC implements vmm.Driver.
func (r *Replayer) TSC(vm *vmm.VM, p vmm.Point) (uint64, error) {
	if r.live == nil {
		ev, err := r.expect(p, fmt.Sprintf("an rdtsc at %d exits", p.Exits), func(ev *logpb.Event) bool {
			_, ok := ev.Kind.(*logpb.Event_Tsc)
			return ok
		})
		if err != errLive {
			if err != nil {
				return 0, err
			}
			r.lastTSC = ev.GetTsc()
			return r.lastTSC, nil
		}
	}
	v, err := r.live.TSC(vm, p)
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
	if r.err != nil || r.live != nil {
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
func (r *Replayer) Read(_ *vmm.VM, p vmm.Point, mmio bool, addr uint64, data []byte) error {
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
func (r *Replayer) Stop(vm *vmm.VM, p vmm.Point, res vmm.Result, runErr error) error {
	if r.live != nil {
		r.live.Stop(vm, p, res, runErr)
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
	if err == errLive {
		// The log ended before the run did: went live at its very end.
		r.live.Stop(vm, p, res, runErr)
		return nil
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

var gprNames = []string{"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// regDiff names the registers that differ from a landmark's.
func regDiff(regs vmm.Regs, lm *logpb.Landmark) string {
	var s string
	if regs.RFLAGS != lm.Rflags {
		s += fmt.Sprintf(" rflags %#x (want %#x)", regs.RFLAGS, lm.Rflags)
	}
	for i, v := range vmm.GPRs(regs) {
		if i < len(lm.Gprs) && v != lm.Gprs[i] {
			s += fmt.Sprintf(" %s %#x (want %#x)", gprNames[i], v, lm.Gprs[i])
		}
	}
	if s == "" {
		return "registers match"
	}
	return "registers differ:" + s
}

// repStringAt reports whether the instruction at rip is a rep-prefixed
// string instruction (or cannot be read).
func (r *Replayer) repStringAt(rip uint64) bool {
	b, ok := r.vm.CodeAt(rip, 4)
	return !ok || isRepString(b)
}

// isRepString reports whether code starts with a rep-prefixed string
// instruction. A kick can stop one between iterations, and single-stepping
// it on this host's emulator sometimes runs every remaining iteration at
// once, so such a point cannot be located reliably; the replayer does not
// set a breakpoint on one but single-steps to it (which is not reliable
// either: see the rep_movs case of the replay suite).
func isRepString(b []byte) bool {
	i := 0
	rep := false
	for i < len(b) && (b[i] == 0xF3 || b[i] == 0xF2 || b[i] == 0x66 || b[i] == 0x67 || (b[i] >= 0x40 && b[i] <= 0x4F)) {
		if b[i] == 0xF3 || b[i] == 0xF2 {
			rep = true
		}
		i++
	}
	if !rep || i >= len(b) {
		return false
	}
	switch b[i] {
	case 0x6C, 0x6D, 0x6E, 0x6F, 0xA4, 0xA5, 0xA6, 0xA7, 0xAA, 0xAB, 0xAC, 0xAD, 0xAE, 0xAF:
		return true
	}
	return false
}
