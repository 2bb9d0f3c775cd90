package logchannel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// senderHeld sums, from the lists, the capacity of the chunks that the
// retained batches and the current chunk are in and of the free chunks.
// (Batches acked while the writer holds them are not in the lists.)
func senderHeld(c *senderCore) int {
	chunks := map[*sendChunk]bool{}
	if c.cur != nil {
		chunks[c.cur] = true
	}
	for _, b := range c.batches {
		chunks[b.chunk] = true
	}
	n := 0
	for ch := range chunks {
		n += cap(ch.buf)
	}
	for _, ch := range c.free {
		n += cap(ch.buf)
	}
	return n
}

// checkSenderMemory recomputes from the lists what the core charges, given
// the batches the writer holds (writing): every live chunk (the current
// one, those of the retained batches and of the acked batches still being
// written) at its capacity plus frameOverhead, every live batch at
// frameOverhead; and the free chunks at their capacity. It checks the
// counters and chunk references against that, and the bounds: the core
// holds at most the window plus one chunk, and the live chunks and batches
// stay within the window but for one batch alone (an entry larger than the
// window) and the overhead of the batches that resume split off (split).
func checkSenderMemory(c *senderCore, writing []*sendBatch, split map[*sendBatch]bool) error {
	refs := map[*sendChunk]int{}
	if c.cur != nil {
		refs[c.cur]++
	}
	live, released, splitLive := 0, 0, 0
	count := func(b *sendBatch) {
		refs[b.chunk]++
		live++
		if split[b] {
			splitLive++
		}
	}
	for _, b := range c.batches {
		count(b)
	}
	for _, b := range writing {
		if b.released {
			count(b)
			released++
		}
	}
	used := live * frameOverhead
	for ch, n := range refs {
		if cap(ch.buf) == 0 {
			return fmt.Errorf("a batch is in a chunk that was let go")
		}
		if ch.refs != n {
			return fmt.Errorf("chunk of %d bytes has %d references, counted %d", cap(ch.buf), ch.refs, n)
		}
		used += cap(ch.buf) + frameOverhead
	}
	free := 0
	for _, f := range c.free {
		if cap(f.buf) != c.chunkSize || f.refs != 0 {
			return fmt.Errorf("free chunk of %d bytes with %d references, chunk size %d", cap(f.buf), f.refs, c.chunkSize)
		}
		for ch := range refs {
			if f == ch || &f.buf[:1][0] == &ch.buf[:1][0] {
				return fmt.Errorf("a free chunk is still in use")
			}
		}
		free += cap(f.buf)
	}
	switch {
	case used != c.usedBytes || free != c.freeBytes || released != c.released:
		return fmt.Errorf("counters say %d used, %d free, %d released; lists hold %d, %d, %d", c.usedBytes, c.freeBytes, c.released, used, free, released)
	case len(c.free) > maxFree:
		return fmt.Errorf("%d free chunks", len(c.free))
	case c.heldBytes() > max(c.limit(), c.usedBytes):
		return fmt.Errorf("holds %d bytes (%d used, %d free), limit %d", c.heldBytes(), c.usedBytes, c.freeBytes, c.limit())
	case live > 1 && c.usedBytes > c.windowBytes+splitLive*frameOverhead:
		return fmt.Errorf("%d live batches (%d split by resume) use %d bytes, window %d", live, splitLive, c.usedBytes, c.windowBytes)
	}
	return nil
}

// checkBatch checks that b still holds the entries the model says.
func checkBatch(b *sendBatch, log [][]byte) error {
	if crc32c(b.data) != b.crc {
		return fmt.Errorf("batch at %d: CRC differs", b.first)
	}
	d := b.data
	for i := 0; i < b.count; i++ {
		var e []byte
		e, d = nextEntry(d)
		if !bytes.Equal(e, log[b.first-1+uint64(i)]) {
			return fmt.Errorf("entry %d overwritten", b.first+uint64(i))
		}
	}
	if len(d) != 0 {
		return fmt.Errorf("batch at %d: %d bytes after its entries", b.first, len(d))
	}
	return nil
}

