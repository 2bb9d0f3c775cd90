package devices

import (
	"fmt"
	"testing"
)

type pitRig struct {
	t     *testing.T
	clock *fakeClock
	irq   *irqLog
	pit   *PIT
	dev   Device
	p61   Device
}

func newPITRig(t *testing.T) *pitRig {
	c := &fakeClock{}
	l := &irqLog{}
	p := NewPIT(c, l)
	return &pitRig{t: t, clock: c, irq: l, pit: p, dev: p.Device(), p61: p.Port61()}
}

// program writes a control word and a count for channel ch at tick k.
func (r *pitRig) program(ch int, control byte, count uint16, k int64) {
	r.clock.setTick(k)
	wr(r.dev, 3, control)
	switch (control >> 4) & 3 {
	case 1:
		wr(r.dev, uint64(ch), byte(count))
	case 2:
		wr(r.dev, uint64(ch), byte(count>>8))
	default:
		wr(r.dev, uint64(ch), byte(count), byte(count>>8))
	}
}

// latched reads channel ch's count through the counter latch command
// (lo/hi access assumed).
func (r *pitRig) latched(ch int) uint16 {
	wr(r.dev, 3, byte(ch)<<6)
	lo := rd(r.dev, uint64(ch))
	hi := rd(r.dev, uint64(ch))
	return uint16(hi)<<8 | uint16(lo)
}

// status reads channel ch's status byte through the read-back command.
func (r *pitRig) status(ch int) byte {
	wr(r.dev, 3, 0xe0|2<<ch)
	return rd(r.dev, uint64(ch))
}

func (r *pitRig) out(ch int) bool { return r.status(ch)&0x80 != 0 }

type ceOut struct {
	ce  uint16
	out bool
}

// trace returns (count, OUT) at ticks from..to of channel ch.
func (r *pitRig) trace(ch int, from, to int64) []ceOut {
	var s []ceOut
	for k := from; k <= to; k++ {
		r.clock.setTick(k)
		s = append(s, ceOut{r.latched(ch), r.out(ch)})
	}
	return s
}

func wantTrace(t *testing.T, name string, got []ceOut, ces []uint16, outs string) {
	t.Helper()
	if len(got) != len(ces) || len(outs) != len(ces) {
		t.Fatalf("%s: bad test table", name)
	}
	for i := range got {
		if got[i].ce != ces[i] || got[i].out != (outs[i] == 'H') {
			t.Errorf("%s: clock %d: got count %d OUT %v, want %d %c\nfull trace %v", name, i, got[i].ce, got[i].out, ces[i], outs[i], got)
			return
		}
	}
}

func TestPITMode0InterruptOnTerminalCount(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x30, 5, 1000) // channel 0, lo/hi, mode 0
	expect(t, "OUT right after the count write", r.out(0), false)
	// The count loads on the first clock after the write and OUT goes high
	// when it reaches 0, N+1 clocks after the write; it keeps counting down.
	wantTrace(t, "mode 0", r.trace(0, 1001, 1008),
		[]uint16{5, 4, 3, 2, 1, 0, 0xffff, 0xfffe}, "LLLLLHHH")
	if got := r.irq.rising(0); got != 1 {
		t.Errorf("IRQ0 edges = %d, want 1 (terminal count)", got)
	}
	// A new count sets OUT low again.
	r.clock.setTick(2000)
	wr(r.dev, 0, 3, 0)
	expect(t, "OUT after a new count", r.out(0), false)
	r.clock.setTick(2004)
	expect(t, "OUT at new terminal count", r.out(0), true)
}

func TestPITMode0FirstByteStopsCounting(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x30, 100, 0)
	r.clock.setTick(11) // count 90
	wr(r.dev, 0, 0x07)  // LSB of a new count: counting stops
	r.clock.setTick(50)
	expect(t, "frozen count", r.latched(0), uint16(90))
	wr(r.dev, 0, 0x00) // MSB: new count 7 loads on the next clock
	r.clock.setTick(51)
	expect(t, "new count", r.latched(0), uint16(7))
}

func TestPITMode2RateGenerator(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 4, 100) // mode 2, N = 4
	expect(t, "OUT after count write", r.out(0), true)
	// Period N; OUT low for one clock while the count is 1.
	wantTrace(t, "mode 2", r.trace(0, 101, 110),
		[]uint16{4, 3, 2, 1, 4, 3, 2, 1, 4, 3}, "HHHLHHHLHH")
	expect(t, "IRQ0 edges after two periods", r.irq.rising(0), 2)
}

