package blk

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/ftkvm/ftkvm/devices/virtio/virtiotest"
)

// Fuzz opcodes, the first byte of each step (mod fuzzOps).
const (
	fzRequest  = iota // a well-formed layout: type, sector, data length
	fzRaw             // a free layout: 16 header bytes from the input, 1-4 segments
	fzNotify          //
	fzComplete        // complete an in-flight transfer, maybe with an error
	fzReset           // device reset and a new driver
	fzRestart         // queue disabled and enabled again
	fzOps
)

var fuzzSegLens = [...]uint32{0, 1, 2, 8, 15, 16, 17, 511, 512, 513, 1024, 4096}

const fuzzSectors = 16

// FuzzBlkRequests drives the device with a guest posting requests of any
// type, header and layout, and a host completing transfers in any order,
// failing some, with resets in between. The device must never panic or
// break its transport, must keep the transfers in flight free of
// conflicts, must leave a state Restore accepts after every step, and must
// answer every request once the host has completed everything.
func FuzzBlkRequests(f *testing.F) {
	f.Add([]byte{0, // read-write disk
		fzRequest, 1, 0, 1, fzRequest, 0, 0, 2, fzRequest, 2, 0, 0, fzRequest, 3, 0, 0, fzNotify,
		fzComplete, 0, 0, fzComplete, 1, 1, fzNotify})
	f.Add([]byte{1, // read-only
		fzRequest, 1, 3, 1, fzRequest, 2, 0, 0, fzRequest, 0, 15, 2, fzNotify, fzComplete, 0, 0})
	f.Add([]byte{0,
		fzRaw, 2, 0x83, 0x09, 'h', 'e', 'a', 'd', 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
		fzRaw, 1, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		fzRaw, 3, 0x04, 0x89, 0x88, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		fzNotify, fzComplete, 0, 0})
	f.Add([]byte{0, // overlaps, a reset with transfers in flight, a queue restart
		fzRequest, 1, 2, 2, fzRequest, 1, 3, 2, fzRequest, 0, 2, 3, fzRequest, 2, 0, 0, fzNotify,
		fzComplete, 1, 0, fzReset, fzRequest, 1, 2, 1, fzNotify, fzComplete, 0, 0,
		fzRequest, 0, 5, 1, fzNotify, fzRestart, fzRequest, 0, 5, 1, fzNotify, fzComplete, 0, 1})
	f.Fuzz(func(t *testing.T, input []byte) {
		p := virtiotest.NewProgram(input)
		cfg := Config{Capacity: fuzzSectors * SectorSize, ReadOnly: p.Next()&1 == 1, ID: "fuzz"}
		g := newGuestRAM(t, cfg, replayEngine(t), 16, 128<<10)
		disk := &memDisk{img: make([]byte, cfg.Capacity), fail: map[uint64]bool{}}
		scratch, err := New(cfg, replayEngine(t))
		if err != nil {
			t.Fatal(err)
		}
		for step := 0; p.More() && step < 200; step++ {
			fuzzStep(g, disk, p)
			g.Collect()
			checkInvariants(t, g, scratch)
		}
		g.notify()
		for tags := inflightTags(g.dev); len(tags) > 0; tags = inflightTags(g.dev) {
			g.complete(disk, tags[0])
		}
		g.Collect()
		if s, w := g.dev.InFlight(); s != 0 || w != 0 || g.InFlight() != 0 {
			t.Fatalf("after draining: %d submitted, %d waiting, %d requests unanswered", s, w, g.InFlight())
		}
	})
}

func fuzzStep(g *guest, disk *memDisk, p *virtiotest.Program) {
	switch p.Next() % fzOps {
	case fzRequest:
		typ := [...]uint32{TypeIn, TypeOut, TypeFlush, TypeGetID}[p.Next()%4]
		sector := uint64(p.Next() % (fuzzSectors + 2))
		n := uint32(p.Next()%4) * SectorSize
		if g.Rings[0].Free() < 3 {
			return
		}
		data := seg{N: n, Writable: typ != TypeOut, Fill: pattern(int(n), byte(sector))}
		if typ == TypeGetID {
			data.N = IDLen
		}
		g.post(seg{N: 16, Fill: header(typ, sector)}, data, seg{N: 1, Writable: true, Fill: []byte{0xff}})
	case fzRaw:
		nsegs := 1 + int(p.Next()%4)
		var segs []seg
		for i := range nsegs {
			b := p.Next()
			s := seg{N: fuzzSegLens[int(b&0x7f)%len(fuzzSegLens)], Writable: b&0x80 != 0}
			if i > 0 && segs[i-1].Writable {
				s.Writable = true // the transport refuses the other order
			}
			segs = append(segs, s)
		}
		hdr := p.Bytes(headerLen)
		if binary.LittleEndian.Uint32(hdr[8:])&0xff == 0xaa {
			binary.LittleEndian.PutUint64(hdr[8:], fuzzSectors-1) // near the end
		}
		for i, rest := 0, hdr; i < len(segs) && !segs[i].Writable; i++ {
			k := min(int(segs[i].N), len(rest))
			segs[i].Fill, rest = rest[:k], rest[k:]
		}
		if g.Rings[0].Free() < nsegs {
			return
		}
		g.post(segs...)
	case fzNotify:
		g.notify()
	case fzComplete:
		i, fail := int(p.Next()), p.Next()&1 == 1
		tags := inflightTags(g.dev)
		if len(tags) == 0 {
			return
		}
		tag := tags[i%len(tags)]
		disk.fail[tag] = fail
		g.complete(disk, tag)
	case fzReset:
		g.Start(16)
	case fzRestart:
		g.RestartQueue(0)
	}
}

func checkInvariants(t *testing.T, g *guest, scratch *Device) {
	t.Helper()
	if !g.MMIO.Active() {
		t.Fatalf("device broken: %s", g.MMIO.Fault())
	}
	s := g.dev.Save()
	if len(s.InFlight) > MaxInFlight {
		t.Fatalf("%d in flight", len(s.InFlight))
	}
	for i := range s.InFlight {
		for j := range i {
			if conflicts(&s.InFlight[j], &s.InFlight[i]) {
				t.Fatalf("tags %d and %d conflict and are both in flight", s.InFlight[j].Tag, s.InFlight[i].Tag)
			}
		}
	}
	b, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := scratch.RestoreState(b); err != nil {
		t.Fatalf("RestoreState refuses a state SaveState returned: %v", err)
	}
	if got := scratch.Save(); !reflect.DeepEqual(got, s) {
		t.Fatalf("state changed through its encoding:\n%+v\n%+v", s, got)
	}
	for _, u := range g.Rings[0].Used {
		if u[1] > IDLen+1 && u[1] != 0 && (u[1]-1)%SectorSize != 0 {
			t.Fatalf("used entry %v: written is neither a status, an ID, nor sectors", u)
		}
	}
}
