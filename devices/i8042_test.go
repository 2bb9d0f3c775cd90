package devices

import "testing"

func TestI8042(t *testing.T) {
	resets := 0
	k := NewI8042(func() { resets++ })
	expect(t, "status: output buffer empty", rd(k, 4)&0x03, byte(0))
	wr(k, 4, 0xfe)
	expect(t, "resets after 0xfe", resets, 1)

	wr(k, 4, 0x20)
	expect(t, "status after 0x20", rd(k, 4)&0x09, byte(0x09))
	expect(t, "command byte", rd(k, 0), byte(0x45))
	expect(t, "status after reading", rd(k, 4)&0x01, byte(0))

	wr(k, 4, 0x60)
	wr(k, 0, 0x47)
	wr(k, 4, 0x20)
	expect(t, "written command byte", rd(k, 0), byte(0x47))

	wr(k, 4, 0xd1)
	wr(k, 0, 0xdf) // A20 on, reset line high: no reset
	expect(t, "resets after 0xd1 0xdf", resets, 1)
	wr(k, 4, 0xd0)
	expect(t, "output port", rd(k, 0), byte(0xdf))
	wr(k, 4, 0xd1)
	wr(k, 0, 0xde) // bit 0 clear: reset
	expect(t, "resets after 0xd1 0xde", resets, 2)

	wr(k, 4, 0xaa)
	expect(t, "self test", rd(k, 0), byte(0x55))
	wr(k, 4, 0xf0) // pulse lines 0-3: includes reset
	expect(t, "resets after 0xf0", resets, 3)
	wr(k, 4, 0xff) // pulse none
	expect(t, "resets after 0xff", resets, 3)

	// Keyboard data with nothing attached: dropped, buffer stays empty.
	wr(k, 0, 0xff)
	expect(t, "status after keyboard data", rd(k, 4)&0x01, byte(0))

	// Separate windows for buses that cannot overlap port 0x61.
	wr(k.CommandPort(), 0, 0xfe)
	expect(t, "resets through CommandPort", resets, 4)
	wr(k.CommandPort(), 0, 0xd2)
	wr(k.DataPort(), 0, 0x99)
	expect(t, "echo through DataPort", rd(k.DataPort(), 0), byte(0x99))
	expect(t, "offsets 1-3", rd(k, 2), byte(0xff))

	if NewI8042(nil).Restore(I8042State{PendingCommand: 0xaa, OutputPort: 1}) == nil {
		t.Error("Restore accepted pending command 0xaa")
	}
	nilReset := NewI8042(nil)
	wr(nilReset, 4, 0xfe) // no callback: no panic
}