func TestPITMode3SquareWave(t *testing.T) {
	r := newPITRig(t)
	r.program(2, 0xb6, 6, 100) // channel 2, mode 3, N = 6 (even)
	wr(r.p61, 0, 0x01)         // gate high: starts counting
	// Gate rising at tick 100: loads at 101.
	wantTrace(t, "mode 3 even", r.trace(2, 101, 113),
		[]uint16{6, 4, 2, 6, 4, 2, 6, 4, 2, 6, 4, 2, 6}, "HHHLLLHHHLLLH")

	r = newPITRig(t)
	wr(r.p61, 0, 0x01)
	r.program(2, 0xb6, 5, 100) // odd: high (N+1)/2, low (N-1)/2
	wantTrace(t, "mode 3 odd", r.trace(2, 101, 111),
		[]uint16{5, 4, 2, 5, 2, 5, 4, 2, 5, 2, 5}, "HHHLLHHHLLH")
}

func TestPITMode3SquareWaveOnPort61(t *testing.T) {
	r := newPITRig(t)
	wr(r.p61, 0, 0x01)
	r.program(2, 0xb6, 10, 0)
	var got []bool
	for k := int64(1); k <= 20; k++ {
		r.clock.setTick(k)
		got = append(got, rd(r.p61, 0)&0x20 != 0)
	}
	want := "HHHHHLLLLLHHHHHLLLLL"
	for i := range want {
		if got[i] != (want[i] == 'H') {
			t.Fatalf("port 0x61 bit 5 over 20 clocks = %v, want %s", got, want)
		}
	}
}

func TestPITReloadAtEndOfPeriod(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 5, 0) // mode 2, N = 5: reloads at clocks 1, 6, 11
	r.clock.setTick(3)       // count 3
	wr(r.dev, 0, 2, 0)       // new count 2: used from the reload at 6
	wantTrace(t, "mode 2 reload", r.trace(0, 4, 10),
		[]uint16{2, 1, 2, 1, 2, 1, 2}, "HLHLHLH")
}

func TestPITLatchFreezesCount(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 1000, 0)
	r.clock.setTick(11) // count 990
	wr(r.dev, 3, 0x00)  // latch channel 0
	wr(r.dev, 3, 0x00)  // a second latch before reading is ignored
	r.clock.setTick(500)
	lo, hi := rd(r.dev, 0), rd(r.dev, 0)
	expect(t, "latched count", uint16(hi)<<8|uint16(lo), uint16(990))
	// The latch is gone: the next reads follow the counter.
	lo, hi = rd(r.dev, 0), rd(r.dev, 0)
	expect(t, "live count", uint16(hi)<<8|uint16(lo), uint16(1000-499))
}

func TestPITAccessModes(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x30, 0x1234, 0) // lo/hi
	r.clock.setTick(1)
	lo, hi := rd(r.dev, 0), rd(r.dev, 0)
	expect(t, "lo/hi order", [2]byte{lo, hi}, [2]byte{0x34, 0x12})

	r.program(1, 0x50, 0x0099, 10) // channel 1, LSB only, mode 0
	r.clock.setTick(11)
	expect(t, "LSB-only read", rd(r.dev, 1), byte(0x99))
	expect(t, "LSB-only read again", rd(r.dev, 1), byte(0x99))

	r.program(1, 0x60, 0x4200, 20) // MSB only
	r.clock.setTick(21)
	expect(t, "MSB-only read", rd(r.dev, 1), byte(0x42))
	r.clock.setTick(22)
	expect(t, "MSB-only read after one clock", rd(r.dev, 1), byte(0x41))

	// A 16-bit access is two byte cycles at consecutive ports, as on the
	// ISA bus: channel 0's LSB, then channel 1 (MSB-only, 0x4200 loaded at
	// clock 21, now 0x41f6), with one clock reading.
	r.program(0, 0x34, 0x0203, 30)
	r.clock.setTick(31)
	reads := r.clock.reads
	var b [2]byte
	r.dev.Read(0, b[:])
	expect(t, "wide read", b, [2]byte{0x03, 0x41})
	expect(t, "clock reads for a wide read", r.clock.reads-reads, 1)
}

