package blk

import (
	"fmt"
	"slices"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
	"github.com/ftkvm/ftkvm/internal/mpack"
)

// State is the device's saved state. The configuration is not part of it
// (restore into a device built with the same Config), nor is the
// transport's: save the virtio.MMIO beside it.
type State struct {
	// NextTag is the tag the next accepted request gets.
	NextTag uint64
	// InFlight are the requests submitted to the engine and not
	// completed, by tag, orphans of a reset included; writes with their
	// Data.
	InFlight []Request
	// Waiting are the accepted requests not yet submitted, in guest
	// order.
	Waiting []Request
}

// Save returns a copy of the device's state.
func (d *Device) Save() State {
	s := State{NextTag: d.nextTag}
	tags := make([]uint64, 0, len(d.inflight))
	for t := range d.inflight {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		s.InFlight = append(s.InFlight, cloneRequest(d.inflight[t]))
	}
	for _, r := range d.waiting {
		s.Waiting = append(s.Waiting, cloneRequest(r))
	}
	return s
}

func cloneRequest(r *Request) Request {
	c := *r
	c.Chain.Segments = slices.Clone(r.Chain.Segments)
	c.Data = slices.Clone(r.Data)
	return c
}

// Restore replaces the device's state with s after checking it; on error
// the device is unchanged. It submits nothing: the transfers in flight in
// s are not known to the engine until Resubmit.
func (d *Device) Restore(s State) error {
	if err := d.check(s); err != nil {
		return fmt.Errorf("blk: restore: %w", err)
	}
	d.nextTag = s.NextTag
	d.inflight = make(map[uint64]*Request, len(s.InFlight))
	for i := range s.InFlight {
		r := cloneRequest(&s.InFlight[i])
		d.inflight[r.Tag] = &r
	}
	d.waiting = nil
	for i := range s.Waiting {
		r := cloneRequest(&s.Waiting[i])
		d.waiting = append(d.waiting, &r)
	}
	return nil
}

// Resubmit hands every transfer in flight to the engine again, in tag
// order. Call it once after Restore, with the engine live (the transfers
// run again; a read's new data reaches the guest, a write is repeated with
// the same data, which is harmless) or in replay mode (the engine only
// notes them as outstanding, for the log's completions or SetLive).
func (d *Device) Resubmit() error {
	tags := make([]uint64, 0, len(d.inflight))
	for t := range d.inflight {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		r := d.inflight[t]
		req := bounce.Request{Tag: r.Tag, Len: int(r.Len), Arg: r.Offset, Write: r.Op != OpRead, Data: r.Data}
		if err := d.engine.Submit(req); err != nil {
			return fmt.Errorf("blk: resubmit tag %d: %w", t, err)
		}
	}
	return nil
}

// check says why s is not a state the device can be in, or returns nil.
func (d *Device) check(s State) error {
	switch {
	case s.NextTag == 0:
		return fmt.Errorf("next tag 0 (tags start at 1)")
	case len(s.InFlight) > MaxInFlight:
		return fmt.Errorf("%d requests in flight, more than %d", len(s.InFlight), MaxInFlight)
	case len(s.Waiting) > QueueMax:
		return fmt.Errorf("%d requests waiting, more than %d", len(s.Waiting), QueueMax)
	}
	seen := map[uint64]bool{}
	for i := range s.InFlight {
		r := &s.InFlight[i]
		if err := d.checkRequest(r, true, s.NextTag, seen); err != nil {
			return err
		}
		for j := range i {
			a, b := &s.InFlight[j], r
			if a.Tag > b.Tag {
				a, b = b, a
			}
			if conflicts(a, b) {
				return fmt.Errorf("tags %d and %d are in flight together but conflict", a.Tag, b.Tag)
			}
		}
	}
	for i := range s.Waiting {
		r := &s.Waiting[i]
		if err := d.checkRequest(r, false, s.NextTag, seen); err != nil {
			return err
		}
		if i > 0 && r.Tag <= s.Waiting[i-1].Tag {
			return fmt.Errorf("waiting tag %d after tag %d: not in guest order", r.Tag, s.Waiting[i-1].Tag)
		}
	}
	return nil
}

func (d *Device) checkRequest(r *Request, submitted bool, nextTag uint64, seen map[uint64]bool) error {
	switch {
	case r.Tag == 0 || r.Tag >= nextTag:
		return fmt.Errorf("tag %d outside 1..%d", r.Tag, nextTag-1)
	case seen[r.Tag]:
		return fmt.Errorf("tag %d appears twice", r.Tag)
	}
	seen[r.Tag] = true
	var readLen, writeLen uint64 // what the chain must hold
	switch r.Op {
	case OpRead, OpWrite:
		if r.Len == 0 || r.Len%SectorSize != 0 || r.Len > MaxDataLen || r.Offset%SectorSize != 0 ||
			r.Offset > d.cfg.Capacity || uint64(r.Len) > d.cfg.Capacity-r.Offset {
			return fmt.Errorf("tag %d: %d bytes at %d: not whole sectors inside the disk", r.Tag, r.Len, r.Offset)
		}
		if r.Op == OpWrite && d.cfg.ReadOnly {
			return fmt.Errorf("tag %d: a write on a read-only disk", r.Tag)
		}
		readLen, writeLen = headerLen, uint64(r.Len)+1
		if r.Op == OpWrite {
			readLen, writeLen = headerLen+uint64(r.Len), 1
		}
	case OpFlush:
		if r.Offset != 0 || r.Len != 0 || d.cfg.ReadOnly {
			return fmt.Errorf("tag %d: a flush with offset %d and length %d (read-only %v)", r.Tag, r.Offset, r.Len, d.cfg.ReadOnly)
		}
		readLen, writeLen = headerLen, 1
	default:
		return fmt.Errorf("tag %d: unknown op %d", r.Tag, r.Op)
	}
	if want := submitted && r.Op == OpWrite; want && len(r.Data) != int(r.Len) || !want && r.Data != nil {
		return fmt.Errorf("tag %d: %d bytes of data for op %d (submitted %v)", r.Tag, len(r.Data), r.Op, submitted)
	}
	return checkChain(&r.Chain, readLen, writeLen)
}

// checkChain checks that a chain is shaped like one Pop returns, with the
// readable and writable lengths its request needs.
func checkChain(c *virtio.Chain, readLen, writeLen uint64) error {
	if len(c.Segments) == 0 || len(c.Segments) > QueueMax {
		return fmt.Errorf("chain at head %d has %d segments", c.Head, len(c.Segments))
	}
	var rd, wr uint64
	for i, s := range c.Segments {
		if !s.Writable && i > 0 && c.Segments[i-1].Writable {
			return fmt.Errorf("chain at head %d: readable segment after a writable one", c.Head)
		}
		if s.Writable {
			wr += uint64(s.Len)
		} else {
			rd += uint64(s.Len)
		}
	}
	if rd != uint64(c.ReadLen) || wr != uint64(c.WriteLen) || rd != readLen || wr != writeLen {
		return fmt.Errorf("chain at head %d: %d+%d bytes (says %d+%d), the request needs %d+%d",
			c.Head, rd, wr, c.ReadLen, c.WriteLen, readLen, writeLen)
	}
	return nil
}

// SaveState implements virtio.Stateful.
func (d *Device) SaveState() ([]byte, error) { return mpack.Marshal(d.Save()) }

// RestoreState implements virtio.Stateful.
func (d *Device) RestoreState(b []byte) error {
	var s State
	if err := mpack.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("blk: restore: %w", err)
	}
	return d.Restore(s)
}
