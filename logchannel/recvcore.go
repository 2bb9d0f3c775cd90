package logchannel

// recvFrame is a buffered data frame, consumed from the front.
type recvFrame struct {
	next      uint64 // seq of its next undelivered entry
	last      uint64 // seq of its last entry
	remaining int    // undelivered entries
	data      []byte // their encoding
	buf       []byte // the whole payload buffer, recycled after Consumed
}

// Memory. Every buffer the core holds is charged at its capacity, not at
// the length of what it carries, and every frame also at frameOverhead for
// its bookkeeping, so that no mix of frame sizes can make the receiver hold
// more than its window says. Four places hold buffers:
//
//   - queue: frames not yet entirely returned by next (bufBytes). A frame
//     is admitted while bufBytes stays within WindowBytes (hasRoom), or
//     alone into an empty queue, so that a frame larger than the window
//     cannot wedge the channel.
//   - retired: frames delivered but not yet covered by markConsumed
//     (retiredBytes). Their entries may still be in the consumer's hands;
//     once they are not, their buffers are recycled.
//   - free: recycled buffers that buffer hands out again (freeBytes).
//   - in flight: the buffer returned by buffer for the frame being read,
//     until acceptData takes it into the queue (inFlight).
//
// All together they hold at most limit() = WindowBytes + max(BatchBytes,
// inFlight), that is the window plus one frame buffer, or else only the
// queue and the buffer in flight, with bufBytes over the window only for a
// single oversized frame. The total grows only when buffer allocates; it
// changes bound when acceptData takes the buffer in flight and when next
// retires a frame; each of the three trims: it drops free buffers, then the
// oldest retired frames, until the total is within limit(). (A consumer
// that still holds the entries of a dropped frame keeps that memory alive
// itself; one that never calls Consumed just lets the garbage collector
// have them.) The buffer of slack is what lets a receiver whose window is
// full still recycle.
const (
	// frameOverhead is what a buffered frame costs beyond its payload
	// buffer's capacity: its recvFrame (80 bytes), its slots in queue and
	// retired, and the allocator's rounding of a small buffer.
	frameOverhead = 128
	// maxRetired and maxFree bound the lists by count as well as by bytes.
	maxRetired = 64
	maxFree    = 64
)

// receiverCore is the receiver's protocol state: the buffer, sequence
// checks and the ack to send. No IO, no goroutines, no clock.
//
// Invariants: delivered <= received; the buffer holds exactly
// delivered+1 .. received; acked <= ackTarget(); bufBytes, retiredBytes
// and freeBytes are the costs (frameCost, cap) of queue[head:], retired
// and free; heldBytes() <= max(limit(), bufBytes+inFlight).
type receiverCore struct {
	mode          AckMode
	windowBytes   int
	windowEntries int

	received  uint64 // last buffered seq
	delivered uint64 // last seq returned by next
	consumed  uint64 // AckConsumed: highest seq reported consumed
	acked     uint64 // last ack put on the wire (or in a welcome)
	ended     bool   // the sender closed the stream in order

	queue      []*recvFrame
	head       int
	bufBytes   int // cost of the frames in queue[head:], whole until fully delivered
	bufEntries int // entries not yet delivered

	batchBytes   int
	retired      []*recvFrame // delivered, not yet covered by Consumed
	retiredBytes int
	free         [][]byte // recycled payload buffers
	freeBytes    int      // their capacity
	inFlight     int      // capacity of the buffer last returned by buffer, until acceptData
}

func newReceiverCore(cfg *Config) receiverCore {
	return receiverCore{
		mode:          cfg.AckMode,
		windowBytes:   cfg.WindowBytes,
		windowEntries: cfg.WindowEntries,
		batchBytes:    cfg.BatchBytes,
	}
}

// frameCost is what a frame received into buf is charged.
func frameCost(buf []byte) int { return cap(buf) + frameOverhead }

// hasRoom reports whether a data frame with this header, read into buf
// (from buffer), fits in the window. An empty buffer takes any frame, so
// a frame larger than the window cannot wedge the channel.
func (c *receiverCore) hasRoom(h *header, buf []byte) bool {
	if c.bufEntries == 0 {
		return true
	}
	return c.bufBytes+frameCost(buf) <= c.windowBytes && c.bufEntries+int(h.count) <= c.windowEntries
}

// heldBytes is the memory the core holds: the queued, retired, free and
// in-flight buffers, with the frames' overheads.
func (c *receiverCore) heldBytes() int {
	return c.bufBytes + c.retiredBytes + c.freeBytes + c.inFlight
}

// limit is what the core may hold: the window and one frame buffer.
func (c *receiverCore) limit() int { return c.windowBytes + max(c.batchBytes, c.inFlight) }

// trim drops free buffers, then the oldest retired frames, until the core
// holds at most limit() or only the queue and the buffer in flight are left.
func (c *receiverCore) trim() {
	limit := c.limit()
	for len(c.free) > 0 && c.heldBytes() > limit {
		n := len(c.free) - 1
		c.freeBytes -= cap(c.free[n])
		c.free[n] = nil
		c.free = c.free[:n]
	}
	i := 0
	for ; i < len(c.retired) && c.heldBytes() > limit; i++ {
		c.retiredBytes -= frameCost(c.retired[i].buf)
		c.retired[i] = nil
	}
	c.dropRetired(i)
}

