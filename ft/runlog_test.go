package ft

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/flushlog"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

// failAfter is a writer that takes n bytes, then fails.
type failAfter struct {
	n   int
	buf bytes.Buffer
}

func (w *failAfter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.n {
		return 0, errors.New("disk full")
	}
	return w.buf.Write(p)
}

// TestRunLogIsALogAndNeverFailsTheRun: the backup's run log is a log file
// a reader takes back event for event; a write error is reported once,
// ends the log, and never reaches the replay (Append keeps returning nil).
func TestRunLogIsALogAndNeverFailsTheRun(t *testing.T) {
	hdr := &logpb.Header{Version: 1}
	events := func(n int) []*logpb.Event {
		var evs []*logpb.Event
		for i := 1; i <= n; i++ {
			evs = append(evs, &logpb.Event{Seq: uint64(i), Exits: uint64(i), Kind: &logpb.Event_Clock{Clock: int64(i)}})
		}
		return evs
	}

	var out bytes.Buffer
	var status strings.Builder
	l := newRunLog(&out, hdr, testLogger(&status))
	for _, ev := range events(100) {
		if err := l.Append(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.close(); err != nil {
		t.Fatal(err)
	}
	r, err := logio.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		if ev.Seq != uint64(n) {
			t.Fatalf("event %d has seq %d", n, ev.Seq)
		}
	}
	if n != 100 || status.Len() != 0 {
		t.Fatalf("read back %d of 100 events; status %q", n, status.String())
	}

	// A writer that fills up: the log ends, the run does not.
	status.Reset()
	l = newRunLog(&failAfter{n: 70 << 10}, hdr, testLogger(&status))
	for _, ev := range events(20000) {
		ev.Kind = &logpb.Event_Output{Output: &logpb.Output{Data: bytes.Repeat([]byte("x"), 64)}}
		if err := l.Append(ev); err != nil {
			t.Fatalf("Append returned %v: a run-log error must not stop the run", err)
		}
	}
	if err := l.close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("close returned %v, want the write error", err)
	}
	if c := strings.Count(status.String(), "the run's log stops"); c != 1 {
		t.Fatalf("the error was reported %d times, want once:\n%s", c, status.String())
	}
}

// TestRunLogSurvivesACrash: without close (the backup killed), the run
// log holds every event appended before its last flush, which comes
// within flushlog.Interval.
func TestRunLogSurvivesACrash(t *testing.T) {
	var out syncBuf
	var status strings.Builder
	l := newRunLog(&out, &logpb.Header{Version: 1}, testLogger(&status))
	defer l.close()
	for i := 1; i <= 30; i++ {
		l.Append(&logpb.Event{Seq: uint64(i), Exits: uint64(i), Kind: &logpb.Event_Clock{Clock: int64(i)}})
	}
	n := 0
	for end := time.Now().Add(5 * flushlog.Interval); n < 30 && time.Now().Before(end); time.Sleep(flushlog.Interval / 10) {
		r, err := logio.NewReader(strings.NewReader(out.String()))
		if err != nil {
			continue // not even the header yet
		}
		for n = 0; ; n++ {
			if _, err := r.Next(); err != nil {
				break
			}
		}
	}
	if n != 30 {
		t.Fatalf("the unclosed log holds %d of 30 events after %v", n, 5*flushlog.Interval)
	}
}
