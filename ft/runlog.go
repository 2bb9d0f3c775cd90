package ft

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/ftkvm/ftkvm/internal/flushlog"
	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

// runLog is the backup's log of the whole run (Config.RunLog): the
// primary's events as the backup replays them and, once it goes live, a
// Handover and what it records of its own run. A failure to write it ends
// the log, never the run: the guest's survival comes first. It is flushed
// every flushlog.Interval, so a backup killed mid-run leaves a log
// readable up to its last flush.
type runLog struct {
	w   *flushlog.Log
	log *slog.Logger
	err error
}

func newRunLog(dst io.Writer, hdr *logpb.Header, log *slog.Logger) *runLog {
	l := &runLog{log: log}
	w, err := logio.NewWriter(dst, hdr)
	if err != nil {
		l.err = err
		log.Error(fmt.Sprintf("cannot write the run's log (--run-log): %v", err))
		return l
	}
	l.w = flushlog.New(w, flushlog.Interval)
	return l
}

// Append implements replay.Sink; it never fails.
func (l *runLog) Append(ev *logpb.Event) error {
	if l.err != nil {
		return nil
	}
	if l.err = l.w.Append(ev); l.err != nil {
		l.log.Error(fmt.Sprintf("the run's log stops at event %d: %v", ev.GetSeq(), l.err), "event", ev.GetSeq())
	}
	return nil
}

// close flushes and closes the log; it returns the first error the log
// met.
func (l *runLog) close() error {
	if l.w == nil {
		return l.err
	}
	if err := l.w.Close(); l.err == nil {
		l.err = err
	}
	return l.err
}
