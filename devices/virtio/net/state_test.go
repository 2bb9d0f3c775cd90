package net

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
)

// busyGuest leaves three frames and a receive in flight, with counters.
func busyGuest(t *testing.T) *guest {
	g := newTestGuest(t)
	g.postRx(2000)
	g.Notify(RxQueue)
	g.deliver(frame(100, 1))
	g.deliver(frame(100, 2)) // no buffer
	for i := range 3 {
		g.sendFrame(frame(60+i, byte(i)), false)
	}
	g.Post(TxQueue, seg{N: 4})
	g.Notify(TxQueue)
	return g
}

func TestSaveRestoreRoundTrip(t *testing.T) {
	g := busyGuest(t)
	s := g.dev.Save()
	if len(s.Tx) != 3 || s.RxTag == 0 || !s.RxArmed || s.Stats.RxFrames != 1 || s.Stats.TxDropped != 1 {
		t.Fatalf("saved %+v", s)
	}
	d2, err := New(Config{MAC: testMAC}, replayEngine(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := d2.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := d2.Save(); !reflect.DeepEqual(got, s) {
		t.Fatalf("restored %+v, saved %+v", got, s)
	}
	s.Tx[0].Frame[20] ^= 0xff // the device keeps its own copies
	if bytes.Equal(d2.Save().Tx[0].Frame, s.Tx[0].Frame) {
		t.Error("Restore kept the caller's frame")
	}
}

func TestRestoreRefusesBadStates(t *testing.T) {
	good := busyGuest(t).dev.Save()
	d, _ := New(Config{MAC: testMAC}, replayEngine(t))
	for name, mutate := range map[string]func(*State){
		"next tag 0":          func(s *State) { s.NextTag = 0 },
		"receive tag ahead":   func(s *State) { s.RxTag = s.NextTag },
		"frame tag 0":         func(s *State) { s.Tx[0].Tag = 0 },
		"frame tag ahead":     func(s *State) { s.Tx[2].Tag = s.NextTag },
		"frame is receive":    func(s *State) { s.Tx[0].Tag = s.RxTag },
		"frames out of order": func(s *State) { s.Tx[0], s.Tx[1] = s.Tx[1], s.Tx[0] },
		"duplicate tag":       func(s *State) { s.Tx[1].Tag = s.Tx[0].Tag },
		"runt":                func(s *State) { s.Tx[1].Frame = s.Tx[1].Frame[:MinFrame-1] },
		"too long":            func(s *State) { s.Tx[1].Frame = make([]byte, MaxFrame+1) },
		"too many frames": func(s *State) {
			for i := range MaxTxInFlight {
				s.Tx = append(s.Tx, TxFrame{Tag: s.NextTag + uint64(i), Frame: frame(60, 0)})
			}
			s.NextTag += MaxTxInFlight
		},
	} {
		s := busyGuest(t).dev.Save()
		mutate(&s)
		before := d.Save()
		if err := d.Restore(s); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if !reflect.DeepEqual(before, d.Save()) {
			t.Errorf("%s: a refused Restore changed the device", name)
		}
	}
	if err := d.Restore(good); err != nil {
		t.Fatal(err)
	}
}

// Resubmit in replay mode notes the transfers as outstanding; going live
// runs them: the frames again, in order, and the receive.
func TestResubmitThenGoLive(t *testing.T) {
	s := busyGuest(t).dev.Save()
	devEnd, peer := NewLink()
	defer peer.Close()
	e := bounce.NewEngine(devEnd.Backend())
	e.SetReplay()
	g := newGuest(t, e, 64)
	if err := g.dev.Restore(s); err != nil {
		t.Fatal(err)
	}
	if err := g.dev.Resubmit(); err != nil {
		t.Fatal(err)
	}
	e.SetLive()
	for i := range 3 {
		if f, err := peer.Recv(); err != nil || !bytes.Equal(f, frame(60+i, byte(i))) {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	b := g.postRx(2000)
	peer.Send(frame(77, 7))
	deadline := time.Now().Add(5 * time.Second)
	for !b.Done && time.Now().Before(deadline) {
		for _, c := range e.Poll() {
			g.complete(c)
		}
		time.Sleep(100 * time.Microsecond)
	}
	if !b.Done || !bytes.Equal(g.frames[0], frame(77, 7)) {
		t.Fatal("the resubmitted receive did not deliver")
	}
}
