package logchannel

// recvFrame is a buffered data frame, consumed from the front.
type recvFrame struct {
	next      uint64 // seq of its next undelivered entry
	last      uint64 // seq of its last entry
	remaining int    // undelivered entries
	data      []byte // their encoding
	buf       []byte // the whole payload buffer, recycled after Consumed
}

// Delivered frames wait in retired until Consumed covers them, then their
// buffers are reused; a consumer that never calls Consumed just lets the
// garbage collector have them. retired is bounded by maxRetired frames and
// WindowBytes, so it never holds memory the caller has let go of for long.
const maxRetired = 64

// receiverCore is the receiver's protocol state: the buffer, sequence
// checks and the ack to send. No IO, no goroutines, no clock.
//
// Invariants: delivered <= received; the buffer holds exactly
// delivered+1 .. received; acked <= ackTarget().
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
	bufBytes   int
	bufEntries int

	batchBytes   int
	retired      []*recvFrame // delivered, not yet covered by Consumed
	retiredBytes int
	free         [][]byte // recycled payload buffers
	freeBytes    int      // their capacity, at most windowBytes
}

func newReceiverCore(cfg *Config) receiverCore {
	return receiverCore{
		mode:          cfg.AckMode,
		windowBytes:   cfg.WindowBytes,
		windowEntries: cfg.WindowEntries,
		batchBytes:    cfg.BatchBytes,
	}
}

// hasRoom reports whether a data frame with this header fits in the buffer.
// An empty buffer takes any frame, so a frame larger than the window cannot
// wedge the channel; memory stays below window + one frame.
func (c *receiverCore) hasRoom(h *header) bool {
	if c.bufEntries == 0 {
		return true
	}
	return c.bufBytes+int(h.rawLen) <= c.windowBytes && c.bufEntries+int(h.count) <= c.windowEntries
}

// acceptData buffers a checked data frame (its payload already verified by
// decodePayload). A frame that does not start at received+1 is an error:
// never skipped, never merged.
func (c *receiverCore) acceptData(h *header, raw []byte) error {
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
	c.bufBytes += len(raw)
	c.bufEntries += int(h.count)
	return nil
}

// next pops the oldest buffered entry.
func (c *receiverCore) next() (seq uint64, entry []byte, ok bool) {
	if c.head == len(c.queue) {
		return 0, nil, false
	}
	f := c.queue[c.head]
	before := len(f.data)
	entry, f.data = nextEntry(f.data)
	seq = f.next
	f.next++
	f.remaining--
	c.bufBytes -= before - len(f.data)
	c.bufEntries--
	if f.remaining == 0 {
		for len(c.retired) > 0 && (len(c.retired) == maxRetired || c.retiredBytes+cap(f.buf) > c.windowBytes) {
			c.retiredBytes -= cap(c.retired[0].buf)
			c.retired[0] = nil
			c.retired = c.retired[1:]
		}
		c.retired = append(c.retired, f)
		c.retiredBytes += cap(f.buf)
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
		c.retiredBytes -= cap(c.retired[i].buf)
		if b := c.retired[i].buf; c.freeBytes+cap(b) <= c.windowBytes && cap(b) >= c.batchBytes {
			c.free = append(c.free, b)
			c.freeBytes += cap(b)
		}
		c.retired[i] = nil
	}
	if i > 0 {
		n := copy(c.retired, c.retired[i:])
		clear(c.retired[n:])
		c.retired = c.retired[:n]
	}
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

// buffer returns a payload buffer of n bytes, recycled when one is free.
func (c *receiverCore) buffer(n int) []byte {
	for i := len(c.free) - 1; i >= 0; i-- {
		if b := c.free[i]; cap(b) >= n {
			c.freeBytes -= cap(b)
			c.free[i] = c.free[len(c.free)-1]
			c.free[len(c.free)-1] = nil
			c.free = c.free[:len(c.free)-1]
			return b[:n]
		}
	}
	return make([]byte, n, max(n, c.batchBytes))
}
