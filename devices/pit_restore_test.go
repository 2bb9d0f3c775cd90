package devices

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// stateBytes decodes fuzz input into values, favouring the edges (0, 1,
// the moduli, the Restore limits) over uniform noise.
type stateBytes struct {
	in  []byte
	pos int
}

func (s *stateBytes) byte() byte {
	if s.pos >= len(s.in) {
		return 0
	}
	s.pos++
	return s.in[s.pos-1]
}

func (s *stateBytes) bool() bool { return s.byte()&1 != 0 }

func (s *stateBytes) u32() uint32 {
	switch b := s.byte(); b % 8 {
	case 0:
		return uint32(b >> 3) // 0-31
	case 1:
		return 65536 - uint32(b>>3)%3 + 1 // 65535-65537
	case 2:
		return 10000 - uint32(b>>3)%3 + 1 // 9999-10001
	case 3:
		return 1<<32 - 1
	default:
		var v [4]byte
		for i := range v {
			v[i] = s.byte()
		}
		return binary.LittleEndian.Uint32(v[:])
	}
}

func (s *stateBytes) i64() int64 {
	switch b := s.byte(); b % 8 {
	case 0:
		return int64(b >> 3)
	case 1:
		return -int64(b >> 3)
	case 2:
		return 1<<60 - int64(b>>3)
	case 3:
		return -1<<60 + int64(b>>3)
	case 4:
		return 1<<63 - 1 - int64(b>>3)
	default:
		var v [8]byte
		for i := range v {
			v[i] = s.byte()
		}
		return int64(binary.LittleEndian.Uint64(v[:]))
	}
}

func (s *stateBytes) pitState() PITState {
	var st PITState
	for i := range st.Channels {
		ch := &st.Channels[i]
		ch.Mode, ch.BCD, ch.Access = s.byte()%9, s.bool(), s.byte()%5
		ch.CR, ch.Count = s.u32(), s.u32()
		ch.Armed, ch.Counting = s.bool(), s.bool()
		ch.LoadTick = s.i64()
		ch.Paused, ch.PausedPulses = s.bool(), s.i64()
		ch.IdleCE, ch.IdleOut = uint16(s.u32()), s.bool()
		ch.Pending, ch.PendingTick, ch.PendingLow = s.bool(), s.i64(), s.bool()
		ch.CRStale, ch.NullCount, ch.Gate = s.bool(), s.bool(), s.bool()
		ch.WriteHigh, ch.WriteLow, ch.ReadHigh = s.bool(), s.byte(), s.bool()
		ch.LatchBytes, ch.LatchValue = s.byte()%4, uint16(s.u32())
		ch.StatusLatched, ch.Status = s.bool(), s.byte()
	}
	st.Port61 = s.byte() % 0x12
	st.IRQCheckedTick = s.i64()
	return st
}

// exercise drives a PIT with the guest accesses and VMM calls the rest of
// the input encodes, as after a Restore.
func exercise(p *PIT, c *fakeClock, s *stateBytes) {
	dev, p61 := p.Device(), p.Port61()
	for n := 0; n < 200 && s.pos < len(s.in); n++ {
		switch op := s.byte(); op % 8 {
		case 0, 1:
			wr(dev, uint64(s.byte()%4), s.byte())
		case 2, 3:
			rd(dev, uint64(s.byte()%4))
		case 4:
			wr(p61, 0, s.byte())
		case 5:
			rd(p61, 0)
		case 6:
			p.Update()
			p.NextDeadline()
		default:
			if adv := int64(s.byte()) << (s.byte() % 40); c.t+adv < 1<<62 {
				c.t += adv
			}
		}
	}
}