func TestPITCountZeroIs65536(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 0, 0)
	r.clock.setTick(2)
	expect(t, "count after one clock of 65536", r.latched(0), uint16(0xffff))
	d, ok := r.pit.NextDeadline()
	expect(t, "deadline ok", ok, true)
	expect(t, "deadline", d, ticksToNs(65537))
}

func TestPITBCD(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x31, 0x0010, 0) // mode 0, BCD, count 10
	r.clock.setTick(2)
	expect(t, "BCD count", r.latched(0), uint16(0x0009))
	r.clock.setTick(12)
	expect(t, "BCD wraps to 9999", r.latched(0), uint16(0x9999))
	expect(t, "status has BCD bit", r.status(0)&1, byte(1))
}

func TestPITReadBackStatus(t *testing.T) {
	r := newPITRig(t)
	r.clock.setTick(10)
	wr(r.dev, 3, 0x34) // channel 0, lo/hi, mode 2
	expect(t, "status after control word", r.status(0), byte(0x80|0x40|0x30|0x04))
	wr(r.dev, 0, 0x10, 0x00)
	expect(t, "null count before the load clock", r.status(0)&0x40, byte(0x40))
	r.clock.setTick(11)
	expect(t, "status once loaded", r.status(0), byte(0x80|0x30|0x04))

	// Latch status and count of channels 0 and 1 together: status first.
	r.program(1, 0x70, 0x0300, 20) // channel 1, mode 0
	r.clock.setTick(22)
	wr(r.dev, 3, 0xc6) // read-back count and status, channels 0 and 1
	r.clock.setTick(40)
	expect(t, "channel 1 status", rd(r.dev, 1), byte(0x30))
	expect(t, "channel 1 count lo", rd(r.dev, 1), byte(0xff))
	expect(t, "channel 1 count hi", rd(r.dev, 1), byte(0x02))
	expect(t, "channel 0 status", rd(r.dev, 0), byte(0xb4))
	// Channel 0: N = 16 written at clock 10, so at clock 22 it has counted
	// p = 12 clocks: 16 - (p-1) = 5.
	expect(t, "channel 0 count lo", rd(r.dev, 0), byte(5))
	expect(t, "channel 0 count hi", rd(r.dev, 0), byte(0))
}

func TestPITUpdateOneEdgePerPeriod(t *testing.T) {
	r := newPITRig(t)
	const n = 1193 // about 1 ms
	r.program(0, 0x34, n, 0)
	if _, ok := r.pit.NextDeadline(); !ok {
		t.Fatal("no deadline for mode 2")
	}
	for period := int64(1); period <= 5; period++ {
		d, _ := r.pit.NextDeadline()
		expect(t, fmt.Sprintf("deadline %d", period), d, ticksToNs(period*n+1))
		r.clock.t = d - 1
		r.pit.Update()
		expect(t, "edges just before the deadline", r.irq.rising(0), int(period-1))
		r.clock.t = d
		reads := r.clock.reads
		r.pit.Update()
		expect(t, "clock reads per Update", r.clock.reads-reads, 1)
		expect(t, "edges at the deadline", r.irq.rising(0), int(period))
		r.pit.Update()
		expect(t, "edges after a second Update", r.irq.rising(0), int(period))
	}
	// Every edge is a pulse: high then low.
	for i, e := range r.irq.events {
		if e.irq != 0 || e.high != (i%2 == 0) {
			t.Fatalf("IRQ events %v are not high/low pulses on IRQ0", r.irq.events)
		}
	}
	// Missing ten periods delivers one edge.
	r.clock.setTick(16 * n)
	r.pit.Update()
	expect(t, "coalesced edges", r.irq.rising(0), 6)
	d, _ := r.pit.NextDeadline()
	expect(t, "deadline after coalescing", d, ticksToNs(16*n+1))
	reads := r.clock.reads
	r.pit.NextDeadline()
	expect(t, "clock reads by NextDeadline", r.clock.reads-reads, 0)
}

