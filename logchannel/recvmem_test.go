package logchannel

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// readInto plays the frame reader: the frame's payload lands in a buffer
// from c.buffer and is decoded in place.
func readInto(t testing.TB, c *receiverCore, frame []byte) (header, []byte) {
	t.Helper()
	h, err := parseHeader(frame, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	buf := c.buffer(int(h.wireLen))
	if len(buf) != int(h.wireLen) {
		t.Fatalf("buffer(%d) returned %d bytes", h.wireLen, len(buf))
	}
	copy(buf, frame[headerLen:])
	raw, err := decodePayload(&h, buf, 64<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h, raw
}

// capsHeld sums, from the lists themselves, the capacity of every payload
// buffer the core holds and the number of frames they belong to.
func capsHeld(c *receiverCore) (caps, frames int) {
	for _, f := range c.queue[c.head:] {
		caps += cap(f.buf)
		frames++
	}
	for _, f := range c.retired {
		caps += cap(f.buf)
		frames++
	}
	for _, b := range c.free {
		caps += cap(b)
	}
	return caps, frames
}

// Random frame sizes, from one tiny entry to frames larger than the window,
// and a consumer that calls next and Consumed at random, keeping the
// entries it has not yet reported consumed: the core's counters match its
// lists, what it holds stays within the window (or one frame), a buffer
// handed out is never wider than the rule in buffer, and no buffer is
// reused while an entry in it may still be in the consumer's hands.
func TestReceiverCoreMemoryRandom(t *testing.T) {
	for trial := 0; trial < 20; trial++ {
		rng := rand.New(rand.NewPCG(uint64(trial), 11))
		cfg := coreConfig()
		cfg.WindowBytes = 4000
		cfg.WindowEntries = 200
		cfg.BatchBytes = 1000
		cfg.AckMode = AckMode(trial % 2)
		c := newReceiverCore(&cfg)
		var next uint64 = 1
		type held struct {
			seq   uint64
			entry []byte
		}
		var kept []held    // delivered, not yet consumed
		var pending []byte // in flight
		var ph header
		for step := 0; step < 3000; step++ {
			switch r := rng.IntN(10); {
			case r < 5: // the sender's next frame arrives
				if pending == nil {
					var entries [][]byte
					n := 1 + rng.IntN(8)
					size := rng.IntN(40)
					if rng.IntN(10) == 0 {
						n, size = 1, rng.IntN(6000) // a frame larger than the batch or the window
					}
					for i := 0; i < n; i++ {
						entries = append(entries, entry(next+uint64(i), size))
					}
					f := dataFrame(next, entries...)
					wasFree := map[*byte]bool{}
					for _, b := range c.free {
						wasFree[&b[:1][0]] = true
					}
					ph, pending = readInto(t, &c, f)
					wire := len(f) - headerLen
					recycled := wasFree[&pending[:1][0]]
					if limit := max(wire, cfg.BatchBytes); recycled && cap(pending) > 2*wire || !recycled && cap(pending) > limit {
						t.Fatalf("trial %d: buffer for %d bytes has capacity %d (recycled %v)", trial, wire, cap(pending), recycled)
					}
				}
				if !c.hasRoom(&ph, pending) {
					continue
				}
				if err := c.acceptData(&ph, pending); err != nil {
					t.Fatal(err)
				}
				next = ph.lastSeq() + 1
				pending = nil
			case r < 8: // the consumer takes an entry
				seq, e, ok := c.next()
				if !ok {
					continue
				}
				if err := checkEntry(seq, e, len(e)); err != nil {
					t.Fatalf("trial %d: %v", trial, err)
				}
				kept = append(kept, held{seq, e})
			default: // and reports some consumed
				if len(kept) == 0 {
					continue
				}
				k := rng.IntN(len(kept))
				for _, h := range kept[:k+1] {
					if err := checkEntry(h.seq, h.entry, len(h.entry)); err != nil {
						t.Fatalf("trial %d: entry overwritten before Consumed: %v", trial, err)
					}
				}
				if _, err := c.markConsumed(kept[k].seq); err != nil {
					t.Fatal(err)
				}
				kept = kept[k+1:]
			}
			caps, frames := capsHeld(&c)
			if got, want := c.heldBytes(), caps+frames*frameOverhead+cap(pending); got != want {
				t.Fatalf("trial %d step %d: counters say %d bytes, lists hold %d in %d frames and %d in flight", trial, step, got, caps, frames, cap(pending))
			}
			// The window plus one frame buffer, or an oversized frame and
			// the buffer in flight.
			inFlight, queued := cap(pending), len(c.queue)-c.head
			if limit := max(cfg.WindowBytes+max(cfg.BatchBytes, inFlight), c.bufBytes+inFlight); c.heldBytes() > limit {
				t.Fatalf("trial %d step %d: holds %d bytes, limit %d: %d queued frames (%d bytes), %d in flight, %d retired, %d free",
					trial, step, c.heldBytes(), limit, queued, c.bufBytes, inFlight, len(c.retired), len(c.free))
			}
			if c.bufBytes > cfg.WindowBytes && queued > 1 || len(c.retired) > maxRetired || len(c.free) > maxFree {
				t.Fatalf("trial %d step %d: %d queued frames cost %d bytes (window %d), %d retired, %d free", trial, step, queued, c.bufBytes, cfg.WindowBytes, len(c.retired), len(c.free))
			}
		}
	}
}

// Issue 11: an honest sender sending one small entry per frame to a
// consumer that does not keep up. Each frame's buffer used to be allocated
// at BatchBytes (256 KiB) while the window counted only the 101 bytes
// received, so 40,000 such frames held 10 GiB. The payload buffers the
// receiver holds must stay within the window plus one frame, and the heap
// must not grow by much more, whether the consumer is stalled, calls Next
// without Consumed, or consumes slowly.
func TestReceiverMemoryManySmallFrames(t *testing.T) {
	for _, consumer := range []string{"stalled", "next-only", "lagging"} {
		t.Run(consumer, func(t *testing.T) {
			cfg := testConfig()
			cfg.WindowBytes = 2 << 20 // BatchBytes and MaxEntryBytes keep their defaults, 256 KiB and 1 MiB
			const frames = 20000
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			p, r := fakeSenderTo(t, cfg)
			go func() {
				for i := uint64(1); i <= frames; i++ {
					if _, err := p.conn.Write(dataFrame(i, entry(i, 100))); err != nil {
						return
					}
				}
			}()
			var consumed uint64
			ctx := testCtx(t)
			consume := func(n int) {
				for i := 0; i < n && r.Received() > consumed; i++ {
					seq, e, err := r.Next(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if err := checkEntry(seq, e, 100); err != nil {
						t.Fatal(err)
					}
					if consumer == "lagging" {
						r.Consumed(seq)
					}
					consumed = seq
				}
			}
			limit := cfg.WindowBytes + cfg.withDefaults().BatchBytes // the window plus one frame in flight
			worst, lastChange, last := 0, time.Now(), uint64(0)
			for time.Since(lastChange) < 300*time.Millisecond && consumed < frames {
				switch consumer {
				case "next-only", "lagging":
					consume(50)
				}
				time.Sleep(2 * time.Millisecond)
				r.mu.Lock()
				caps, _ := capsHeld(&r.core)
				caps += cap(r.roomBuf) // the frame in flight, if the reader waits
				r.mu.Unlock()
				worst = max(worst, caps)
				if caps > limit {
					t.Fatalf("after %d frames received, %d consumed: the receiver holds %d bytes of buffers, window %d", r.Received(), consumed, caps, cfg.WindowBytes)
				}
				if g := r.Received(); g != last {
					last, lastChange = g, time.Now()
				}
			}
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			grew := int64(after.HeapInuse) - int64(before.HeapInuse)
			t.Logf("%s consumer: %d frames received, %d consumed; buffers held at most %d bytes; heap in use grew %d KiB, live heap %d KiB", consumer, r.Received(), consumed, worst, grew>>10, (int64(after.HeapAlloc)-int64(before.HeapAlloc))>>10)
			if consumer == "stalled" && r.Received() == frames {
				t.Fatalf("all %d frames (%d bytes of buffers each) buffered in a window of %d bytes", frames, cfg.withDefaults().BatchBytes, cfg.WindowBytes)
			}
			if grew > 8<<20 {
				t.Fatalf("heap in use grew by %d MiB", grew>>20)
			}
		})
	}
}

// The receiver still recycles batch-sized buffers when the consumer calls
// Consumed: a stream of full batches allocates no new buffer once warm.
func TestReceiverCoreRecyclesBatches(t *testing.T) {
	cfg := coreConfig()
	cfg.WindowBytes = 4000
	cfg.BatchBytes = 1000
	c := newReceiverCore(&cfg)
	seen := map[*byte]bool{}
	for i := uint64(1); i <= 100; i++ {
		h, raw := readInto(t, &c, dataFrame(i, bytes.Repeat([]byte{byte(i)}, 900+int(i%50))))
		if !c.hasRoom(&h, raw) {
			t.Fatal("no room in an empty buffer")
		}
		if cap(raw) != cfg.BatchBytes {
			t.Fatalf("frame of %d bytes in a buffer of capacity %d, want the batch size", len(raw), cap(raw))
		}
		seen[&raw[:1][0]] = true
		c.acceptData(&h, raw)
		seq, e, _ := c.next()
		if seq != i || e[0] != byte(i) {
			t.Fatalf("entry %d: %d %v", i, seq, e[:1])
		}
		c.markConsumed(seq)
	}
	if len(seen) > 2 {
		t.Fatalf("%d distinct buffers for 100 frames consumed one by one", len(seen))
	}
}
