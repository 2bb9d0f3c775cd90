package replay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/ftkvm/ftkvm/replay/logpb"
	"github.com/ftkvm/ftkvm/vmm"
)

// pageMachine is guest memory of n pages, all dirty, made to look like a
// kernel's: a quarter all zeros, the rest mostly small integers and
// pointers with some text, so zstd meets what it meets in a real guest.
type pageMachine struct {
	mem   []byte
	pages []uint32
}

func newPageMachine(n int) *pageMachine {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	m := &pageMachine{mem: make([]byte, n*4096)}
	for pfn := range n {
		m.pages = append(m.pages, uint32(pfn))
		if pfn%4 == 0 {
			continue
		}
		page := m.mem[pfn*4096 : (pfn+1)*4096]
		for off := 0; off < 4096; off += 8 {
			var v uint64
			switch rng.IntN(4) {
			case 0: // pointer
				v = 0xffff_8880_0000_0000 | rng.Uint64N(1<<24)<<3
			case 1: // small integer
				v = rng.Uint64N(256)
			case 2: // text
				for i := range 8 {
					v |= uint64('a'+rng.IntN(26)) << (8 * i)
				}
			}
			binary.LittleEndian.PutUint64(page[off:], v)
		}
	}
	return m
}

func (m *pageMachine) CaptureVCPUState() (vmm.VCPUState, error) {
	return vmm.VCPUState{Regs: vmm.Regs{RIP: 0x1000, RFLAGS: 2}}, nil
}
func (m *pageMachine) DirtyPages() ([]uint32, error) { return slices.Clone(m.pages), nil }
func (m *pageMachine) PageContents(pfn uint32) ([]byte, error) {
	return slices.Clone(m.mem[pfn*4096 : (pfn+1)*4096]), nil
}

// CopyPages is vmm.VM's: guest memory is one slice.
func (m *pageMachine) CopyPages(dst []byte, pages []uint32) ([]byte, error) {
	for _, pfn := range pages {
		dst = append(dst, m.mem[pfn*4096:(pfn+1)*4096]...)
	}
	return dst, nil
}

var landmarkBenchPages = []int{10, 100, 1000}

// BenchmarkLandmark splits a landmark's cost into its parts, per
// landmark of n dirty pages. On the vCPU thread: capture (vCPU state,
// dirty list, page copies) into the buffer the previous landmark used,
// as the recorder does, and capture-fresh into new memory; the copies
// alone into reused memory (copy) and a fresh allocation per page
// (copy-per-page, PageContents). Off it, finish (what the log pipe's
// worker does) and its parts: the zero test, SHA-256 (what the log
// carries), xxHash (for comparison) and zstd.
func BenchmarkLandmark(b *testing.B) {
	for _, n := range landmarkBenchPages {
		m := newPageMachine(n)
		size := int64(n * 4096)
		var nonzero []byte
		for pfn := range n {
			if page := m.mem[pfn*4096 : (pfn+1)*4096]; !isZero(page) {
				nonzero = append(nonzero, page...)
			}
		}
		b.Run(fmt.Sprintf("capture/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			var buf []byte
			for b.Loop() {
				raw, err := captureLandmark(m, buf)
				if err != nil {
					b.Fatal(err)
				}
				buf = raw.buf
			}
		})
		b.Run(fmt.Sprintf("capture-fresh/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if _, err := captureLandmark(m, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("finish/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			raw, _ := captureLandmark(m, nil)
			lm := raw.lm
			for b.Loop() {
				raw.buf, _ = m.CopyPages(raw.buf[:0], m.pages) // finish compacts it in place
				raw.lm = &logpb.Landmark{Pages: lm.Pages, VcpuState: lm.VcpuState}
				_, _, raw.buf = raw.finish()
			}
		})
		b.Run(fmt.Sprintf("copy/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			buf := make([]byte, 0, n*4096)
			for b.Loop() {
				buf, _ = m.CopyPages(buf[:0], m.pages)
			}
		})
		b.Run(fmt.Sprintf("copy-per-page/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				for _, pfn := range m.pages {
					m.PageContents(pfn)
				}
			}
		})
		b.Run(fmt.Sprintf("zerotest/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				for pfn := range n {
					isZero(m.mem[pfn*4096 : (pfn+1)*4096])
				}
			}
		})
		b.Run(fmt.Sprintf("sha256/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				sha256.Sum256(m.mem)
			}
		})
		b.Run(fmt.Sprintf("xxhash/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				xxhash.Sum64(m.mem)
			}
		})
		b.Run(fmt.Sprintf("zstd/pages=%d", n), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				pageEncoder.EncodeAll(nonzero, nil)
			}
		})
	}
}

// The benchmark's memory compresses about as a kernel's does, so the
// zstd figures mean something.
func TestPageMachineCompressesLikeAGuest(t *testing.T) {
	m := newPageMachine(100)
	raw, _ := captureLandmark(m, nil)
	lm, zeros, _ := raw.finish()
	ratio := float64(75*4096) / float64(len(lm.PagesZstd))
	if zeros != 25 || ratio < 2 || ratio > 8 {
		t.Errorf("%d zero pages, compression %.1fx: want 25 and 2x to 8x", zeros, ratio)
	}
	t.Logf("compression %.1fx", ratio)
}

// A landmark captured into a reused buffer (holding an older landmark's
// pages) and finished, zero pages compacted out in place, loads every
// page as it was in memory, and its hash is the SHA-256 of the frame
// numbers and contents.
func TestCapturedLandmarkLoadsAsMemoryWas(t *testing.T) {
	m := newPageMachine(9) // pages 0, 4, 8 zero
	m.pages = []uint32{1, 4, 5, 8}
	stale := bytes.Repeat([]byte{0xee}, 16*4096)
	raw, err := captureLandmark(m, stale[:0])
	if err != nil {
		t.Fatal(err)
	}
	if &raw.buf[0] != &stale[0] {
		t.Error("the capture did not reuse the buffer it was given")
	}
	lm, zeros, _ := raw.finish()
	if zeros != 2 {
		t.Errorf("%d zero pages, want 2 (frames 4 and 8)", zeros)
	}
	h := sha256.New()
	for _, pfn := range m.pages {
		h.Write(binary.LittleEndian.AppendUint32(nil, pfn))
		h.Write(m.mem[pfn*4096 : (pfn+1)*4096])
	}
	if !bytes.Equal(lm.PagesSha256, h.Sum(nil)) {
		t.Error("the landmark's hash is not the SHA-256 of its pages")
	}
	var f fakeMachine
	if err := loadLandmark(&f, uint64(len(m.mem)), lm); err != nil {
		t.Fatal(err)
	}
	for _, pfn := range m.pages {
		want := m.mem[pfn*4096 : (pfn+1)*4096]
		got, ok := f.pages[pfn]
		if !ok || (got == nil && !isZero(want)) || (got != nil && !bytes.Equal(got, want)) {
			t.Errorf("page %d loaded wrong (present %v)", pfn, ok)
		}
	}
}
