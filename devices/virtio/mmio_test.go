package virtio

import (
	"bytes"
	"testing"
)

func TestNewMMIORejectsBadBackends(t *testing.T) {
	for _, max := range [][]uint16{nil, make([]uint16, MaxQueues+1), {0}, {3}, {8, 6}} {
		b := newTestBackend()
		b.max = max
		if _, err := NewMMIO(b, FlatMemory{}, func(bool) {}); err == nil {
			t.Errorf("queue maxima %v accepted", max)
		}
	}
}

func TestIdentityRegisters(t *testing.T) {
	r := newRig(t)
	offered := uint64(1<<0|1<<5|1<<63) | FeatureVersion1
	for _, c := range []struct {
		name     string
		sel, off uint64
		selReg   uint64
		want     uint32
	}{
		{"magic", 0, RegMagic, RegQueueSel, MagicValue},
		{"version", 0, RegVersion, RegQueueSel, 2},
		{"device id", 0, RegDeviceID, RegQueueSel, 2},
		{"vendor id", 0, RegVendorID, RegQueueSel, VendorID},
		{"features 0-31", 0, RegDeviceFeatures, RegDeviceFeaturesSel, uint32(offered)},
		{"features 32-63", 1, RegDeviceFeatures, RegDeviceFeaturesSel, uint32(offered >> 32)},
		{"features 64-95", 2, RegDeviceFeatures, RegDeviceFeaturesSel, 0},
		{"queue 0 max", 0, RegQueueNumMax, RegQueueSel, 8},
		{"queue 1 max", 1, RegQueueNumMax, RegQueueSel, 4},
		{"queue 2 max", 2, RegQueueNumMax, RegQueueSel, 0},
		{"queue 2 ready", 2, RegQueueReady, RegQueueSel, 0},
		{"write-only queue num", 0, RegQueueNum, RegQueueSel, 0},
		{"reserved", 0, 0x0f8, RegQueueSel, 0},
	} {
		r.wr(c.selReg, uint32(c.sel))
		if got := r.rd(c.off); got != c.want {
			t.Errorf("%s: read %#x, want %#x", c.name, got, c.want)
		}
	}
}

func TestAccessWidths(t *testing.T) {
	r := newRig(t)
	copy(r.be.config[:], []byte{1, 2, 3, 4, 5, 6, 7, 8})
	for _, c := range []struct {
		off  uint64
		n    int
		want []byte
	}{
		{RegMagic, 4, []byte{'v', 'i', 'r', 't'}},
		{RegMagic, 2, []byte{0, 0}},
		{RegMagic, 8, make([]byte, 8)},
		{RegMagic + 1, 4, make([]byte, 4)},
		{RegMagic, 1, []byte{0}},
		{RegMagic, 3, []byte{0, 0, 0}},
		{RegMagic, 0, []byte{}},
		{ConfigOffset, 1, []byte{1}},
		{ConfigOffset + 3, 1, []byte{4}},
		{ConfigOffset + 2, 2, []byte{3, 4}},
		{ConfigOffset + 4, 4, []byte{5, 6, 7, 8}},
		{ConfigOffset + 1, 2, []byte{0, 0}},       // misaligned
		{ConfigOffset + 2, 4, []byte{0, 0, 0, 0}}, // misaligned
		{ConfigOffset, 8, make([]byte, 8)},        // no 64-bit config access
		{ConfigOffset, 3, []byte{0, 0, 0}},
		{ConfigOffset + 0xfc, 4, []byte{0, 0, 0, 0}}, // last dword: backend has nothing there
		{WindowSize, 4, make([]byte, 4)},
		{^uint64(0) - 1, 4, make([]byte, 4)},
		{^uint64(3), 4, make([]byte, 4)},
	} {
		got := bytes.Repeat([]byte{0xee}, c.n)
		r.m.Read(c.off, got)
		if !bytes.Equal(got, c.want) {
			t.Errorf("read %d bytes at %#x: %x, want %x", c.n, c.off, got, c.want)
		}
	}

	// Writes of the wrong shape change nothing.
	r.m.Write(RegStatus, []byte{1, 0})
	r.m.Write(RegStatus+1, []byte{1, 0, 0, 0})
	r.m.Write(RegStatus, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	r.m.Write(ConfigOffset+1, []byte{9, 9})
	r.m.Write(ConfigOffset, []byte{9, 9, 9, 9, 9, 9, 9, 9})
	r.m.Write(^uint64(1), []byte{9, 9, 9, 9})
	if s := r.rd(RegStatus); s != 0 {
		t.Errorf("status %#x after malformed writes", s)
	}
	if r.be.config != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Errorf("config changed by malformed writes: %x", r.be.config)
	}
	r.m.Write(ConfigOffset+6, []byte{0xaa, 0xbb})
	if r.be.config[6] != 0xaa || r.be.config[7] != 0xbb {
		t.Errorf("config write lost: %x", r.be.config)
	}
}

