package devices

import (
	"fmt"
	"math"
)

// PITFrequency is the 8254's input clock in Hz.
const PITFrequency = 1193182

// refreshTicks is the period of port 0x61's refresh-request toggle (bit 4)
// in PIT clocks: on a PC, channel 1 counts 18 clocks (about 15.1 µs) per
// DRAM refresh request.
const refreshTicks = 18

// PIT is the 8254 programmable interval timer (ports 0x40-0x43) with the
// PC's port 0x61 (channel 2 gate, speaker data, channel 2 OUT, refresh
// toggle). Channel 0's OUT drives IRQ0; channel 1 is unused; channel 2's
// gate and OUT are on port 0x61.
//
// # Time
//
// The counters run off a free-running 1.193182 MHz clock whose ticks are
// counted from Clock time 0: tick(t) = floor(t * 1193182 / 1e9). A counter
// is a function of the tick at which its count was loaded and the current
// tick, so no state advances between accesses and nothing is timed on the
// host. Each of these reads Clock.Now() exactly once, at most once per
// guest access however wide:
//   - a read of a counter (port 0x40-0x42) that has nothing latched;
//   - a counter latch command or read-back command that latches something;
//   - the write that completes a count (and, in mode 0, the first byte of
//     a two-byte count, which stops the counter);
//   - a control word for a counter that is counting;
//   - a read of port 0x61, and a write of port 0x61 that changes channel
//     2's gate while a count is loaded;
//   - Update.
//
// NextDeadline reads no clock. Every time the clock is read, any channel 0
// OUT rising edge that has happened since the previous reading is
// delivered to IRQ0 first, so interrupts do not depend on when the VMM
// calls Update, only on the clock readings.
//
// # Modes
//
// A count written at tick w is loaded into the counting element on the
// next clock (tick w+1) and counts from there, as in the datasheet: in
// mode 0 an initial count N makes OUT go high N+1 clocks after the write.
// Until that first clock a read returns the counting element's previous
// value. Modes 0, 2, 3 and 4 follow the datasheet clock by clock
// (including mode 3's odd-count square wave and the reload of a new count
// at the end of the current period or half-period in modes 2 and 3);
// modes 1 and 5 are triggered by a rising edge of the gate, which only
// channel 2 has. A count of 1 in modes 2 and 3 (illegal on the real part)
// leaves OUT constant. BCD counting is supported.
type PIT struct {
	clock Clock
	irq   IRQLine
	st    PITState

	// Per-access cache of the clock reading (see tick).
	haveNow bool
	nowTick int64
}

// PITChannelState is one counter. Ticks are PIT clocks since Clock time 0.
type PITChannelState struct {
	Mode   uint8 // M2-M1-M0 as written in the control word (6 and 7 act as 2 and 3)
	BCD    bool
	Access uint8 // 1 = LSB only, 2 = MSB only, 3 = LSB then MSB

	CR       uint32 // last count written (count register), 1-65536 (1-10000 in BCD)
	Count    uint32 // count of the current counting cycle
	Armed    bool   // a complete count was written since the last control word
	Counting bool   // the counting element is running (or paused by the gate)
	LoadTick int64  // the count is loaded into the counting element at LoadTick+1
	Paused   bool   // gate low in mode 0 or 4: counting suspended
	// PausedPulses is the number of clocks since LoadTick at which a
	// paused counter stopped.
	PausedPulses int64
	// IdleCE and IdleOut are the counting element and OUT while the
	// counter is not counting, and before the first clock after a load.
	IdleCE  uint16
	IdleOut bool
	// Modes 2 and 3: a count written while counting takes effect at
	// PendingTick, the end of the current period (mode 3: half-period;
	// PendingLow says the new count starts with the low half).
	Pending     bool
	PendingTick int64
	PendingLow  bool
	// CRStale (modes 1 and 5): CR was written while counting and is used
	// from the next trigger on.
	CRStale   bool
	NullCount bool // a count was written but not yet loaded (read-back status bit 6)

	Gate bool // channel 0 and 1 gates are wired high

	WriteHigh     bool  // LSB/MSB access: the LSB was written, the MSB comes next
	WriteLow      uint8 // the LSB written so far
	ReadHigh      bool  // LSB/MSB access: the next unlatched read returns the MSB
	LatchBytes    uint8 // bytes of a latched count still to be read (0, 1 or 2)
	LatchValue    uint16
	StatusLatched bool
	Status        uint8
}

