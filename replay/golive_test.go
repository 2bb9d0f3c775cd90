package replay

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// TestGoLiveAtEveryCut replays every prefix of a recording as an FT
// backup whose primary died there, and checks the handover: GoLive runs
// once, at a delivery point and never inside a device's clock or TSC read;
// the guest then runs to its end live, with the whole output the recording
// had; the TSC the guest reads never goes backwards; and DMA transfers the
// log had not completed are started on the backend, which the replay
// itself never called.
func TestGoLiveAtEveryCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	prog := randomProgram(rng, true)
	// Enough DMA that some cut falls between a request and its data.
	for tag := 100; tag < 104; tag++ {
		prog = append(prog[:len(prog)-1], toyOp{opDMA, tag}, toyOp{opWork, 3000}, toyOp{opEnd, 7})
	}
	rec := recordToy(t, prog, recordOpts{kickAfter: 50 * time.Microsecond, fpEvery: 8, verify: true, input: "xyz", seed: 9})
	restarted := 0
	for cut := 0; cut <= len(rec.events); cut++ {
		var m *toyMachine
		var calls atomic.Int32
		var rp *Replayer
		goLives := 0
		var handedOver atomic.Bool
		cfg := ReplayerConfig{GoLive: func(vm vmm.Machine, p vmm.Point) error {
			goLives++
			handedOver.Store(true)
			if m.InRead() {
				t.Errorf("cut %d: GoLive called inside a device read at %v", cut, p)
			}
			if p != vm.Point() {
				t.Errorf("cut %d: GoLive at %v, the machine is at %v", cut, p, vm.Point())
			}
			return nil
		}}
		r := replayToyWith(t, prog, rec.events[:cut], cfg, func(tm *toyMachine, r *Replayer) {
			m, rp = tm, r
			tm.Bounce().SetNotify(nil)
		}, func() {
			if !handedOver.Load() { // backend calls run on goroutines of their own
				t.Errorf("cut %d: the replay called the DMA backend before going live", cut)
			}
			calls.Add(1)
		})
		if r.err != nil {
			t.Fatalf("cut %d of %d: %v", cut, len(rec.events), r.err)
		}
		if r.res != rec.res {
			t.Errorf("cut %d: ended %+v, recording %+v", cut, r.res, rec.res)
		}
		want := 1
		if cut == len(rec.events) {
			want = 0 // the whole log, End included: nothing to take over
		}
		if goLives != want || (rp.Stats().LiveAt != nil) != (want == 1) {
			t.Errorf("cut %d of %d: GoLive called %d times (LiveAt %v)", cut, len(rec.events), goLives, rp.Stats().LiveAt)
		}
		if r.out != rec.out {
			t.Errorf("cut %d: output %q, recording %q", cut, r.out, rec.out)
		}
		for i := 1; i < len(m.TSCs()); i++ {
			if m.TSCs()[i] <= m.TSCs()[i-1] {
				t.Fatalf("cut %d: TSC went from %d to %d across the handover", cut, m.TSCs()[i-1], m.TSCs()[i])
			}
		}
		if calls.Load() > 0 {
			restarted++
		}
	}
	if restarted == 0 {
		t.Error("no cut left a DMA transfer for the live backend: the test no longer exercises the restart")
	}
	t.Logf("%d cuts, %d of them restarted DMA transfers", len(rec.events)+1, restarted)
}

// TestGoLiveRefusedStopsTheRun: a backup that loses the claim (GoLive
// fails) stops with that error and never runs live.
func TestGoLiveRefusedStopsTheRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
	prog := randomProgram(rng, false)
	rec := recordToy(t, prog, recordOpts{kickAfter: 50 * time.Microsecond, seed: 1})
	lost := errors.New("lost the test-and-set")
	r := replayToy(t, prog, rec.events[:len(rec.events)/2], ReplayerConfig{GoLive: func(vmm.Machine, vmm.Point) error { return lost }})
	if !errors.Is(r.err, lost) {
		t.Fatalf("run ended with %v, want GoLive's error", r.err)
	}
	if r.rp.Live() || r.rp.Stats().LiveAt != nil {
		t.Error("the replay went live although GoLive refused")
	}
}

