package logchannel

import (
	"fmt"
	"hash/crc32"
)

// sendBatch is a run of consecutive entries in payload encoding; it becomes
// one data frame. The open batch (the last one, not yet sealed) still takes
// appends.
type sendBatch struct {
	first    uint64
	count    int
	data     []byte
	crc      uint32 // CRC32C of data, kept up to date by append
	sealed   bool
	inFlight bool // the writer holds it; do not recycle its buffer
	released bool // acked while in flight: recycle when the writer is done
}

func (b *sendBatch) last() uint64 { return b.first + uint64(b.count) - 1 }

// senderCore is the sender's protocol state: sequence numbers, the window,
// the retained entries and the send cursor. It does no IO, starts no
// goroutine and reads no clock; Sender drives it under a mutex.
//
// Invariants: acked <= sent <= next-1; batches hold consecutive entries
// from at most acked+1 (a partly acked batch is kept whole) to next-1;
// batches[:cursor] are sent, batches[cursor:] are not; unackedBytes and
// unackedEntries are the sums over batches.
type senderCore struct {
	windowBytes   int
	windowEntries int
	batchBytes    int

	next  uint64 // seq of the next appended entry
	acked uint64 // highest cumulative ack
	sent  uint64 // highest seq handed to the writer on this connection

	batches        []*sendBatch
	cursor         int
	unackedBytes   int
	unackedEntries int

	free [][]byte // recycled batch buffers of cap batchBytes
}

func newSenderCore(cfg *Config) senderCore {
	return senderCore{
		windowBytes:   cfg.WindowBytes,
		windowEntries: cfg.WindowEntries,
		batchBytes:    cfg.BatchBytes,
		next:          1,
	}
}

// lastAppended is the seq of the newest entry (0 if none).
func (c *senderCore) lastAppended() uint64 { return c.next - 1 }

// fits reports whether an entry of n bytes fits in the window now.
func (c *senderCore) fits(n int) bool {
	return c.unackedBytes+encodedLen(n) <= c.windowBytes && c.unackedEntries < c.windowEntries
}

// append adds an entry (the caller checked fits) and returns its seq.
func (c *senderCore) append(entry []byte) uint64 {
	need := encodedLen(len(entry))
	var b *sendBatch
	if n := len(c.batches); n > c.cursor && !c.batches[n-1].sealed {
		b = c.batches[n-1]
		if len(b.data)+need > c.batchBytes {
			b.sealed = true
			b = nil
		}
	}
	if b == nil {
		b = &sendBatch{first: c.next, data: c.buffer(need)}
		c.batches = append(c.batches, b)
	}
	start := len(b.data)
	b.data = appendEntry(b.data, entry)
	// The CRC is computed here, on the appending goroutine, while the
	// bytes are in cache, which leaves the writer only the system call.
	b.crc = crc32.Update(b.crc, castagnoli, b.data[start:])
	b.count++
	c.unackedBytes += need
	c.unackedEntries++
	seq := c.next
	c.next++
	return seq
}

// buffer returns an empty buffer for a new batch whose first entry needs
// need bytes.
func (c *senderCore) buffer(need int) []byte {
	if need > c.batchBytes {
		return make([]byte, 0, need)
	}
	if n := len(c.free); n > 0 {
		buf := c.free[n-1]
		c.free = c.free[:n-1]
		return buf
	}
	return make([]byte, 0, c.batchBytes)
}

func (c *senderCore) recycle(b *sendBatch) {
	// Keep enough buffers for a full window; let the rest go.
	if cap(b.data) == c.batchBytes && len(c.free)*c.batchBytes < c.windowBytes+c.batchBytes {
		c.free = append(c.free, b.data[:0])
	}
	b.data = nil
}

// unsent reports whether there is something for the writer.
func (c *senderCore) unsent() bool { return c.cursor < len(c.batches) }

