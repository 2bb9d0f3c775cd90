package bounce

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func waitReady(t *testing.T, e *Engine) []Completion {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c := e.Poll(); len(c) > 0 {
			return c
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no completion within 5 s")
	return nil
}

func TestLiveTransferCompletesAndNotifies(t *testing.T) {
	var notified atomic.Int32
	e := NewEngine(func(r Request) ([]byte, error) { return bytes.Repeat([]byte{byte(r.Tag)}, r.Len), nil })
	e.SetNotify(func() { notified.Add(1) })
	if err := e.Submit(Request{Tag: 7, Len: 10}); err != nil {
		t.Fatal(err)
	}
	c := waitReady(t, e)
	if len(c) != 1 || c[0].Tag != 7 || !bytes.Equal(c[0].Data, bytes.Repeat([]byte{7}, 10)) || c[0].Err != "" {
		t.Fatalf("completion %+v", c)
	}
	if notified.Load() != 1 {
		t.Errorf("notified %d times, want 1", notified.Load())
	}
	if ready, inflight := e.Pending(); ready || inflight {
		t.Errorf("after Poll: ready %v, inflight %v", ready, inflight)
	}
}

func TestBadLengthsAreRefused(t *testing.T) {
	e := NewEngine(func(Request) ([]byte, error) { t.Error("backend called"); return nil, nil })
	for _, n := range []int{0, -1, MaxLen + 1} {
		if err := e.Submit(Request{Tag: 1, Len: n}); err == nil {
			t.Errorf("length %d accepted", n)
		}
	}
}

func TestBackendErrorsAndShortBuffersBecomeErrors(t *testing.T) {
	e := NewEngine(func(r Request) ([]byte, error) {
		if r.Tag == 1 {
			return nil, errors.New("disk on fire")
		}
		return make([]byte, r.Len-1), nil
	})
	e.Submit(Request{Tag: 1, Len: 4})
	got := waitReady(t, e)
	e.Submit(Request{Tag: 2, Len: 4})
	got = append(got, waitReady(t, e)...)
	for _, c := range got {
		if c.Err == "" || c.Data != nil {
			t.Errorf("tag %d: %+v, want an error and no data", c.Tag, c)
		}
	}
}

func TestReplayNeverCallsBackendAndGoLiveResubmits(t *testing.T) {
	var calls atomic.Int32
	e := NewEngine(func(r Request) ([]byte, error) { calls.Add(1); return make([]byte, r.Len), nil })
	e.SetReplay()
	e.Submit(Request{Tag: 1, Len: 8})
	e.Submit(Request{Tag: 2, Len: 8})
	e.Delivered(1) // the log had tag 1's completion
	time.Sleep(10 * time.Millisecond)
	if calls.Load() != 0 || len(e.Poll()) != 0 {
		t.Fatal("replay mode called the backend")
	}
	e.SetLive()
	c := waitReady(t, e)
	if len(c) != 1 || c[0].Tag != 2 || calls.Load() != 1 {
		t.Fatalf("after SetLive: %d backend calls, completions %+v; want tag 2 only", calls.Load(), c)
	}
}

func TestWritesCarryDataAndCompleteWithoutData(t *testing.T) {
	var got []Request
	gotc := make(chan Request, 4)
	e := NewEngine(func(r Request) ([]byte, error) {
		gotc <- r
		switch r.Tag {
		case 2:
			return nil, errors.New("disk full")
		case 3:
			return []byte{1}, nil // a write's backend must not return data
		}
		return nil, nil
	})
	for _, r := range []Request{
		{Tag: 1, Len: 3, Arg: 4096, Write: true, Data: []byte{1, 2, 3}},
		{Tag: 2, Len: 1, Write: true, Data: []byte{9}},
		{Tag: 3, Len: 1, Write: true, Data: []byte{9}},
		{Tag: 4, Write: true}, // a barrier: no data
	} {
		if err := e.Submit(r); err != nil {
			t.Fatalf("tag %d: %v", r.Tag, err)
		}
	}
	var cs []Completion
	for len(cs) < 4 {
		cs = append(cs, waitReady(t, e)...)
	}
	for range 4 {
		got = append(got, <-gotc)
	}
	for _, r := range got {
		if r.Tag == 1 && (r.Arg != 4096 || !bytes.Equal(r.Data, []byte{1, 2, 3}) || !r.Write) {
			t.Errorf("backend got %+v", r)
		}
	}
	for _, c := range cs {
		if c.Data != nil {
			t.Errorf("tag %d: write completion with data %v", c.Tag, c.Data)
		}
		if wantErr := c.Tag == 2 || c.Tag == 3; wantErr != (c.Err != "") {
			t.Errorf("tag %d: error %q", c.Tag, c.Err)
		}
	}
}

func TestMalformedRequestsAreRefused(t *testing.T) {
	e := NewEngine(func(Request) ([]byte, error) { t.Error("backend called"); return nil, nil })
	for _, r := range []Request{
		{Tag: 1, Len: 4, Data: make([]byte, 4)},                              // a read with data
		{Tag: 2, Len: 4, Write: true, Data: make([]byte, 3)},                 // data shorter than Len
		{Tag: 3, Len: 0, Write: true, Data: make([]byte, 1)},                 // data longer than Len
		{Tag: 4, Len: -1, Write: true},                                       // negative
		{Tag: 5, Len: MaxLen + 1, Write: true, Data: make([]byte, MaxLen+1)}, // too long
	} {
		if err := e.Submit(r); err == nil {
			t.Errorf("tag %d accepted", r.Tag)
		}
	}
}

func TestReplayKeepsWriteDataForGoLive(t *testing.T) {
	got := make(chan Request, 1)
	e := NewEngine(func(r Request) ([]byte, error) { got <- r; return nil, nil })
	e.SetReplay()
	data := []byte("abc")
	if err := e.Submit(Request{Tag: 5, Len: 3, Arg: 512, Write: true, Data: data}); err != nil {
		t.Fatal(err)
	}
	e.SetLive()
	c := waitReady(t, e)
	r := <-got
	if len(c) != 1 || c[0].Tag != 5 || c[0].Err != "" || c[0].Data != nil || r.Arg != 512 || string(r.Data) != "abc" {
		t.Fatalf("after SetLive: completions %+v, backend got %+v", c, r)
	}
}

func TestUptoReadsAcceptShorterData(t *testing.T) {
	e := NewEngine(func(r Request) ([]byte, error) { return make([]byte, r.Arg), nil })
	for _, c := range []struct {
		n     uint64
		upto  bool
		wantN int // -1: an error
	}{
		{4, true, 4}, {1, true, 1}, {8, true, 8}, {0, true, -1}, {9, true, -1}, {4, false, -1}, {8, false, 8},
	} {
		if err := e.Submit(Request{Tag: 1, Len: 8, Arg: c.n, Upto: c.upto}); err != nil {
			t.Fatal(err)
		}
		got := waitReady(t, e)[0]
		if c.wantN < 0 && (got.Err == "" || got.Data != nil) || c.wantN >= 0 && (got.Err != "" || len(got.Data) != c.wantN) {
			t.Errorf("%d bytes for up to 8 (upto %v): %+v", c.n, c.upto, got)
		}
	}
	if err := e.Submit(Request{Tag: 2, Len: 1, Write: true, Data: []byte{1}, Upto: true}); err == nil {
		t.Error("a write with Upto accepted")
	}
}

// Ordered requests reach the backend one at a time and become ready in
// submission order, however long each takes; unordered ones do not wait.
func TestOrderedRequestsAreServedInOrder(t *testing.T) {
	var running, maxRunning atomic.Int32
	release := make(chan struct{})
	e := NewEngine(func(r Request) ([]byte, error) {
		if !r.Ordered {
			<-release // an unordered read blocks until the ordered ones are done
			return []byte{1}, nil
		}
		n := running.Add(1)
		if n > maxRunning.Load() {
			maxRunning.Store(n)
		}
		time.Sleep(time.Duration(10-r.Tag) * 300 * time.Microsecond)
		running.Add(-1)
		return nil, nil
	})
	if err := e.Submit(Request{Tag: 100, Len: 1, Upto: true}); err != nil {
		t.Fatal(err)
	}
	for tag := uint64(1); tag <= 8; tag++ {
		if err := e.Submit(Request{Tag: tag, Len: 1, Write: true, Data: []byte{byte(tag)}, Ordered: true}); err != nil {
			t.Fatal(err)
		}
	}
	var tags []uint64
	for len(tags) < 8 {
		for _, c := range waitReady(t, e) {
			tags = append(tags, c.Tag)
		}
	}
	for i, tag := range tags {
		if tag != uint64(i+1) {
			t.Fatalf("ready in order %v", tags)
		}
	}
	if maxRunning.Load() != 1 {
		t.Errorf("%d ordered requests ran at once", maxRunning.Load())
	}
	close(release)
	if c := waitReady(t, e); len(c) != 1 || c[0].Tag != 100 {
		t.Fatalf("unordered read: %+v", c)
	}
}

func TestSetLiveStartsOrderedRequestsInTagOrder(t *testing.T) {
	got := make(chan uint64, 8)
	e := NewEngine(func(r Request) ([]byte, error) {
		time.Sleep(time.Duration(r.Tag%3) * 200 * time.Microsecond)
		got <- r.Tag
		return nil, nil
	})
	e.SetReplay()
	for _, tag := range []uint64{5, 3, 9, 4} {
		e.Submit(Request{Tag: tag, Len: 1, Write: true, Data: []byte{1}, Ordered: true})
	}
	e.Delivered(4)
	e.SetLive()
	for _, want := range []uint64{3, 5, 9} {
		if tag := <-got; tag != want {
			t.Fatalf("backend got tag %d, want %d", tag, want)
		}
	}
}

// The gate sees every write (never a read) on the submitting thread, and
// the backend runs only once the gate's hold returns; a hold error stops
// the write before the backend.
func TestGateHoldsWritesUntilReleased(t *testing.T) {
	var performed atomic.Int32
	e := NewEngine(func(r Request) ([]byte, error) {
		if r.Write {
			performed.Add(1)
			return nil, nil
		}
		return make([]byte, r.Len), nil
	})
	release := make(chan struct{})
	var gated []uint64
	e.SetGate(func(r Request) func() error {
		gated = append(gated, r.Tag)
		if r.Tag == 3 {
			return func() error { return errors.New("held for ever") }
		}
		return func() error { <-release; return nil }
	})
	e.Submit(Request{Tag: 1, Len: 8})                                  // a read: not gated
	e.Submit(Request{Tag: 2, Len: 2, Write: true, Data: []byte{1, 2}}) // held
	if got := waitReady(t, e); len(got) != 1 || got[0].Tag != 1 {
		t.Fatalf("first completion %+v, want the read (tag 1)", got)
	}
	time.Sleep(20 * time.Millisecond)
	if performed.Load() != 0 {
		t.Fatal("the write reached the backend before its hold returned")
	}
	close(release)
	if got := waitReady(t, e); len(got) != 1 || got[0].Tag != 2 || got[0].Err != "" {
		t.Fatalf("after the release: %+v", got)
	}
	e.Submit(Request{Tag: 3, Len: 1, Write: true, Data: []byte{9}})
	if got := waitReady(t, e); len(got) != 1 || got[0].Err != "held for ever" {
		t.Fatalf("a refused hold: %+v", got)
	}
	if performed.Load() != 1 {
		t.Errorf("backend performed %d writes, want 1", performed.Load())
	}
	if len(gated) != 2 || gated[0] != 2 || gated[1] != 3 {
		t.Errorf("gate saw tags %v, want [2 3]", gated)
	}
}

// Writes SetLive re-issues were gated when submitted in replay mode; they
// are not held again.
func TestSetLiveDoesNotGateAgain(t *testing.T) {
	e := NewEngine(func(r Request) ([]byte, error) { return nil, nil })
	e.SetReplay()
	calls := 0
	e.SetGate(func(Request) func() error {
		calls++
		return func() error { return errors.New("held") }
	})
	e.Submit(Request{Tag: 4, Len: 1, Write: true, Data: []byte{1}})
	e.SetLive()
	if got := waitReady(t, e); len(got) != 1 || got[0].Tag != 4 || got[0].Err != "" {
		t.Fatalf("re-issued write: %+v", got)
	}
	if calls != 1 {
		t.Errorf("gate called %d times, want 1 (at submission)", calls)
	}
}

// A backup with its own disk copy: a replaying engine performs the writes
// it is told to, in order, never a read or another write; SetLive uses a
// performed write's result instead of writing again.
func TestReplayWritesArePerformedOnceInOrder(t *testing.T) {
	var mu sync.Mutex
	var done []uint64
	var live atomic.Bool
	e := NewEngine(func(r Request) ([]byte, error) {
		if !r.Write && !live.Load() {
			t.Error("a replaying engine read from its backend")
		}
		if !r.Write {
			return make([]byte, r.Len), nil
		}
		if r.Tag == 1 {
			time.Sleep(20 * time.Millisecond) // the later write must still wait
		}
		mu.Lock()
		done = append(done, r.Tag)
		mu.Unlock()
		return nil, nil
	})
	e.SetReplay()
	e.SetReplayWrites(func(r Request) bool { return r.Arg != 99 })
	e.Submit(Request{Tag: 1, Len: 1, Write: true, Data: []byte{1}})
	e.Submit(Request{Tag: 2, Len: 4})                                        // a read: from the log
	e.Submit(Request{Tag: 3, Len: 1, Write: true, Data: []byte{3}})          // performed
	e.Submit(Request{Tag: 4, Len: 1, Write: true, Data: []byte{4}, Arg: 99}) // not this device's
	e.Delivered(1)                                                           // the log completed tag 1
	live.Store(true)
	e.SetLive() // tags 2, 3 and 4 are outstanding
	var tags []uint64
	for len(tags) < 3 {
		for _, c := range waitReady(t, e) {
			tags = append(tags, c.Tag)
		}
	}
	slices.Sort(tags)
	if !slices.Equal(tags, []uint64{2, 3, 4}) {
		t.Errorf("completions after SetLive %v, want [2 3 4]", tags)
	}
	mu.Lock()
	defer mu.Unlock()
	// 1 and 3 in order while replaying, 3 once; 4 (not performed while
	// replaying) by SetLive.
	i1, i3 := slices.Index(done, 1), slices.Index(done, 3)
	n3 := 0
	for _, tag := range done {
		if tag == 3 {
			n3++
		}
	}
	if len(done) != 3 || i1 < 0 || i3 < i1 || n3 != 1 || !slices.Contains(done, 4) {
		t.Errorf("backend writes %v: want 1 before 3, 3 once, and 4", done)
	}
}

// TestWaitShadowsWaitsForTheLastWrite: a replay that ends waits for the
// writes it performed on its own disk copy; WaitShadows returns only once
// the last one (and so every one before it) is done.
func TestWaitShadowsWaitsForTheLastWrite(t *testing.T) {
	var done atomic.Int32
	e := NewEngine(func(req Request) ([]byte, error) {
		time.Sleep(20 * time.Millisecond)
		done.Add(1)
		return nil, nil
	})
	e.WaitShadows() // nothing performed: returns at once
	e.SetReplay()
	e.SetReplayWrites(func(Request) bool { return true })
	for tag := uint64(1); tag <= 3; tag++ {
		if err := e.Submit(Request{Tag: tag, Write: true, Len: 1, Data: []byte{1}}); err != nil {
			t.Fatal(err)
		}
	}
	e.WaitShadows()
	if n := done.Load(); n != 3 {
		t.Fatalf("WaitShadows returned with %d of 3 writes done", n)
	}
}

// TestShadowErrReportsAFailedReplayedWrite: a write the replaying engine
// performs on this host's copy and that fails is reported (the copy lacks
// a write the log has), even after the log delivered the primary's
// successful completion of it; writes that succeed report nothing.
func TestShadowErrReportsAFailedReplayedWrite(t *testing.T) {
	e := NewEngine(func(req Request) ([]byte, error) {
		if req.Tag == 2 {
			return nil, errors.New("EIO")
		}
		return nil, nil
	})
	e.SetReplay()
	e.SetReplayWrites(func(Request) bool { return true })
	if err := e.Submit(Request{Tag: 1, Write: true, Len: 1, Data: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	e.WaitShadows()
	if err := e.ShadowErr(); err != nil {
		t.Fatalf("a write that succeeded reported %v", err)
	}
	if err := e.Submit(Request{Tag: 2, Write: true, Len: 1, Data: []byte{2}}); err != nil {
		t.Fatal(err)
	}
	e.Delivered(2) // the log's completion (the primary's write worked)
	e.WaitShadows()
	err := e.ShadowErr()
	if err == nil || !strings.Contains(err.Error(), "tag 0x2") || !strings.Contains(err.Error(), "EIO") {
		t.Fatalf("ShadowErr = %v, want the failed write of tag 2", err)
	}
}