func TestStatusStateMachine(t *testing.T) {
	const base = StatusAcknowledge | StatusDriver
	for _, c := range []struct {
		name     string
		features uint64
		writes   []uint32
		want     uint32
	}{
		{"accepted", FeatureVersion1 | 1, []uint32{base | StatusFeaturesOK}, base | StatusFeaturesOK},
		{"version 1 only", FeatureVersion1, []uint32{base | StatusFeaturesOK}, base | StatusFeaturesOK},
		{"no VERSION_1", 1, []uint32{base | StatusFeaturesOK}, base},
		{"indirect not offered", FeatureVersion1 | FeatureIndirectDesc, []uint32{base | StatusFeaturesOK}, base},
		{"event idx not offered", FeatureVersion1 | FeatureEventIdx, []uint32{base | StatusFeaturesOK}, base},
		{"packed not offered", FeatureVersion1 | FeatureRingPacked, []uint32{base | StatusFeaturesOK}, base},
		{"unknown bit", FeatureVersion1 | 1<<7, []uint32{base | StatusFeaturesOK}, base},
		{"DRIVER_OK needs FEATURES_OK", FeatureVersion1, []uint32{base | StatusDriverOK}, base},
		{"DRIVER_OK with FEATURES_OK in one write", FeatureVersion1,
			[]uint32{base | StatusFeaturesOK | StatusDriverOK}, base | StatusFeaturesOK | StatusDriverOK},
		{"DRIVER_OK refused with features", 1, []uint32{base | StatusFeaturesOK | StatusDriverOK}, base},
		{"bits cannot be cleared", FeatureVersion1, []uint32{base | StatusFeaturesOK, StatusAcknowledge}, base | StatusFeaturesOK},
		{"driver cannot set NEEDS_RESET", FeatureVersion1, []uint32{base | StatusNeedsReset | 0x30}, base},
		{"FAILED sticks", FeatureVersion1, []uint32{base | StatusFailed}, base | StatusFailed},
		{"reset", FeatureVersion1, []uint32{base | StatusFeaturesOK, 0}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.wr(RegStatus, StatusAcknowledge)
			r.wr(RegStatus, base)
			r.wr(RegDriverFeaturesSel, 0)
			r.wr(RegDriverFeatures, uint32(c.features))
			r.wr(RegDriverFeaturesSel, 1)
			r.wr(RegDriverFeatures, uint32(c.features>>32))
			r.wr(RegDriverFeaturesSel, 2)
			r.wr(RegDriverFeatures, 0xffffffff) // no such word: ignored
			for _, w := range c.writes {
				r.wr(RegStatus, w)
			}
			if got := r.rd(RegStatus); got != c.want {
				t.Errorf("status %#x, want %#x", got, c.want)
			}
			wantNeg := uint64(0)
			if c.want&StatusFeaturesOK != 0 {
				wantNeg = c.features
			}
			if got := r.m.DriverFeatures(); got != wantNeg {
				t.Errorf("negotiated features %#x, want %#x", got, wantNeg)
			}
		})
	}
}

func TestFeaturesFrozenAfterFeaturesOK(t *testing.T) {
	r := newRig(t)
	r.negotiate(FeatureVersion1 | 1)
	r.wr(RegDriverFeaturesSel, 0)
	r.wr(RegDriverFeatures, 0x20)
	if got := r.m.DriverFeatures(); got != FeatureVersion1|1 {
		t.Errorf("features %#x changed after FEATURES_OK", got)
	}
}

