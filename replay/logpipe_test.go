package replay

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// checkingSink is a MemLog that is slow now and then, so events queue
// behind landmarks still being finished, and that checks what the pipe
// promises every Sink: one Append at a time, events in sequence order,
// every landmark whole.
type checkingSink struct {
	t      *testing.T
	mu     sync.Mutex
	events []*logpb.Event
	busy   atomic.Bool
	slow   func(seq uint64) time.Duration
}

func (s *checkingSink) Append(ev *logpb.Event) error {
	if !s.busy.CompareAndSwap(false, true) {
		s.t.Errorf("event %d appended while another Append ran", ev.Seq)
	}
	defer s.busy.Store(false)
	if s.slow != nil {
		time.Sleep(s.slow(ev.Seq))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.events); n > 0 && ev.Seq != s.events[n-1].Seq+1 {
		s.t.Errorf("event %d appended after event %d", ev.Seq, s.events[n-1].Seq)
	}
	if lm := ev.GetDeliver().GetLandmark(); lm != nil && (len(lm.PagesSha256) != 32 || len(lm.PageData) != len(lm.Pages)) {
		s.t.Errorf("event %d appended with an unfinished landmark (%d of %d pages, hash %x)", ev.Seq, len(lm.PageData), len(lm.Pages), lm.PagesSha256)
	}
	s.events = append(s.events, ev)
	return nil
}

func (s *checkingSink) logged() []*logpb.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events
}

// recordToyTo is recordToy with the events going to sink; it also
// returns how deep the recorder's pipe queued.
func recordToyTo(t *testing.T, prog []toyOp, o recordOpts, sink *checkingSink) (toyRecording, int) {
	t.Helper()
	rec, err := NewRecorder(RecorderConfig{Sink: sink, KickAfter: o.kickAfter, FingerprintEvery: o.fpEvery, Verify: o.verify, Input: strings.NewReader(o.input)})
	if err != nil {
		t.Fatal(err)
	}
	out, res, fp := runToyRecording(t, prog, o, rec, false)
	events := sink.logged()
	if n := len(events); n == 0 || events[n-1].GetEnd() == nil || uint64(n) != rec.Stats().Events {
		t.Fatalf("the recording's run stopped with %d events in the log (%d logged), the last not its End", n, rec.Stats().Events)
	}
	rec.pipe.mu.Lock()
	deepest := rec.pipe.deepest
	rec.pipe.mu.Unlock()
	return toyRecording{events: events, fp: fp, out: out, res: res, stats: rec.Stats()}, deepest
}

// Landmarks finished off the vCPU thread, under a sink slow enough that
// events queue behind them, make a log that replays exactly: whole, and
// cut anywhere as an FT backup's is when its primary dies.
func TestOffThreadLandmarksReplayExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 18))
	var landmarks, queued, cuts int
	for i := 0; i < 8; i++ {
		prog := randomProgram(rng, i%2 == 1)
		sink := &checkingSink{t: t, slow: func(seq uint64) time.Duration { return time.Duration(seq%5) * 40 * time.Microsecond }}
		rec, deepest := recordToyTo(t, prog, recordOpts{kickAfter: 30 * time.Microsecond, fpEvery: 6, verify: true, input: "ab", seed: uint64(i)}, sink)
		landmarks += int(rec.stats.Landmarks)
		if deepest > 1 {
			queued++
		}
		r := replayToy(t, prog, rec.events, ReplayerConfig{})
		if r.err != nil || r.res != rec.res || r.fp != rec.fp || r.out != rec.out {
			t.Fatalf("program %d: replay ended %+v (%v) with output %q, recording %+v with %q; fingerprints equal: %v",
				i, r.res, r.err, r.out, rec.res, rec.out, r.fp == rec.fp)
		}
		if got := r.rp.Stats().Landmarks; got != rec.stats.Landmarks {
			t.Errorf("program %d: replay loaded %d landmarks, recording took %d", i, got, rec.stats.Landmarks)
		}
		for range 12 {
			cut := rng.IntN(len(rec.events) + 1)
			cuts++
			// After going live the DMA backend runs on goroutines of its
			// own: count its calls atomically.
			var backendCalls atomic.Int32
			r := replayToyWith(t, prog, rec.events[:cut], ReplayerConfig{GoLive: func(vmm.Machine, vmm.Point) error { return nil }},
				func(tm *toyMachine, _ *Replayer) { tm.Bounce().SetNotify(nil) }, func() { backendCalls.Add(1) })
			if r.err != nil || r.res != rec.res || r.out != rec.out {
				t.Fatalf("program %d cut %d of %d: ended %+v (%v) with output %q, recording %+v with %q",
					i, cut, len(rec.events), r.res, r.err, r.out, rec.res, rec.out)
			}
		}
	}
	if landmarks == 0 || queued == 0 {
		t.Fatalf("%d landmarks, %d recordings queued behind one: the test no longer exercises the pipe", landmarks, queued)
	}
	t.Logf("%d landmarks, %d of 8 recordings queued events behind one, %d cuts", landmarks, queued, cuts)
}

