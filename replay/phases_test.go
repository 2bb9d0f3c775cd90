package replay

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// Released, at the handover, is the Released count of the last Output
// event the replay passed: what the backup re-sends from. Checked at
// every cut of a recording against the log itself.
func TestReleasedIsTheLastOutputReplayed(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 6))
	prog := randomProgram(rng, false)
	rec := recordToy(t, prog, recordOpts{kickAfter: 50 * time.Microsecond, seed: 2})
	outputs := 0
	for cut := 0; cut <= len(rec.events); cut++ {
		var want uint64
		for _, ev := range rec.events[:cut] {
			if o := ev.GetOutput(); o != nil {
				want = o.Released
			}
		}
		var rp *Replayer
		got := ^uint64(0)
		cfg := ReplayerConfig{GoLive: func(vmm.Machine, vmm.Point) error {
			got = rp.Released()
			if rp.Windows() || rp.Live() {
				t.Errorf("cut %d: the replay asks for interrupt windows or says it is live before going live", cut)
			}
			return nil
		}}
		r := replayToyWith(t, prog, rec.events[:cut], cfg, func(_ *toyMachine, r *Replayer) { rp = r }, nil)
		if r.err != nil {
			t.Fatalf("cut %d: %v", cut, r.err)
		}
		if cut == len(rec.events) {
			if rp.Released() != uint64(len(rec.out)) {
				t.Fatalf("whole log: Released %d, the recording let out %d bytes", rp.Released(), len(rec.out))
			}
			continue
		}
		if got != want {
			t.Fatalf("cut %d: Released %d at the handover, the last Output replayed says %d", cut, got, want)
		}
		if want > 0 {
			outputs++
		}
		if !rp.Windows() || !rp.Live() {
			t.Errorf("cut %d: after going live the replay asks for no interrupt windows, or is not live", cut)
		}
	}
	if outputs == 0 {
		t.Fatal("no cut followed an Output event: the program writes nothing")
	}
}

// writeRequest is a device write of n bytes.
func writeRequest(tag uint64, n int) bounce.Request {
	return bounce.Request{Tag: tag, Len: n, Write: true, Data: make([]byte, n)}
}

