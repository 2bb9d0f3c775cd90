package ft

import (
	"io"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

// runLog is the backup's log of the whole run (Config.RunLog): the
// primary's events as the backup replays them and, once it goes live, a
// Handover and what it records of its own run. A failure to write it ends
// the log, never the run: the guest's survival comes first.
type runLog struct {
	w   *logio.Writer
	log *logger
	err error
}

func newRunLog(dst io.Writer, hdr *logpb.Header, log *logger) *runLog {
	l := &runLog{log: log}
	l.w, l.err = logio.NewWriter(dst, hdr)
	if l.err != nil {
		log.printf("cannot write the run's log (--run-log): %v", l.err)
	}
	return l
}

// Append implements replay.Sink; it never fails.
func (l *runLog) Append(ev *logpb.Event) error {
	if l.err != nil {
		return nil
	}
	if l.err = l.w.Append(ev); l.err != nil {
		l.log.printf("the run's log stops at event %d: %v", ev.GetSeq(), l.err)
	}
	return nil
}

// close flushes the log; it returns the first error the log met.
func (l *runLog) close() error {
	if l.w == nil {
		return l.err
	}
	if err := l.w.Close(); l.err == nil {
		l.err = err
	}
	return l.err
}