// A landmark whose hash, or whose pages under an intact hash, were
// changed after the worker finished it is refused by the replay.
func TestCorruptedLandmarkHashIsDetected(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 19))
	var prog []toyOp
	var rec toyRecording
	target := -1
	for try := 0; target < 0; try++ {
		if try == 20 {
			t.Fatal("20 recordings without a landmark carrying page data")
		}
		prog = randomProgram(rng, false)
		rec, _ = recordToyTo(t, prog, recordOpts{kickAfter: 30 * time.Microsecond, seed: 1}, &checkingSink{t: t})
		for i, ev := range rec.events {
			if len(ev.GetDeliver().GetLandmark().GetPagesZstd()) > 0 {
				target = i
				break
			}
		}
	}
	cases := map[string]func(lm *logpb.Landmark){
		"hash": func(lm *logpb.Landmark) { lm.PagesSha256[7] ^= 0x10 },
		"page under its hash": func(lm *logpb.Landmark) {
			nonzero := 0
			for _, pg := range lm.PageData {
				if !pg.Zero {
					nonzero++
				}
			}
			raw, err := decodePages(lm.PagesZstd, nonzero)
			if err != nil {
				t.Fatal(err)
			}
			raw[len(raw)-1] ^= 1
			lm.PagesZstd = pageEncoder.EncodeAll(raw, nil)
		},
	}
	for name, corrupt := range cases {
		t.Run(name, func(t *testing.T) {
			evs := make([]*logpb.Event, len(rec.events))
			for i, ev := range rec.events {
				evs[i] = proto.Clone(ev).(*logpb.Event)
			}
			corrupt(evs[target].GetDeliver().GetLandmark())
			r := replayToy(t, prog, evs, ReplayerConfig{})
			var de *DivergenceError
			if !errors.As(r.err, &de) || de.Seq != evs[target].Seq || !strings.Contains(r.err.Error(), "SHA-256") {
				t.Fatalf("replay of a log with a corrupted landmark %s: %v, want a divergence at event %d naming the hash", name, r.err, evs[target].Seq)
			}
		})
	}
	if r := replayToy(t, prog, rec.events, ReplayerConfig{}); r.err != nil || r.fp != rec.fp {
		t.Fatalf("untouched replay: %v", r.err)
	}
}

// rawEvent is a delivery whose landmark carries one page of pattern b.
func rawEvent(b byte) (*logpb.Event, *rawLandmark) {
	page := bytes.Repeat([]byte{b}, 4096)
	lm := &logpb.Landmark{Pages: []uint32{3}}
	return &logpb.Event{Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{}}}, &rawLandmark{lm: lm, buf: page}
}

func clockEvent(seq uint64) *logpb.Event {
	return &logpb.Event{Seq: seq, Kind: &logpb.Event_Clock{Clock: int64(seq)}}
}

// The pipe appends in order, events behind a landmark wait for it, and
// waitAppended returns once its event is in the Sink.
func TestLogPipeKeepsOrderBehindALandmark(t *testing.T) {
	gate := make(chan struct{})
	sink := &checkingSink{t: t}
	blocking := sinkFunc(func(ev *logpb.Event) error {
		if ev.GetDeliver() != nil {
			<-gate
		}
		return sink.Append(ev)
	})
	p := newLogPipe(blocking, 0)
	if err := p.append(clockEvent(1), nil); err != nil || len(sink.logged()) != 1 {
		t.Fatalf("an event with nothing queued ahead was not appended at once: %v", err)
	}
	ev, raw := rawEvent(0x5a)
	ev.Seq = 2
	if err := p.append(ev, raw); err != nil {
		t.Fatal(err)
	}
	if err := p.append(clockEvent(3), nil); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- p.waitAppended(3) }()
	select {
	case err := <-waited:
		t.Fatalf("waitAppended(3) returned (%v) while event 2 was held", err)
	case <-time.After(20 * time.Millisecond):
	}
	if n := len(sink.logged()); n != 1 {
		t.Fatalf("%d events appended while the landmark was held, want 1", n)
	}
	close(gate)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	evs := sink.logged()
	if len(evs) != 3 || evs[1].GetDeliver().GetLandmark().GetPageData()[0].GetZero() {
		t.Fatalf("logged %d events, landmark %v", len(evs), evs[1].GetDeliver().GetLandmark())
	}
	if p.zeroPages != 0 || p.finishTime <= 0 {
		t.Errorf("worker stats: %d zero pages, finish time %v", p.zeroPages, p.finishTime)
	}
}

