package replay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"slices"

	"github.com/klauspost/compress/zstd"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// Landmark strategies, as named in a log header's landmarks field.
const (
	// StrategyStateTransfer: a delivery between two exits carries the
	// vCPU state and the pages written since the last exit; the replay
	// loads them instead of running to the point. It needs nothing of
	// KVM's debug interface, so it works on every KVM (AMD hosts with no
	// monitor trap flag, emulated hosts whose breakpoints do not reach
	// userspace, user mode, rep-string instructions stopped midway).
	StrategyStateTransfer = "state-transfer"
)

// locPhase is where the locator stands with its landmark.
type locPhase uint8

const (
	// locIdle: no landmark pending.
	locIdle locPhase = iota
	// locCompleting: the replay is at the landmark's exit; the next entry
	// completes that exit (an I/O read's result, an MSR) without running
	// a guest instruction, after which the state can be loaded.
	locCompleting
)

// locator is the replayer's landmark state machine: no I/O, no VM. The
// replayer feeds it the points the run loop reaches and asks it how to
// enter the guest next; it answers with the landmark to load when the
// vCPU stands where loading is allowed.
//
// The primary delivered the event at some point after exit N. The
// replay reaches exit N by running (exits are deterministic), completes
// it without running on, and loads the recorded state: from then on the
// two are in the same state, with no single step or breakpoint needed.
type locator struct {
	phase  locPhase
	target *logpb.Event
}

// start makes ev (a delivery with a landmark) the one to reach.
func (l *locator) start(ev *logpb.Event) {
	l.phase, l.target = locCompleting, ev
}

func (l *locator) busy() bool { return l.phase != locIdle }

// entry says how the run loop enters the guest next.
func (l *locator) entry() vmm.EntryMode {
	if l.phase == locCompleting {
		return vmm.EntryComplete
	}
	return vmm.EntryRun
}

// locStep is the locator's answer at a point.
type locStep uint8

const (
	// locWait: not there yet (the exit is still to be completed).
	locWait locStep = iota
	// locLoad: load the target's landmark here, then deliver.
	locLoad
	// locDiverged: the run reached another exit first.
	locDiverged
)

// at tells the locator the run loop reached p.
func (l *locator) at(p vmm.Point) locStep {
	if l.phase == locIdle {
		return locWait
	}
	if p.Exits != l.target.Exits {
		return locDiverged
	}
	if p.Kind == vmm.AtExit {
		return locWait
	}
	return locLoad
}

// done consumes the target after it was loaded (or failed).
func (l *locator) done() *logpb.Event {
	ev := l.target
	l.phase, l.target = locIdle, nil
	return ev
}

// startLandmark makes ev the landmark to reach from p. At the exit
// itself (before it is completed, as the primary's recorder saw it) the
// registers are checked against the log's.
func (r *Replayer) startLandmark(vm vmm.Machine, p vmm.Point, ev *logpb.Event) error {
	r.loc.start(ev)
	if p.Kind != vmm.AtExit {
		return nil
	}
	regs, err := vm.Regs()
	if err != nil {
		return err
	}
	if err := checkExit(regs, ev.GetDeliver().Landmark); err != nil {
		return r.diverge(p, ev.Seq, "the replay reached the landmark's exit in another state", "the recorded registers", err.Error())
	}
	return nil
}

// atLandmark drives the locator at point p and loads the landmark there.
func (r *Replayer) atLandmark(vm vmm.Machine, p vmm.Point) (bool, error) {
	ev := r.loc.target
	switch r.loc.at(p) {
	case locWait:
		return false, nil
	case locDiverged:
		return false, r.diverge(p, ev.Seq, fmt.Sprintf("the replay reached a synchronous exit (%s) before the landmark", vm.LastExit()),
			fmt.Sprintf("a delivery after %d exits", ev.Exits), fmt.Sprintf("exit %d", p.Exits))
	}
	d := ev.GetDeliver()
	if err := loadLandmark(vm, vm.MemoryBytes(), d.Landmark); err != nil {
		return false, r.diverge(p, ev.Seq, "cannot load the landmark's state", "a well-formed state-transfer landmark", err.Error())
	}
	r.loc.done()
	r.consume()
	r.stats.Landmarks++
	r.stats.LandmarkPages += uint64(len(d.Landmark.PageData))
	vm.DeliverAsync(asyncOf(d))
	return true, nil
}

// exitRegs lists registers as a landmark's exit_regs does.
func exitRegs(r vmm.Regs) []uint64 {
	return append([]uint64{r.RIP, r.RFLAGS}, vmm.GPRs(r)...)
}

// checkExit compares the registers at the landmark's exit with the
// recorded ones (a log without them passes).
func checkExit(regs vmm.Regs, lm *logpb.Landmark) error {
	want := lm.GetExitRegs()
	if len(want) == 0 {
		return nil
	}
	if diff := regsDiff(exitRegs(regs), want); diff != "" {
		return fmt.Errorf("registers at the exit differ:%s", diff)
	}
	return nil
}

// regsDiff names the registers (as exitRegs lists them) where got and
// the recorded want differ; "" if none.
func regsDiff(got, want []uint64) string {
	if slices.Equal(got, want) {
		return ""
	}
	names := append([]string{"rip", "rflags"}, gprNames...)
	var diff string
	for i := range got {
		if i < len(want) && got[i] != want[i] {
			diff += fmt.Sprintf(" %s %#x (recorded %#x)", names[i], got[i], want[i])
		}
	}
	if len(want) != len(got) {
		diff += fmt.Sprintf(" (%d registers recorded, want %d)", len(want), len(got))
	}
	return diff
}

