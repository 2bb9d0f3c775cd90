package replay

import (
	"runtime"
	"testing"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// allocated returns the bytes f allocated on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A landmark that lists every page of a 1 GiB guest as carrying data, but
// carries one page of it (a few MiB of log entry at most), is refused
// having allocated about what its data expands to, not the 1 GiB it
// lists (issue 19's decode amplification).
func TestLandmarkListingManyPagesCostsWhatDecodes(t *testing.T) {
	const listed = 262144 // 1 GiB of 4 KiB pages
	lm := stateLandmark(t)
	lm.Pages = make([]uint32, listed)
	lm.PageData = make([]*logpb.Page, listed)
	for i := range listed {
		lm.Pages[i] = uint32(i)
		lm.PageData[i] = &logpb.Page{Pfn: uint32(i)}
	}
	page := make([]byte, 4096)
	page[7] = 1
	lm.PagesZstd = pageEncoder.EncodeAll(page, nil)

	var m fakeMachine
	var err error
	cost := allocated(func() { err = loadLandmark(&m, listed*4096, lm) })
	if err == nil {
		t.Fatal("a landmark listing 262144 pages with one page of data was accepted")
	}
	if len(m.pages) != 0 || m.state != nil {
		t.Errorf("wrote before refusing: %d pages, state %v", len(m.pages), m.state != nil)
	}
	if cost > 16<<20 {
		t.Errorf("refusing it allocated %d MiB, want under 16 (it carries %d bytes)", cost>>20, len(lm.PagesZstd))
	}
	t.Logf("refused (%v) after allocating %d KiB", err, cost>>10)
}

// A frame that really expands to what the landmark lists costs about
// that: the buffer grows by doubling.
func TestDecodePagesGrowsWithTheFrame(t *testing.T) {
	for _, n := range []int{1, 3, 17, 300} {
		raw := make([]byte, n*4096)
		for i := range raw {
			raw[i] = byte(i*7 + i>>12)
		}
		frame := pageEncoder.EncodeAll(raw, nil)
		var out []byte
		var err error
		cost := allocated(func() { out, err = decodePages(frame, n) })
		if err != nil {
			t.Fatalf("%d pages: %v", n, err)
		}
		if string(out) != string(raw) {
			t.Fatalf("%d pages: decoded data differs", n)
		}
		// The buffer starts at 4 times the frame and doubles; the
		// decoder's own window is bounded (8 MiB, low-memory mode).
		if limit := uint64(2*len(raw)+4*len(frame)) + 8<<20; cost > limit {
			t.Errorf("%d pages: decoding allocated %d KiB, want under %d", n, cost>>10, limit>>10)
		}
		// Listing one page more than the frame holds is refused.
		if _, err := decodePages(frame, n+1); err == nil {
			t.Errorf("%d pages decoded as %d", n, n+1)
		}
	}
}
