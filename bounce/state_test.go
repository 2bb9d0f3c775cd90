package bounce

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// A disk read still running is waited for and saved ready, data
// included; a receive waiting on the outside world is saved to re-issue;
// a new engine restored from the state delivers the same completion and
// runs the receive again.
func TestSaveQuiescesAndRestoreDeliversTheSame(t *testing.T) {
	release := make(chan struct{})
	never := make(chan struct{})
	defer close(never)
	e := NewEngine(func(r Request) ([]byte, error) {
		if r.Upto {
			<-never
			return nil, nil
		}
		<-release
		return bytes.Repeat([]byte{byte(r.Tag)}, r.Len), nil
	})
	for _, r := range []Request{{Tag: 1, Len: 8}, {Tag: 2, Len: 64, Upto: true}} {
		if err := e.Submit(r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Save(); err == nil || !strings.Contains(err.Error(), "quiesce") {
		t.Fatalf("Save with a read in flight: %v, want an error asking to quiesce", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if err := e.Quiesce(ctx); err == nil {
		t.Fatal("Quiesce returned while a disk read was blocked")
	}
	cancel()
	close(release)
	if err := e.Quiesce(context.Background()); err != nil {
		t.Fatal(err)
	}
	s, err := e.Save()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Ready) != 1 || s.Ready[0].Tag != 1 || !bytes.Equal(s.Ready[0].Data, bytes.Repeat([]byte{1}, 8)) {
		t.Fatalf("ready %+v", s.Ready)
	}
	if len(s.Reissue) != 1 || s.Reissue[0].Tag != 2 || !s.Reissue[0].Upto || s.Reissue[0].Len != 64 {
		t.Fatalf("reissue %+v", s.Reissue)
	}

	got := make(chan Request, 1)
	e2 := NewEngine(func(r Request) ([]byte, error) { got <- r; return []byte("frame"), nil })
	if err := e2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if r := <-got; r.Tag != 2 || r.Len != 64 || !r.Upto {
		t.Fatalf("re-issued %+v", r)
	}
	var all []Completion
	for len(all) < 2 {
		all = append(all, waitReady(t, e2)...)
	}
	if all[0].Tag != 1 || !bytes.Equal(all[0].Data, s.Ready[0].Data) || all[1].Tag != 2 || string(all[1].Data) != "frame" {
		t.Fatalf("after restore: %+v", all)
	}
	if err := e2.Restore(State{Ready: []Completion{{Tag: 9}}}); err != nil {
		t.Fatalf("restore into an idle engine: %v", err)
	}
	if err := e2.Restore(State{}); err == nil {
		t.Fatal("restore into an engine with a completion ready was accepted")
	}
}

// In replay mode the outstanding requests are saved to re-issue, and a
// replaying engine restored from them holds them outstanding again.
func TestSaveInReplayKeepsOutstanding(t *testing.T) {
	e := NewEngine(func(Request) ([]byte, error) { t.Error("backend called in replay"); return nil, nil })
	e.SetReplay()
	if err := e.Submit(Request{Tag: 5, Len: 3, Write: true, Data: []byte("abc")}); err != nil {
		t.Fatal(err)
	}
	s, err := e.Save()
	if err != nil || len(s.Reissue) != 1 || string(s.Reissue[0].Data) != "abc" {
		t.Fatalf("save %+v %v", s, err)
	}
	e2 := NewEngine(func(r Request) ([]byte, error) { return nil, nil })
	e2.SetReplay()
	if err := e2.Restore(s); err != nil {
		t.Fatal(err)
	}
	e2.SetLive() // starts the write the log never completed
	if c := waitReady(t, e2); len(c) != 1 || c[0].Tag != 5 || c[0].Err != "" {
		t.Fatalf("after SetLive: %+v", c)
	}
}

func TestRestoreRefusesBadStatesAndChangesNothing(t *testing.T) {
	for name, s := range map[string]State{
		"duplicate tag":  {Ready: []Completion{{Tag: 1}}, Reissue: []Request{{Tag: 1, Len: 1}}},
		"huge data":      {Ready: []Completion{{Tag: 1, Data: make([]byte, MaxLen+1)}}},
		"data and error": {Ready: []Completion{{Tag: 1, Data: []byte{1}, Err: "x"}}},
		"bad request":    {Reissue: []Request{{Tag: 1, Len: 0}}},
		"out of order":   {Reissue: []Request{{Tag: 2, Len: 1}, {Tag: 1, Len: 1}}},
		"too many":       {Ready: make([]Completion, MaxSavedTransfers+1)},
	} {
		e := NewEngine(func(Request) ([]byte, error) { t.Errorf("%s: backend called", name); return nil, nil })
		if err := e.Restore(s); err == nil || !strings.HasPrefix(err.Error(), "bounce: restore: ") {
			t.Errorf("%s: %v, want a restore error", name, err)
		}
		if ready, inflight := e.Pending(); ready || inflight {
			t.Errorf("%s: the engine changed (ready %v, in flight %v)", name, ready, inflight)
		}
	}
}