// FuzzPITRestore restores arbitrary states: Restore must either refuse a
// state or accept one that no guest access or VMM call can then crash
// (division by zero, out-of-range index) and that Save returns unchanged.
// FuzzDevices checks the converse: every reachable state is accepted.
func FuzzPITRestore(f *testing.F) {
	f.Add([]byte{})
	// Channel 2, mode 2, a count loaded (Armed) but its counting element
	// never loaded (Count 0), gate low; the guest then raises the gate and
	// reads the counter: a division by zero before Restore checked Count
	// on every armed channel.
	f.Add(badGateState())
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &stateBytes{in: in}
		st := s.pitState()
		c := &fakeClock{t: s.i64() & (1<<50 - 1)}
		p := NewPIT(c, &irqLog{})
		if err := p.Restore(st); err != nil {
			if !strings.HasPrefix(err.Error(), "devices: PIT") {
				t.Fatalf("error %q", err)
			}
			return
		}
		if p.Save() != st {
			t.Fatal("Save after Restore differs")
		}
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("restored state %+v: %v", st, r)
			}
		}()
		exercise(p, c, s)
	})
}

// badGateState encodes, for stateBytes, the state described in
// FuzzPITRestore and the accesses that trap on it.
func badGateState() []byte {
	var b []byte
	ch := func(mode, access byte, cr, count byte, armed, counting, gate bool) {
		bit := func(v bool) byte {
			if v {
				return 1
			}
			return 0
		}
		b = append(b, mode, 0, access, cr<<3, count<<3, bit(armed), bit(counting))
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)               // LoadTick … PendingLow
		b = append(b, 0, 1, bit(gate), 0, 0, 0, 0, 0, 0, 0) // CRStale … Status
	}
	ch(3, 3, 0, 0, false, false, true)
	ch(3, 3, 0, 0, false, false, true)
	ch(2, 3, 5, 0, true, false, false)
	b = append(b, 0, 0, 0)                       // Port61, IRQCheckedTick, the clock
	b = append(b, 4, 1, 7, 1, 20, 2, 2, 2, 2, 6) // gate high, 1 ms, read channel 2, Update
	return b
}

// The state FuzzPITRestore's seed builds, by hand: Restore refuses it.
func TestPITRestoreRefusesUnloadedCount(t *testing.T) {
	s := &stateBytes{in: badGateState()}
	st := s.pitState()
	if ch := st.Channels[2]; ch.Mode != 2 || !ch.Armed || ch.Counting || ch.Count != 0 || ch.CR != 5 || ch.Gate {
		t.Fatalf("seed decodes to %+v", ch)
	}
	c := &fakeClock{t: s.i64()}
	p := NewPIT(c, &irqLog{})
	err := p.Restore(st)
	if err == nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("the guest's accesses panicked: %v", r)
				}
			}()
			exercise(p, c, s)
		}()
		t.Fatalf("Restore accepted channel 2 armed with count 0 (%v)", err)
	}
	t.Log(err)
}

