package virtio

import (
	"reflect"
	"testing"
)

// TestSaveRestore saves a device with chains in flight, restores it into a
// fresh transport over the same memory, and checks the copy carries on.
func TestSaveRestore(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)
	dq.post(buf{bufAddr, 8, false}, buf{bufAddr + 8, 8, true})
	dq.post(buf{bufAddr + 16, 4, true})
	c1, _ := q.Pop()
	c2, _ := q.Pop()
	if err := q.Push(c1.Head, 8); err != nil {
		t.Fatal(err)
	}
	dq.post(buf{bufAddr + 32, 4, true})
	r.wr(RegQueueSel, 1)
	r.programQueue(1, 2, descAddr+0x800, availAddr+0x800, usedAddr+0x800) // not ready
	r.m.ConfigChanged()
	s := r.m.Save()

	r2 := newRig(t)
	r2.mem = r.mem
	r2.m.mem = r.mem
	q2 := r2.m.Queue(0) // held across Restore, as a backend would
	if err := r2.m.Restore(s); err != nil {
		t.Fatal(err)
	}
	if got := r2.m.Save(); !reflect.DeepEqual(got, s) {
		t.Fatalf("Save after Restore:\n%+v\nwant\n%+v", got, s)
	}
	if !q2.Valid(&c2) || q2.Valid(&c1) {
		t.Fatal("in-flight chains not carried over")
	}
	if err := q2.Push(c2.Head, 4); err != nil {
		t.Fatal(err)
	}
	c3, ok := q2.Pop()
	if !ok || c3.Segments[0].Addr != bufAddr+32 {
		t.Fatalf("restored queue popped %+v, %v", c3, ok)
	}
	if u := dq.takeUsed(); len(u) != 2 || u[1] != [2]uint32{uint32(c2.Head), 4} {
		t.Fatalf("used ring %v", u)
	}
	if r2.rd(RegConfigGeneration) != 1 || r2.rd(RegInterruptStatus) != 3 || r2.m.queueSel != 1 {
		t.Fatal("registers not restored")
	}
	r2.wr(RegQueueSel, 1)
	r2.wr(RegQueueReady, 1)
	if !r2.m.Queue(1).Ready() {
		t.Fatalf("restored queue 1 programming lost: %q", r2.m.Fault())
	}
}

func TestRestoreNeedsReset(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	dq.offer(9) // out of range
	r.m.Queue(0).Pop()
	s := r.m.Save()
	r2 := newRig(t)
	if err := r2.m.Restore(s); err != nil {
		t.Fatal(err)
	}
	if !r2.m.Queue(0).Broken() || r2.m.Fault() == "" {
		t.Fatal("restored device not broken")
	}
}

func TestRestoreRejects(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	dq.post(buf{bufAddr, 8, false}, buf{bufAddr, 8, true})
	r.m.Queue(0).Pop()
	good := r.m.Save()

	clone := func() MMIOState {
		s := good
		s.Queues = make([]QueueState, len(good.Queues))
		for i, q := range good.Queues {
			s.Queues[i] = q
			s.Queues[i].InFlight = nil
			for _, e := range q.InFlight {
				s.Queues[i].InFlight = append(s.Queues[i].InFlight, InFlight{Descs: append([]uint16(nil), e.Descs...), Writable: e.Writable})
			}
		}
		return s
	}
	for _, c := range []struct {
		name string
		mod  func(s *MMIOState)
	}{
		{"queue count", func(s *MMIOState) { s.Queues = s.Queues[:1] }},
		{"unknown status bit", func(s *MMIOState) { s.Status |= 0x10 }},
		{"unacceptable features", func(s *MMIOState) { s.DriverFeatures |= FeatureIndirectDesc }},
		{"DRIVER_OK alone", func(s *MMIOState) { s.Status = StatusDriverOK }},
		{"interrupt bits", func(s *MMIOState) { s.InterruptStatus = 4; s.IRQLevel = true }},
		{"irq level", func(s *MMIOState) { s.IRQLevel = true }},
		{"size", func(s *MMIOState) { s.Queues[0].Num = 6 }},
		{"size above max", func(s *MMIOState) { s.Queues[0].Num = 16 }},
		{"misaligned", func(s *MMIOState) { s.Queues[0].Device += 2 }},
		{"wraps", func(s *MMIOState) { s.Queues[0].Desc = ^uint64(15) }},
		{"count", func(s *MMIOState) { s.Queues[0].NextUsed = s.Queues[0].NextAvail }},
		{"empty chain", func(s *MMIOState) { s.Queues[0].InFlight[0].Descs = nil }},
		{"descriptor range", func(s *MMIOState) { s.Queues[0].InFlight[0].Descs[1] = 8 }},
		{"descriptor twice", func(s *MMIOState) { s.Queues[0].InFlight[0].Descs[1] = 0 }},
		{"writable", func(s *MMIOState) { s.Queues[0].InFlight[0].Writable = MaxChainBytes + 1 }},
		{"not ready with chains", func(s *MMIOState) { s.Queues[0].Ready = false }},
		{"not ready with positions", func(s *MMIOState) {
			s.Queues[1].NextAvail = 1
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := clone()
			c.mod(&s)
			r2 := newRig(t)
			r2.wr(RegQueueSel, 1)
			before := r2.m.Save()
			if err := r2.m.Restore(s); err == nil {
				t.Fatal("accepted")
			} else {
				t.Log(err)
			}
			if after := r2.m.Save(); !reflect.DeepEqual(after, before) {
				t.Fatal("device changed by a failed Restore")
			}
		})
	}
	if err := newRig(t).m.Restore(clone()); err != nil {
		t.Fatalf("the unmodified state: %v", err)
	}
}
