package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// testSeed returns a random seed, logged, or $FTKVM_REPLAY_SEED.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FTKVM_REPLAY_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (set FTKVM_REPLAY_SEED to repeat)", seed)
	return seed
}

// randomProgram is a toy guest: a periodic timer, then work, device
// exits, console and DMA traffic, halts with interrupts enabled and
// stretches with them disabled, ending at the exit port.
func randomProgram(rng *rand.Rand, dma bool) []toyOp {
	prog := []toyOp{{opArm, 150 + rng.IntN(300)}}
	tag := 0
	for i := 0; i < 40; i++ {
		prog = append(prog, toyOp{opWork, 500 + rng.IntN(4000)})
		switch rng.IntN(10) {
		case 0:
			prog = append(prog, toyOp{opClock, 0})
		case 1:
			prog = append(prog, toyOp{opTSC, 0}, toyOp{opTSC, 0})
		case 2:
			prog = append(prog, toyOp{opIn, 0})
		case 3:
			prog = append(prog, toyOp{opOut, 'a' + rng.IntN(26)})
		case 4:
			prog = append(prog, toyOp{opHalt, 0})
		case 5:
			prog = append(prog, toyOp{opCli, 0}, toyOp{opWork, 2000}, toyOp{opClock, 0}, toyOp{opSti, 0})
		case 6:
			if dma {
				tag++
				prog = append(prog, toyOp{opDMA, tag})
			}
		case 7:
			prog = append(prog, toyOp{opTSC, 0}, toyOp{opClock, 0}, toyOp{opOut, '\n'})
		case 8:
			prog = append(prog, toyOp{opSpin, 500 + rng.IntN(3000)})
		}
	}
	return append(prog, toyOp{opEnd, 7})
}

// toyRecording is what recording a toy guest produced.
type toyRecording struct {
	events []*logpb.Event
	fp     [32]byte
	out    string
	res    vmm.Result
	stats  RecordStats
}

type recordOpts struct {
	kickAfter time.Duration
	fpEvery   uint64
	verify    bool
	input     string
	seed      uint64 // DMA data and delays
	windows   bool   // the toy makes interrupt-window exits (toyvm.SetWindows)
	counts    bool   // RecorderConfig.WindowCounts
}

func recordToy(t *testing.T, prog []toyOp, o recordOpts) toyRecording {
	t.Helper()
	log := &MemLog{}
	cfg := RecorderConfig{Sink: log, KickAfter: o.kickAfter, FingerprintEvery: o.fpEvery, Verify: o.verify, WindowCounts: o.counts}
	if o.input != "" {
		cfg.Input = strings.NewReader(o.input)
	}
	rec, err := NewRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	out, res, fp := runToyRecording(t, prog, o, rec, true)
	return toyRecording{events: log.Events, fp: fp, out: out, res: res, stats: rec.Stats()}
}