// PITState is the saved state of the PIT.
type PITState struct {
	Channels [3]PITChannelState
	Port61   uint8 // port 0x61 bits 0-3 as last written
	// IRQCheckedTick: channel 0 OUT rising edges at ticks up to this one
	// have been delivered to IRQ0.
	IRQCheckedTick int64
}

// NewPIT returns a PIT whose channels are unprogrammed (no count loaded,
// OUT high, no interrupts) and whose IRQ0 edges go to irq. Channel 2's gate
// is low until the guest sets port 0x61 bit 0.
func NewPIT(clock Clock, irq IRQLine) *PIT {
	p := &PIT{clock: clock, irq: irq}
	for i := range p.st.Channels {
		ch := &p.st.Channels[i]
		ch.Mode = 3
		ch.Access = 3
		ch.IdleOut = true
		ch.Gate = i != 2
	}
	return p
}

// Device returns the counter and control ports (0x40-0x43 at offsets 0-3).
func (p *PIT) Device() Device {
	return pitAccess{p, deviceFuncs{read: p.readPort, write: p.writePort}}
}

// Port61 returns the PC's system control port B (port 0x61, offset 0):
// bit 0 channel 2 gate, bit 1 speaker data, bits 2-3 stored, bit 4 refresh
// toggle (flips every 18 PIT clocks), bit 5 channel 2 OUT, bits 6-7 read 0.
func (p *PIT) Port61() Device {
	return pitAccess{p, deviceFuncs{read: p.read61, write: p.write61}}
}

// pitAccess starts a fresh clock cache for each guest access.
type pitAccess struct {
	p *PIT
	d deviceFuncs
}

func (a pitAccess) Read(offset uint64, data []byte) {
	a.p.haveNow = false
	a.d.Read(offset, data)
}

func (a pitAccess) Write(offset uint64, data []byte) {
	a.p.haveNow = false
	a.d.Write(offset, data)
}

// Update reads the clock once and, if channel 0's OUT rose since the
// previous reading, pulses IRQ0 (SetIRQ(0, true) then SetIRQ(0, false))
// once: several missed periods coalesce into one edge, as on hardware
// whose IRR bit is still set.
func (p *PIT) Update() {
	p.haveNow = false
	p.tick()
}

// NextDeadline returns the Clock time (ns) at which channel 0's OUT next
// rises, which is when the VMM should call Update; ok is false when no
// such edge is programmed (no count, mode 0 or 4 past its terminal count,
// modes 1 and 5, a count of 1 in modes 2 and 3). It reads no clock. The
// deadline is always later than the clock reading that last delivered
// IRQ0 edges.
func (p *PIT) NextDeadline() (ns int64, ok bool) {
	e, ok := p.st.Channels[0].nextEdge(p.st.IRQCheckedTick)
	if !ok {
		return 0, false
	}
	return ticksToNs(e), true
}

// tick returns the current tick, reading the clock once per access, and
// delivers the IRQ0 edge owed up to it.
func (p *PIT) tick() int64 {
	if p.haveNow {
		return p.nowTick
	}
	var now int64
	if p.clock != nil {
		now = p.clock.Now()
	}
	t := nsToTicks(now)
	p.haveNow, p.nowTick = true, t
	if t > p.st.IRQCheckedTick {
		e, ok := p.st.Channels[0].nextEdge(p.st.IRQCheckedTick)
		p.st.IRQCheckedTick = t
		if ok && e <= t && p.irq != nil {
			p.irq.SetIRQ(0, true)
			p.irq.SetIRQ(0, false)
		}
	}
	return t
}

func nsToTicks(ns int64) int64 {
	if ns <= 0 {
		return 0
	}
	return ns/1e9*PITFrequency + ns%1e9*PITFrequency/1e9
}

