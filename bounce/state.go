package bounce

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// State is the saved state of an engine at a snapshot point.
//
// A snapshot quiesces the engine first (Quiesce): every transfer that
// finishes on its own (a disk read or write) runs to its end, and its
// completion is saved in Ready, data included, to be delivered after
// restore exactly as it would have been. A read with Upto waits on the
// outside world (virtio-net's standing receive) and may never finish, so
// it is not waited for: it is saved in Reissue and started again after
// restore, which is the same to the device as a receive still waiting. In
// replay mode every outstanding request is in Reissue: the log, or
// SetLive, completes it.
type State struct {
	Ready   []Completion
	Reissue []Request
}

// MaxSavedTransfers bounds Ready plus Reissue in a state Restore accepts:
// far more than the devices keep in flight (virtio queues hold at most
// 256 chains each), and a bound on what a corrupt state can allocate.
const MaxSavedTransfers = 4096

// waitsOnOutside reports whether req may wait for ever on the outside
// world (a receive), so that a snapshot re-issues it instead of waiting.
func waitsOnOutside(req Request) bool { return !req.Write && req.Upto }

// Quiesce waits until every transfer in flight either is ready or waits
// on the outside world (see State), and every write a replaying engine
// performs is done, or until ctx ends. Call it on the vCPU thread with the
// guest stopped: only the guest submits.
func (e *Engine) Quiesce(ctx context.Context) error {
	e.WaitShadows()
	// A short poll: quiescing is rare (a snapshot), and transfers end
	// on their own goroutines without a channel to wait on.
	for {
		e.mu.Lock()
		busy := 0
		for _, r := range e.running {
			if !waitsOnOutside(r) {
				busy++
			}
		}
		e.mu.Unlock()
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bounce: quiesce: %d transfers still in flight: %w", busy, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// Save returns the engine's state. The engine must be quiesced (Quiesce):
// a transfer that neither is ready nor waits on the outside world is an
// error. The engine goes on unchanged.
func (e *Engine) Save() (State, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var s State
	for _, c := range e.ready {
		s.Ready = append(s.Ready, Completion{Tag: c.Tag, Data: slices.Clone(c.Data), Err: c.Err})
	}
	var tags []uint64
	for t, r := range e.running {
		if !waitsOnOutside(r) {
			return State{}, fmt.Errorf("bounce: save: transfer tag %#x is in flight (quiesce first)", t)
		}
		tags = append(tags, t)
	}
	for t := range e.outstanding {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	for _, t := range tags {
		r, ok := e.running[t]
		if !ok {
			r = e.outstanding[t]
		}
		r.hold = nil
		r.Data = slices.Clone(r.Data)
		s.Reissue = append(s.Reissue, r)
	}
	return s, nil
}

// Restore loads s into an engine that has nothing ready, in flight or
// outstanding (a new one), after checking it; on error the engine is
// unchanged. The completions in s.Ready become ready (Poll returns them
// first); the requests in s.Reissue start on the backend, or, in replay
// mode, become outstanding, as if submitted now. Restore the devices that
// own the tags beside it, without their own re-submission.
func (e *Engine) Restore(s State) error {
	if err := checkState(s); err != nil {
		return fmt.Errorf("bounce: restore: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.ready) != 0 || e.inflight != 0 || len(e.outstanding) != 0 || len(e.shadows) != 0 {
		return fmt.Errorf("bounce: restore: the engine is in use (%d ready, %d in flight, %d outstanding)",
			len(e.ready), e.inflight, len(e.outstanding))
	}
	for _, c := range s.Ready {
		e.ready = append(e.ready, Completion{Tag: c.Tag, Data: slices.Clone(c.Data), Err: c.Err})
	}
	for _, r := range s.Reissue {
		r.hold = nil
		r.Data = slices.Clone(r.Data)
		if e.replaying {
			if e.outstanding == nil {
				e.outstanding = map[uint64]Request{}
			}
			e.outstanding[r.Tag] = r
			continue
		}
		e.start(r)
	}
	return nil
}

// checkState says why s is not a state an engine can be in.
func checkState(s State) error {
	if n := len(s.Ready) + len(s.Reissue); n > MaxSavedTransfers {
		return fmt.Errorf("%d transfers saved, more than %d", n, MaxSavedTransfers)
	}
	seen := make(map[uint64]bool, len(s.Ready)+len(s.Reissue))
	for _, c := range s.Ready {
		switch {
		case seen[c.Tag]:
			return fmt.Errorf("tag %#x saved twice", c.Tag)
		case len(c.Data) > MaxLen:
			return fmt.Errorf("completion tag %#x carries %d bytes, more than %d", c.Tag, len(c.Data), MaxLen)
		case c.Err != "" && c.Data != nil:
			return fmt.Errorf("completion tag %#x has both data and the error %q", c.Tag, c.Err)
		}
		seen[c.Tag] = true
	}
	for i, r := range s.Reissue {
		if seen[r.Tag] {
			return fmt.Errorf("tag %#x saved twice", r.Tag)
		}
		seen[r.Tag] = true
		if i > 0 && r.Tag < s.Reissue[i-1].Tag {
			return fmt.Errorf("request tag %#x after tag %#x: not in tag order", r.Tag, s.Reissue[i-1].Tag)
		}
		if err := r.check(); err != nil {
			return fmt.Errorf("request tag %#x: %w", r.Tag, err)
		}
	}
	return nil
}
