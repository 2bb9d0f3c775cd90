package replay

import "github.com/ftkvm/ftkvm/replay/logpb"

// Sink receives a recorder's events in order (a log file writer, or the
// logging channel to a backup).
type Sink interface {
	Append(ev *logpb.Event) error
}

// Source yields a replayer's events in order. Next returns io.EOF when the
// log ends.
type Source interface {
	Next() (*logpb.Event, error)
}

// MemLog is an in-memory Sink and Source, for tests and tools.
type MemLog struct {
	Events []*logpb.Event
	pos    int
}

// Append implements Sink.
func (m *MemLog) Append(ev *logpb.Event) error {
	m.Events = append(m.Events, ev)
	return nil
}

// Next implements Source.
func (m *MemLog) Next() (*logpb.Event, error) {
	if m.pos >= len(m.Events) {
		return nil, errEOF
	}
	m.pos++
	return m.Events[m.pos-1], nil
}