// ticksToNs returns the first Clock time whose tick is at least t.
func ticksToNs(t int64) int64 {
	if t <= 0 {
		return 0
	}
	const nsPerSec = 1_000_000_000
	a, b := t/PITFrequency, t%PITFrequency
	if a > math.MaxInt64/nsPerSec-1 {
		return math.MaxInt64
	}
	return a*nsPerSec + (b*nsPerSec+PITFrequency-1)/PITFrequency
}

func (p *PIT) readPort(off uint64) byte {
	if off > 2 {
		return 0xff // the control register is write-only
	}
	ch := &p.st.Channels[off]
	if ch.StatusLatched {
		ch.StatusLatched = false
		return ch.Status
	}
	if ch.LatchBytes > 0 {
		v := ch.LatchValue
		ch.LatchBytes--
		if ch.Access == 2 || ch.Access == 3 && ch.LatchBytes == 0 {
			return byte(v >> 8)
		}
		if ch.Access != 3 {
			ch.LatchBytes = 0
		}
		return byte(v)
	}
	v := ch.encode(ch.ce(p.tick()))
	switch ch.Access {
	case 1:
		return byte(v)
	case 2:
		return byte(v >> 8)
	}
	ch.ReadHigh = !ch.ReadHigh
	if ch.ReadHigh {
		return byte(v)
	}
	return byte(v >> 8)
}

func (p *PIT) writePort(off uint64, v byte) {
	switch {
	case off <= 2:
		p.writeCount(int(off), v)
	case off == 3:
		p.writeControl(v)
	}
}

func (p *PIT) writeControl(v byte) {
	sel := v >> 6
	if sel == 3 {
		p.readBack(v)
		return
	}
	ch := &p.st.Channels[sel]
	access := (v >> 4) & 3
	if access == 0 { // counter latch command
		if ch.LatchBytes == 0 {
			ch.latchCount(p.tick())
		}
		return
	}
	if ch.Counting {
		// Freeze the counting element (and deliver any IRQ0 edge it
		// already produced) before reprogramming.
		ch.IdleCE = ch.ce(p.tick())
	}
	ch.Mode = (v >> 1) & 7
	ch.BCD = v&1 != 0
	ch.Access = access
	ch.Armed = false
	ch.Counting = false
	ch.Paused = false
	ch.Pending = false
	ch.CRStale = false
	ch.NullCount = true
	ch.IdleOut = ch.mode() != 0
	ch.WriteHigh = false
	ch.ReadHigh = false
	ch.LatchBytes = 0
	ch.StatusLatched = false
}

func (p *PIT) readBack(v byte) {
	latchCount := v&0x20 == 0
	latchStatus := v&0x10 == 0
	for i := range p.st.Channels {
		if v&(2<<i) == 0 {
			continue
		}
		ch := &p.st.Channels[i]
		if latchCount && ch.LatchBytes == 0 {
			ch.latchCount(p.tick())
		}
		if latchStatus && !ch.StatusLatched {
			t := p.tick()
			ch.normalize(t)
			_, out := ch.state(t)
			s := ch.Access<<4 | ch.Mode<<1
			if out {
				s |= 0x80
			}
			if ch.NullCount {
				s |= 0x40
			}
			if ch.BCD {
				s |= 1
			}
			ch.Status, ch.StatusLatched = s, true
		}
	}
}

func (p *PIT) writeCount(i int, v byte) {
	ch := &p.st.Channels[i]
	var raw uint16
	switch ch.Access {
	case 1:
		raw = uint16(v)
	case 2:
		raw = uint16(v) << 8
	default:
		if !ch.WriteHigh {
			ch.WriteHigh, ch.WriteLow = true, v
			if ch.mode() == 0 && ch.Counting {
				// Mode 0: writing the first byte stops the count and
				// sets OUT low at once.
				t := p.tick()
				ch.IdleCE = ch.ce(t)
				ch.Counting, ch.Paused, ch.IdleOut = false, false, false
			}
			return
		}
		ch.WriteHigh = false
		raw = uint16(v)<<8 | uint16(ch.WriteLow)
	}
	p.loadCount(i, ch.decode(raw), p.tick())
}

