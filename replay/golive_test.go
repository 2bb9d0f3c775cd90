package replay

import (
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

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
			if m.inRead {
				t.Errorf("cut %d: GoLive called inside a device read at %v", cut, p)
			}
			if p != vm.Point() {
				t.Errorf("cut %d: GoLive at %v, the machine is at %v", cut, p, vm.Point())
			}
			return nil
		}}
		r := replayToyWith(t, prog, rec.events[:cut], cfg, func(tm *toyMachine, r *Replayer) {
			m, rp = tm, r
			tm.bounce.SetNotify(nil)
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
		for i := 1; i < len(m.tscs); i++ {
			if m.tscs[i] <= m.tscs[i-1] {
				t.Fatalf("cut %d: TSC went from %d to %d across the handover", cut, m.tscs[i-1], m.tscs[i])
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