func TestReset(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	dq.post(buf{bufAddr, 16, false})
	c, ok := r.m.Queue(0).Pop()
	if !ok {
		t.Fatal("no chain")
	}
	r.m.ConfigChanged()
	r.wr(RegQueueSel, 1)
	r.wr(RegDeviceFeaturesSel, 1)
	if !r.irq.level {
		t.Fatal("interrupt not raised")
	}
	r.wr(RegStatus, 0)
	for _, c := range []struct {
		off  uint64
		want uint32
	}{{RegStatus, 0}, {RegInterruptStatus, 0}, {RegQueueReady, 0}, {RegDeviceFeatures, uint32(r.m.features)},
		{RegQueueNumMax, 8}, {RegConfigGeneration, 1}} {
		if got := r.rd(c.off); got != c.want {
			t.Errorf("register %#x = %#x after reset, want %#x", c.off, got, c.want)
		}
	}
	if r.irq.level || r.irq.err != nil {
		t.Errorf("line after reset: level %v, err %v", r.irq.level, r.irq.err)
	}
	if r.be.resets != 1 || r.m.DriverFeatures() != 0 {
		t.Errorf("backend resets %d, features %#x", r.be.resets, r.m.DriverFeatures())
	}
	if err := r.m.Queue(0).Push(c.Head, 0); err == nil {
		t.Error("push of a chain popped before the reset accepted")
	}
	if r.m.Queue(0).Valid(&c) {
		t.Error("chain popped before the reset still valid")
	}
	// The queue must be programmed again, size included.
	r.wr(RegQueueSel, 0)
	r.wr(RegQueueReady, 1)
	if r.rd(RegQueueReady) != 0 || r.rd(RegStatus)&StatusNeedsReset == 0 {
		t.Errorf("queue enabled with QueueNum 0 after reset: status %#x", r.rd(RegStatus))
	}
}

func TestQueueRegisters(t *testing.T) {
	const ok, bad = true, false
	for _, c := range []struct {
		name              string
		num               uint32
		desc, avail, used uint64
		ready             bool
	}{
		{"valid", 8, descAddr, availAddr, usedAddr, ok},
		{"smaller", 1, descAddr, availAddr, usedAddr, ok},
		{"size 0", 0, descAddr, availAddr, usedAddr, bad},
		{"size not a power of two", 6, descAddr, availAddr, usedAddr, bad},
		{"size above max", 16, descAddr, availAddr, usedAddr, bad},
		{"size above 16 bits", 1 << 16, descAddr, availAddr, usedAddr, bad},
		{"desc misaligned", 8, descAddr + 8, availAddr, usedAddr, bad},
		{"avail misaligned", 8, descAddr, availAddr + 1, usedAddr, bad},
		{"used misaligned", 8, descAddr, availAddr, usedAddr + 2, bad},
		{"avail 2-aligned", 8, descAddr, availAddr + 2, usedAddr + 4, ok},
		{"desc outside RAM", 8, ramBase - 16, availAddr, usedAddr, bad},
		{"desc runs off RAM", 8, ramBase + ramSize - 64, availAddr, usedAddr, bad},
		{"avail runs off RAM", 8, descAddr, ramBase + ramSize - 20, usedAddr, bad},
		{"used runs off RAM", 8, descAddr, availAddr, ramBase + ramSize - 68, bad},
		{"used ends at RAM end", 8, descAddr, availAddr, ramBase + ramSize - 72, ok},
		{"used wraps", 8, descAddr, availAddr, ^uint64(3), bad},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.negotiate(FeatureVersion1)
			r.programQueue(0, c.num, c.desc, c.avail, c.used)
			r.wr(RegQueueReady, 1)
			ready := r.rd(RegQueueReady) == 1
			failed := r.rd(RegStatus)&StatusNeedsReset != 0
			if ready != c.ready || failed == c.ready {
				t.Fatalf("ready %v, needs reset %v (fault %q); want ready %v", ready, failed, r.m.Fault(), c.ready)
			}
			if !c.ready {
				if r.rd(RegInterruptStatus) != InterruptConfigChange || !r.irq.level {
					t.Errorf("no config interrupt: status %#x", r.rd(RegInterruptStatus))
				}
				return
			}
			// Frozen while ready.
			q := r.m.Queue(0)
			r.wr(RegQueueNum, 2)
			r.wr64(RegQueueDescLow, 0)
			r.wr64(RegQueueDriverLow, 0)
			r.wr64(RegQueueDeviceLow, 0)
			if q.num != c.num || q.desc != c.desc || q.driver != c.avail || q.device != c.used {
				t.Errorf("ready queue reprogrammed: %+v", q.saved())
			}
			r.wr(RegQueueReady, 2) // neither 0 nor 1: ignored
			if !q.Ready() {
				t.Error("QueueReady=2 disabled the queue")
			}
			r.wr(RegQueueReady, 0)
			if q.Ready() || r.rd(RegQueueReady) != 0 {
				t.Error("QueueReady=0 did not disable the queue")
			}
			r.wr(RegQueueNum, 2)
			if q.num != 2 {
				t.Error("disabled queue not writable")
			}
		})
	}
}