// loadCount handles a complete count n written at tick t.
func (p *PIT) loadCount(i int, n uint32, t int64) {
	ch := &p.st.Channels[i]
	ch.normalize(t)
	ce, out := ch.state(t)
	ch.CR = n
	ch.NullCount = true
	switch ch.mode() {
	case 0, 4:
		ch.Count = n
		ch.IdleCE = ce
		ch.IdleOut = out && ch.mode() == 4
		ch.Counting = true
		ch.LoadTick = t
		ch.Paused = !ch.Gate
		ch.PausedPulses = 1 // with the gate low the count loads, then waits
	case 1, 5:
		if ch.Counting {
			ch.CRStale = true
		} else {
			ch.Count = n
		}
	case 2, 3:
		switch {
		case !ch.Counting:
			ch.Count = n
			if ch.Gate {
				ch.Counting, ch.LoadTick = true, t
				ch.IdleCE, ch.IdleOut = ce, true
			}
		case t-ch.LoadTick < 1:
			ch.Count = n // not loaded yet: the new count is loaded instead
		default:
			// Loaded at the end of the current period (mode 3: half).
			ch.Pending = true
			q := (t - ch.LoadTick - 1) % int64(ch.Count)
			h := (int64(ch.Count) + 1) / 2
			if ch.mode() == 3 && q < h {
				ch.PendingTick, ch.PendingLow = t+h-q, true
			} else {
				ch.PendingTick, ch.PendingLow = t+int64(ch.Count)-q, false
			}
		}
	}
	ch.Armed = true
}

func (p *PIT) read61(off uint64) byte {
	if off != 0 {
		return 0xff
	}
	t := p.tick()
	ch := &p.st.Channels[2]
	ch.normalize(t)
	_, out := ch.state(t)
	v := p.st.Port61 & 0x0f
	if (t/refreshTicks)&1 != 0 {
		v |= 0x10
	}
	if out {
		v |= 0x20
	}
	return v
}

func (p *PIT) write61(off uint64, v byte) {
	if off != 0 {
		return
	}
	p.st.Port61 = v & 0x0f
	ch := &p.st.Channels[2]
	gate := v&1 != 0
	if gate == ch.Gate {
		return
	}
	ch.Gate = gate
	if !ch.Armed {
		return
	}
	t := p.tick()
	ch.normalize(t)
	switch ch.mode() {
	case 0, 4:
		if !gate && ch.Counting && !ch.Paused {
			ch.Paused, ch.PausedPulses = true, max(t-ch.LoadTick, 0)
		} else if gate && ch.Counting && ch.Paused {
			ch.Paused, ch.LoadTick = false, t-ch.PausedPulses
		}
	case 2, 3:
		if !gate {
			// OUT goes high at once and counting stops; a pending count
			// is used at the next start.
			ch.IdleCE, _ = ch.state(t)
			ch.IdleOut = true
			ch.Counting, ch.Pending = false, false
			ch.Count = ch.CR
		} else {
			ch.Counting, ch.LoadTick = true, t
		}
	case 1, 5:
		if gate { // trigger: (re)load the count on the next clock
			ch.IdleCE, ch.IdleOut = ch.state(t)
			ch.Count, ch.CRStale = ch.CR, false
			ch.Counting, ch.LoadTick = true, t
		}
	}
}

// mode returns the effective mode 0-5.
func (ch *PITChannelState) mode() uint8 {
	if ch.Mode >= 6 {
		return ch.Mode - 4
	}
	return ch.Mode
}

func (ch *PITChannelState) modulus() int64 {
	if ch.BCD {
		return 10000
	}
	return 65536
}

// decode turns a written count into 1-65536 (1-10000 in BCD); 0 is the
// maximum count.
func (ch *PITChannelState) decode(raw uint16) uint32 {
	n := uint32(raw)
	if ch.BCD {
		n = uint32(fromBCD(byte(raw>>8))*100+fromBCD(byte(raw))) % 10000
	}
	if n == 0 {
		return uint32(ch.modulus())
	}
	return n
}

func (ch *PITChannelState) encode(ce uint16) uint16 {
	if ch.BCD {
		v := int(ce) % 10000
		return uint16(toBCD(v/100))<<8 | uint16(toBCD(v%100))
	}
	return ce
}

