package blk

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestOverlappingRequestsWaitInGuestOrder(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	w1 := g.write(0, pattern(4*512, 1)) // tag 1: sectors 0-3
	w2 := g.write(2, pattern(4*512, 2)) // tag 2: sectors 2-5, overlaps 1
	r3 := g.read(0, 8*512)              // tag 3: sectors 0-7, overlaps 1 and 2
	w4 := g.write(100, pattern(512, 4)) // tag 4: alone
	r5 := g.read(100, 512)              // tag 5: overlaps 4
	r6 := g.read(200, 512)              // tag 6: alone
	r7 := g.read(200, 512)              // tag 7: reads never conflict
	g.notify()
	if got, want := inflightTags(g.dev), []uint64{1, 4, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("in flight %v, want %v", got, want)
	}
	g.complete(disk, 4)
	if got, want := inflightTags(g.dev), []uint64{1, 5, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("after 4: in flight %v, want %v", got, want)
	}
	g.complete(disk, 1)
	if got, want := inflightTags(g.dev), []uint64{2, 5, 6, 7}; !slices.Equal(got, want) {
		t.Fatalf("after 1: in flight %v, want %v (3 still waits for 2)", got, want)
	}
	g.complete(disk, 2)
	g.drain(disk)
	for _, r := range []*req{w1, w2, r3, w4, r5, r6, r7} {
		if st := g.status(r); st != StatusOK {
			t.Fatalf("head %d: status %d", r.Head, st)
		}
	}
	want := append(append(pattern(4*512, 1)[:2*512], pattern(4*512, 2)...), make([]byte, 2*512)...)
	if !bytes.Equal(g.data(r3), want) {
		t.Error("the read does not see both writes in guest order")
	}
	if !bytes.Equal(g.data(r5), pattern(512, 4)) {
		t.Error("the read does not see the write before it")
	}
	// Used ring: in completion order, not guest order.
	var heads []uint32
	for _, u := range g.Rings[0].Used {
		heads = append(heads, u[0])
	}
	if heads[0] != uint32(w4.Head) || heads[1] != uint32(w1.Head) {
		t.Errorf("used ring heads %v", heads)
	}
}

func TestFlushWaitsForEarlierWritesOnly(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	g.write(0, pattern(512, 1))  // 1
	g.read(0, 512)               // 2: waits for 1
	f := g.flush()               // 3: waits for 1
	g.write(50, pattern(512, 3)) // 4: nothing waits for a flush
	g.notify()
	if got, want := inflightTags(g.dev), []uint64{1, 4}; !slices.Equal(got, want) {
		t.Fatalf("in flight %v, want %v", got, want)
	}
	g.write(60, pattern(512, 5)) // 5: later than the flush
	g.notify()
	g.complete(disk, 1)
	if got, want := inflightTags(g.dev), []uint64{2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Fatalf("after 1: in flight %v, want %v (the flush waits for no later write)", got, want)
	}
	g.complete(disk, 3)
	if g.status(f) != StatusOK {
		t.Fatal("flush failed")
	}
	g.drain(disk)
}

// A flush waits for an earlier write that is itself still waiting.
func TestFlushWaitsForWaitingWrites(t *testing.T) {
	g, disk := newTestGuest(t, Config{})
	g.write(0, pattern(512, 1)) // 1
	g.write(0, pattern(512, 2)) // 2: waits for 1
	g.flush()                   // 3: waits for 1 and 2
	g.notify()
	g.complete(disk, 1)
	if got, want := inflightTags(g.dev), []uint64{2}; !slices.Equal(got, want) {
		t.Fatalf("in flight %v, want %v", got, want)
	}
	g.complete(disk, 2)
	g.complete(disk, 3)
}

// The device's outcome, whatever order the host completes transfers in,
// is that of serving the requests one by one in guest order.
func TestRandomCompletionOrderMatchesSequential(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		const sectors = 32
		g := newGuest(t, Config{Capacity: sectors * 512}, replayEngine(t), 128)
		disk := &memDisk{img: make([]byte, sectors*512)}
		ref := make([]byte, sectors*512)
		type posted struct {
			r    *req
			want []byte // a read's expected data
		}
		var all []posted
		for round := 0; round < 6; round++ {
			for range 1 + rng.IntN(6) {
				n := uint32(1+rng.IntN(4)) * 512
				sector := uint64(rng.IntN(sectors - int(n/512) + 1))
				switch rng.IntN(5) {
				case 0, 1:
					data := make([]byte, n)
					for i := range data {
						data[i] = byte(rng.Uint32())
					}
					all = append(all, posted{r: g.write(sector, data)})
					copy(ref[sector*512:], data)
				case 2, 3:
					all = append(all, posted{r: g.read(sector, n), want: slices.Clone(ref[sector*512 : sector*512+uint64(n)])})
				default:
					all = append(all, posted{r: g.flush()})
				}
			}
			g.notify()
			// Complete a random part of what is in flight, in random order.
			for tags := inflightTags(g.dev); len(tags) > 0 && rng.IntN(4) != 0; tags = inflightTags(g.dev) {
				g.complete(disk, tags[rng.IntN(len(tags))])
			}
			g.Collect()
		}
		for tags := inflightTags(g.dev); len(tags) > 0; tags = inflightTags(g.dev) {
			g.complete(disk, tags[rng.IntN(len(tags))])
		}
		if s, w := g.dev.InFlight(); s != 0 || w != 0 {
			t.Fatalf("seed %d: %d submitted, %d waiting after draining", seed, s, w)
		}
		for i, p := range all {
			if st := g.status(p.r); st != StatusOK {
				t.Fatalf("seed %d: request %d: status %d", seed, i, st)
			}
			if p.want != nil && !bytes.Equal(g.data(p.r), p.want) {
				t.Fatalf("seed %d: read %d differs from the sequential result", seed, i)
			}
		}
		if !bytes.Equal(disk.img, ref) {
			t.Fatalf("seed %d: final image differs from the sequential result", seed)
		}
	}
}

// conflicts is what the serialization rests on: check it against its
// definition on small ranges.
func TestConflicts(t *testing.T) {
	ops := []Op{OpRead, OpWrite, OpFlush}
	for _, a := range ops {
		for _, b := range ops {
			for ao := range uint64(4) {
				for bo := range uint64(4) {
					x := &Request{Op: a, Offset: ao * 512, Len: 1024}
					y := &Request{Op: b, Offset: bo * 512, Len: 1024}
					if a == OpFlush {
						x.Offset, x.Len = 0, 0
					}
					if b == OpFlush {
						y.Offset, y.Len = 0, 0
					}
					overlap := a != OpFlush && b != OpFlush && (ao == bo || ao+1 == bo || bo+1 == ao)
					want := b == OpFlush && a == OpWrite || overlap && (a == OpWrite || b == OpWrite)
					if got := conflicts(x, y); got != want {
						t.Errorf("conflicts(%v@%d, %v@%d) = %v", a, ao, b, bo, got)
					}
				}
			}
		}
	}
}