// saved returns the queue's part of the transport's state.
func (q *Queue) saved() QueueState { return q.t.Save().Queues[q.idx] }

func TestNotify(t *testing.T) {
	r := newRig(t)
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 8, descAddr, availAddr, usedAddr)
	r.wr(RegQueueNotify, 0)
	if len(r.be.notifies) != 0 {
		t.Fatal("notify before DRIVER_OK reached the backend")
	}
	r.wr(RegStatus, r.rd(RegStatus)|StatusDriverOK)
	for _, q := range []uint32{0, 1, 2, 1 << 31} {
		r.wr(RegQueueNotify, q)
	}
	if len(r.be.notifies) != 1 || r.be.notifies[0] != 0 {
		t.Fatalf("notifies %v, want [0] (queue 1 is not ready, 2 does not exist)", r.be.notifies)
	}
	r.wr(RegStatus, r.rd(RegStatus)|StatusFailed)
	r.wr(RegQueueNotify, 0)
	if len(r.be.notifies) != 1 {
		t.Fatal("notify after FAILED reached the backend")
	}
}

func TestInterrupts(t *testing.T) {
	r := newRig(t)
	dq := r.start()
	q := r.m.Queue(0)

	dq.post(buf{bufAddr, 4, true})
	c, _ := q.Pop()
	if r.irq.level {
		t.Fatal("interrupt before any push")
	}
	if err := q.Push(c.Head, 4); err != nil {
		t.Fatal(err)
	}
	if !r.irq.level || r.rd(RegInterruptStatus) != InterruptUsedBuffer {
		t.Fatalf("after push: line %v, status %#x", r.irq.level, r.rd(RegInterruptStatus))
	}
	r.m.ConfigChanged()
	if r.rd(RegInterruptStatus) != 3 || r.rd(RegConfigGeneration) != 1 {
		t.Fatalf("after config change: status %#x, generation %d", r.rd(RegInterruptStatus), r.rd(RegConfigGeneration))
	}
	r.wr(RegInterruptACK, InterruptUsedBuffer)
	if !r.irq.level {
		t.Fatal("line dropped with the config bit still set")
	}
	r.wr(RegInterruptACK, 0xffffffff)
	if r.irq.level || r.rd(RegInterruptStatus) != 0 {
		t.Fatal("line still high after acknowledging everything")
	}

	// VIRTQ_AVAIL_F_NO_INTERRUPT suppresses the used-buffer interrupt.
	r.put16(availAddr, availFNoInterrupt)
	dq.post(buf{bufAddr, 4, true})
	c, _ = q.Pop()
	if err := q.Push(c.Head, 0); err != nil {
		t.Fatal(err)
	}
	if r.irq.level || len(dq.takeUsed()) != 2 {
		t.Error("interrupt despite NO_INTERRUPT, or entry not published")
	}
	if r.irq.err != nil || r.irq.rises != 1 {
		t.Errorf("line: %v, %d rises", r.irq.err, r.irq.rises)
	}
}

func TestAccessors(t *testing.T) {
	r := newRig(t)
	if r.m.Queue(-1) != nil || r.m.Queue(2) != nil || r.m.Queue(1) == nil {
		t.Error("Queue bounds")
	}
	r.negotiate(FeatureVersion1)
	r.programQueue(0, 3, descAddr, availAddr, usedAddr)
	r.wr(RegQueueReady, 1)
	first := r.m.Fault()
	r.programQueue(1, 3, descAddr, availAddr, usedAddr)
	r.wr(RegQueueReady, 1)
	if r.m.Fault() != first || r.m.Status() != StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusNeedsReset {
		t.Errorf("fault %q (first %q), status %#x", r.m.Fault(), first, r.m.Status())
	}
	if r.irq.rises != 1 {
		t.Errorf("%d interrupts for two failures", r.irq.rises)
	}
}