// Random entry sizes, from empty to larger than a chunk or the window, and
// random takes, writes (acks may come while the writer holds batches),
// acks and resumes: the core's counters match its lists, what it holds
// stays within the window plus one chunk, the live memory within the
// window, and no chunk is reused while a batch in it is retained or being
// written.
func TestSenderCoreMemoryRandom(t *testing.T) {
	for trial := 0; trial < 40; trial++ {
		rng := rand.New(rand.NewPCG(uint64(trial), 12))
		cfg := coreConfig()
		cfg.WindowBytes = 4000 + rng.IntN(4000)
		cfg.WindowEntries = 100 + rng.IntN(200)
		// A chunk is sometimes a quarter of the window rather than a
		// batch, and the largest entry up to one that fills the window.
		cfg.BatchBytes = 100 + rng.IntN(1500)
		cfg.MaxEntryBytes = cfg.WindowBytes - 5 - rng.IntN(cfg.WindowBytes/2)
		c := newSenderCore(&cfg)
		var log [][]byte
		var writing []*sendBatch
		split := map[*sendBatch]bool{}
		fail := func(step int, format string, args ...any) {
			t.Helper()
			t.Fatalf("trial %d step %d (window %d, batch %d, chunk %d): %s\n%s", trial, step, cfg.WindowBytes, cfg.BatchBytes, c.chunkSize, fmt.Sprintf(format, args...), dump(&c))
		}
		write := func(step int) {
			for _, b := range writing {
				if err := checkBatch(b, log); err != nil {
					fail(step, "written: %v", err)
				}
			}
			released := 0
			for _, b := range writing {
				if b.released {
					released++
				}
			}
			if freed := c.written(writing); freed != (released > 0) {
				fail(step, "written freed %v with %d batches released", freed, released)
			}
			writing = nil
		}
		for step := 0; step < 2000; step++ {
			switch r := rng.IntN(12); {
			case r < 5: // Append
				n := rng.IntN(40)
				switch rng.IntN(16) {
				case 0:
					n = rng.IntN(cfg.MaxEntryBytes + 1)
				case 1:
					n = cfg.MaxEntryBytes - rng.IntN(50)
				case 2, 3:
					n = rng.IntN(c.chunkSize + 1)
				}
				if !c.fits(n) {
					g := c.growth(encodedLen(n))
					if c.unackedEntries < c.windowEntries && (g == 0 || c.usedBytes+g <= cfg.WindowBytes || len(c.batches)+c.released == 0) {
						fail(step, "an entry of %d bytes does not fit with %d used", n, c.usedBytes)
					}
					continue
				}
				e := make([]byte, n)
				for i := range e {
					e[i] = byte(rng.Uint32())
				}
				before, g := c.usedBytes, c.growth(encodedLen(n))
				c.append(e)
				log = append(log, e)
				if c.usedBytes > before+g {
					fail(step, "append of %d bytes grew use from %d to %d, growth said %d", n, before, c.usedBytes, g)
				}
			case r < 7: // the writer takes
				if writing == nil {
					writing = c.take(nil, 1+rng.IntN(4), 1+rng.IntN(2000))
				}
			case r < 9: // and is done
				write(step)
			case r < 11: // an ack, perhaps during a write
				if c.sent > c.acked {
					if _, err := c.ack(c.acked + 1 + uint64(rng.IntN(int(c.sent-c.acked)))); err != nil {
						fail(step, "%v", err)
					}
				}
			default: // reconnect: the old writer is done first
				write(step)
				// A receiver may claim what was never sent; it cannot
				// claim less than was acked.
				received := c.acked + uint64(rng.IntN(int(c.lastAppended()-c.acked)+1))
				had := map[*sendBatch]bool{}
				for _, b := range c.batches {
					had[b] = true
				}
				if err := c.resume(received, c.acked+uint64(rng.IntN(int(received-c.acked)+1))); err != nil {
					fail(step, "%v", err)
				}
				for _, b := range c.batches {
					if !had[b] {
						split[b] = true
					}
				}
			}
			if err := checkSenderMemory(&c, writing, split); err != nil {
				fail(step, "%v", err)
			}
			retained(&c) // the retained entries are intact
		}
		// Everything sent and acked: only the current chunk and free
		// chunks are left, and any entry fits.
		for {
			write(-1)
			writing = c.take(nil, 64, 1<<30)
			if len(writing) == 0 {
				break
			}
		}
		if c.sent > c.acked {
			c.ack(c.sent)
		}
		if err := checkSenderMemory(&c, nil, split); err != nil {
			fail(-1, "%v", err)
		}
		if len(c.batches) != 0 || c.released != 0 || c.usedBytes > cap(c.cur.buf)+frameOverhead || !c.fits(cfg.MaxEntryBytes) {
			fail(-1, "all acked, yet %d batches, %d released, %d bytes used", len(c.batches), c.released, c.usedBytes)
		}
	}
}

