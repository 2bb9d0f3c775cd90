package replay

// The log cursor: the replayer's position in its Source, shared by every
// phase's driver. It knows the log, never the phase.

import (
	"errors"
	"fmt"
	"io"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

var errEOF = io.EOF

// cursor reads a Source one event ahead and keeps the first divergence.
type cursor struct {
	src     Source
	vm      vmm.Machine  // set by Start; nil before
	next    *logpb.Event // peeked, not yet consumed
	eof     bool
	err     error  // first divergence or read failure; sticky
	lastSeq uint64 // of the last event read from the Source
	seqSeen bool   // an event was read: the next must be numbered lastSeq+1
	stats   ReplayStats
}

// peek returns the next event without consuming it (nil at the end of
// the log or after an error).
func (c *cursor) peek() *logpb.Event {
	for {
		if c.next == nil && !c.eof && c.err == nil {
			ev, err := c.src.Next()
			switch {
			case errors.Is(err, io.EOF):
				c.eof = true
			case err != nil:
				c.err = fmt.Errorf("reading the log: %w", err)
			case c.seqSeen && ev.Seq != c.lastSeq+1:
				// A log is numbered without gaps (the recorder counts every
				// event): an event missing or out of order is a log that
				// was cut or spliced, whatever state the replay would
				// reach without it.
				p := vmm.Point{}
				if c.vm != nil {
					p = c.vm.Point()
				}
				c.diverge(p, ev.Seq, "event numbering", fmt.Sprintf("event %d", c.lastSeq+1), fmt.Sprintf("event %d", ev.Seq))
			default:
				c.next = ev
				c.lastSeq, c.seqSeen = ev.Seq, true
			}
		}
		// A device write's submission carries no input: it marks where
		// the primary submitted it (output commit). It is passed once the
		// replay has reached its exit, never before, so a backup that
		// goes live at the end of its log has replayed past every write
		// the primary let out.
		if c.next.GetSubmit() != nil && c.vm != nil && c.next.Exits <= c.vm.Point().Exits {
			c.next = nil
			c.stats.Events++
			c.stats.Submits++
			continue
		}
		return c.next
	}
}

func (c *cursor) consume() *logpb.Event {
	ev := c.peek()
	c.next = nil
	if ev != nil {
		c.stats.Events++
	}
	return ev
}

func (c *cursor) diverge(p vmm.Point, seq uint64, what, expected, actual string) error {
	if c.err == nil {
		c.err = &DivergenceError{Seq: seq, Point: p, What: what, Expected: expected, Actual: actual}
	}
	return c.err
}

// match consumes the next event if it is at p.Exits and match accepts
// it, or reports a divergence (want describes what the replay did).
func (c *cursor) match(p vmm.Point, want string, match func(*logpb.Event) bool) (*logpb.Event, error) {
	ev := c.peek()
	if c.err != nil {
		return nil, c.err
	}
	if ev == nil || ev.Exits != p.Exits || !match(ev) {
		var seq uint64
		if ev != nil {
			seq = ev.Seq
		}
		return nil, c.diverge(p, seq, "the guest did something the log does not have next", describe(ev), want)
	}
	return c.consume(), nil
}

// handoverAhead reports whether the next event is a Handover: the log goes
// on with what a backup recorded after going live there, and the replay
// must first get there the way the backup did (draining).
func (c *cursor) handoverAhead() bool {
	return c.err == nil && c.peek().GetHandover() != nil
}

// usedUp reports whether every event the Source will give is replayed.
func (c *cursor) usedUp() bool {
	return c.err == nil && c.peek() == nil && c.eof
}

func describe(ev *logpb.Event) string {
	if ev == nil {
		return "the end of the log"
	}
	switch k := ev.Kind.(type) {
	case *logpb.Event_Clock:
		return fmt.Sprintf("a clock read (%d ns) at %d exits", k.Clock, ev.Exits)
	case *logpb.Event_Submit:
		return fmt.Sprintf("a device write submitted (tag %#x, %d bytes) at %d exits", k.Submit.Tag, k.Submit.Len, ev.Exits)
	case *logpb.Event_Deliver:
		if k.Deliver.AtWindow() {
			return fmt.Sprintf("a delivery at the first interrupt-window exit (RIP %#x) after %d exits", k.Deliver.Landmark.Rip, ev.Exits)
		}
		if k.Deliver.Landmark != nil {
			return fmt.Sprintf("a delivery at a landmark (RIP %#x) after %d exits", k.Deliver.Landmark.Rip, ev.Exits)
		}
		return fmt.Sprintf("a delivery at exit %d", ev.Exits)
	case *logpb.Event_Inject:
		return fmt.Sprintf("injection of vector %#x at %d exits", k.Inject, ev.Exits)
	case *logpb.Event_Tsc:
		return fmt.Sprintf("an rdtsc at %d exits", ev.Exits)
	case *logpb.Event_Read:
		return fmt.Sprintf("a read of %#x at %d exits", k.Read.Addr, ev.Exits)
	case *logpb.Event_Fingerprint:
		return fmt.Sprintf("a fingerprint at %d exits", ev.Exits)
	case *logpb.Event_End:
		return fmt.Sprintf("the end of the run at %d exits", ev.Exits)
	case *logpb.Event_Handover:
		return fmt.Sprintf("a backup's go-live at %v", vmm.Point{Exits: ev.Exits, Kind: vmm.PointKind(k.Handover.Kind)})
	}
	return fmt.Sprintf("event %d", ev.Seq)
}

// asyncOf turns a logged delivery back into the events it delivered.
func asyncOf(d *logpb.Deliver) vmm.Async {
	a := vmm.Async{Timer: d.Timer, Input: d.Input}
	for _, c := range d.Dma {
		a.DMA = append(a.DMA, bounce.Completion{Tag: c.Tag, Data: c.Data, Err: c.Error})
	}
	return a
}