func (ch *PITChannelState) latchCount(t int64) {
	ch.LatchValue = ch.encode(ch.ce(t))
	if ch.Access == 3 {
		ch.LatchBytes = 2
	} else {
		ch.LatchBytes = 1
	}
}

// ce returns the counting element at tick t.
func (ch *PITChannelState) ce(t int64) uint16 {
	ch.normalize(t)
	v, _ := ch.state(t)
	return v
}

// normalize applies a pending mode 2/3 count once its time has come, and
// clears the null-count flag once the count register has been loaded.
func (ch *PITChannelState) normalize(t int64) {
	if ch.Pending && t >= ch.PendingTick {
		ch.LoadTick, ch.Count = ch.pendingLoadTick(), ch.CR
		ch.Pending = false
	}
	if ch.NullCount && ch.Counting && !ch.CRStale && !ch.Pending &&
		(ch.Paused && ch.PausedPulses >= 1 || !ch.Paused && t-ch.LoadTick >= 1) {
		ch.NullCount = false
	}
}

// pendingLoadTick is the LoadTick that makes the pending count's cycle
// start at PendingTick in the right half-period.
func (ch *PITChannelState) pendingLoadTick() int64 {
	if ch.PendingLow {
		return ch.PendingTick - 1 - (int64(ch.CR)+1)/2
	}
	return ch.PendingTick - 1
}

// state returns the counting element and OUT at tick t. Call normalize(t)
// first.
func (ch *PITChannelState) state(t int64) (uint16, bool) {
	if !ch.Counting {
		return ch.IdleCE, ch.IdleOut
	}
	p := t - ch.LoadTick
	if ch.Paused {
		p = ch.PausedPulses
	}
	if p <= 0 {
		return ch.IdleCE, ch.IdleOut
	}
	n, m := int64(ch.Count), ch.modulus()
	wrap := func(v int64) uint16 {
		v %= m
		if v < 0 {
			v += m
		}
		return uint16(v)
	}
	switch ch.mode() {
	case 0, 1:
		return wrap(n - (p - 1)), p >= n+1
	case 4, 5:
		return wrap(n - (p - 1)), p != n+1
	case 2:
		q := (p - 1) % n
		return wrap(n - q), q != n-1
	default: // 3
		q := (p - 1) % n
		h := (n + 1) / 2 // clocks with OUT high
		if q < h {
			if n%2 == 1 && q >= 1 {
				return wrap(n + 1 - 2*q), true
			}
			return wrap(n - 2*q), true
		}
		if n%2 == 1 && q > h {
			return wrap(n - 1 - 2*(q-h)), false
		}
		return wrap(n - 2*(q-h)), false
	}
}

// nextEdge returns the first tick after t at which OUT rises.
func (ch *PITChannelState) nextEdge(t int64) (int64, bool) {
	if !ch.Counting || ch.Paused {
		return 0, false
	}
	if ch.Pending {
		if e, ok := risingEdge(ch.mode(), ch.Count, ch.LoadTick, t); ok && e <= ch.PendingTick {
			return e, true
		}
		return risingEdge(ch.mode(), ch.CR, ch.pendingLoadTick(), max(t, ch.PendingTick))
	}
	return risingEdge(ch.mode(), ch.Count, ch.LoadTick, t)
}

// risingEdge returns the first tick after t at which OUT rises for a
// count n loaded at tick l.
func risingEdge(mode uint8, n uint32, l, t int64) (int64, bool) {
	N := int64(n)
	var e int64
	switch mode {
	case 0, 1:
		e = l + N + 1
	case 4, 5:
		e = l + N + 2
	default: // 2, 3: OUT rises each time the count reloads
		if N < 2 {
			return 0, false
		}
		if first := l + N + 1; t < first {
			return first, true
		}
		return l + ((t-l-1)/N+1)*N + 1, true
	}
	if e > t {
		return e, true
	}
	return 0, false
}

// Save returns a copy of the PIT's state.
func (p *PIT) Save() PITState { return p.st }