// The sender's counterpart of issue 11: every batch had a buffer of
// BatchBytes (256 KiB) while the window counted only the bytes used, so
// entries of 100 bytes sent one per frame to a receiver that acks late
// held 256 KiB each (4,000 such entries to an AckConsumed receiver: 1 GiB).
// Whether nothing is acked (Append must then block on a full window), acks
// come late, or the receiver acks on Consumed and its consumer lags, the
// sender's buffers must stay within the window plus one frame, and the heap
// must not grow by much more.
func TestSenderMemoryManySmallEntries(t *testing.T) {
	for _, acks := range []string{"none", "late", "consumed"} {
		t.Run(acks, func(t *testing.T) {
			cfg := testConfig()
			cfg.WindowBytes = 2 << 20 // BatchBytes and MaxEntryBytes keep their defaults, 256 KiB and 1 MiB
			const entries = 20000
			ctx := testCtx(t)
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			// gotFrame reports the last seq of each data frame, once
			// the receiver has it.
			var s *Sender
			gotFrame := make(chan uint64, entries)
			if acks == "consumed" {
				a, b := NewPipe(1 << 20)
				rcfg := cfg
				rcfg.AckMode = AckConsumed
				var r *Receiver
				s, r = mustConnect(t, a, b, cfg, rcfg)
				go func() {
					// The consumer takes every entry at once, with frames
					// of one entry each, and reports them consumed a
					// thousand at a time.
					var last uint64
					for {
						seq, e, err := r.Next(context.Background())
						if err != nil {
							return
						}
						if err := checkEntry(seq, e, 100); err != nil {
							t.Error(err)
							return
						}
						if got := r.Received(); got != seq {
							t.Errorf("entry %d: the receiver has %d: more than one entry per frame", seq, got)
						}
						gotFrame <- seq
						if seq-last >= 1000 {
							r.Consumed(seq)
							last = seq
						}
					}
				}()
			} else {
				a, b := NewPipe(1 << 20)
				p := newFakePeer(t, b)
				go p.handshakeAsReceiver()
				var err error
				if s, err = NewSender(ctx, a, cfg); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close(); b.Close() })
				type read struct {
					seq uint64
					at  time.Time
				}
				late := make(chan read, entries)
				go func() {
					defer close(late)
					for {
						h, payload, err := p.fr.read()
						if err != nil {
							return
						}
						if h.typ != frameData {
							continue
						}
						if h.count != 1 {
							t.Errorf("frame at %d holds %d entries, want one", h.seq, h.count)
						}
						e, _ := nextEntry(payload)
						if err := checkEntry(h.seq, e, 100); err != nil {
							t.Error(err)
						}
						gotFrame <- h.lastSeq()
						if acks == "late" {
							late <- read{h.lastSeq(), time.Now()}
						}
					}
				}()
				go func() { // acks each frame 20 ms after it arrived
					for r := range late {
						time.Sleep(time.Until(r.at.Add(20 * time.Millisecond)))
						if _, err := b.Write(appendFrame(nil, frameAck, r.seq, 0, nil)); err != nil {
							return
						}
					}
				}()
			}

			limit := cfg.WindowBytes + cfg.withDefaults().BatchBytes
			worst, appended := 0, 0
			check := func() {
				s.mu.Lock()
				held, listed := s.core.heldBytes(), senderHeld(&s.core)
				s.mu.Unlock()
				worst = max(worst, held, listed)
				if held > limit || listed > limit {
					t.Fatalf("after %d entries appended, %d acked: the sender holds %d bytes (its lists %d), window %d", appended, s.Acked(), held, listed, cfg.WindowBytes)
				}
			}
			for i := uint64(1); i <= entries; i++ {
				actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				_, err := s.Append(actx, entry(i, 100))
				cancel()
				if errors.Is(err, context.DeadlineExceeded) && acks == "none" {
					break
				}
				if err != nil {
					t.Fatalf("Append %d: %v", i, err)
				}
				appended++
				// One entry per frame: the next is appended once the
				// receiver has this one.
				select {
				case <-gotFrame:
				case <-ctx.Done():
					t.Fatalf("entry %d never arrived", i)
				}
				if i%16 == 0 {
					check()
				}
			}
			check()
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			grew := int64(after.HeapInuse) - int64(before.HeapInuse)
			t.Logf("acks %s: %d entries appended, %d acked; buffers held at most %d bytes; heap in use grew %d KiB, live heap %d KiB",
				acks, appended, s.Acked(), worst, grew>>10, (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10)
			if acks == "none" {
				// The window must fill, but not long before its bytes
				// are used: each entry costs its 101 bytes and a batch.
				if least := (cfg.WindowBytes - cfg.withDefaults().BatchBytes) / (encodedLen(100) + 2*frameOverhead); appended == entries || appended < least {
					t.Fatalf("%d entries of 100 bytes appended in a window of %d bytes, want %d to %d", appended, cfg.WindowBytes, least, entries-1)
				}
			}
			if grew > 8<<20 {
				t.Fatalf("heap in use grew by %d MiB", grew>>20)
			}
		})
	}
}