// After a failed Append the pipe drops what is queued behind it (the log
// has a hole), fails what waits for those events, and refuses more.
func TestLogPipeStopsAtAFailure(t *testing.T) {
	broken := errors.New("link down")
	sink := &checkingSink{t: t}
	p := newLogPipe(sinkFunc(func(ev *logpb.Event) error {
		if ev.Seq == 2 {
			return broken
		}
		return sink.Append(ev)
	}), 0)
	for seq := uint64(1); seq <= 4; seq++ {
		var raw *rawLandmark
		ev := clockEvent(seq)
		if seq == 1 {
			ev, raw = rawEvent(0)
			ev.Seq = 1
		}
		p.append(ev, raw)
	}
	if err := p.flush(); !errors.Is(err, broken) {
		t.Fatalf("flush: %v, want the sink's error", err)
	}
	if err := p.waitAppended(1); err != nil {
		t.Errorf("event 1 was appended, yet waitAppended(1) = %v", err)
	}
	if err := p.waitAppended(3); !errors.Is(err, broken) {
		t.Errorf("waitAppended(3) = %v, want the failure", err)
	}
	if n := len(sink.logged()); n != 1 || p.zeroPages != 1 {
		t.Errorf("%d events reached the sink (want 1), %d zero pages (want 1)", n, p.zeroPages)
	}
	if err := p.append(clockEvent(5), nil); !errors.Is(err, broken) {
		t.Errorf("append after the failure: %v", err)
	}
}

// A full queue holds the caller until the worker makes room, and the
// wait is counted; every event still arrives, in order.
func TestLogPipeFullQueueWaits(t *testing.T) {
	gate := make(chan struct{})
	sink := &checkingSink{t: t}
	p := newLogPipe(sinkFunc(func(ev *logpb.Event) error {
		if ev.Seq == 1 {
			<-gate
		}
		return sink.Append(ev)
	}), 0)
	p.maxEvents = 3
	ev, raw := rawEvent(1)
	ev.Seq = 1
	p.append(ev, raw)
	p.append(clockEvent(2), nil)
	p.append(clockEvent(3), nil)
	fourth := make(chan error, 1)
	go func() { fourth <- p.append(clockEvent(4), nil) }()
	select {
	case err := <-fourth:
		t.Fatalf("an append to a full queue returned at once (%v)", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	if err := <-fourth; err != nil {
		t.Fatal(err)
	}
	if err := p.flush(); err != nil || len(sink.logged()) != 4 {
		t.Fatalf("flush: %v, %d events logged, want 4", err, len(sink.logged()))
	}
	if p.waited < 10*time.Millisecond {
		t.Errorf("waited %v for room, not counted", p.waited)
	}
}

// A device write submitted while a landmark is still being finished
// leaves only once its Submit event is in the log, however HoldWrite
// answers.
func TestRecorderWriteWaitsForItsSubmitToBeLogged(t *testing.T) {
	gate := make(chan struct{})
	sink := &checkingSink{t: t}
	rec, err := NewRecorder(RecorderConfig{Sink: sinkFunc(func(ev *logpb.Event) error {
		if ev.GetDeliver().GetLandmark() != nil {
			<-gate
		}
		return sink.Append(ev)
	})})
	if err != nil {
		t.Fatal(err)
	}
	m := newToy(nil)
	m.SetClock(rec.Clock())
	performed := make(chan bounce.Request, 1)
	m.SetBounce(bounce.NewEngine(func(req bounce.Request) ([]byte, error) { performed <- req; return nil, nil }))
	if err := rec.Start(m); err != nil {
		t.Fatal(err)
	}
	m.GuestWrite(100, 1)
	m.SetPoint(vmm.Point{Exits: 2, Kind: vmm.Kicked})
	m.SetIRQ(true) // a kick with an interrupt pending takes a landmark
	if ok, err := rec.Deliver(m, m.Point()); !ok || err != nil {
		t.Fatalf("Deliver at a kick: %v, %v", ok, err)
	}
	m.SetIRQ(false)
	m.SetPoint(vmm.Point{Exits: 3, Kind: vmm.AtExit})
	if err := m.Bounce().Submit(writeRequest(7, 64)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-performed:
		t.Fatal("the write left before its Submit was logged")
	case <-time.After(20 * time.Millisecond):
	}
	close(gate)
	select {
	case req := <-performed:
		if req.Tag != 7 {
			t.Fatalf("performed tag %d", req.Tag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the write never left once logged")
	}
	evs := sink.logged()
	if len(evs) != 2 || evs[0].GetDeliver().GetLandmark() == nil || evs[1].GetSubmit().GetTag() != 7 {
		t.Fatalf("logged %d events, want the landmark then the Submit", len(evs))
	}
	if st := rec.Stats(); st.Landmarks != 1 || st.LandmarkPages != 1 || st.LandmarkTime <= 0 || st.LandmarkMax != st.LandmarkTime ||
		st.LandmarkCost() != st.LandmarkTime || st.LandmarkFinishTime <= 0 {
		t.Errorf("stats after one landmark: %+v", st)
	}
	if (RecordStats{}).LandmarkCost() != 0 {
		t.Error("LandmarkCost without landmarks")
	}
}

// sinkFunc adapts a function to a Sink.
type sinkFunc func(*logpb.Event) error

func (f sinkFunc) Append(ev *logpb.Event) error { return f(ev) }
