package suite

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/guest/bare"
	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

func clockEv(seq, exits uint64, clock int64) *logpb.Event {
	return &logpb.Event{Seq: seq, Exits: exits, Kind: &logpb.Event_Clock{Clock: clock}}
}

func endEv(seq, exits uint64) *logpb.Event {
	return &logpb.Event{Seq: seq, Exits: exits, Kind: &logpb.Event_End{End: &logpb.End{}}}
}

// The damaged logs Check replays: one clock reading changed after the
// first third; two neighbours' inputs swapped, numbers and exit counts
// kept; the recorded events themselves untouched.
func TestDamagedLogs(t *testing.T) {
	events := []*logpb.Event{clockEv(1, 1, 10), clockEv(2, 2, 20), clockEv(3, 3, 30), clockEv(4, 3, 40), clockEv(5, 4, 50), endEv(6, 5)}
	tampered := tamperClock(events)
	if tampered == nil || tampered[2].GetClock() != 30+7919 || events[2].GetClock() != 30 {
		t.Errorf("tamperClock: %v (recorded %v)", tampered, events)
	}
	for i, ev := range tampered {
		if i != 2 && ev != events[i] {
			t.Errorf("tamperClock changed event %d", i)
		}
	}
	swapped := swapInputs(events)
	if swapped == nil {
		t.Fatal("swapInputs found nothing to swap")
	}
	// From the middle (3): events 3 and 4 share exit 3, so 4 and 5 swap.
	if swapped[3].GetClock() != 50 || swapped[4].GetClock() != 40 || swapped[3].Exits != 3 || swapped[4].Exits != 4 || swapped[3].Seq != 4 {
		t.Errorf("swapInputs: %v", swapped)
	}
	if events[3].GetClock() != 40 || swapped[5] != events[5] {
		t.Error("swapInputs changed the recording or moved the End")
	}
	if tamperClock([]*logpb.Event{endEv(1, 1)}) != nil || swapInputs([]*logpb.Event{clockEv(1, 1, 1), endEv(2, 2)}) != nil {
		t.Error("a log with nothing to damage was damaged")
	}
}

func TestCheckNeedsAGuest(t *testing.T) {
	if _, err := Check(context.Background(), Guest{}); err == nil {
		t.Error("Check without a guest: no error")
	}
}

// Check runs the suite's checks on a guest it did not build: pit_read,
// prepared as a caller would, passes all of them; a marker the guest
// never prints fails the first.
func TestCheckOnACallersGuest(t *testing.T) {
	requireKVM(t)
	img, err := bare.Build("pit_read")
	if err != nil {
		t.Fatal(err)
	}
	p, err := replay.PrepareBare(img.Binary)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Check(context.Background(), Guest{Prepared: p, Want: []string{"pit_read: sum="}})
	if err != nil {
		t.Fatalf("seed %d: %v", rep.Seed, err)
	}
	if rep.Tampered == "" || rep.Reordered == "" || rep.Events < 100 {
		t.Errorf("report %+v: the damaged logs were not both replayed", rep)
	}
	t.Logf("seed %d: %d events; tampered: %s; reordered: %s", rep.Seed, rep.Events, rep.Tampered, rep.Reordered)
	_, err = Check(context.Background(), Guest{Prepared: p, Want: []string{"never printed"}, Replays: 1})
	if err == nil || !strings.Contains(err.Error(), `lacks "never printed"`) {
		t.Errorf("a missing marker: err = %v", err)
	}
	if errors.Is(err, replay.ErrDiverged) {
		t.Errorf("a missing marker reported as a divergence: %v", err)
	}
}
