package ft

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// The hand-off from the primary's vCPU thread to the log channel: the
// recorder's sink queues marshalled events, the pump goroutine appends them
// (see the primary struct for why the vCPU thread only pokes a pipe).

// maxPending bounds the log the vCPU may queue ahead of the pump (the
// channel's window bounds the rest).
const maxPending = 256 << 10

// Append is the recorder's sink, on the vCPU thread: each event goes to
// the pump, which appends it to the channel. The vCPU waits here while
// maxPending bytes are queued (the pump itself waits for window space).
func (p *primary) Append(ev *logpb.Event) error {
	p.events.Add(1)
	p.lastExits.Store(ev.Exits)
	switch p.protection() {
	case halted:
		return errors.New("halted")
	case unprotected:
		return nil
	}
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	p.qmu.Lock()
	for p.pendSize >= maxPending && p.sinkErr == nil && p.protection() == protected {
		if p.space == nil {
			p.space = make(chan struct{})
		}
		ch := p.space
		p.qmu.Unlock()
		p.poke()
		began := time.Now()
		select {
		case <-ch:
		case <-p.runCtx.Done():
			return p.runCtx.Err()
		}
		p.qmu.Lock()
		p.sinkWait += time.Since(began)
	}
	if err := p.sinkErr; err != nil {
		p.qmu.Unlock()
		return err
	}
	p.pending = append(p.pending, b)
	p.pendSize += len(b)
	p.qmu.Unlock()
	p.poke()
	return nil
}

// poke wakes the pump if it is idle.
func (p *primary) poke() {
	if p.pumpIdle.CompareAndSwap(true, false) {
		p.pokeW.Write([]byte{0})
	}
}

// pump appends the vCPU's events to the channel, in order, and wakes the
// release loop. It ends when pokeW is closed and everything is appended.
func (p *primary) pump() {
	buf := make([]byte, 256)
	closed := false
	for {
		p.qmu.Lock()
		batch, space, dirty := p.pending, p.space, p.outDirty
		p.pending, p.pendSize, p.space, p.outDirty = nil, 0, nil, false
		if len(batch) == 0 && !dirty {
			if closed {
				p.qmu.Unlock()
				return
			}
			p.pumpIdle.Store(true)
			p.qmu.Unlock()
			if _, err := p.pokeR.Read(buf); err != nil {
				closed = true // the run is over: one more pass
				p.pumpIdle.Store(false)
			}
			continue
		}
		p.qmu.Unlock()
		if space != nil {
			close(space)
		}
		var last uint64
		var appendErr error
		for _, e := range batch {
			if p.protection() != protected || appendErr != nil {
				break
			}
			seq, err := p.sender.Append(p.runCtx, e)
			if err != nil {
				appendErr = err
				break
			}
			last = seq
			p.logBytes.Add(uint64(len(e)))
			p.lag.added(seq, uint64(len(e)), time.Now())
		}
		p.qmu.Lock()
		p.commit.appendedTo(last)
		p.commit.noteAppended(last, time.Now())
		if appendErr != nil && p.protection() == protected && p.sinkErr == nil {
			p.sinkErr = fmt.Errorf("logging to the backup: %w", appendErr)
		}
		p.qcond.Broadcast()
		p.qmu.Unlock()
	}
}
