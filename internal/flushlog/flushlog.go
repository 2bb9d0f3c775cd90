// Package flushlog gives a log being written a flush policy: a Log flushes
// its logio.Writer every Interval while events arrive, and at Close, so
// that a process killed mid-run (SIGKILL, a host crash that keeps the page
// cache) leaves a log readable up to its last flush: at most Interval of
// events is lost. A logio.Writer alone buffers 64 KiB, which a slow run
// takes minutes to fill.
//
// # Usage
//
//	w, _ := logio.NewWriter(f, header)
//	l := flushlog.New(w, flushlog.Interval)
//	// l is the recorder's replay.Sink; Append may run on any one goroutine
//	err := l.Close() // flushes and closes w (and f)
//
// A flush is a write(2) into the page cache, not an fsync: it survives the
// process, not a power loss.
package flushlog

import (
	"sync"
	"time"

	"github.com/ftkvm/ftkvm/replay/logio"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

// Interval is the flush period ftvm uses: a crash loses at most the last
// 100 ms of a recording.
const Interval = 100 * time.Millisecond

// Log is a logio.Writer flushed on a timer. Its methods are safe for
// concurrent use: the timer's flushes and the appends take turns.
type Log struct {
	mu     sync.Mutex
	w      *logio.Writer
	dirty  bool  // appended to since the last flush
	err    error // the first flush error; Append returns it from then on
	closed bool
	stop   chan struct{}
	done   chan struct{}
}

// New starts flushing w every interval (at least a millisecond); the Log
// owns w from now on.
func New(w *logio.Writer, interval time.Duration) *Log {
	l := &Log{w: w, dirty: true, stop: make(chan struct{}), done: make(chan struct{})} // dirty: the header
	go l.flusher(max(interval, time.Millisecond))
	return l
}

func (l *Log) flusher(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if l.dirty && l.err == nil {
				l.err = l.w.Flush()
				l.dirty = false
			}
			l.mu.Unlock()
		}
	}
}

// Append implements replay.Sink.
func (l *Log) Append(ev *logpb.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	l.dirty = true
	return l.w.Append(ev)
}

// Bytes is the log's size so far, buffered bytes included.
func (l *Log) Bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Bytes()
}

// Close stops the timer, flushes and closes the logio.Writer (and so its
// file). It returns the first error the log met; calling it again returns
// nil.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.w.Close()
	if l.err != nil {
		return l.err
	}
	return err
}