// The recorder logs a device write where the guest submits it and holds
// it with HoldWrite: the backend performs it only once the hold returns,
// and HoldWrite is given the Submit event's sequence number.
func TestRecorderHoldsDeviceWrites(t *testing.T) {
	log := &MemLog{}
	release := make(chan struct{})
	var held []uint64
	rec, err := NewRecorder(RecorderConfig{Sink: log, HoldWrite: func(seq uint64) func() error {
		held = append(held, seq)
		return func() error { <-release; return nil }
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := newToy(nil)
	m.SetClock(rec.Clock())
	performed := make(chan bounce.Request, 4)
	m.SetBounce(bounce.NewEngine(func(req bounce.Request) ([]byte, error) { performed <- req; return nil, nil }))
	if err := rec.Start(m); err != nil {
		t.Fatal(err)
	}
	m.SetPoint(vmm.Point{Exits: 3, Kind: vmm.AtExit})
	m.Clock().Now() // an event before the write: the Submit is not the first
	if err := m.Bounce().Submit(writeRequest(5, 512)); err != nil {
		t.Fatal(err)
	}
	last := log.Events[len(log.Events)-1]
	sub := last.GetSubmit()
	if sub == nil || sub.Tag != 5 || sub.Len != 512 || last.Exits != 3 {
		t.Fatalf("logged %s, want the write's submission at exit 3", describe(last))
	}
	if len(held) != 1 || held[0] != last.Seq || last.Seq != 2 {
		t.Fatalf("HoldWrite got %v, want the Submit's sequence number [%d] (2)", held, last.Seq)
	}
	select {
	case <-performed:
		t.Fatal("the backend performed the write before the hold was released")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	select {
	case req := <-performed:
		if req.Tag != 5 {
			t.Fatalf("performed tag %d", req.Tag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write was never performed after its hold was released")
	}
	// A read is not an output: neither logged at submission nor held.
	n := len(log.Events)
	if err := m.Bounce().Submit(bounce.Request{Tag: 6, Len: 16}); err != nil {
		t.Fatal(err)
	}
	if len(log.Events) != n || len(held) != 1 {
		t.Fatalf("a read was logged (%d events, was %d) or held (%v)", len(log.Events), n, held)
	}
	if st := rec.Stats(); st.Submits != 1 {
		t.Errorf("Stats().Submits = %d, want 1", st.Submits)
	}
}

// failingSink fails every Append after the first ok ones.
type failingSink struct {
	ok  int
	err error
}

func (s *failingSink) Append(*logpb.Event) error {
	if s.ok > 0 {
		s.ok--
		return nil
	}
	return s.err
}

// A write whose submission could not be logged never leaves: the gate
// fails it instead of holding it, and the backend is not called.
func TestRecorderRefusesAWriteItCouldNotLog(t *testing.T) {
	broken := errors.New("channel closed")
	heldCalled := false
	rec, err := NewRecorder(RecorderConfig{Sink: &failingSink{err: broken}, HoldWrite: func(uint64) func() error {
		heldCalled = true
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := newToy(nil)
	m.SetClock(rec.Clock())
	var calls atomic.Int32
	m.SetBounce(bounce.NewEngine(func(bounce.Request) ([]byte, error) { calls.Add(1); return nil, nil }))
	notified := make(chan struct{}, 1)
	m.Bounce().SetNotify(func() {
		select {
		case notified <- struct{}{}:
		default:
		}
	})
	if err := rec.Start(m); err != nil {
		t.Fatal(err)
	}
	m.SetPoint(vmm.Point{Exits: 1, Kind: vmm.AtExit})
	if err := m.Bounce().Submit(writeRequest(9, 64)); err != nil {
		t.Fatal(err)
	}
	if heldCalled {
		t.Error("HoldWrite was asked to hold a write that was not logged")
	}
	var done []bounce.Completion
	deadline := time.After(5 * time.Second)
	for len(done) == 0 {
		select {
		case <-notified:
		case <-deadline:
			t.Fatal("the unlogged write never completed")
		case <-time.After(10 * time.Millisecond):
		}
		done = append(done, m.Bounce().Poll()...)
	}
	if done[0].Tag != 9 || !strings.Contains(done[0].Err, "channel closed") {
		t.Fatalf("completion %+v, want tag 9 failed with the logging error", done[0])
	}
	if calls.Load() != 0 {
		t.Error("the backend performed a write whose submission was never logged")
	}
	// The recording itself stops with the logging error.
	if _, err := rec.Deliver(m, m.Point()); !errors.Is(err, broken) {
		t.Errorf("Deliver after the failure: %v, want the logging error", err)
	}
}

// A recording whose log fails stops with that error, and console output
// before the run started is refused.
func TestRecorderStopsWhenItsLogFails(t *testing.T) {
	broken := errors.New("disk full")
	rec, err := NewRecorder(RecorderConfig{Sink: &failingSink{ok: 3, err: broken}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Output([]byte("x"), 0); err == nil {
		t.Error("Output before the run started was accepted")
	}
	if !rec.NeedsDirtyLog() || !rec.Windows() || rec.NextEntry() != vmm.EntryRun {
		t.Error("a recorder must keep the dirty log, take interrupt windows and always run")
	}
	m := newToy([]toyOp{{opClock, 0}, {opTSC, 0}, {opClock, 0}, {opTSC, 0}, {opClock, 0}, {opEnd, 0}})
	m.SetClock(rec.Clock())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Run(ctx, rec); !errors.Is(err, broken) || !strings.Contains(err.Error(), "logging event 4") {
		t.Fatalf("run ended with %v, want the failure to log event 4", err)
	}
	if _, err := NewRecorder(RecorderConfig{}); err == nil {
		t.Error("a recorder without a Sink was made")
	}
}

// A recorder continuing a log (From) numbers on from its position and
// keeps the TSC above the last value the guest read, even if the host
// clock is behind it.
func TestRecorderContinuesFromAPosition(t *testing.T) {
	log := &MemLog{}
	const lastTSC = 1 << 50 // far ahead of the clock below
	rec, err := NewRecorder(RecorderConfig{Sink: log, From: &Position{Seq: 41, TSC: lastTSC}, Clock: fixedClock(1000)})
	if err != nil {
		t.Fatal(err)
	}
	m := newToy([]toyOp{{opTSC, 0}, {opTSC, 0}, {opEnd, 0}})
	m.SetClock(rec.Clock())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if log.Events[0].Seq != 42 {
		t.Fatalf("first event numbered %d, want 42", log.Events[0].Seq)
	}
	if len(m.TSCs()) != 2 || m.TSCs()[0] != lastTSC+1 || m.TSCs()[1] != lastTSC+2 {
		t.Fatalf("TSC read %v, want one tick past %d each", m.TSCs(), uint64(lastTSC))
	}
}

type fixedClock int64

func (c fixedClock) Now() int64 { return int64(c) }

// The TSC rule: a value at or below the last becomes one tick past it; a
// replayed value is taken as it is.
func TestVirtualTSCNeverRunsBackwards(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 7))
	var tsc virtualTSC
	prev := uint64(0)
	for range 10000 {
		in := rng.Uint64N(1 << 20)
		if rng.IntN(10) == 0 {
			if got := tsc.replayed(in); got != in {
				t.Fatalf("replayed %d returned %d", in, got)
			}
			prev = in
			continue
		}
		got := tsc.next(in)
		if got <= prev || (in > prev && got != in) {
			t.Fatalf("after %d, next(%d) = %d", prev, in, got)
		}
		prev = got
	}
}

// writingToy is a toy machine with a disk of its own: it performs the
// writes it replays (vmm.WriteReplayer).
type writingToy struct {
	*toyMachine
	asked atomic.Int32
}

func (w *writingToy) ReplayWrites(req bounce.Request) bool {
	w.asked.Add(1)
	return req.Write
}

// A replaying machine that declares vmm.WriteReplayer performs the
// writes on its own copy (reads still come from the log); when one
// fails, the replay stops at the next delivery point and never goes
// live.
func TestReplayStopsWhenItsOwnCopyMissesAWrite(t *testing.T) {
	goLives := 0
	rp, err := NewReplayer(ReplayerConfig{Source: &MemLog{}, GoLive: func(vmm.Machine, vmm.Point) error { goLives++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	w := &writingToy{toyMachine: newToy(nil)}
	performed := make(chan bounce.Request, 4)
	w.SetBounce(bounce.NewEngine(func(req bounce.Request) ([]byte, error) {
		performed <- req
		if req.Write {
			return nil, errors.New("EIO")
		}
		return make([]byte, req.Len), nil
	}))
	if err := rp.Start(w); err != nil {
		t.Fatal(err)
	}
	w.SetPoint(vmm.Point{Exits: 2, Kind: vmm.AtExit})
	if err := w.Bounce().Submit(bounce.Request{Tag: 1, Len: 16}); err != nil {
		t.Fatal(err)
	}
	if err := w.Bounce().Submit(writeRequest(2, 512)); err != nil {
		t.Fatal(err)
	}
	if w.asked.Load() == 0 {
		t.Fatal("the replayer never asked the machine which writes it performs")
	}
	select {
	case req := <-performed:
		if !req.Write {
			t.Fatalf("a replay performed a read (tag %d) instead of taking it from the log", req.Tag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write was not performed on this host's copy")
	}
	w.Bounce().WaitShadows()
	err = rp.Halted(context.Background(), w, w.Point())
	if err == nil || !strings.Contains(err.Error(), "copy of the disk") {
		t.Fatalf("Halted at the end of the log: %v, want the failed write on this host's copy", err)
	}
	if goLives != 0 || rp.Live() {
		t.Fatal("a backup whose disk missed a write went live")
	}
	if _, err := rp.Deliver(w, w.Point()); err == nil {
		t.Error("the replay went on after its copy missed a write")
	}
}

// A Source that fails (not at its end) stops the replay with that error.
func TestReplayStopsOnASourceError(t *testing.T) {
	broken := errors.New("connection reset")
	rng := rand.New(rand.NewPCG(testSeed(t), 8))
	prog := randomProgram(rng, false)
	rec := recordToy(t, prog, recordOpts{seed: 3})
	src := &brokenSource{events: rec.events[:len(rec.events)/2], err: broken}
	rp, err := NewReplayer(ReplayerConfig{Source: src, GoLive: func(vmm.Machine, vmm.Point) error {
		t.Error("went live on a broken Source")
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	m := newToy(prog)
	m.SetClock(rp.Clock())
	m.SetBounce(bounce.NewEngine(nil))
	m.SetSpin(100)
	m.SetOutput(func(p vmm.Point, b []byte) error { return rp.Output(p, b) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.Run(ctx, rp); !errors.Is(err, broken) {
		t.Fatalf("run ended with %v, want the Source's error", err)
	}
	if _, err := NewReplayer(ReplayerConfig{}); err == nil {
		t.Error("a replayer without a Source was made")
	}
}

type brokenSource struct {
	events []*logpb.Event
	err    error
}

func (s *brokenSource) Next() (*logpb.Event, error) {
	if len(s.events) == 0 {
		return nil, s.err
	}
	ev := s.events[0]
	s.events = s.events[1:]
	return ev, nil
}

// Every kind of event is described by what it is and where.
func TestDescribeNamesEveryKind(t *testing.T) {
	events := map[string]*logpb.Event{
		"clock read":      {Kind: &logpb.Event_Clock{Clock: 5}},
		"write submitted": {Kind: &logpb.Event_Submit{Submit: &logpb.Submit{Tag: 1, Len: 2}}},
		"at a landmark":   {Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Landmark: &logpb.Landmark{Rip: 0x10}}}},
		"delivery at":     {Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{}}},
		"injection":       {Kind: &logpb.Event_Inject{Inject: 0x20}},
		"rdtsc":           {Kind: &logpb.Event_Tsc{Tsc: 9}},
		"a read":          {Kind: &logpb.Event_Read{Read: &logpb.Read{Addr: 0x3f8}}},
		"fingerprint":     {Kind: &logpb.Event_Fingerprint{Fingerprint: &logpb.Fingerprint{}}},
		"end of the run":  {Kind: &logpb.Event_End{End: &logpb.End{}}},
		"go-live":         {Kind: &logpb.Event_Handover{Handover: &logpb.Handover{Kind: uint32(vmm.AtExit)}}},
		"event 77":        {Seq: 77, Kind: &logpb.Event_Output{Output: &logpb.Output{}}},
	}
	for want, ev := range events {
		if ev.Seq == 0 {
			ev.Exits = 4242
		}
		got := describe(ev)
		if !strings.Contains(got, want) || ev.Seq == 0 && !strings.Contains(got, "4242") {
			t.Errorf("describe(%v) = %q, want it to say %q and the exit", ev.Kind, got, want)
		}
	}
	if got := describe(nil); got != "the end of the log" {
		t.Errorf("describe(nil) = %q", got)
	}
	if space(true) != "MMIO" || space(false) != "port" {
		t.Error("space names")
	}
}

// fakeHeaderVM is a VM configuration for NewHeader.
type fakeHeaderVM struct{ cmdline string }

func (fakeHeaderVM) CPUID() vmm.CPUID       { return vmm.CPUID{{Function: 1, Eax: 0x600}} }
func (fakeHeaderVM) MemoryBytes() uint64    { return 64 << 20 }
func (fakeHeaderVM) ExtraDevices() []string { return []string{"virtio-blk"} }
func (f fakeHeaderVM) Cmdline() string      { return f.cmdline }

// A header pins the configuration: a bare image by its hash, a Linux
// guest by kernel, initrd and command line.
func TestNewHeaderPinsTheConfiguration(t *testing.T) {
	vm := fakeHeaderVM{cmdline: "console=ttyS0"}
	epoch := time.Unix(1700000000, 5)
	bare := NewHeader(vm, Guest{Bare: true, Kernel: []byte("image"), RDTSCSites: 3}, epoch, true)
	linux := NewHeader(vm, Guest{Kernel: []byte("vmlinux"), Initrd: []byte("initrd")}, epoch, false)
	cpuid := vm.CPUID().Hash()
	for _, h := range []*logpb.Header{bare, linux} {
		if string(h.CpuidSha256) != string(cpuid[:]) || h.MemoryBytes != 64<<20 || h.EpochUnixNano != epoch.UnixNano() ||
			h.Landmarks != StrategyStateTransfer || len(h.Devices) != 1 || h.Version == 0 {
			t.Errorf("header does not pin the VM: %+v", h)
		}
	}
	if len(bare.ImageSha256) != 32 || bare.KernelSha256 != nil || bare.Cmdline != "" || !bare.Verify || bare.RdtscSites != 3 {
		t.Errorf("bare header: %+v", bare)
	}
	if linux.ImageSha256 != nil || len(linux.KernelSha256) != 32 || len(linux.InitrdSha256) != 32 || linux.Cmdline != "console=ttyS0" {
		t.Errorf("Linux header: %+v", linux)
	}
	if NewHeader(vm, Guest{Kernel: []byte("vmlinux")}, epoch, false).InitrdSha256 != nil {
		t.Error("a guest without an initrd has an initrd hash")
	}
}