// Each field Restore checks, on its own, on top of a reachable state.
func TestPITRestoreRefusesEachBadField(t *testing.T) {
	r := newPITRig(t)
	r.program(0, 0x34, 100, 5)  // channel 0 mode 2, counting
	r.program(2, 0xb6, 1000, 6) // channel 2 mode 3, gate low: armed, not counting
	wr(r.dev, 3, 0x50)          // channel 1: LSB only, mode 0, no count
	good := r.pit.Save()
	if err := NewPIT(r.clock, nil).Restore(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*PITState)
	}{
		{"mode 8", func(s *PITState) { s.Channels[0].Mode = 8 }},
		{"access 0", func(s *PITState) { s.Channels[1].Access = 0 }},
		{"count 0 while counting", func(s *PITState) { s.Channels[0].Count = 0 }},
		{"count past 65536", func(s *PITState) { s.Channels[0].Count = 65537 }},
		{"count register 0 when armed", func(s *PITState) { s.Channels[0].CR = 0 }},
		{"BCD count past 10000", func(s *PITState) { s.Channels[0].BCD = true; s.Channels[0].Count = 10001 }},
		{"armed, count never loaded", func(s *PITState) { s.Channels[2].Count = 0 }},
		{"counting without a count written", func(s *PITState) { s.Channels[1].Counting = true; s.Channels[1].Count = 5 }},
		{"pending while not counting", func(s *PITState) { s.Channels[2].Pending = true }},
		{"pending in mode 0", func(s *PITState) {
			s.Channels[0].Mode = 0
			s.Channels[0].Pending = true
		}},
		{"paused with the gate high", func(s *PITState) { s.Channels[0].Paused = true }},
		{"stale count outside modes 1 and 5", func(s *PITState) { s.Channels[0].CRStale = true }},
		{"two latched bytes in LSB-only access", func(s *PITState) { s.Channels[1].LatchBytes = 2 }},
		{"three latched bytes", func(s *PITState) { s.Channels[0].LatchBytes = 3 }},
		{"MSB expected in LSB-only access", func(s *PITState) { s.Channels[1].WriteHigh = true }},
		{"MSB to read in LSB-only access", func(s *PITState) { s.Channels[1].ReadHigh = true }},
		{"load tick past 2^60", func(s *PITState) { s.Channels[0].LoadTick = 1<<60 + 1 }},
		{"paused clocks negative", func(s *PITState) { s.Channels[0].PausedPulses = -1 }},
		{"channel 0 gate low", func(s *PITState) { s.Channels[0].Gate = false }},
		{"channel 2 gate unlike port 0x61", func(s *PITState) { s.Channels[2].Gate = true }},
		{"port 0x61 bit 4", func(s *PITState) { s.Port61 = 0x10 }},
		{"IRQ tick negative", func(s *PITState) { s.IRQCheckedTick = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := good
			tc.edit(&bad)
			p := NewPIT(r.clock, nil)
			before := p.Save()
			if err := p.Restore(bad); err == nil {
				t.Errorf("Restore accepted %+v", bad)
			} else if p.Save() != before {
				t.Error("a refused Restore changed the PIT")
			}
		})
	}
}

// The converse, for the PIT alone and more densely than FuzzDevices:
// random guest programming (control words of every mode and access, counts,
// latches, read-backs, channel 2's gate) with the clock moving; after every
// step the state is restored into a fresh PIT, which must accept it.
func TestPITRestoreAcceptsReachableStates(t *testing.T) {
	x := uint64(88172645463325252)
	rnd := func(n int) int {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return int(x % uint64(n))
	}
	kinds := map[string]int{}
	for run := 0; run < 200; run++ {
		c := &fakeClock{}
		p := NewPIT(c, &irqLog{})
		dev, p61 := p.Device(), p.Port61()
		for step := 0; step < 500; step++ {
			switch rnd(10) {
			case 0, 1:
				wr(dev, 3, byte(rnd(256)))
			case 2, 3:
				wr(dev, uint64(rnd(3)), byte([]int{0, 1, 2, 3, 100, 255}[rnd(6)]))
			case 4:
				rd(dev, uint64(rnd(3)))
			case 5:
				wr(p61, 0, byte(rnd(16)))
			case 6:
				rd(p61, 0)
			case 7:
				p.Update()
			default:
				c.t += int64(rnd(4000))
			}
			st := p.Save()
			for _, ch := range st.Channels {
				for k, on := range map[string]bool{"paused": ch.Paused, "pending": ch.Pending, "stale": ch.CRStale, "latched": ch.LatchBytes > 0} {
					if on {
						kinds[k]++
					}
				}
			}
			if err := NewPIT(c, nil).Restore(st); err != nil {
				t.Fatalf("run %d step %d: a reachable state refused: %v\n%+v", run, step, err, st)
			}
		}
	}
	for _, k := range []string{"paused", "pending", "stale", "latched"} {
		if kinds[k] == 0 {
			t.Errorf("the workload never reached a %s channel", k)
		}
	}
	t.Log(kinds)
}
