package replay

import (
	"fmt"
	"sync"
	"time"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// logPipe hands a recorder's events to its Sink, in order. A delivery
// with a landmark leaves the vCPU thread with its pages copied but not
// yet hashed or compressed: a worker goroutine finishes it and appends
// it, and the events logged after it queue behind it, so the Sink still
// sees every event in sequence order and each one whole. While nothing
// is queued an event is appended at once, on the caller's thread, as if
// there were no pipe: recordings without landmarks take no hand-off.
//
// The pipe changes when an event reaches the Sink, never in which order
// or what it holds: whatever waits on the Sink (an FT primary's output
// commit waits for the backup's ack of an entry) still waits for the
// same entry, which is simply appended a little later.
type logPipe struct {
	sink Sink
	// The queue's bounds (maxQueuedEvents, maxQueuedBytes).
	maxEvents, maxBytes int

	mu   sync.Mutex
	cond *sync.Cond // broadcast when the queue shrinks or err is set
	// queue holds the events not yet appended, oldest first. The worker
	// runs while it is non-empty; its head is the one being finished or
	// appended, and leaves the queue only once appended.
	queue       []queuedEvent
	queuedBytes int // raw page bytes held by queued landmarks
	appended    uint64
	err         error // first failure to append; sticky
	// finishTime and zeroPages are the worker's share of RecordStats.
	finishTime time.Duration
	zeroPages  uint64
	// waited is how long the caller waited for room in the queue.
	waited time.Duration
	// spare holds page buffers of finished landmarks for the next
	// captures (captureLandmark).
	spare [][]byte
	// deepest is the longest the queue grew (tests check that they
	// exercise it).
	deepest int
}

type queuedEvent struct {
	ev    *logpb.Event
	raw   *rawLandmark // non-nil: ev's landmark is still to be finished
	bytes int          // raw's page bytes
}

// Bounds on what the queue holds before the vCPU thread waits for the
// worker: the guest cannot outrun its log by more than this.
const (
	maxQueuedEvents = 4096
	maxQueuedBytes  = 64 << 20
)

// Page buffers kept for reuse: enough for the worker to finish one
// landmark while the vCPU thread captures the next, and none so large
// that one huge landmark (the first after a boot) pins its memory.
const (
	maxSpareBuffers = 2
	maxSpareBytes   = 16 << 20
)

func newLogPipe(sink Sink, appended uint64) *logPipe {
	p := &logPipe{sink: sink, appended: appended, maxEvents: maxQueuedEvents, maxBytes: maxQueuedBytes}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// append logs ev (numbered already). raw, if non-nil, is the landmark
// of ev's delivery, to be finished before ev is appended. It returns the
// pipe's sticky error, which may come from an earlier event.
func (p *logPipe) append(ev *logpb.Event, raw *rawLandmark) error {
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return err
	}
	if raw == nil && len(p.queue) == 0 {
		// Nothing ahead of it, and the queue stays empty: only the
		// caller adds to it.
		p.mu.Unlock()
		err := p.sink.Append(ev)
		p.mu.Lock()
		p.done(ev, err)
		err = p.err
		p.mu.Unlock()
		return err
	}
	if p.full() {
		began := time.Now()
		for p.err == nil && p.full() {
			p.cond.Wait()
		}
		p.waited += time.Since(began)
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return err
		}
	}
	q := queuedEvent{ev: ev, raw: raw, bytes: raw.size()}
	p.queue = append(p.queue, q)
	p.queuedBytes += q.bytes
	p.deepest = max(p.deepest, len(p.queue))
	if len(p.queue) == 1 {
		go p.work()
	}
	p.mu.Unlock()
	return nil
}

// full reports whether the queue is at its bounds. Called with mu held.
func (p *logPipe) full() bool {
	return len(p.queue) >= p.maxEvents || p.queuedBytes >= p.maxBytes
}

// done records that ev was appended (err nil) or failed. Called with mu
// held.
func (p *logPipe) done(ev *logpb.Event, err error) {
	if err != nil {
		if p.err == nil {
			p.err = fmt.Errorf("logging event %d: %w", ev.Seq, err)
		}
	} else {
		p.appended = ev.Seq
	}
	p.cond.Broadcast()
}

// work finishes and appends the queued events in order, and ends when
// the queue is empty. After a failure it drops what is queued: nothing
// may follow a hole in the log.
func (p *logPipe) work() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) > 0 {
		q := p.queue[0]
		failed := p.err != nil
		p.mu.Unlock()
		var err error
		if !failed {
			if q.raw != nil {
				began := time.Now()
				lm, zeros, buf := q.raw.finish()
				q.ev.GetDeliver().Landmark = lm
				p.mu.Lock()
				p.finishTime += time.Since(began)
				p.zeroPages += uint64(zeros)
				if len(p.spare) < maxSpareBuffers && cap(buf) <= maxSpareBytes {
					p.spare = append(p.spare, buf[:0])
				}
				p.mu.Unlock()
			}
			err = p.sink.Append(q.ev)
		}
		p.mu.Lock()
		p.queue[0] = queuedEvent{}
		p.queue = p.queue[1:]
		p.queuedBytes -= q.bytes
		if !failed {
			p.done(q.ev, err)
		}
		p.cond.Broadcast()
	}
	p.queue = nil // let go of the backing array
}

// flush waits until every event given to the pipe is appended (or the
// pipe failed) and returns the pipe's error.
func (p *logPipe) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.queue) > 0 {
		p.cond.Wait()
	}
	return p.err
}

// waitAppended waits until event seq is appended; an error if it never
// will be.
func (p *logPipe) waitAppended(seq uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.appended < seq && p.err == nil {
		p.cond.Wait()
	}
	if p.appended < seq {
		return p.err
	}
	return nil
}

// buffer returns a page buffer to capture a landmark into: a spare one if
// the worker has one, else nil.
func (p *logPipe) buffer() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.spare)
	if n == 0 {
		return nil
	}
	buf := p.spare[n-1]
	p.spare[n-1] = nil
	p.spare = p.spare[:n-1]
	return buf
}

// failed returns the pipe's sticky error.
func (p *logPipe) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// size is the page bytes raw holds (0 for nil).
func (raw *rawLandmark) size() int {
	if raw == nil {
		return 0
	}
	return len(raw.buf)
}
