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
	data     []byte     // a slice of chunk.buf; while open, its capacity runs to the chunk's end
	chunk    *sendChunk // the buffer data lives in
	crc      uint32     // CRC32C of data, kept up to date by append
	sealed   bool
	inFlight bool // the writer holds it; its chunk must not be reused
	released bool // acked while in flight: dropped when the writer is done
}

func (b *sendBatch) last() uint64 { return b.first + uint64(b.count) - 1 }

// sendChunk is a buffer that consecutive batches are carved from.
type sendChunk struct {
	buf  []byte
	refs int // live batches in buf, plus one while it is the current chunk
}

// Memory. Batches do not get a buffer each: they are carved one after the
// other out of chunks of chunkSize bytes (BatchBytes, or a quarter of the
// window if that is less), so that a frame of one small entry takes only
// its bytes, however soon the writer takes it. A batch also ends where
// its chunk does; an entry that does not fit what is left of the current
// chunk starts a new one (a chunk of its own size if it is larger). A
// chunk is charged at its capacity plus frameOverhead (the receiver's
// per-frame figure, ample for a sendChunk) from its allocation until its
// last batch is gone, and every live batch at frameOverhead for its
// sendBatch and its slot in batches: usedBytes is that sum. A batch is
// live until it is acked and, if the writer holds it then, until the
// writer is done with it (released counts those), so window space is
// freed only when memory is. Append admits an entry only while usedBytes
// stays within WindowBytes (fits), or into an empty window, so that an
// entry larger than the window cannot wedge the channel. Chunks whose
// batches are all gone are recycled (free, freeBytes, at most maxFree)
// while the total stays within limit() = WindowBytes + chunkSize: the
// window plus one frame buffer, which lets a sender whose window is full
// still recycle; a new chunk is allocated only after trim has made room.
// So heldBytes() <= max(limit(), usedBytes), with usedBytes over the
// window only for a single oversized entry, or by frameOverhead for each
// batch that resume split off until it is acked.

// senderCore is the sender's protocol state: sequence numbers, the window,
// the retained entries and the send cursor. It does no IO, starts no
// goroutine and reads no clock; Sender drives it under a mutex.
//
// Invariants: acked <= sent <= next-1; batches hold consecutive entries
// from at most acked+1 (a partly acked batch is kept whole) to next-1;
// batches[:cursor] are sent, batches[cursor:] are not; unackedEntries is
// the sum over batches; at most the last batch is open, and then it owns
// tail (its data start at the unused part of the current chunk); usedBytes
// and freeBytes are the costs above of the live chunks and batches and of
// free; heldBytes() <= max(limit(), usedBytes).
type senderCore struct {
	windowBytes   int
	windowEntries int
	batchBytes    int
	chunkSize     int

	next  uint64 // seq of the next appended entry
	acked uint64 // highest cumulative ack
	sent  uint64 // highest seq handed to the writer on this connection

	batches        []*sendBatch
	cursor         int
	unackedEntries int

	cur       *sendChunk   // the chunk new batches are carved from (nil: none yet)
	tail      []byte       // its unused part when no batch is open (the open batch owns it)
	released  int          // acked batches the writer still holds
	usedBytes int          // live chunks and batches, charged as above
	free      []*sendChunk // recycled chunks of capacity chunkSize
	freeBytes int          // their capacity
}

func newSenderCore(cfg *Config) senderCore {
	return senderCore{
		windowBytes:   cfg.WindowBytes,
		windowEntries: cfg.WindowEntries,
		batchBytes:    cfg.BatchBytes,
		chunkSize:     max(1, min(cfg.BatchBytes, cfg.WindowBytes/4)),
		next:          1,
	}
}

// lastAppended is the seq of the newest entry (0 if none).
func (c *senderCore) lastAppended() uint64 { return c.next - 1 }

// heldBytes is the memory the core holds: live chunks and batches, and
// recycled chunks.
func (c *senderCore) heldBytes() int { return c.usedBytes + c.freeBytes }

// limit is what the core may hold: the window and one frame buffer.
func (c *senderCore) limit() int { return c.windowBytes + c.chunkSize }

// open returns the batch that takes appends, or nil.
func (c *senderCore) open() *sendBatch {
	if n := len(c.batches); n > c.cursor && !c.batches[n-1].sealed {
		return c.batches[n-1]
	}
	return nil
}

// growth is what appending an entry of need encoded bytes adds to
// usedBytes: nothing if it goes into the open batch, a batch's overhead if
// a new batch fits in the current chunk, else that and a new chunk.
func (c *senderCore) growth(need int) int {
	room := cap(c.tail)
	if b := c.open(); b != nil {
		if n := len(b.data) + need; n <= c.batchBytes && n <= cap(b.data) {
			return 0
		}
		room = cap(b.data) - len(b.data)
	}
	if need <= room {
		return frameOverhead
	}
	return max(c.chunkSize, need) + 2*frameOverhead
}

