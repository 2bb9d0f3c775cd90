package devices

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
)

// dmaRig is a DMATest with 64 KiB of "guest memory".
type dmaRig struct {
	d    *DMATest
	mem  []byte
	irqs int
}

func newDMARig(backend bounce.Backend) *dmaRig {
	r := &dmaRig{mem: make([]byte, 64<<10)}
	r.d = NewDMATest(bounce.NewEngine(backend), func(high bool) {
		if high {
			r.irqs++
		}
	}, func(addr uint64, n int) ([]byte, bool) {
		if addr >= uint64(len(r.mem)) || uint64(n) > uint64(len(r.mem))-addr {
			return nil, false
		}
		return r.mem[addr : addr+uint64(n)], true
	})
	return r
}

func (r *dmaRig) start(addr uint64, n uint32) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], addr)
	r.d.Write(0x00, b[:])
	binary.LittleEndian.PutUint32(b[:4], n)
	r.d.Write(0x08, b[:4])
	r.d.Write(0x0c, []byte{1, 0, 0, 0})
}

func (r *dmaRig) reg(off uint64) uint32 {
	var b [4]byte
	r.d.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *dmaRig) complete(t *testing.T) {
	t.Helper()
	for i := 0; i < 5000; i++ {
		if cs := r.d.Engine().Poll(); len(cs) > 0 {
			for _, c := range cs {
				r.d.Complete(c)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no completion")
}

func TestDMATestCopiesIntoMemoryAtCompletion(t *testing.T) {
	r := newDMARig(func(q bounce.Request) ([]byte, error) {
		b := make([]byte, q.Len)
		for i := range b {
			b[i] = byte(i + 1)
		}
		return b, nil
	})
	r.start(0x1000, 16)
	if r.reg(0x10) != DMABusy || r.mem[0x1000] != 0 {
		t.Fatalf("status %d, memory %x before completion", r.reg(0x10), r.mem[0x1000:0x1004])
	}
	r.complete(t)
	if r.reg(0x10) != DMADone || r.reg(0x14) != 1 || r.irqs != 1 || r.mem[0x1000] != 1 || r.mem[0x100f] != 16 || r.mem[0x1010] != 0 {
		t.Fatalf("status %d count %d irqs %d memory %x", r.reg(0x10), r.reg(0x14), r.irqs, r.mem[0x1000:0x1012])
	}
}

func TestDMATestHostileTransfersFailWithoutWriting(t *testing.T) {
	r := newDMARig(func(q bounce.Request) ([]byte, error) { return make([]byte, q.Len), nil })
	for i := range r.mem {
		r.mem[i] = 0xAA
	}
	r.start(0, 0) // bad length: fails at once
	if r.reg(0x10) != DMAError || r.irqs != 1 {
		t.Fatalf("length 0: status %d, irqs %d", r.reg(0x10), r.irqs)
	}
	r.start(uint64(len(r.mem))-8, 16) // runs past the end of memory
	r.complete(t)
	if r.reg(0x10) != DMAError || r.reg(0x14) != 2 {
		t.Fatalf("past the end: status %d count %d", r.reg(0x10), r.reg(0x14))
	}
	r.start(^uint64(0)-4, 16) // address arithmetic overflow
	r.complete(t)
	if r.reg(0x10) != DMAError {
		t.Fatalf("wrapping address: status %d", r.reg(0x10))
	}
	for i, b := range r.mem {
		if b != 0xAA {
			t.Fatalf("byte %#x written by a failed transfer", i)
		}
	}
	r.d.Complete(bounce.Completion{Tag: 99, Data: []byte{1}}) // not in flight: ignored
	if r.reg(0x14) != 3 {
		t.Errorf("a stray completion counted")
	}
}
