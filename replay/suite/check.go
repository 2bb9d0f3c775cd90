package suite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
	"google.golang.org/protobuf/proto"
)

// A Guest is a caller's guest for Check.
type Guest struct {
	// Prepared is the guest (replay.PrepareBare, replay.PrepareLinux),
	// with its memory and devices. Devices' backends serve the recording
	// only: a replay takes their data from the log. Required.
	Prepared *replay.PreparedGuest
	// Input is the console input of the recording.
	Input string
	// Want are strings the recording's console output must contain
	// (markers the guest prints once its work is done).
	Want []string
	// WantExit requires the guest to end with status 0 at vmm.ExitPort.
	WantExit bool
	// Replays is how many times the recording is replayed (default 2).
	Replays int
	// Timeout bounds each run (default 3 minutes).
	Timeout time.Duration
	// Seed seeds the host-timing randomness (kick latency, fingerprint
	// interval); 0 picks one, which Report.Seed gives back.
	Seed uint64
}

// Report is what Check measured.
type Report struct {
	Seed        uint64
	Console     string // the recording's
	Result      vmm.Result
	Events      int
	Stats       replay.RecordStats
	Fingerprint [32]byte
	// Tampered and Reordered are the divergences the damaged logs gave
	// ("" if the log had no event to damage that way).
	Tampered, Reordered string
}

// Check runs the suite's checks on a caller's guest: it records the
// guest under randomized host timing (a random kick latency and
// fingerprint interval, the second core kept busy) and requires
//
//  1. the recording's console to contain every Want (and exit status 0
//     if WantExit);
//  2. every replay to reach the recorded console output and final
//     machine fingerprint, with no divergence;
//  3. a log with one clock reading changed to diverge, not end in a
//     silent success;
//  4. a log with two inputs swapped to diverge.
//
// It returns the first check that failed. It needs /dev/kvm.
func Check(ctx context.Context, g Guest) (*Report, error) {
	if g.Prepared == nil {
		return nil, errors.New("suite: Guest.Prepared is required")
	}
	if g.Replays <= 0 {
		g.Replays = 2
	}
	if g.Timeout <= 0 {
		g.Timeout = 3 * time.Minute
	}
	if g.Seed == 0 {
		g.Seed = rand.Uint64() | 1
	}
	rng := rand.New(rand.NewPCG(g.Seed, 0x5eed))
	rep := &Report{Seed: g.Seed}
	epoch := time.Now()

	events := &replay.MemLog{}
	cfg := replay.RecorderConfig{
		Sink:             events,
		KickAfter:        time.Duration(rng.IntN(3000)+1) * time.Microsecond,
		FingerprintEvery: uint64(rng.IntN(200) + 50),
	}
	if g.Input != "" {
		cfg.Input = strings.NewReader(g.Input)
	}
	rec, err := replay.NewRecorder(cfg)
	if err != nil {
		return rep, err
	}
	stop := busyCore()
	out, res, fp, err := run(ctx, g, epoch, rec)
	stop()
	if err != nil {
		return rep, fmt.Errorf("recording: %w", err)
	}
	rep.Console, rep.Result, rep.Fingerprint, rep.Events, rep.Stats = out, res, fp, len(events.Events), rec.Stats()
	for _, w := range g.Want {
		if !strings.Contains(out, w) {
			return rep, fmt.Errorf("the recording's console %q lacks %q", out, w)
		}
	}
	if g.WantExit && (res.Reason != vmm.StopExitPort || res.Status != 0) {
		return rep, fmt.Errorf("the recording ended by %v with status %d, want exit status 0", res.Reason, res.Status)
	}

	for i := range g.Replays {
		out, fp, err := replayOf(ctx, g, epoch, events.Events)
		if err != nil {
			return rep, fmt.Errorf("replay %d: %w", i+1, err)
		}
		if fp != rep.Fingerprint {
			return rep, fmt.Errorf("replay %d ended in state %x, the recording in %x", i+1, fp, rep.Fingerprint)
		}
		if out != rep.Console {
			return rep, fmt.Errorf("replay %d printed %q, the recording %q", i+1, out, rep.Console)
		}
	}

	if tampered := tamperClock(events.Events); tampered != nil {
		if rep.Tampered, err = mustDiverge(ctx, g, epoch, tampered); err != nil {
			return rep, fmt.Errorf("a log with a clock reading changed: %w", err)
		}
	}
	if reordered := swapInputs(events.Events); reordered != nil {
		if rep.Reordered, err = mustDiverge(ctx, g, epoch, reordered); err != nil {
			return rep, fmt.Errorf("a log with two inputs swapped: %w", err)
		}
	}
	return rep, nil
}

