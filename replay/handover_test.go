package replay

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// startedReplayer returns a replayer over events, started on a fresh toy
// machine standing at exit 3.
func startedReplayer(t *testing.T, events []*logpb.Event, cfg ReplayerConfig) (*Replayer, *toyMachine) {
	t.Helper()
	cfg.Source = &MemLog{Events: events}
	rp, err := NewReplayer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := newToy(nil)
	m.SetClock(rp.Clock())
	m.SetBounce(bounce.NewEngine(nil))
	if now := rp.Clock().Now(); now != 0 {
		t.Fatalf("the clock read %d before the run started", now)
	}
	if err := rp.Start(m); err != nil {
		t.Fatal(err)
	}
	m.SetPoint(vmm.Point{Exits: 3, Kind: vmm.AtExit})
	return rp, m
}

// handoverAt is a backup's Handover event at exit 3 in m's state.
func handoverAt(t *testing.T, m *toyMachine, seq uint64) *logpb.Event {
	fp, err := m.Fingerprint()
	if err != nil {
		t.Fatal(err)
	}
	return &logpb.Event{Seq: seq, Exits: 3, Kind: &logpb.Event_Handover{Handover: &logpb.Handover{
		Kind: uint32(vmm.AtExit), Fingerprint: &logpb.Fingerprint{Sha256: fp[:]}}}}
}

// A log of a whole run whose Handover falls inside an exit's handling (a
// TSC read here): the replay answers without the log until the delivery
// point, then joins the backup's events there. A halt waiting for the
// backup's first event, and a run that ends right there, both replay.
func TestReplayDrainsToAHandoverThenJoins(t *testing.T) {
	for _, next := range []string{"deliver", "end", "nothing"} {
		t.Run(next, func(t *testing.T) {
			m0 := newToy(nil)
			events := []*logpb.Event{handoverAt(t, m0, 1)}
			fp, _ := m0.Fingerprint()
			switch next {
			case "deliver":
				events = append(events, &logpb.Event{Seq: 2, Exits: 3, Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Input: []byte("k")}}})
			case "end":
				events = append(events, &logpb.Event{Seq: 2, Exits: 3, Kind: &logpb.Event_End{End: &logpb.End{
					Reason: uint32(vmm.StopExitPort), Fingerprint: &logpb.Fingerprint{Sha256: fp[:]}}}})
			}
			rp, m := startedReplayer(t, events, ReplayerConfig{})
			if v, err := rp.TSC(m, m.Point()); err != nil || v != 1 {
				t.Fatalf("TSC while draining: %d, %v; want 1 (one tick past none)", v, err)
			}
			if v, _ := rp.TSC(m, m.Point()); v != 2 {
				t.Fatalf("second TSC while draining: %d, want 2", v)
			}
			if err := rp.Injected(m, m.Point(), 0x20); err != nil {
				t.Fatalf("an injection while draining: %v", err)
			}
			if err := rp.Read(m, m.Point(), false, 0x3f8, []byte{1}); err != nil {
				t.Fatalf("a read while draining: %v", err)
			}
			if err := rp.Output(m.Point(), []byte("x")); err != nil {
				t.Fatalf("output while draining: %v", err)
			}
			if rp.NextEntry() != vmm.EntryRun || rp.Windows() {
				t.Fatal("a draining replay must run on, without interrupt windows")
			}
			switch next {
			case "deliver":
				if err := rp.Halted(context.Background(), m, m.Point()); err != nil {
					t.Fatalf("halted at the handover: %v", err)
				}
				if ok, err := rp.Deliver(m, m.Point()); !ok || err != nil || string(m.Console()) != "k" {
					t.Fatalf("the backup's first event: delivered %v, %v, console %q", ok, err, m.Console())
				}
			case "end":
				if err := rp.Stop(m, m.Point(), vmm.Result{Reason: vmm.StopExitPort}, nil); err != nil {
					t.Fatalf("the run ending at the handover: %v", err)
				}
			case "nothing":
				err := rp.Halted(context.Background(), m, m.Point())
				if !errors.Is(err, ErrDiverged) {
					t.Fatalf("halted with nothing after the handover: %v, want a divergence", err)
				}
				if err := rp.Halted(context.Background(), m, m.Point()); !errors.Is(err, ErrDiverged) {
					t.Fatalf("the divergence is not sticky: %v", err)
				}
				if rp.NextEntry() != vmm.EntryRun {
					t.Fatal("a diverged replay must run on to its next point, where it stops")
				}
				return
			}
			if st := rp.Stats(); st.Handovers != 1 || *st.JoinedAt != m.Point() || rp.Live() {
				t.Fatalf("stats %+v, live %v: want one handover joined at %v, not live", st, rp.Live(), m.Point())
			}
		})
	}
}

