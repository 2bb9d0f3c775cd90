package main

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/ftkvm/ftkvm/replay"
	"github.com/ftkvm/ftkvm/replay/logpb"
)

// progressEvery is the period of record's and replay's progress lines: a
// Linux run takes tens of seconds in an emulated host.
const progressEvery = 5 * time.Second

// progress counts a log's events as they pass, for the progress lines.
// note runs on the vCPU thread, the printer on its own goroutine.
type progress struct {
	events atomic.Uint64
	clock  atomic.Int64 // the last Clock event's value: the guest's time since it started
}

func (p *progress) note(ev *logpb.Event) {
	p.events.Add(1)
	if c, ok := ev.GetKind().(*logpb.Event_Clock); ok {
		p.clock.Store(c.Clock)
	}
}

// line is one progress line, after elapsed of wall time.
func (p *progress) line(verb string, elapsed time.Duration) string {
	return fmt.Sprintf("ftvm: %s: %d events, guest time %.1fs, after %.0fs\n",
		verb, p.events.Load(), time.Duration(p.clock.Load()).Seconds(), elapsed.Seconds())
}

// print writes a line to w every period until stop is called; with a
// period <= 0 it prints nothing.
func (p *progress) print(w io.Writer, verb string, period time.Duration) (stop func()) {
	if period <= 0 {
		return func() {}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				io.WriteString(w, p.line(verb, time.Since(start)))
			}
		}
	}()
	return func() { close(done); <-finished }
}

// countingSink counts the events a recorder appends.
type countingSink struct {
	replay.Sink
	p *progress
}

func (s countingSink) Append(ev *logpb.Event) error {
	s.p.note(ev)
	return s.Sink.Append(ev)
}

// countingSource counts the events a replayer reads.
type countingSource struct {
	replay.Source
	p *progress
}

func (s countingSource) Next() (*logpb.Event, error) {
	ev, err := s.Source.Next()
	if err == nil {
		s.p.note(ev)
	}
	return ev, err
}
