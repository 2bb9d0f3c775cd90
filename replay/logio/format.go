package logio

import (
	"fmt"
	"hash/crc32"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// Magic opens every log file.
const Magic = "FTKVMLOG"

// FormatVersion is the version of the file framing written after Magic. It
// changes when the framing or the meaning of the records changes
// incompatibly; Header.Version is the recorder's own and is compared by
// CompareHeaders.
const FormatVersion uint32 = 1

// MaxPayload bounds one record's payload. A length prefix beyond it is
// rejected before anything is allocated.
const MaxPayload = 64 << 20

// fileHeaderSize is the magic plus the uint32 version.
const fileHeaderSize = len(Magic) + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// validKind reports whether ev carries one of the kinds this version knows.
func validKind(ev *logpb.Event) error {
	switch ev.GetKind().(type) {
	case *logpb.Event_Clock, *logpb.Event_Deliver, *logpb.Event_Inject, *logpb.Event_Tsc,
		*logpb.Event_Read, *logpb.Event_Fingerprint, *logpb.Event_End, *logpb.Event_Output, *logpb.Event_Submit,
		*logpb.Event_Handover:
		return nil
	case nil:
		return fmt.Errorf("event %d has no kind", ev.GetSeq())
	default:
		return fmt.Errorf("event %d has unknown kind %T", ev.GetSeq(), ev.GetKind())
	}
}

// sequence is the invariant both Writer and Reader enforce over the event
// stream: seq 1, 2, 3, …; exits never decreasing; nothing after End.
type sequence struct {
	seq   uint64
	exits uint64
	ended bool
}

// check returns a description of why ev cannot follow, or "".
func (s *sequence) check(ev *logpb.Event) string {
	switch {
	case s.ended:
		return fmt.Sprintf("event seq %d after the End event (seq %d)", ev.GetSeq(), s.seq)
	case ev.GetSeq() != s.seq+1:
		return fmt.Sprintf("seq %d where %d was expected", ev.GetSeq(), s.seq+1)
	case ev.GetExits() < s.exits:
		return fmt.Sprintf("seq %d: exits went down from %d to %d", ev.GetSeq(), s.exits, ev.GetExits())
	}
	return ""
}

func (s *sequence) advance(ev *logpb.Event) {
	s.seq = ev.GetSeq()
	s.exits = ev.GetExits()
	_, s.ended = ev.GetKind().(*logpb.Event_End)
}

func crcOf(p []byte) uint32 { return crc32.Checksum(p, castagnoli) }