// With Continue, a handover reached at a kick waits for the next exit (a
// point a replay of the whole log can reach), and the Handover is logged
// there.
func TestContinuedHandoverWaitsForAnExit(t *testing.T) {
	cont := &MemLog{}
	goLives := 0
	rp, m := startedReplayer(t, nil, ReplayerConfig{Continue: cont, GoLive: func(vm vmm.Machine, p vmm.Point) error {
		goLives++
		if p.Kind != vmm.AtExit {
			t.Errorf("went live at %v", p)
		}
		return nil
	}})
	if !rp.NeedsDirtyLog() {
		t.Fatal("a replay that records its live run needs the dirty log")
	}
	m.SetPoint(vmm.Point{Exits: m.Point().Exits, Kind: vmm.Kicked})
	if _, err := rp.TSC(m, m.Point()); err != nil { // the log has ended: draining
		t.Fatal(err)
	}
	if ok, err := rp.Deliver(m, m.Point()); ok || err != nil || goLives != 0 {
		t.Fatalf("at a kick: delivered %v, %v, GoLive called %d times; want nothing yet", ok, err, goLives)
	}
	if err := rp.Stop(m, m.Point(), vmm.Result{}, nil); err != nil || goLives != 0 {
		t.Fatalf("stopped at a kick: %v, GoLive called %d times; want neither", err, goLives)
	}
	m.SetPoint(vmm.Point{Exits: 4, Kind: vmm.AtExit})
	if _, err := rp.Deliver(m, m.Point()); err != nil || goLives != 1 || !rp.Live() || !rp.Windows() {
		t.Fatalf("at the next exit: %v, GoLive called %d times, live %v", err, goLives, rp.Live())
	}
	if len(cont.Events) == 0 || cont.Events[0].GetHandover() == nil || cont.Events[0].Exits != 4 || cont.Events[0].Seq != 1 {
		t.Fatalf("the continuation does not begin with a Handover at exit 4: %v", cont.Events)
	}
	if v, err := rp.TSC(m, m.Point()); err != nil || v <= 2 {
		t.Fatalf("live TSC %d, %v: want past the drained ones", v, err)
	}
}

// Errors at the handover stop the run: the continuation cannot be
// written, or its End cannot.
func TestContinuedHandoverLoggingFails(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 9))
	prog := randomProgram(rng, false)
	rec := recordToy(t, prog, recordOpts{seed: 4})
	broken := errors.New("log volume gone")
	goLive := func(vmm.Machine, vmm.Point) error { return nil }

	r := replayToy(t, prog, rec.events[:len(rec.events)/2], ReplayerConfig{GoLive: goLive, Continue: &failingSink{err: broken}})
	if !errors.Is(r.err, broken) || !strings.Contains(r.err.Error(), "logging the handover") {
		t.Fatalf("a continuation that cannot take the Handover: run ended with %v", r.err)
	}
	if r.rp.Live() {
		t.Fatal("went live without logging the handover")
	}

	// Everything but the End: the handover is at the end of the run, and
	// the End is the continuation's only event after it.
	r = replayToy(t, prog, rec.events[:len(rec.events)-1], ReplayerConfig{GoLive: goLive, Continue: &failingSink{ok: 1, err: broken}})
	if !errors.Is(r.err, broken) {
		t.Fatalf("a continuation that cannot take its End: run ended with %v", r.err)
	}
}

// goLive without GoLive is a divergence, never a handover.
func TestGoLiveWithoutGoLiveDiverges(t *testing.T) {
	rp, m := startedReplayer(t, nil, ReplayerConfig{})
	if ok, err := rp.goLive(m, m.Point()); ok || !errors.Is(err, ErrDiverged) {
		t.Fatalf("goLive without GoLive: %v, %v", ok, err)
	}
	if rp.Live() || rp.NeedsDirtyLog() {
		t.Fatal("went live, or keeps the dirty log, without GoLive")
	}
}
