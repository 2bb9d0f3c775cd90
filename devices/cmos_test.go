package devices

import (
	"testing"
	"time"
)

// Thursday 5 November 2026, 13:45:30 UTC.
var testEpoch = time.Date(2026, 11, 5, 13, 45, 30, 0, time.UTC)

func cmosRead(c *CMOS, idx byte) byte {
	wr(c, 0, idx)
	return rd(c, 1)
}

func cmosWrite(c *CMOS, idx, v byte) {
	wr(c, 0, idx)
	wr(c, 1, v)
}

func cmosTime(c *CMOS) [8]byte {
	var r [8]byte
	for i, idx := range []byte{0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32} {
		r[i] = cmosRead(c, idx)
	}
	return r
}

func TestCMOSTimeBCDAndBinary(t *testing.T) {
	clk := &fakeClock{}
	c := NewCMOS(clk, testEpoch)
	expect(t, "BCD 24h", cmosTime(c), [8]byte{0x30, 0x45, 0x13, 0x05, 0x05, 0x11, 0x26, 0x20})
	clk.t = int64(2500 * time.Millisecond)
	expect(t, "seconds after 2.5 s", cmosRead(c, 0x00), byte(0x32))

	cmosWrite(c, 0x0b, 0x06) // binary, 24h
	expect(t, "binary 24h", cmosTime(c), [8]byte{32, 45, 13, 5, 5, 11, 26, 20})
	cmosWrite(c, 0x0b, 0x00) // BCD, 12h
	expect(t, "12h hour (1 PM)", cmosRead(c, 0x04), byte(0x81))
	cmosWrite(c, 0x0b, 0x04) // binary, 12h
	expect(t, "binary 12h hour", cmosRead(c, 0x04), byte(0x81))

	// Crossing midnight at the end of the century: Friday 1 January 2100.
	c = NewCMOS(clk, time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC))
	clk.t = int64(time.Second)
	expect(t, "century rollover", cmosTime(c), [8]byte{0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x21})
}

func TestCMOSUpdateInProgress(t *testing.T) {
	clk := &fakeClock{}
	c := NewCMOS(clk, testEpoch)
	for _, tc := range []struct {
		ns  int64
		uip bool
	}{
		{0, false},
		{999_755_999, false},
		{999_756_000, true},
		{999_999_999, true},
		{1_000_000_000, false},
		{7_999_800_000, true},
	} {
		clk.t = tc.ns
		got := cmosRead(c, 0x0a)
		expect(t, "reg A divider bits", got&0x7f, byte(0x26))
		if (got&0x80 != 0) != tc.uip {
			t.Errorf("UIP at %d ns = %v, want %v", tc.ns, got&0x80 != 0, tc.uip)
		}
	}
}

func TestCMOSSetTime(t *testing.T) {
	clk := &fakeClock{}
	c := NewCMOS(clk, testEpoch)
	cmosWrite(c, 0x04, 0x08) // hour = 08 directly
	clk.t = int64(10 * time.Second)
	expect(t, "after setting the hour", cmosTime(c), [8]byte{0x40, 0x45, 0x08, 0x05, 0x05, 0x11, 0x26, 0x20})

	// The SET-bit protocol: freeze, write the date, release.
	cmosWrite(c, 0x0b, 0x82)
	clk.t = int64(20 * time.Second)
	expect(t, "frozen seconds", cmosRead(c, 0x00), byte(0x40))
	for idx, v := range map[byte]byte{0x00: 0x00, 0x02: 0x30, 0x04: 0x23, 0x07: 0x28, 0x08: 0x02, 0x09: 0x24, 0x32: 0x20} {
		cmosWrite(c, idx, v)
	}
	expect(t, "UIP off while SET", cmosRead(c, 0x0a)&0x80, byte(0))
	cmosWrite(c, 0x0b, 0x02)
	clk.t = int64(24*time.Hour + 30*time.Second)
	// 2024-02-28 23:30:00 + 24h00m10s = 2024-02-29 (leap day, Thursday) 23:30:10.
	expect(t, "after SET released", cmosTime(c), [8]byte{0x10, 0x30, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20})
	expect(t, "weekday write ignored", func() byte { cmosWrite(c, 0x06, 1); return cmosRead(c, 0x06) }(), byte(0x05))
}

func TestCMOSRegistersAndRAM(t *testing.T) {
	clk := &fakeClock{}
	c := NewCMOS(clk, testEpoch)
	expect(t, "reg B default", cmosRead(c, 0x0b), byte(0x02))
	expect(t, "reg C", cmosRead(c, 0x0c), byte(0))
	expect(t, "reg D", cmosRead(c, 0x0d), byte(0x80))
	reads := clk.reads
	wr(c, 0, 0xc0) // NMI-disable bit ignored: index 0x40
	wr(c, 1, 0xab)
	expect(t, "RAM byte", cmosRead(c, 0x40), byte(0xab))
	cmosWrite(c, 0x7f, 0x12)
	expect(t, "last RAM byte", cmosRead(c, 0x7f), byte(0x12))
	cmosWrite(c, 0x01, 0x59) // alarm seconds: plain RAM
	expect(t, "alarm register", cmosRead(c, 0x01), byte(0x59))
	expect(t, "clock reads for RAM accesses", clk.reads-reads, 0)
	expect(t, "index port read", rd(c, 0), byte(0xff))
	expect(t, "beyond the window", rd(c, 2), byte(0xff))
	cmosRead(c, 0x00)
	expect(t, "clock reads for a time register", clk.reads-reads, 1)
}

func TestCMOSRestoreValidates(t *testing.T) {
	clk := &fakeClock{}
	c := NewCMOS(clk, testEpoch)
	cmosWrite(c, 0x09, 0x30)
	before := c.Save()
	bad := c.Save()
	bad.RAM = bad.RAM[:64]
	if c.Restore(bad) == nil {
		t.Error("Restore accepted a short RAM")
	}
	bad = c.Save()
	bad.OffsetSeconds = 1 << 50
	if c.Restore(bad) == nil {
		t.Error("Restore accepted a huge offset")
	}
	expect(t, "offset unchanged", c.Save().OffsetSeconds, before.OffsetSeconds)
	d := NewCMOS(clk, testEpoch)
	if err := d.Restore(before); err != nil {
		t.Fatal(err)
	}
	expect(t, "restored year", cmosRead(d, 0x09), byte(0x30))
}