// runToyRecording runs prog on a toy machine under rec: DMA data from
// o.seed (after a random delay of up to 0.5 ms each when delays is set),
// console output logged as released. It returns the output, the result
// and the final fingerprint.
func runToyRecording(t *testing.T, prog []toyOp, o recordOpts, rec *Recorder, delays bool) (string, vmm.Result, [32]byte) {
	t.Helper()
	m := newToy(prog)
	m.SetClock(rec.Clock())
	m.SetSpin(100)
	m.SetWindows(o.windows)
	m.SetBounce(bounce.NewEngine(func(req bounce.Request) ([]byte, error) {
		r := rand.New(rand.NewPCG(o.seed, req.Tag))
		if delays {
			time.Sleep(time.Duration(r.IntN(500)) * time.Microsecond)
		}
		b := make([]byte, req.Len)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b, nil
	}))
	var out bytes.Buffer
	m.SetOutput(func(_ vmm.Point, b []byte) error {
		out.Write(b)
		_, err := rec.Output(b, uint64(out.Len()))
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := m.Run(ctx, rec)
	if err != nil {
		t.Fatalf("recording: %v", err)
	}
	fp, _ := m.Fingerprint()
	return out.String(), res, fp
}

type toyReplay struct {
	m     *toyMachine
	rp    *Replayer
	out   string
	res   vmm.Result
	err   error
	fp    [32]byte
	calls int // backend calls (must stay 0 while replaying)
}

func replayToy(t *testing.T, prog []toyOp, events []*logpb.Event, cfg ReplayerConfig) toyReplay {
	t.Helper()
	return replayToyWith(t, prog, events, cfg, nil, nil)
}

// replayToyWith is replayToy with hooks: setup sees the machine and the
// replayer before the run, backend is called on every DMA backend call.
func replayToyWith(t *testing.T, prog []toyOp, events []*logpb.Event, cfg ReplayerConfig, setup func(*toyMachine, *Replayer), backend func()) toyReplay {
	t.Helper()
	cfg.Source = &MemLog{Events: events}
	rp, err := NewReplayer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := toyReplay{rp: rp}
	m := newToy(prog)
	r.m = m
	m.SetClock(rp.Clock())
	m.SetSpin(100)
	m.SetBounce(bounce.NewEngine(func(req bounce.Request) ([]byte, error) {
		if backend != nil {
			backend()
		}
		return make([]byte, req.Len), nil
	}))
	if backend == nil {
		backend = func() { r.calls++ }
	}
	if setup != nil {
		setup(m, rp)
	}
	var out bytes.Buffer
	m.SetOutput(func(p vmm.Point, b []byte) error {
		out.Write(b)
		return rp.Output(p, b)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r.res, r.err = m.Run(ctx, rp)
	r.out = out.String()
	r.fp, _ = m.Fingerprint()
	return r
}

// TestToyRecordReplayRoundTrip records random toy guests under random
// host timing (kicks land anywhere in a work loop) and replays each: the
// replay must end where the recording did, with the same output, having
// loaded the landmarks the recording took.
func TestToyRecordReplayRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	var landmarks, pages uint64
	for i := 0; i < 12; i++ {
		prog := randomProgram(rng, true)
		o := recordOpts{kickAfter: time.Duration(20+rng.IntN(200)) * time.Microsecond, fpEvery: uint64(rng.IntN(40)), verify: i%2 == 0, input: "hello, toy", seed: rng.Uint64()}
		rec := recordToy(t, prog, o)
		if rec.res.Reason != vmm.StopExitPort || rec.res.Status != 7 {
			t.Fatalf("program %d: recording ended %+v", i, rec.res)
		}
		checkDeliveryCounts(t, rec.stats)
		if rec.stats.LandmarksAtWindows != 0 || rec.stats.DeliveriesAtWindows != 0 {
			t.Errorf("program %d: deliveries at window exits on a machine that makes none: %+v", i, rec.stats)
		}
		rp := replayToy(t, prog, rec.events, ReplayerConfig{})
		if rp.err != nil {
			t.Fatalf("program %d (kick after %v): replay: %v", i, o.kickAfter, rp.err)
		}
		if rp.fp != rec.fp || rp.out != rec.out || rp.res.Status != rec.res.Status {
			t.Fatalf("program %d: replay ended in another state (output %q vs %q)", i, rp.out, rec.out)
		}
		if rp.calls != 0 {
			t.Errorf("program %d: the replay called the DMA backend %d times", i, rp.calls)
		}
		st := rp.rp.Stats()
		if st.Landmarks != rec.stats.Landmarks || st.Events != rec.stats.Events {
			t.Errorf("program %d: replayed %d events, %d landmarks; recorded %d, %d", i, st.Events, st.Landmarks, rec.stats.Events, rec.stats.Landmarks)
		}
		landmarks += st.Landmarks
		pages += st.LandmarkPages
	}
	if landmarks == 0 || pages == 0 {
		t.Errorf("no landmark in 12 recordings (%d pages): the test no longer exercises deliveries between exits", pages)
	}
	t.Logf("%d landmarks loaded, %d pages", landmarks, pages)
}

// recordWithLandmarks records random programs until one has at least
// one landmark and one injection at an exit.
func recordWithLandmarks(t *testing.T, rng *rand.Rand) ([]toyOp, toyRecording) {
	t.Helper()
	for i := 0; i < 20; i++ {
		prog := randomProgram(rng, false)
		rec := recordToy(t, prog, recordOpts{kickAfter: 30 * time.Microsecond, fpEvery: 10, verify: true, input: "abc", seed: 1})
		if rec.stats.Landmarks > 0 && rec.stats.Clock > 0 && rec.stats.TSC > 0 && rec.stats.Reads > 0 {
			return prog, rec
		}
	}
	t.Fatal("20 recordings without a landmark, a clock read, an rdtsc and a read")
	return nil, toyRecording{}
}

// TestReplayCatchesTamperedLogs changes one event of a recording in each
// way a damaged or forged log can and checks the replay reports a
// divergence rather than ending quietly in another state.
func TestReplayCatchesTamperedLogs(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	prog, rec := recordWithLandmarks(t, rng)
	find := func(match func(*logpb.Event) bool) int {
		for i, ev := range rec.events {
			if match(ev) {
				return i
			}
		}
		t.Fatal("no such event in the recording")
		return -1
	}
	isLandmark := func(ev *logpb.Event) bool { return ev.GetDeliver().GetLandmark() != nil }
	cases := []struct {
		name   string
		tamper func([]*logpb.Event) []*logpb.Event
	}{
		{"clock value", func(evs []*logpb.Event) []*logpb.Event {
			evs[find(func(ev *logpb.Event) bool { return ev.GetKind() != nil && isClock(ev) })].Kind = &logpb.Event_Clock{Clock: 12345}
			return evs
		}},
		{"tsc value", func(evs []*logpb.Event) []*logpb.Event {
			i := find(func(ev *logpb.Event) bool { _, ok := ev.Kind.(*logpb.Event_Tsc); return ok })
			evs[i].Kind = &logpb.Event_Tsc{Tsc: evs[i].GetTsc() + 1}
			return evs
		}},
		{"read value", func(evs []*logpb.Event) []*logpb.Event {
			evs[find(func(ev *logpb.Event) bool { return ev.GetRead() != nil })].GetRead().Data = []byte{0x42}
			return evs
		}},
		{"injected vector", func(evs []*logpb.Event) []*logpb.Event {
			evs[find(func(ev *logpb.Event) bool { _, ok := ev.Kind.(*logpb.Event_Inject); return ok })].Kind = &logpb.Event_Inject{Inject: 0x21}
			return evs
		}},
		{"landmark exit registers", func(evs []*logpb.Event) []*logpb.Event {
			lm := evs[find(isLandmark)].GetDeliver().GetLandmark()
			lm.ExitRegs[2]++ // rax
			return evs
		}},
		{"landmark page data", func(evs []*logpb.Event) []*logpb.Event {
			lm := evs[find(func(ev *logpb.Event) bool { return isLandmark(ev) && len(ev.GetDeliver().GetLandmark().PagesZstd) > 0 })].GetDeliver().GetLandmark()
			lm.PagesSha256[0] ^= 1
			return evs
		}},
		{"landmark moved to the next exit", func(evs []*logpb.Event) []*logpb.Event {
			evs[find(isLandmark)].Exits++
			return evs
		}},
		{"event dropped", func(evs []*logpb.Event) []*logpb.Event {
			i := find(func(ev *logpb.Event) bool { return ev.GetDeliver() != nil })
			return append(evs[:i:i], evs[i+1:]...)
		}},
		{"fingerprint", func(evs []*logpb.Event) []*logpb.Event {
			evs[find(func(ev *logpb.Event) bool { return ev.GetFingerprint() != nil })].GetFingerprint().Sha256[0] ^= 1
			return evs
		}},
		{"end status", func(evs []*logpb.Event) []*logpb.Event {
			evs[len(evs)-1].GetEnd().Status++
			return evs
		}},
		{"truncated", func(evs []*logpb.Event) []*logpb.Event { return evs[:len(evs)/2] }},
		{"extra event after the end", func(evs []*logpb.Event) []*logpb.Event {
			return append(evs, &logpb.Event{Seq: 1 << 40, Exits: 1 << 40, Kind: &logpb.Event_Clock{Clock: 1}})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			evs := make([]*logpb.Event, len(rec.events))
			for i, ev := range rec.events {
				evs[i] = proto.Clone(ev).(*logpb.Event)
			}
			rp := replayToy(t, prog, c.tamper(evs), ReplayerConfig{})
			if !errors.Is(rp.err, ErrDiverged) {
				t.Fatalf("replay of a log with a tampered %s: err = %v, want a divergence", c.name, rp.err)
			}
			var de *DivergenceError
			if !errors.As(rp.err, &de) || de.What == "" {
				t.Errorf("divergence without a description: %#v", rp.err)
			}
			t.Logf("%v", rp.err)
		})
	}
	// The untouched log still replays: the cases above fail for their
	// tampering, not for something else.
	if rp := replayToy(t, prog, rec.events, ReplayerConfig{}); rp.err != nil || rp.fp != rec.fp {
		t.Fatalf("untampered replay: %v", rp.err)
	}
}

func isClock(ev *logpb.Event) bool {
	_, ok := ev.Kind.(*logpb.Event_Clock)
	return ok
}