// A frame acked while the writer still holds it keeps its memory until the
// write ends: window space must not be handed to Append before then, and
// Append must be woken when it is, even if no ack follows.
func TestSenderWindowFreedAfterWrite(t *testing.T) {
	cfg := testConfig()
	cfg.WindowBytes = 256 << 10
	cfg.BatchBytes = 64 << 10
	cfg.MaxEntryBytes = 64 << 10
	a, b := NewPipe(16 << 10) // a frame's write blocks until the receiver reads it
	p := newFakePeer(t, b)
	go p.handshakeAsReceiver()
	ctx := testCtx(t)
	s, err := NewSender(ctx, a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(); s.Close() }) // the receiver first: the writer may be blocked
	// Entries of 60 KiB take a 64 KiB chunk each: three fill the window.
	for i := uint64(1); i <= 3; i++ {
		if _, err := s.Append(ctx, entry(i, 60<<10)); err != nil {
			t.Fatal(err)
		}
	}
	appended := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, entry(4, 60<<10))
		appended <- err
	}()
	// The receiver reads the first frame's header only, and acks it: the
	// writer is still writing that frame.
	var hdr [headerLen]byte
	if _, err := io.ReadFull(b, hdr[:]); err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(hdr[:], 1<<20)
	if err != nil || h.typ != frameData || h.seq != 1 {
		t.Fatalf("first frame %+v, %v", h, err)
	}
	p.write(appendFrame(nil, frameAck, h.lastSeq(), 0, nil))
	for s.Acked() < h.lastSeq() {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-appended:
		t.Fatalf("Append took the space of a frame still being written (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	s.mu.Lock()
	held, limit := s.core.heldBytes(), s.core.limit()
	s.mu.Unlock()
	if held > limit {
		t.Fatalf("the sender holds %d bytes, limit %d", held, limit)
	}
	// The receiver reads on, and sends nothing more: the end of the
	// write alone must release Append.
	go io.Copy(io.Discard, b)
	select {
	case err := <-appended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append not woken when the acked frame's write ended")
	}
}
