package devices

import (
	"fmt"
	"time"
)

// CMOS register indexes.
const (
	cmosSeconds = 0x00
	cmosMinutes = 0x02
	cmosHours   = 0x04
	cmosWeekday = 0x06
	cmosDay     = 0x07
	cmosMonth   = 0x08
	cmosYear    = 0x09
	cmosRegA    = 0x0a
	cmosRegB    = 0x0b
	cmosRegC    = 0x0c
	cmosRegD    = 0x0d
	cmosCentury = 0x32

	cmosBSet    = 0x80 // updates inhibited: the guest is setting the clock
	cmosBUIE    = 0x10
	cmosBBinary = 0x04 // DM: binary, not BCD
	cmosB24h    = 0x02
	cmosAUIP    = 0x80
	cmosDValid  = 0x80 // VRT: battery good

	// uipWindow is how long before each second boundary reg A's UIP bit
	// is set.
	uipWindow = 244_000 // ns
)

// CMOS is the MC146818-style real-time clock with its 128 bytes of battery
// RAM, at ports 0x70 (index, offset 0) and 0x71 (data, offset 1).
//
// The clock reads epoch + Clock.Now() (+ whatever offset the guest has set),
// in UTC, so it is a deterministic function of the Clock's readings; the
// epoch is VM configuration and must be the same on primary and backup.
// Registers 0x00-0x09 and 0x32 (century) hold time and date in BCD or
// binary and in 12- or 24-hour form per register B. Register A's UIP bit
// is set during the last 244 µs of each second. Register C reads 0 and no
// interrupts are raised: alarm, periodic and update-ended interrupts
// (IRQ8) are not modelled; Linux's PC time code does not need them.
// Register D reads 0x80 (battery good). The alarm registers, register A's
// divider bits and all other bytes are plain RAM; the divider bits do not
// stop the clock. The index port's bit 7 (NMI disable) is ignored.
//
// Writing a time register sets the clock: the new time (whole seconds)
// becomes an offset from epoch + Clock.Now(), keeping the sub-second
// phase. With register B's SET bit on, the time registers are frozen and
// writable and the clock is set from them when SET is cleared. The
// weekday register is derived from the date; writes to it are ignored.
//
// The clock is read (Clock.Now()) on each read of a time register or of
// register A, on each write of a time register, and when SET changes,
// except while SET is on.
type CMOS struct {
	clock Clock
	epoch time.Time
	st    CMOSState
}

// CMOSState is the saved state of the CMOS/RTC. It is relative to the
// epoch and Clock of the CMOS it is restored into.
type CMOSState struct {
	Index uint8
	// RAM is the 128-byte register file. Time registers hold meaningful
	// values only while register B's SET bit is on.
	RAM []byte
	// OffsetSeconds is added to epoch + Clock.Now(): the guest's setting.
	OffsetSeconds int64
}

// cmosMaxOffset bounds OffsetSeconds: the registers cannot express a year
// beyond 25755 (binary century 255, year 255), about 8e11 s from now.
const cmosMaxOffset = 1e12

// NewCMOS returns an RTC reading epoch at Clock time 0, in BCD 24-hour
// mode, with register A at 0x26 (32.768 kHz, 1024 Hz) and zeroed RAM.
func NewCMOS(clock Clock, epoch time.Time) *CMOS {
	c := &CMOS{clock: clock, epoch: epoch, st: CMOSState{RAM: make([]byte, 128)}}
	c.st.RAM[cmosRegA] = 0x26
	c.st.RAM[cmosRegB] = cmosB24h
	return c
}

// Read implements Device.
func (c *CMOS) Read(offset uint64, data []byte) { readBytes(offset, data, c.readReg) }

// Write implements Device.
func (c *CMOS) Write(offset uint64, data []byte) { writeBytes(offset, data, c.writeReg) }

func isTimeReg(i uint8) bool {
	return i <= cmosYear && i != 0x01 && i != 0x03 && i != 0x05 || i == cmosCentury
}

func (c *CMOS) setMode() bool { return c.st.RAM[cmosRegB]&cmosBSet != 0 }

func (c *CMOS) readReg(off uint64) byte {
	switch off {
	case 0:
		return 0xff // the index port is write-only
	case 1:
	default:
		return 0xff
	}
	i := c.st.Index
	switch {
	case i == cmosRegA:
		a := c.st.RAM[cmosRegA] &^ cmosAUIP
		if !c.setMode() {
			if _, frac := c.now(); frac >= 1e9-uipWindow {
				a |= cmosAUIP
			}
		}
		return a
	case i == cmosRegC:
		return 0
	case i == cmosRegD:
		return cmosDValid
	case isTimeReg(i) && !c.setMode():
		var regs [128]byte
		sec, _ := c.now()
		c.encode(&regs, sec, c.st.RAM[cmosRegB])
		return regs[i]
	}
	return c.st.RAM[i]
}