func TestPITOneShotDeadlines(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x30, 100, 50) // mode 0
	d, ok := r.pit.NextDeadline()
	expect(t, "mode 0 deadline", d, ticksToNs(151))
	expect(t, "mode 0 ok", ok, true)
	r.clock.t = d
	r.pit.Update()
	expect(t, "mode 0 edges", r.irq.rising(0), 1)
	_, ok = r.pit.NextDeadline()
	expect(t, "mode 0 after terminal count", ok, false)

	// Linux's one-shot: mode 4, edge when OUT returns high after the
	// one-clock strobe.
	r.program(0, 0x38, 100, 1000)
	d, ok = r.pit.NextDeadline()
	expect(t, "mode 4 deadline", d, ticksToNs(1102))
	r.clock.t = ticksToNs(1101)
	expect(t, "mode 4 strobe OUT", r.out(0), false)
	r.clock.t = d
	r.pit.Update()
	expect(t, "mode 4 edges", r.irq.rising(0), 2)
	_, ok = r.pit.NextDeadline()
	expect(t, "mode 4 after the strobe", ok, false)

	// Control word without count: no deadline.
	wr(r.dev, 3, 0x34)
	_, ok = r.pit.NextDeadline()
	expect(t, "deadline with no count", ok, false)
}

func TestPITEdgeDeliveredOnAccess(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 10, 0)
	r.clock.setTick(25) // two edges (11, 21) passed; the VMM has not called Update
	rd(r.dev, 0)        // the guest reads the counter
	expect(t, "edges delivered by a counter read", r.irq.rising(0), 1)
	r.pit.Update()
	expect(t, "no second delivery by Update", r.irq.rising(0), 1)
	// Reprogramming after a passed edge does not lose it.
	r.clock.setTick(40)
	wr(r.dev, 3, 0x34)
	expect(t, "edge delivered before reprogramming", r.irq.rising(0), 2)
}

func TestPITGate(t *testing.T) {
	r := newPITRig(t)
	// Mode 0 on channel 2: gate low suspends counting.
	wr(r.p61, 0, 0x01)
	r.program(2, 0xb0, 100, 0)
	r.clock.setTick(11) // 90
	wr(r.p61, 0, 0x00)
	r.clock.setTick(500)
	expect(t, "count with gate low", r.latched(2), uint16(90))
	wr(r.p61, 0, 0x01)
	r.clock.setTick(510)
	expect(t, "count after gate high", r.latched(2), uint16(80))

	// Mode 1 one-shot: OUT low from the trigger until terminal count.
	r = newPITRig(t)
	r.program(2, 0xb2, 5, 0)
	r.clock.setTick(10)
	expect(t, "mode 1 before trigger", r.out(2), true)
	wr(r.p61, 0, 0x01)
	wantTrace(t, "mode 1", r.trace(2, 11, 16), []uint16{5, 4, 3, 2, 1, 0}, "LLLLLH")
}

func TestPITPort61(t *testing.T) {
	r := newPITRig(t)
	wr(r.p61, 0, 0xff)
	r.clock.setTick(0)
	expect(t, "port 0x61 stored bits", rd(r.p61, 0)&0xcf, byte(0x0f))
	var toggles int
	prev := rd(r.p61, 0) & 0x10
	for k := int64(1); k <= 18*10; k++ {
		r.clock.setTick(k)
		if v := rd(r.p61, 0) & 0x10; v != prev {
			toggles++
			prev = v
		}
	}
	expect(t, "refresh toggles over 180 clocks", toggles, 10)
}

func TestPITRestoreValidates(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 100, 5)
	before := r.pit.Save()
	bad := before
	bad.Channels[0].Count = 0
	if err := r.pit.Restore(bad); err == nil {
		t.Error("Restore accepted a zero count on a counting channel")
	}
	bad = before
	bad.Channels[1].Access = 0
	if err := r.pit.Restore(bad); err == nil {
		t.Error("Restore accepted access mode 0")
	}
	bad = before
	bad.Channels[0].Gate = false
	if err := r.pit.Restore(bad); err == nil {
		t.Error("Restore accepted channel 0 gate low")
	}
	if r.pit.Save() != before {
		t.Error("a failed Restore changed the PIT")
	}

	// A restored copy behaves the same.
	r.clock.setTick(57)
	q := NewPIT(r.clock, &irqLog{})
	if err := q.Restore(before); err != nil {
		t.Fatal(err)
	}
	expect(t, "restored count", (&pitRig{clock: r.clock, dev: q.Device()}).latched(0), r.latched(0))
}