// Restore replaces the PIT's state with s after checking it; on error the
// PIT is unchanged. The Clock must continue the saved VM's timeline.
//
// Restore accepts exactly the states a PIT can reach (FuzzDevices restores
// them at random points) and refuses any other: a state no guest could have
// produced could trap later on ordinary guest I/O, e.g. an armed channel
// 2 whose count is 0 divides by zero once the guest raises its gate and
// reads it (FuzzPITRestore). The invariants:
//
//   - Mode 0-7, Access 1-3, port 0x61 bits 0-3, the gates of channels 0
//     and 1 high and channel 2's equal to port 0x61 bit 0;
//   - a channel counts only once a count was written (Counting ⇒ Armed),
//     and an armed channel holds counts CR and Count of 1 to the modulus
//     (65536, or 10000 in BCD), whatever it does next;
//   - Pending (a reload at the end of the period) only in modes 2 and 3
//     while counting; CRStale only in modes 1 and 5 while counting;
//     Paused exactly when counting in mode 0 or 4 with the gate low;
//   - a latched count of at most 2 bytes in LSB-then-MSB access and 1
//     otherwise; WriteHigh and ReadHigh only in LSB-then-MSB access;
//   - ticks within ±2^60 (PausedPulses and IRQCheckedTick not negative),
//     far beyond any VM's run and far from overflow.
func (p *PIT) Restore(s PITState) error {
	const limit = 1 << 60
	if s.Port61&^0x0f != 0 {
		return fmt.Errorf("devices: PIT port 0x61 state %#x has bits above 3", s.Port61)
	}
	if s.IRQCheckedTick < 0 || s.IRQCheckedTick > limit {
		return fmt.Errorf("devices: PIT IRQ checked tick %d out of range", s.IRQCheckedTick)
	}
	for i := range s.Channels {
		ch := &s.Channels[i]
		bad := func(what string, v any) error {
			return fmt.Errorf("devices: PIT channel %d: %s %v out of range", i, what, v)
		}
		inconsistent := func(what string) error {
			return fmt.Errorf("devices: PIT channel %d (mode %d, access %d): %s", i, ch.Mode, ch.Access, what)
		}
		m := uint32(ch.modulus())
		mode := ch.mode()
		switch {
		case ch.Mode > 7:
			return bad("mode", ch.Mode)
		case ch.Access < 1 || ch.Access > 3:
			return bad("access mode", ch.Access)
		case ch.Armed && (ch.CR < 1 || ch.CR > m):
			return bad("count register", ch.CR)
		case ch.Armed && (ch.Count < 1 || ch.Count > m):
			return bad("count", ch.Count)
		case ch.Counting && !ch.Armed:
			return inconsistent("counting without a count written")
		case ch.Pending && (!ch.Counting || mode != 2 && mode != 3):
			return inconsistent("a count pending at the end of the period while not counting in mode 2 or 3")
		case ch.CRStale && (!ch.Counting || mode != 1 && mode != 5):
			return inconsistent("a count waiting for the next trigger while not counting in mode 1 or 5")
		case ch.Paused != (ch.Counting && (mode == 0 || mode == 4) && !ch.Gate):
			return inconsistent(fmt.Sprintf("paused %v with counting %v and gate %v", ch.Paused, ch.Counting, ch.Gate))
		case ch.LoadTick < -limit || ch.LoadTick > limit:
			return bad("load tick", ch.LoadTick)
		case ch.PendingTick < -limit || ch.PendingTick > limit:
			return bad("pending tick", ch.PendingTick)
		case ch.PausedPulses < 0 || ch.PausedPulses > limit:
			return bad("paused clocks", ch.PausedPulses)
		case ch.LatchBytes > 2 || ch.LatchBytes > 1 && ch.Access != 3:
			return bad("latched bytes", ch.LatchBytes)
		case (ch.WriteHigh || ch.ReadHigh) && ch.Access != 3:
			return inconsistent("the second byte of a count to write or read outside LSB-then-MSB access")
		case i != 2 && !ch.Gate:
			return bad("gate (wired high)", ch.Gate)
		case i == 2 && ch.Gate != (s.Port61&1 != 0):
			return bad("gate (differs from port 0x61)", ch.Gate)
		}
	}
	p.st = s
	return nil
}