// fits reports whether an entry of n bytes fits in the window now.
func (c *senderCore) fits(n int) bool {
	if c.unackedEntries >= c.windowEntries {
		return false
	}
	g := c.growth(encodedLen(n))
	return g == 0 || c.usedBytes+g <= c.windowBytes || len(c.batches)+c.released == 0
}

// append adds an entry (the caller checked fits) and returns its seq.
func (c *senderCore) append(entry []byte) uint64 {
	need := encodedLen(len(entry))
	b := c.open()
	if b != nil {
		if n := len(b.data) + need; n > c.batchBytes || n > cap(b.data) {
			c.seal(b)
			b = nil
		}
	}
	if b == nil {
		if need > cap(c.tail) {
			c.newChunk(need)
		}
		b = &sendBatch{first: c.next, data: c.tail[:0], chunk: c.cur}
		c.tail = nil
		c.cur.refs++
		c.usedBytes += frameOverhead
		c.batches = append(c.batches, b)
		c.trim()
	}
	start := len(b.data)
	b.data = appendEntry(b.data, entry) // within cap(b.data): never reallocates
	// The CRC is computed here, on the appending goroutine, while the
	// bytes are in cache, which leaves the writer only the system call.
	b.crc = crc32.Update(b.crc, castagnoli, b.data[start:])
	b.count++
	c.unackedEntries++
	seq := c.next
	c.next++
	return seq
}

// seal closes the open batch b to appends: its data is cut to its length
// and the rest of its chunk goes back to tail for the next batch.
func (c *senderCore) seal(b *sendBatch) {
	if b.sealed {
		return
	}
	b.sealed = true
	n := len(b.data)
	c.tail = b.data[n:]
	b.data = b.data[:n:n]
}

// newChunk replaces the current chunk (no batch is open) with one of at
// least need bytes: a recycled one if it will do, else a new one, for
// which room is made first.
func (c *senderCore) newChunk(need int) {
	if c.cur != nil {
		c.unref(c.cur) // what is left of it is lost until its batches are gone
	}
	if k := len(c.free) - 1; k >= 0 && need <= c.chunkSize {
		c.cur = c.free[k]
		c.free[k] = nil
		c.free = c.free[:k]
		c.freeBytes -= cap(c.cur.buf)
		c.usedBytes += cap(c.cur.buf) + frameOverhead
	} else {
		size := max(c.chunkSize, need)
		c.usedBytes += size + frameOverhead
		c.trim()
		c.cur = &sendChunk{buf: make([]byte, 0, size)}
	}
	c.cur.refs = 1
	c.tail = c.cur.buf
}

// unref drops a reference to ch, recycling or dropping it with the last.
func (c *senderCore) unref(ch *sendChunk) {
	if ch.refs--; ch.refs > 0 {
		return
	}
	c.usedBytes -= cap(ch.buf) + frameOverhead
	if cap(ch.buf) == c.chunkSize && len(c.free) < maxFree && c.heldBytes()+cap(ch.buf) <= c.limit() {
		c.free = append(c.free, ch)
		c.freeBytes += cap(ch.buf)
	} else {
		ch.buf = nil
	}
}

// drop lets go of a batch that is acked and that the writer does not hold.
func (c *senderCore) drop(b *sendBatch) {
	c.usedBytes -= frameOverhead
	c.unref(b.chunk)
	b.data, b.chunk = nil, nil
}

// trim drops recycled chunks until the core holds at most limit().
func (c *senderCore) trim() {
	for k := len(c.free) - 1; k >= 0 && c.heldBytes() > c.limit(); k-- {
		c.freeBytes -= cap(c.free[k].buf)
		c.free[k].buf = nil
		c.free[k] = nil
		c.free = c.free[:k]
	}
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
		c.seal(b)
		b.inFlight = true
		c.sent = b.last()
		c.cursor++
		n += len(b.data)
		dst = append(dst, b)
	}
	return dst
}

// written is called by the writer once it no longer touches bs. It
// reports whether that freed window space (batches acked meanwhile).
func (c *senderCore) written(bs []*sendBatch) bool {
	freed := false
	for _, b := range bs {
		b.inFlight = false
		if b.released {
			b.released = false
			c.released--
			c.drop(b)
			freed = true
		}
	}
	return freed
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
// freed a whole frame at a time, and for a batch the writer holds only
// once it is written.
func (c *senderCore) release() {
	seq := c.acked
	i := 0
	for ; i < len(c.batches) && c.batches[i].last() <= seq; i++ {
		b := c.batches[i]
		c.unackedEntries -= b.count
		if b.inFlight {
			b.released = true
			c.released++
		} else {
			c.drop(b)
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
	if b := c.open(); b != nil {
		c.seal(b) // new entries go to a new batch, whatever received says
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
		suffix := &sendBatch{first: received + 1, count: b.count - k, data: b.data[off:len(b.data):len(b.data)], chunk: b.chunk, sealed: true}
		suffix.crc = crc32c(suffix.data)
		b.chunk.refs++
		c.usedBytes += frameOverhead
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
	c.trim()
	return nil
}