// oldestUnsent returns the first unsent batch, or nil.
func (c *senderCore) oldestUnsent() *sendBatch {
	if c.cursor < len(c.batches) {
		return c.batches[c.cursor]
	}
	return nil
}

// take seals and hands the writer up to max unsent batches, stopping once
// maxBytes are taken (at least one batch is), appends them to dst, and
// advances sent. Bounding a write keeps the pipeline fine-grained: acks
// that free the window while a write is under way let Append refill it.
func (c *senderCore) take(dst []*sendBatch, max, maxBytes int) []*sendBatch {
	for n := 0; c.cursor < len(c.batches) && max > 0 && n < maxBytes; max-- {
		b := c.batches[c.cursor]
		b.sealed = true
		b.inFlight = true
		c.sent = b.last()
		c.cursor++
		n += len(b.data)
		dst = append(dst, b)
	}
	return dst
}

// written is called by the writer once it no longer touches bs.
func (c *senderCore) written(bs []*sendBatch) {
	for _, b := range bs {
		b.inFlight = false
		if b.released {
			c.recycle(b)
		}
	}
}

// ack applies a cumulative ack. It reports whether acked advanced.
func (c *senderCore) ack(seq uint64) (bool, error) {
	if seq > c.sent {
		return false, errorf(ErrSequence, "ack %d beyond last sent %d", seq, c.sent)
	}
	if seq < c.acked {
		return false, errorf(ErrSequence, "ack went back from %d to %d", c.acked, seq)
	}
	if seq == c.acked {
		return false, nil
	}
	c.acked = seq
	c.release()
	return true, nil
}

// release drops the batches that acked covers entirely: window space is
// freed a whole frame at a time.
func (c *senderCore) release() {
	seq := c.acked
	i := 0
	for ; i < len(c.batches) && c.batches[i].last() <= seq; i++ {
		b := c.batches[i]
		c.unackedBytes -= len(b.data)
		c.unackedEntries -= b.count
		if b.inFlight {
			b.released = true
		} else {
			c.recycle(b)
		}
		c.batches[i] = nil
	}
	c.batches = c.batches[i:]
	c.cursor -= i
	if c.cursor < 0 { // cannot happen: acks never pass sent
		panic(fmt.Sprintf("logchannel: cursor %d after ack %d", c.cursor, seq))
	}
}

// resume rewinds for a new connection whose receiver holds entries up to
// received and acked up to acked (checked by checkWelcome): entries up to
// received are not sent again, the rest are. The writer must be stopped.
func (c *senderCore) resume(received, acked uint64) error {
	if received > c.lastAppended() || received < c.acked || acked > received {
		return errorf(ErrHandshake, "cannot resume at %d (acked %d, appended %d)", received+1, c.acked, c.lastAppended())
	}
	for _, b := range c.batches {
		b.inFlight = false // the old writer has stopped
	}
	// Find the first batch with entries beyond received, splitting one that
	// straddles it so the cursor starts exactly at received+1.
	i := 0
	for ; i < len(c.batches) && c.batches[i].last() <= received; i++ {
	}
	if i < len(c.batches) && c.batches[i].first <= received {
		b := c.batches[i]
		k := int(received - b.first + 1) // entries in the prefix
		off := 0
		for j := 0; j < k; j++ {
			_, rest := nextEntry(b.data[off:])
			off = len(b.data) - len(rest)
		}
		suffix := &sendBatch{first: received + 1, count: b.count - k, data: b.data[off:len(b.data):len(b.data)], sealed: b.sealed}
		suffix.crc = crc32c(suffix.data)
		b.data = b.data[:off:off]
		b.crc = crc32c(b.data)
		b.count = k
		b.sealed = true
		c.batches = append(c.batches, nil)
		copy(c.batches[i+2:], c.batches[i+1:])
		c.batches[i+1] = suffix
		i++
	}
	c.cursor = i
	c.sent = received
	c.acked = max(c.acked, acked)
	c.release() // the split may have left a prefix that is all acked
	return nil
}
