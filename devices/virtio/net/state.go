package net

import (
	"fmt"
	"slices"

	"github.com/ftkvm/ftkvm/internal/mpack"
)

// State is the device's saved state. The configuration is not part of it
// (restore into a device built with the same Config), nor is the
// transport's: save the virtio.MMIO beside it.
type State struct {
	// NextTag is the tag the next transfer gets.
	NextTag uint64
	// RxTag is the standing receive's tag, 0 if none is in flight, and
	// RxBatch the most frames it asked for (1..RxBatchMax; 0 if none).
	RxTag   uint64
	RxBatch int
	// RxArmed: the driver has notified since the last reset (and no
	// receive failed since), so the device keeps a receive standing.
	RxArmed bool
	// Tx are the transmitted frames in flight, in tag order.
	Tx    []TxFrame
	Stats Stats
}

// TxFrame is a transmitted frame in flight on the engine.
type TxFrame struct {
	Tag   uint64
	Frame []byte
}

// Save returns a copy of the device's state.
func (d *Device) Save() State {
	s := State{NextTag: d.nextTag, RxTag: d.rxTag, RxBatch: d.rxBatch, RxArmed: d.rxArmed, Stats: d.stats}
	for _, t := range d.txTags() {
		s.Tx = append(s.Tx, TxFrame{Tag: t, Frame: slices.Clone(d.tx[t])})
	}
	return s
}

func (d *Device) txTags() []uint64 {
	tags := make([]uint64, 0, len(d.tx))
	for t := range d.tx {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	return tags
}

// Restore replaces the device's state with s after checking it; on error
// the device is unchanged. It submits nothing: the transfers in flight in
// s are not known to the engine until Resubmit. Restore into a device
// whose engine has nothing in flight (a fresh one), or an old transfer's
// completion could meet a restored tag.
func (d *Device) Restore(s State) error {
	if err := check(s); err != nil {
		return fmt.Errorf("net: restore: %w", err)
	}
	d.nextTag, d.rxTag, d.rxBatch, d.rxArmed, d.stats = s.NextTag, s.RxTag, s.RxBatch, s.RxArmed, s.Stats
	d.tx = make(map[uint64][]byte, len(s.Tx))
	for _, f := range s.Tx {
		d.tx[f.Tag] = slices.Clone(f.Frame)
	}
	return nil
}

// Resubmit hands every transfer in flight to the engine again, in tag
// order: the standing receive and the transmitted frames. Call it once
// after Restore, with the engine live (frames are sent again: duplicates
// are allowed on a network, losses are what output commit prevents) or in
// replay mode (the engine only notes them as outstanding, for the log's
// completions or SetLive).
func (d *Device) Resubmit() error {
	tags := d.txTags()
	if d.rxTag != 0 {
		tags = append(tags, d.rxTag)
		slices.Sort(tags)
	}
	for _, t := range tags {
		req := receiveRequest(t, d.rxBatch)
		if f, ok := d.tx[t]; ok {
			req = transmitRequest(t, f)
		}
		if err := d.engine.Submit(req); err != nil {
			return fmt.Errorf("net: resubmit tag %d: %w", t, err)
		}
	}
	return nil
}

// check says why s is not a state the device can be in, or returns nil.
func check(s State) error {
	switch {
	case s.NextTag == 0:
		return fmt.Errorf("next tag 0 (tags start at 1)")
	case s.RxTag >= s.NextTag:
		return fmt.Errorf("receive tag %d is not below the next tag %d", s.RxTag, s.NextTag)
	case s.RxTag == 0 && s.RxBatch != 0 || s.RxTag != 0 && (s.RxBatch < 1 || s.RxBatch > RxBatchMax):
		return fmt.Errorf("receive tag %d for %d frames (1..%d while standing, else 0)", s.RxTag, s.RxBatch, RxBatchMax)
	case len(s.Tx) > MaxTxInFlight:
		return fmt.Errorf("%d frames in flight, more than %d", len(s.Tx), MaxTxInFlight)
	}
	for i, f := range s.Tx {
		switch {
		case f.Tag == 0 || f.Tag >= s.NextTag:
			return fmt.Errorf("frame tag %d outside 1..%d", f.Tag, s.NextTag-1)
		case f.Tag == s.RxTag:
			return fmt.Errorf("tag %d is both the receive and a frame", f.Tag)
		case i > 0 && f.Tag <= s.Tx[i-1].Tag:
			return fmt.Errorf("frame tag %d after tag %d: not in order", f.Tag, s.Tx[i-1].Tag)
		case len(f.Frame) < MinFrame || len(f.Frame) > MaxFrame:
			return fmt.Errorf("frame tag %d is %d bytes, not %d..%d", f.Tag, len(f.Frame), MinFrame, MaxFrame)
		}
	}
	return nil
}

// SaveState implements virtio.Stateful.
func (d *Device) SaveState() ([]byte, error) { return mpack.Marshal(d.Save()) }

// RestoreState implements virtio.Stateful.
func (d *Device) RestoreState(b []byte) error {
	var s State
	if err := mpack.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("net: restore: %w", err)
	}
	return d.Restore(s)
}
