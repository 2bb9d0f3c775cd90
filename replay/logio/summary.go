package logio

import (
	"errors"
	"io"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// Kind classifies events for Summary. Deliver events are split by whether
// they carry a landmark (asynchronous delivery between exits) or not (at an
// exit).
type Kind int

const (
	KindClock Kind = iota
	KindDeliver
	KindDeliverLandmark
	KindInject
	KindTSC
	KindRead
	KindFingerprint
	KindEnd
	KindOutput
	KindSubmit
	KindHandover
	NumKinds // number of kinds; not a kind
)

var kindNames = [NumKinds]string{"clock", "deliver", "deliver+landmark", "inject", "tsc", "read", "fingerprint", "end", "output", "submit", "handover"}

func (k Kind) String() string {
	if k >= 0 && k < NumKinds {
		return kindNames[k]
	}
	return "unknown"
}

// KindOf returns ev's kind; -1 if it has none.
func KindOf(ev *logpb.Event) Kind {
	switch k := ev.GetKind().(type) {
	case *logpb.Event_Clock:
		return KindClock
	case *logpb.Event_Deliver:
		if k.Deliver.AtLandmark() {
			return KindDeliverLandmark
		}
		return KindDeliver
	case *logpb.Event_Inject:
		return KindInject
	case *logpb.Event_Tsc:
		return KindTSC
	case *logpb.Event_Read:
		return KindRead
	case *logpb.Event_Fingerprint:
		return KindFingerprint
	case *logpb.Event_End:
		return KindEnd
	case *logpb.Event_Output:
		return KindOutput
	case *logpb.Event_Submit:
		return KindSubmit
	case *logpb.Event_Handover:
		return KindHandover
	}
	return -1
}

// KindStats counts the events of one kind and the bytes of their records.
type KindStats struct {
	Events int
	Bytes  int64
}

// Summary describes a log's events.
type Summary struct {
	Kinds      [NumKinds]KindStats // indexed by Kind
	Events     int                 // events counted
	EventBytes int64               // bytes of their records (framing included)
	Bytes      int64               // bytes of the log read: magic, version, header and events
	FirstExits uint64              // exits of the first event counted
	LastExits  uint64              // exits of the last event counted
	End        *logpb.End          // the End event, if one was read
}

// Add counts ev, whose record took size bytes. Summarize calls it; it is
// exported for callers that walk a log themselves.
func (s *Summary) Add(ev *logpb.Event, size int64) {
	if s.Events == 0 {
		s.FirstExits = ev.GetExits()
	}
	s.Events++
	s.EventBytes += size
	s.LastExits = ev.GetExits()
	if k := KindOf(ev); k >= 0 {
		s.Kinds[k].Events++
		s.Kinds[k].Bytes += size
	}
	if end := ev.GetEnd(); end != nil {
		s.End = end
	}
}

// Summarize reads r to the end and summarizes the events it had not yet
// returned. At a damaged record it stops and returns the error together
// with what it counted before it.
func Summarize(r *Reader) (*Summary, error) {
	s := new(Summary)
	for {
		start := r.Offset()
		ev, err := r.Next()
		if err != nil {
			s.Bytes = r.Offset()
			if errors.Is(err, io.EOF) {
				return s, nil
			}
			return s, err
		}
		s.Add(ev, r.Offset()-start)
	}
}
