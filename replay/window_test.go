package replay

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// windowProgram is a toy guest that often keeps interrupts disabled while
// its timer fires: a periodic timer, then work with stretches under cli,
// some with exits inside (where a delivery waits for the window), some
// without (where a kick takes it), and exits between them.
func windowProgram(rng *rand.Rand) []toyOp {
	prog := []toyOp{{opArm, 100 + rng.IntN(200)}}
	for i := 0; i < 30; i++ {
		prog = append(prog, toyOp{opWork, 300 + rng.IntN(2000)})
		switch rng.IntN(6) {
		case 0, 1:
			prog = append(prog, toyOp{opCli, 0}, toyOp{opWork, 500 + rng.IntN(3000)}, toyOp{opClock, 0}, toyOp{opWork, rng.IntN(500)}, toyOp{opSti, 0})
		case 2:
			prog = append(prog, toyOp{opCli, 0}, toyOp{opWork, 1000 + rng.IntN(3000)}, toyOp{opSti, 0})
		case 3:
			prog = append(prog, toyOp{opTSC, 0}, toyOp{opOut, 'a' + rng.IntN(26)})
		case 4:
			prog = append(prog, toyOp{opClock, 0})
		case 5:
			prog = append(prog, toyOp{opHalt, 0})
		}
	}
	return append(prog, toyOp{opEnd, 7})
}

// checkDeliveryCounts checks that the recorder's counts by cause add up.
func checkDeliveryCounts(t *testing.T, st RecordStats) {
	t.Helper()
	if st.LandmarksAtKicks+st.LandmarksAtWindows != st.Landmarks {
		t.Errorf("landmarks: %d at kicks + %d at windows != %d", st.LandmarksAtKicks, st.LandmarksAtWindows, st.Landmarks)
	}
	if st.DeliveriesAtExits+st.Landmarks+st.DeliveriesAtWindows != st.Delivers {
		t.Errorf("deliveries: %d at exits + %d landmarks + %d at windows != %d", st.DeliveriesAtExits, st.Landmarks, st.DeliveriesAtWindows, st.Delivers)
	}
}

func replayWindows(t *testing.T, prog []toyOp, events []*logpb.Event, cfg ReplayerConfig) toyReplay {
	t.Helper()
	return replayToyWith(t, prog, events, cfg, func(m *toyMachine, _ *Replayer) { m.SetWindows(true) }, nil)
}

// TestWindowDeliveriesReplayExactly records random guests whose timer
// fires while interrupts are disabled, on a machine that makes
// interrupt-window exits, with deliveries there named by their count
// (WindowCounts): each replay must ask for the same windows, deliver at
// them and end in the recorded state; and the same programs recorded
// without WindowCounts take a landmark at each window instead.
func TestWindowDeliveriesReplayExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 21))
	var before, after RecordStats
	var windows uint64
	for i := 0; i < 16; i++ {
		prog := windowProgram(rng)
		o := recordOpts{kickAfter: time.Duration(50+rng.IntN(400)) * time.Microsecond, fpEvery: uint64(rng.IntN(20)), verify: i%2 == 0, input: "win", seed: rng.Uint64(), windows: true}
		for _, counts := range []bool{false, true} {
			o.counts = counts
			rec := recordToy(t, prog, o)
			checkDeliveryCounts(t, rec.stats)
			rp := replayWindows(t, prog, rec.events, ReplayerConfig{})
			if rp.err != nil {
				t.Fatalf("program %d (counts %v, kick after %v): replay: %v", i, counts, o.kickAfter, rp.err)
			}
			if rp.fp != rec.fp || rp.out != rec.out || rp.res != rec.res {
				t.Fatalf("program %d (counts %v): replay ended in another state", i, counts)
			}
			st := rp.rp.Stats()
			if st.Landmarks != rec.stats.Landmarks || st.Windows != rec.stats.DeliveriesAtWindows {
				t.Errorf("program %d (counts %v): replayed %d landmarks and %d window deliveries; recorded %d and %d", i, counts, st.Landmarks, st.Windows, rec.stats.Landmarks, rec.stats.DeliveriesAtWindows)
			}
			s := &before
			if counts {
				s = &after
				windows += st.Windows
				if rec.stats.LandmarksAtWindows != 0 {
					t.Errorf("program %d: %d landmarks at windows with WindowCounts", i, rec.stats.LandmarksAtWindows)
				}
			} else if rec.stats.DeliveriesAtWindows != 0 {
				t.Errorf("program %d: %d deliveries at windows without WindowCounts", i, rec.stats.DeliveriesAtWindows)
			}
			s.Delivers += rec.stats.Delivers
			s.Landmarks += rec.stats.Landmarks
			s.LandmarksAtKicks += rec.stats.LandmarksAtKicks
			s.LandmarksAtWindows += rec.stats.LandmarksAtWindows
			s.DeliveriesAtExits += rec.stats.DeliveriesAtExits
			s.DeliveriesAtWindows += rec.stats.DeliveriesAtWindows
			s.LandmarkPages += rec.stats.LandmarkPages
		}
	}
	if before.LandmarksAtWindows == 0 || windows == 0 {
		t.Fatalf("no window exit in 16 programs (%d landmarks at windows, %d window deliveries replayed): the test no longer exercises them", before.LandmarksAtWindows, windows)
	}
	for _, c := range []struct {
		name string
		s    RecordStats
	}{{"landmarks at windows", before}, {"window counts", after}} {
		t.Logf("%s: %d deliveries: %d at exits, %d at windows by count; %d landmarks (%d at kicks, %d at windows), %d pages",
			c.name, c.s.Delivers, c.s.DeliveriesAtExits, c.s.DeliveriesAtWindows, c.s.Landmarks, c.s.LandmarksAtKicks, c.s.LandmarksAtWindows, c.s.LandmarkPages)
	}
}

