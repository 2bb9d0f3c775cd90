package logio

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

func TestSummarize(t *testing.T) {
	evs := testEvents(300)
	log := writeLog(t, testHeader(), evs)

	// The reference: count by hand from the events and record offsets.
	var want [NumKinds]KindStats
	for i, ev := range evs {
		k := KindOf(ev)
		want[k].Events++
		want[k].Bytes += int64(len(log.record(i + 1)))
	}
	for k := range NumKinds {
		if want[k].Events == 0 {
			t.Fatalf("test events lack kind %v", k)
		}
	}

	r, err := NewReader(bytes.NewReader(log.data))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(r)
	if err != nil {
		t.Fatal(err)
	}
	if s.Kinds != want {
		t.Errorf("kinds = %+v, want %+v", s.Kinds, want)
	}
	if s.Events != len(evs) || s.Bytes != int64(len(log.data)) ||
		s.EventBytes != int64(len(log.data)-log.starts[1]) {
		t.Errorf("events %d, bytes %d, event bytes %d; want %d, %d, %d",
			s.Events, s.Bytes, s.EventBytes, len(evs), len(log.data), len(log.data)-log.starts[1])
	}
	if s.FirstExits != evs[0].Exits || s.LastExits != evs[len(evs)-1].Exits || s.LastExits == 0 {
		t.Errorf("exits %d..%d, want %d..%d", s.FirstExits, s.LastExits, evs[0].Exits, evs[len(evs)-1].Exits)
	}
	if !proto.Equal(s.End, evs[len(evs)-1].GetEnd()) {
		t.Errorf("End = %v", s.End)
	}
}

func TestSummarizeDamaged(t *testing.T) {
	evs := testEvents(50)
	log := writeLog(t, testHeader(), evs)
	r, err := NewReader(bytes.NewReader(damage(log.data, log.starts[21]+2)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Summarize(r)
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("Summarize = %v, want ErrCorrupt", err)
	}
	if s == nil || s.Events != 20 || s.End != nil || s.LastExits != evs[19].Exits {
		t.Errorf("summary of a log damaged at record 21: %+v", s)
	}
}

func TestKindOf(t *testing.T) {
	for _, tc := range []struct {
		ev   *logpb.Event
		want Kind
	}{
		{&logpb.Event{Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Timer: true}}}, KindDeliver},
		{&logpb.Event{Kind: &logpb.Event_Deliver{Deliver: &logpb.Deliver{Landmark: &logpb.Landmark{}}}}, KindDeliverLandmark},
		{&logpb.Event{}, -1},
	} {
		if got := KindOf(tc.ev); got != tc.want {
			t.Errorf("KindOf(%v) = %v, want %v", tc.ev, got, tc.want)
		}
	}
	if KindDeliverLandmark.String() != "deliver+landmark" || Kind(-1).String() != "unknown" {
		t.Error("Kind.String")
	}
}

func TestAppendAllocations(t *testing.T) {
	w, err := NewWriter(io.Discard, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	ev := &logpb.Event{Kind: &logpb.Event_Tsc{Tsc: 123456789}}
	allocs := testing.AllocsPerRun(1000, func() {
		ev.Seq++
		ev.Exits += 3
		if err := w.Append(ev); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("Append allocates %.1f times per event", allocs)
	}
}