// run runs g on a new VM driven by d and returns its console output, how
// it stopped and its final fingerprint.
func run(ctx context.Context, g Guest, epoch time.Time, d vmm.Driver) (string, vmm.Result, [32]byte, error) {
	var out bytes.Buffer
	vm, err := vmm.New(vmm.Config{Spec: g.Prepared.Spec(epoch), Options: vmm.Options{Console: &out, Driver: d}})
	if err != nil {
		return "", vmm.Result{}, [32]byte{}, err
	}
	defer vm.Close()
	if err := g.Prepared.Load(vm); err != nil {
		return "", vmm.Result{}, [32]byte{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.Timeout)
	defer cancel()
	res, err := vm.Run(ctx)
	if err != nil {
		return out.String(), res, [32]byte{}, err
	}
	fp, err := vm.Fingerprint()
	return out.String(), res, fp, err
}

func replayOf(ctx context.Context, g Guest, epoch time.Time, events []*logpb.Event) (string, [32]byte, error) {
	rp, err := replay.NewReplayer(replay.ReplayerConfig{Source: &replay.MemLog{Events: events}})
	if err != nil {
		return "", [32]byte{}, err
	}
	out, _, fp, err := run(ctx, g, epoch, rp)
	return out, fp, err
}

// mustDiverge replays a damaged log and returns the divergence it must
// end in.
func mustDiverge(ctx context.Context, g Guest, epoch time.Time, events []*logpb.Event) (string, error) {
	out, _, err := replayOf(ctx, g, epoch, events)
	if !errors.Is(err, replay.ErrDiverged) {
		return "", fmt.Errorf("replay ended with %v (console %q), want a divergence", err, out)
	}
	return err.Error(), nil
}

// tamperClock returns the events with the first clock reading after the
// first third moved on by 7919 ticks, or nil if there is none.
func tamperClock(events []*logpb.Event) []*logpb.Event {
	out := make([]*logpb.Event, len(events))
	copy(out, events)
	for i := len(events) / 3; i < len(events); i++ {
		if c, ok := events[i].Kind.(*logpb.Event_Clock); ok {
			ev := proto.Clone(events[i]).(*logpb.Event)
			ev.Kind = &logpb.Event_Clock{Clock: c.Clock + 7919}
			out[i] = ev
			return out
		}
	}
	return nil
}

// swapInputs returns the events with the inputs of the first two
// neighbours at different exits from the middle on swapped (numbers and
// exit counts kept, so the log is well-formed), or nil if there are none.
// The last event (End) is never moved.
func swapInputs(events []*logpb.Event) []*logpb.Event {
	for i := len(events) / 2; i+2 < len(events); i++ {
		if events[i].Exits == events[i+1].Exits {
			continue
		}
		out := make([]*logpb.Event, len(events))
		copy(out, events)
		a, b := proto.Clone(events[i]).(*logpb.Event), proto.Clone(events[i+1]).(*logpb.Event)
		a.Kind, b.Kind = b.Kind, a.Kind
		out[i], out[i+1] = a, b
		return out
	}
	return nil
}

// busyCore keeps a second core loaded while a recording runs, so host
// timing differs from run to run; the returned func stops it.
func busyCore() func() {
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		x := uint64(1)
		for !stop.Load() {
			for i := 0; i < 10000; i++ {
				x = x*6364136223846793005 + 1
			}
		}
		_ = x
	}()
	return func() { stop.Store(true); <-done }
}