// TestWindowDeliveryGoesLiveAtEveryCut replays every prefix of a
// recording with window deliveries as a backup whose primary died there:
// each ends live with the recording's output and result.
func TestWindowDeliveryGoesLiveAtEveryCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 22))
	var prog []toyOp
	var rec toyRecording
	for range 20 {
		prog = windowProgram(rng)
		rec = recordToy(t, prog, recordOpts{kickAfter: 200 * time.Microsecond, fpEvery: 6, verify: true, seed: 3, windows: true, counts: true})
		if rec.stats.DeliveriesAtWindows > 0 {
			break
		}
	}
	if rec.stats.DeliveriesAtWindows == 0 {
		t.Fatal("20 recordings without a delivery at a window exit")
	}
	for cut := 0; cut <= len(rec.events); cut++ {
		goLives := 0
		r := replayWindows(t, prog, rec.events[:cut], ReplayerConfig{GoLive: func(vmm.Machine, vmm.Point) error { goLives++; return nil }})
		if r.err != nil {
			t.Fatalf("cut %d of %d: %v", cut, len(rec.events), r.err)
		}
		if r.res != rec.res || r.out != rec.out {
			t.Errorf("cut %d: ended %+v with %q, recording %+v with %q", cut, r.res, r.out, rec.res, rec.out)
		}
		if want := btoi(cut < len(rec.events)); goLives != want {
			t.Errorf("cut %d: went live %d times, want %d", cut, goLives, want)
		}
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestTamperedWindowDeliveryDiverges changes a delivery at a window exit
// in each way a damaged or forged log can: the replay must report a
// divergence, not end quietly in another state.
func TestTamperedWindowDeliveryDiverges(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 23))
	var prog []toyOp
	var rec toyRecording
	for range 20 {
		prog = windowProgram(rng)
		rec = recordToy(t, prog, recordOpts{kickAfter: 200 * time.Microsecond, seed: 4, windows: true, counts: true})
		if rec.stats.DeliveriesAtWindows > 0 {
			break
		}
	}
	at := -1
	for i, ev := range rec.events {
		if ev.GetDeliver().AtWindow() {
			at = i
			break
		}
	}
	if at < 0 {
		t.Fatal("20 recordings without a delivery at a window exit")
	}
	cases := map[string]func(evs []*logpb.Event){
		"rip":     func(evs []*logpb.Event) { evs[at].GetDeliver().Landmark.Rip++ },
		"gpr":     func(evs []*logpb.Event) { evs[at].GetDeliver().Landmark.Gprs[0]++ },
		"rflags":  func(evs []*logpb.Event) { evs[at].GetDeliver().Landmark.Rflags ^= 1 << 11 },
		"timer":   func(evs []*logpb.Event) { d := evs[at].GetDeliver(); d.Timer = !d.Timer },
		"at exit": func(evs []*logpb.Event) { evs[at].GetDeliver().Landmark = nil },
		"one exit later": func(evs []*logpb.Event) {
			evs[at].Exits++
		},
	}
	for name, tamper := range cases {
		evs := make([]*logpb.Event, len(rec.events))
		for i, ev := range rec.events {
			evs[i] = proto.Clone(ev).(*logpb.Event)
		}
		tamper(evs)
		r := replayWindows(t, prog, evs, ReplayerConfig{})
		var div *DivergenceError
		if !errors.As(r.err, &div) {
			t.Errorf("%s: replay ended with %v (state equal %v), want a divergence", name, r.err, r.fp == rec.fp)
			continue
		}
		t.Logf("%s: %v", name, div)
	}
	// A replayer that does not make window exits never reaches one.
	r := replayToy(t, prog, rec.events, ReplayerConfig{})
	var div *DivergenceError
	if !errors.As(r.err, &div) {
		t.Errorf("replayed on a machine without window exits: %v, want a divergence", r.err)
	}
}