// dropRetired removes the first i retired frames (already uncounted).
func (c *receiverCore) dropRetired(i int) {
	if i > 0 {
		n := copy(c.retired, c.retired[i:])
		clear(c.retired[n:])
		c.retired = c.retired[:n]
	}
}

// acceptData buffers a checked data frame (its payload already verified by
// decodePayload). A frame that does not start at received+1 is an error:
// never skipped, never merged.
func (c *receiverCore) acceptData(h *header, raw []byte) error {
	c.inFlight = 0 // raw joins the queue, or is dropped with the connection
	if c.ended {
		return errorf(ErrProtocol, "data frame seq %d after the sender's close", h.seq)
	}
	if h.seq != c.received+1 {
		kind := "gap"
		if h.seq <= c.received {
			kind = "overlap"
		}
		return errorf(ErrSequence, "data frame starts at %d, expected %d (%s)", h.seq, c.received+1, kind)
	}
	c.queue = append(c.queue, &recvFrame{next: h.seq, last: h.lastSeq(), remaining: int(h.count), data: raw, buf: raw})
	c.received = h.lastSeq()
	c.bufBytes += frameCost(raw)
	c.bufEntries += int(h.count)
	c.trim()
	return nil
}

// next pops the oldest buffered entry.
func (c *receiverCore) next() (seq uint64, entry []byte, ok bool) {
	if c.head == len(c.queue) {
		return 0, nil, false
	}
	f := c.queue[c.head]
	entry, f.data = nextEntry(f.data)
	seq = f.next
	f.next++
	f.remaining--
	c.bufEntries--
	if f.remaining == 0 {
		cost := frameCost(f.buf)
		c.bufBytes -= cost
		if len(c.retired) == maxRetired {
			c.retiredBytes -= frameCost(c.retired[0].buf)
			c.retired[0] = nil
			c.dropRetired(1)
		}
		c.retired = append(c.retired, f)
		c.retiredBytes += cost
		c.trim() // an oversized frame no longer counts as the queue
		c.queue[c.head] = nil
		c.head++
		if c.head == len(c.queue) {
			c.queue, c.head = c.queue[:0], 0
		} else if c.head > 64 && c.head*2 > len(c.queue) {
			n := copy(c.queue, c.queue[c.head:])
			clear(c.queue[n:])
			c.queue, c.head = c.queue[:n], 0
		}
	}
	c.delivered = seq
	return seq, entry, true
}

// markConsumed records, in AckConsumed mode, that entries up to seq were
// consumed. Reports whether the ack target moved.
func (c *receiverCore) markConsumed(seq uint64) (bool, error) {
	if seq > c.delivered {
		return false, errorf(ErrSequence, "Consumed(%d) beyond the last entry delivered, %d", seq, c.delivered)
	}
	if seq <= c.consumed {
		return false, nil
	}
	c.consumed = seq
	i := 0
	for ; i < len(c.retired) && c.retired[i].last <= seq; i++ {
		b := c.retired[i].buf
		c.retiredBytes -= frameCost(b)
		if cap(b) >= c.batchBytes/2 && len(c.free) < maxFree {
			c.free = append(c.free, b)
			c.freeBytes += cap(b)
		}
		c.retired[i] = nil
	}
	c.dropRetired(i)
	return c.mode == AckConsumed, nil
}

// ackTarget is the cumulative ack the receiver owes.
func (c *receiverCore) ackTarget() uint64 {
	if c.mode == AckConsumed {
		return c.consumed
	}
	return c.received
}

// ackDue returns the ack to send, if one is owed, and marks it sent.
func (c *receiverCore) ackDue() (uint64, bool) {
	if t := c.ackTarget(); t > c.acked {
		c.acked = t
		return t, true
	}
	return 0, false
}

// closeStream handles the sender's close frame: it must come after the
// last entry the receiver has.
func (c *receiverCore) closeStream(last uint64) error {
	if last != c.received {
		return errorf(ErrSequence, "sender closed after seq %d but the receiver has %d", last, c.received)
	}
	c.ended = true
	return nil
}

// buffer returns a payload buffer of n bytes for the frame being read:
// a free one of capacity n to 2n, else a new one of capacity n, or of
// BatchBytes for a frame of at least half a batch so that it can be
// recycled for any later batch. The frame is charged at that capacity.
// A new buffer is the only way the memory held grows: room is made first.
func (c *receiverCore) buffer(n int) []byte {
	best := -1
	for i := len(c.free) - 1; i >= 0; i-- {
		if k := cap(c.free[i]); k >= n && k <= 2*n && (best < 0 || k < cap(c.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := c.free[best]
		c.freeBytes -= cap(b)
		last := len(c.free) - 1
		c.free[best] = c.free[last]
		c.free[last] = nil
		c.free = c.free[:last]
		c.inFlight = cap(b)
		c.trim()
		return b[:n]
	}
	k := n
	if n >= c.batchBytes/2 {
		k = max(n, c.batchBytes)
	}
	c.inFlight = k
	c.trim()
	return make([]byte, n, k)
}