// TestContinuedLogReplaysTheWholeRun: a backup that records its live run
// (Continue) after going live at any cut of the primary's log leaves a log
// of the whole run — the prefix it replayed, a Handover, and its own
// events — that a plain replay follows across the handover to the same
// end, output and state as the backup's live run. A continuation that
// was tampered with, or a Handover moved to another exit, is refused.
func TestContinuedLogReplaysTheWholeRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 5))
	prog := randomProgram(rng, true)
	for tag := 100; tag < 103; tag++ {
		prog = append(prog[:len(prog)-1], toyOp{opDMA, tag}, toyOp{opWork, 3000}, toyOp{opEnd, 7})
	}
	rec := recordToy(t, prog, recordOpts{kickAfter: 50 * time.Microsecond, fpEvery: 8, seed: 9})
	landmarks := 0
	for cut := 0; cut < len(rec.events); cut++ {
		cont := &MemLog{}
		cfg := ReplayerConfig{GoLive: func(vmm.Machine, vmm.Point) error { return nil }, Continue: cont,
			ContinueReason: func() string { return "test" }, LiveKickAfter: 50 * time.Microsecond}
		live := replayToyWith(t, prog, rec.events[:cut], cfg, func(tm *toyMachine, _ *Replayer) { tm.SetSpin(100) }, func() {})
		if live.err != nil {
			t.Fatalf("cut %d: the backup's run: %v", cut, live.err)
		}
		if len(cont.Events) < 2 || cont.Events[0].GetHandover() == nil || cont.Events[len(cont.Events)-1].GetEnd() == nil {
			t.Fatalf("cut %d: the continuation is not a Handover, the live run and its End: %d events", cut, len(cont.Events))
		}
		var last uint64
		if cut > 0 {
			last = rec.events[cut-1].Seq
		}
		for i, ev := range cont.Events {
			if ev.Seq != last+1+uint64(i) {
				t.Fatalf("cut %d: continuation event %d has seq %d, want %d", cut, i, ev.Seq, last+1+uint64(i))
			}
			if ev.GetDeliver().GetLandmark() != nil {
				landmarks++
			}
		}
		whole := append(slices.Clone(rec.events[:cut]), cont.Events...)
		r := replayToy(t, prog, whole, ReplayerConfig{})
		if r.err != nil {
			t.Fatalf("cut %d: replaying the whole run's log: %v", cut, r.err)
		}
		if r.fp != live.fp || r.res != live.res || r.out != live.out {
			t.Fatalf("cut %d: the replay of the whole log ended %+v %x %q, the backup's run %+v %x %q", cut, r.res, r.fp[:4], r.out, live.res, live.fp[:4], live.out)
		}
		if st := r.rp.Stats(); st.Handovers != 1 || st.JoinedAt == nil || st.JoinedAt.Exits != cont.Events[0].Exits {
			t.Fatalf("cut %d: replayed across %d handovers (at %v), want 1 at exit %d", cut, st.Handovers, st.JoinedAt, cont.Events[0].Exits)
		}

		// The Handover one exit later: the replay passes the point the
		// backup went live at, or reaches the mark at another point.
		moved := slices.Clone(whole)
		h := proto.Clone(moved[cut]).(*logpb.Event)
		h.Exits++
		moved[cut] = h
		if r := replayToy(t, prog, moved, ReplayerConfig{}); r.err == nil {
			t.Fatalf("cut %d: a Handover moved to exit %d was replayed across", cut, h.Exits)
		}
	}
	if landmarks == 0 {
		t.Error("no continuation logged a landmark: the test does not exercise the backup's recorder between exits")
	}

	// A clock reading the backup logged, changed: the replay of the whole
	// log must not reach its end.
	cont := &MemLog{}
	cut := len(rec.events) / 2
	live := replayToyWith(t, prog, rec.events[:cut], ReplayerConfig{GoLive: func(vmm.Machine, vmm.Point) error { return nil }, Continue: cont}, nil, func() {})
	if live.err != nil {
		t.Fatal(live.err)
	}
	tampered := 0
	whole := slices.Clone(rec.events[:cut])
	for _, ev := range cont.Events {
		if c, ok := ev.Kind.(*logpb.Event_Clock); ok && tampered == 0 {
			ev = proto.Clone(ev).(*logpb.Event)
			ev.Kind = &logpb.Event_Clock{Clock: c.Clock + 12345678}
			tampered++
		}
		whole = append(whole, ev)
	}
	if tampered == 0 {
		t.Fatal("the backup's live run read no clock")
	}
	if r := replayToy(t, prog, whole, ReplayerConfig{}); r.err == nil {
		t.Fatal("a tampered clock reading in the backup's part replayed to the end")
	}
}