func (c *CMOS) writeReg(off uint64, v byte) {
	switch off {
	case 0:
		c.st.Index = v & 0x7f
		return
	case 1:
	default:
		return
	}
	i := c.st.Index
	switch {
	case i == cmosRegA:
		c.st.RAM[i] = v &^ cmosAUIP
	case i == cmosRegB:
		old := c.st.RAM[cmosRegB]
		if v&cmosBSet != 0 {
			v &^= cmosBUIE // SET clears UIE
			if old&cmosBSet == 0 {
				// Freeze: the time registers take the current time.
				sec, _ := c.now()
				c.encode((*[128]byte)(c.st.RAM), sec, v)
			}
		} else if old&cmosBSet != 0 {
			c.setClock(c.decode((*[128]byte)(c.st.RAM), v))
		}
		c.st.RAM[cmosRegB] = v
	case i == cmosRegC || i == cmosRegD:
		// read-only
	case i == cmosWeekday:
		if c.setMode() {
			c.st.RAM[i] = v
		}
	case isTimeReg(i) && !c.setMode():
		var regs [128]byte
		sec, _ := c.now()
		b := c.st.RAM[cmosRegB]
		c.encode(&regs, sec, b)
		regs[i] = v
		c.setClock(c.decode(&regs, b))
	default:
		c.st.RAM[i] = v
	}
}

// now reads the clock once and returns the RTC time in whole Unix seconds
// and the nanoseconds into the current second.
func (c *CMOS) now() (sec int64, frac int64) {
	var ns int64
	if c.clock != nil {
		ns = c.clock.Now()
	}
	base := c.epoch.Add(time.Duration(ns))
	return base.Unix() + c.st.OffsetSeconds, int64(base.Nanosecond())
}

// setClock makes the RTC read sec (Unix seconds) now, keeping the
// sub-second phase of epoch + Clock.Now().
func (c *CMOS) setClock(sec int64) {
	cur, _ := c.now()
	off := c.st.OffsetSeconds + sec - cur
	c.st.OffsetSeconds = max(min(off, cmosMaxOffset), -cmosMaxOffset)
}

// encode writes the time sec into the time registers of regs, formatted
// per register B value b.
func (c *CMOS) encode(regs *[128]byte, sec int64, b byte) {
	t := time.Unix(sec, 0).UTC()
	enc := func(v int) byte {
		if b&cmosBBinary != 0 {
			return byte(v)
		}
		return toBCD(v)
	}
	year := t.Year()
	regs[cmosSeconds] = enc(t.Second())
	regs[cmosMinutes] = enc(t.Minute())
	if b&cmosB24h != 0 {
		regs[cmosHours] = enc(t.Hour())
	} else {
		h := t.Hour() % 12
		if h == 0 {
			h = 12
		}
		regs[cmosHours] = enc(h)
		if t.Hour() >= 12 {
			regs[cmosHours] |= 0x80
		}
	}
	regs[cmosWeekday] = enc(int(t.Weekday()) + 1)
	regs[cmosDay] = enc(t.Day())
	regs[cmosMonth] = enc(int(t.Month()))
	regs[cmosYear] = enc(((year % 100) + 100) % 100)
	regs[cmosCentury] = enc(year / 100)
}

// decode reads the time registers of regs, formatted per register B value
// b, as Unix seconds. Out-of-range fields roll over as time.Date does.
func (c *CMOS) decode(regs *[128]byte, b byte) int64 {
	dec := func(v byte) int {
		if b&cmosBBinary != 0 {
			return int(v)
		}
		return fromBCD(v)
	}
	var hour int
	if b&cmosB24h != 0 {
		hour = dec(regs[cmosHours])
	} else {
		hour = dec(regs[cmosHours]&0x7f) % 12
		if regs[cmosHours]&0x80 != 0 {
			hour += 12
		}
	}
	year := dec(regs[cmosCentury])*100 + dec(regs[cmosYear])
	t := time.Date(year, time.Month(dec(regs[cmosMonth])), dec(regs[cmosDay]),
		hour, dec(regs[cmosMinutes]), dec(regs[cmosSeconds]), 0, time.UTC)
	return t.Unix()
}

// Save returns a copy of the CMOS state.
func (c *CMOS) Save() CMOSState {
	s := c.st
	s.RAM = append([]byte(nil), c.st.RAM...)
	return s
}

// Restore replaces the CMOS state with s after checking it; on error the
// CMOS is unchanged. The CMOS must have the saved one's epoch, and its
// Clock must continue the saved VM's timeline.
func (c *CMOS) Restore(s CMOSState) error {
	switch {
	case len(s.RAM) != 128:
		return fmt.Errorf("devices: CMOS: RAM is %d bytes, want 128", len(s.RAM))
	case s.Index > 0x7f:
		return fmt.Errorf("devices: CMOS: index %#x out of range 0-0x7f", s.Index)
	case s.OffsetSeconds > cmosMaxOffset || s.OffsetSeconds < -cmosMaxOffset:
		return fmt.Errorf("devices: CMOS: clock offset %d s out of range", s.OffsetSeconds)
	case s.RAM[cmosRegA]&cmosAUIP != 0:
		return fmt.Errorf("devices: CMOS: register A %#x has UIP stored", s.RAM[cmosRegA])
	}
	c.st = s
	c.st.RAM = append([]byte(nil), s.RAM...)
	return nil
}