var gprNames = []string{"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"}

// landmarkMachine is what loading a landmark needs of the VM.
type landmarkMachine interface {
	LoadPage(pfn uint32, data []byte) error
	ApplyVCPUState(vmm.VCPUState) error
}

// loadLandmark checks a state-transfer landmark whole, then writes its
// pages and vCPU state. A malformed one (from a damaged or hostile log)
// is refused before anything is written.
func loadLandmark(m landmarkMachine, memBytes uint64, lm *logpb.Landmark) error {
	if len(lm.VcpuState) == 0 {
		return fmt.Errorf("the landmark carries no vCPU state (a log recorded with another strategy than %s)", StrategyStateTransfer)
	}
	var st vmm.VCPUState
	if err := st.UnmarshalBinary(lm.VcpuState); err != nil {
		return err
	}
	if st.Regs.RIP != lm.Rip || st.Regs.RFLAGS != lm.Rflags || !slices.Equal(vmm.GPRs(st.Regs), lm.Gprs) {
		return fmt.Errorf("the landmark's registers (RIP %#x) disagree with its vCPU state (RIP %#x)", lm.Rip, st.Regs.RIP)
	}
	if len(lm.PageData) != len(lm.Pages) {
		return fmt.Errorf("%d pages listed, %d carried", len(lm.Pages), len(lm.PageData))
	}
	npages := memBytes / 4096
	nonzero := 0
	for i, pg := range lm.PageData {
		switch {
		case pg.Pfn != lm.Pages[i]:
			return fmt.Errorf("page %d is frame %#x, listed as %#x", i, pg.Pfn, lm.Pages[i])
		case uint64(pg.Pfn) >= npages:
			return fmt.Errorf("page frame %#x outside guest memory (%d pages)", pg.Pfn, npages)
		case i > 0 && pg.Pfn <= lm.PageData[i-1].Pfn:
			return fmt.Errorf("page frames not ascending at %d (%#x after %#x)", i, pg.Pfn, lm.PageData[i-1].Pfn)
		}
		if !pg.Zero {
			nonzero++
		}
	}
	raw, err := decodePages(lm.PagesZstd, nonzero)
	if err != nil {
		return err
	}
	if len(lm.PagesSha256) > 0 {
		h := sha256.New()
		zero := make([]byte, 4096)
		rest := raw
		for _, pg := range lm.PageData {
			h.Write(binary.LittleEndian.AppendUint32(nil, pg.Pfn))
			if pg.Zero {
				h.Write(zero)
			} else {
				h.Write(rest[:4096])
				rest = rest[4096:]
			}
		}
		if !bytes.Equal(h.Sum(nil), lm.PagesSha256) {
			return fmt.Errorf("the landmark's pages do not match their SHA-256")
		}
	}
	for _, pg := range lm.PageData {
		var data []byte
		if !pg.Zero {
			data, raw = raw[:4096], raw[4096:]
		}
		if err := m.LoadPage(pg.Pfn, data); err != nil {
			return err
		}
	}
	return m.ApplyVCPUState(st)
}

// The landmark pages' codec: zstd at its fastest level (the recorder's
// log pipe compresses while the guest runs on, and on a one-core host
// that is still the vCPU's time). Kernel pages are mostly zeros and
// repeated structures.
var pageEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))

// maxLandmarkBytes bounds what one landmark's pages may expand to.
const maxLandmarkBytes = 1 << 30

// decodePages expands a landmark's pages_zstd, which must hold exactly n
// pages: a frame that expands to anything else (a damaged or hostile log)
// is refused. The buffer grows with what the frame actually expands to,
// never past n pages, so a landmark that lists many pages and carries
// little data costs little before it is refused.
func decodePages(frame []byte, n int) ([]byte, error) {
	if n == 0 {
		if len(frame) != 0 {
			return nil, fmt.Errorf("page data present but no page needs it")
		}
		return nil, nil
	}
	want := n * 4096
	if want > maxLandmarkBytes {
		return nil, fmt.Errorf("%d pages: more than a landmark may carry", n)
	}
	d, err := zstd.NewReader(bytes.NewReader(frame), zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(8<<20))
	if err != nil {
		return nil, fmt.Errorf("landmark pages: %w", err)
	}
	defer d.Close()
	// Start at about what kernel pages compress from (3 to 4 times), then
	// double: at most twice what decoded, or 4 times the frame, is held.
	out := make([]byte, 0, min(want, max(4*len(frame), 64<<10)))
	for len(out) < want {
		if len(out) == cap(out) {
			out = slices.Grow(out, min(want-len(out), len(out)))
		}
		k, err := d.Read(out[len(out):cap(out)])
		out = out[:len(out)+k]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("landmark pages: %w (want %d pages)", err, n)
		}
	}
	if len(out) < want {
		return nil, fmt.Errorf("landmark pages expand to %d bytes, want %d pages", len(out), n)
	}
	if k, _ := d.Read(make([]byte, 1)); k != 0 {
		return nil, fmt.Errorf("landmark pages expand to more than %d pages", n)
	}
	return out, nil
}
