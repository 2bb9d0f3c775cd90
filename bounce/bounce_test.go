package bounce

import (
	"bytes"
	"errors"
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
