package devices

import "testing"

type picRig struct {
	pic           *PIC
	master, slave Device
}

func newPICRig() *picRig {
	p := NewPIC()
	return &picRig{pic: p, master: p.Master(), slave: p.Slave()}
}

// initLinux programs the pair as Linux's init_8259A does.
func (r *picRig) initLinux(masterBase, slaveBase byte) {
	wr(r.master, 1, 0xff)
	wr(r.master, 0, 0x11)       // ICW1: edge, cascade, ICW4 needed
	wr(r.master, 1, masterBase) // ICW2
	wr(r.master, 1, 0x04)       // ICW3: slave on IR2
	wr(r.master, 1, 0x01)       // ICW4: 8086 mode
	wr(r.slave, 0, 0x11)
	wr(r.slave, 1, slaveBase)
	wr(r.slave, 1, 0x02) // ICW3: slave ID 2
	wr(r.slave, 1, 0x01)
	wr(r.master, 1, 0x00) // unmask everything
	wr(r.slave, 1, 0x00)
}

func (r *picRig) pulse(irq int) {
	r.pic.SetIRQ(irq, true)
	r.pic.SetIRQ(irq, false)
}

func readISR(d Device) byte {
	wr(d, 0, 0x0b)
	v := rd(d, 0)
	wr(d, 0, 0x0a)
	return v
}

func readIRR(d Device) byte {
	wr(d, 0, 0x0a)
	return rd(d, 0)
}

func TestPICLinuxInit(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	expect(t, "pending with no request", r.pic.Pending(), false)
	r.pulse(0)
	expect(t, "pending after IRQ0", r.pic.Pending(), true)
	expect(t, "IRQ0 vector", r.pic.Acknowledge(), uint8(0x30))
	expect(t, "master ISR", readISR(r.master), byte(0x01))
	expect(t, "master IRR after INTA", readIRR(r.master), byte(0))
	// IRQ0 again while in service: latched, not delivered.
	r.pulse(0)
	expect(t, "IRR while in service", readIRR(r.master), byte(0x01))
	expect(t, "pending while in service", r.pic.Pending(), false)
	wr(r.master, 0, 0x20) // non-specific EOI
	expect(t, "pending after EOI", r.pic.Pending(), true)
	expect(t, "IRQ0 vector again", r.pic.Acknowledge(), uint8(0x30))

	// Linux's probe: IMR reads back.
	wr(r.master, 1, 0xfb)
	expect(t, "IMR", rd(r.master, 1), byte(0xfb))
}

func TestPICBIOSVectorsAndCascade(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x08, 0x70)
	r.pulse(8) // RTC
	expect(t, "pending via cascade", r.pic.Pending(), true)
	expect(t, "IRQ8 vector", r.pic.Acknowledge(), uint8(0x70))
	expect(t, "master ISR (cascade)", readISR(r.master), byte(0x04))
	expect(t, "slave ISR", readISR(r.slave), byte(0x01))
	r.pulse(12)
	expect(t, "IRQ12 blocked behind IRQ8 in service", r.pic.Pending(), false)
	wr(r.slave, 0, 0x20)
	expect(t, "IRQ12 still blocked by master ISR2", r.pic.Pending(), false)
	wr(r.master, 0, 0x20)
	expect(t, "IRQ12 vector", r.pic.Acknowledge(), uint8(0x74))
	r.pulse(1)
	expect(t, "IRQ1 nests above the cascade", r.pic.Acknowledge(), uint8(0x09))
	expect(t, "master ISR", readISR(r.master), byte(0x06))
}

func TestPICMasks(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	wr(r.master, 1, 0x08) // mask IRQ3
	r.pulse(3)
	expect(t, "pending with IRQ3 masked", r.pic.Pending(), false)
	expect(t, "IRR holds masked request", readIRR(r.master), byte(0x08))
	wr(r.slave, 1, 0x10) // mask IRQ12
	r.pulse(12)
	expect(t, "pending with IRQ12 masked", r.pic.Pending(), false)
	wr(r.master, 1, 0x00)
	expect(t, "IRQ3 after unmask", r.pic.Acknowledge(), uint8(0x33))
	wr(r.slave, 1, 0x00)
	wr(r.master, 0, 0x20)
	expect(t, "IRQ12 after unmask", r.pic.Acknowledge(), uint8(0x3c))
}

func TestPICPriorityAndEOI(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	r.pulse(3)
	r.pulse(1)
	expect(t, "highest priority first", r.pic.Acknowledge(), uint8(0x31))
	expect(t, "IRQ3 waits for IRQ1's EOI", r.pic.Pending(), false)
	r.pulse(0)
	expect(t, "IRQ0 nests above IRQ1", r.pic.Acknowledge(), uint8(0x30))
	expect(t, "ISR", readISR(r.master), byte(0x03))
	wr(r.master, 0, 0x61) // specific EOI for IRQ1
	expect(t, "ISR after specific EOI 1", readISR(r.master), byte(0x01))
	expect(t, "IRQ3 still below IRQ0", r.pic.Pending(), false)
	wr(r.master, 0, 0x20) // non-specific EOI clears IRQ0
	expect(t, "ISR after non-specific EOI", readISR(r.master), byte(0x00))
	expect(t, "IRQ3 now", r.pic.Acknowledge(), uint8(0x33))
}

func TestPICRotation(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	r.pulse(2 + 1) // IRQ3
	r.pulse(5)
	expect(t, "IRQ3 first", r.pic.Acknowledge(), uint8(0x33))
	wr(r.master, 0, 0xa0) // rotate on non-specific EOI: IRQ3 becomes lowest
	r.pulse(3)
	expect(t, "IRQ5 now outranks IRQ3", r.pic.Acknowledge(), uint8(0x35))
	wr(r.master, 0, 0xc4) // set priority: IRQ4 lowest, IRQ5 highest
	r.pulse(0)
	expect(t, "IRQ5 in service blocks IRQ0 (lower now)", r.pic.Pending(), false)
}

func TestPICAutoEOI(t *testing.T) {
	r := newPICRig()
	wr(r.master, 0, 0x13) // single, ICW4
	wr(r.master, 1, 0x20)
	wr(r.master, 1, 0x03) // AEOI
	r.pulse(4)
	expect(t, "AEOI vector", r.pic.Acknowledge(), uint8(0x24))
	expect(t, "ISR under AEOI", readISR(r.master), byte(0))
}

func TestPICSpurious(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	// Level-triggered IRQ5 whose line falls before INTA: spurious IRQ7.
	wr(r.pic.ELCR(), 0, 0x20)
	r.pic.SetIRQ(5, true)
	expect(t, "level request pending", r.pic.Pending(), true)
	r.pic.SetIRQ(5, false)
	expect(t, "spurious master vector", r.pic.Acknowledge(), uint8(0x37))
	expect(t, "no ISR bit for a spurious IRQ7", readISR(r.master), byte(0))

	// Same on the slave (IRQ10): spurious IRQ15, master IR2 in service.
	wr(r.pic.ELCR(), 1, 0x04)
	expect(t, "ELCR readback", rd(r.pic.ELCR(), 1), byte(0x04))
	r.pic.SetIRQ(10, true)
	expect(t, "pending", r.pic.Pending(), true)
	// White-box: the master saw the slave's INTR, then the line fell
	// before the slave's part of the INTA cycle.
	r.pic.SetIRQ(10, false)
	r.pic.st.Master.IRR |= 0x04
	expect(t, "spurious slave vector", r.pic.Acknowledge(), uint8(0x3f))
	expect(t, "slave ISR", readISR(r.slave), byte(0))

	// Acknowledge without a request.
	wr(r.master, 0, 0x20)
	expect(t, "acknowledge with nothing pending", r.pic.Acknowledge(), uint8(0x37))
}

func TestPICEdgeAndLevel(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	r.pic.SetIRQ(4, true)
	r.pic.SetIRQ(4, true) // no new edge
	r.pic.Acknowledge()
	wr(r.master, 0, 0x20)
	expect(t, "edge line held high: no second request", r.pic.Pending(), false)
	r.pic.SetIRQ(4, false)
	r.pic.SetIRQ(4, true)
	expect(t, "new edge", r.pic.Pending(), true)

	// Level: the request stays while the line is high, even after EOI.
	r = newPICRig()
	r.initLinux(0x30, 0x38)
	wr(r.pic.ELCR(), 1, 0x08) // IRQ11 level
	r.pic.SetIRQ(11, true)
	expect(t, "IRQ11", r.pic.Acknowledge(), uint8(0x3b))
	wr(r.slave, 0, 0x20)
	wr(r.master, 0, 0x20)
	expect(t, "level request again after EOI", r.pic.Acknowledge(), uint8(0x3b))
	wr(r.pic.ELCR(), 0, 0x07) // IRQ 0-2 cannot be level
	expect(t, "hard-wired ELCR bits", rd(r.pic.ELCR(), 0), byte(0))

	// Out-of-range and cascade inputs are ignored.
	r.pic.SetIRQ(-1, true)
	r.pic.SetIRQ(16, true)
	r.pic.SetIRQ(2, true)
	// IR2 is the slave's INTR, low while its only request is in service.
	expect(t, "master IRR", readIRR(r.master), byte(0x00))
	wr(r.slave, 0, 0x20) // EOI on the slave: IRQ11 (level, still high) asks again
	expect(t, "master IRR after slave EOI", readIRR(r.master), byte(0x04))
}

func TestPICPollAndSpecialMask(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	r.pulse(6)
	wr(r.master, 0, 0x0c) // poll
	expect(t, "poll word", rd(r.master, 0), byte(0x86))
	expect(t, "poll acknowledged", readISR(r.master), byte(0x40))
	wr(r.master, 0, 0x0c)
	expect(t, "poll with nothing", rd(r.master, 0), byte(0x00))
	wr(r.master, 0, 0x20)

	// Special mask mode lets a lower-priority IRQ in while IRQ1 is in
	// service and masked.
	r.pulse(1)
	r.pic.Acknowledge()
	r.pulse(3)
	expect(t, "IRQ3 blocked", r.pic.Pending(), false)
	wr(r.master, 1, 0x02) // mask IRQ1
	wr(r.master, 0, 0x68) // OCW3: set special mask
	expect(t, "IRQ3 in special mask mode", r.pic.Acknowledge(), uint8(0x33))
	wr(r.master, 0, 0x20) // non-specific EOI skips masked IRQ1
	expect(t, "ISR", readISR(r.master), byte(0x02))
}

func TestPICReinitClearsState(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	r.pulse(3)
	r.pic.Acknowledge()
	wr(r.master, 1, 0x55)
	r.initLinux(0x20, 0x28)
	expect(t, "ISR after re-init", readISR(r.master), byte(0))
	r.pulse(3)
	expect(t, "new base", r.pic.Acknowledge(), uint8(0x23))
}

func TestPICRestoreValidates(t *testing.T) {
	r := newPICRig()
	r.initLinux(0x30, 0x38)
	r.pulse(12)
	before := r.pic.Save()
	for name, mut := range map[string]func(*PICState){
		"base low bits": func(s *PICState) { s.Master.Base = 0x31 },
		"priority":      func(s *PICState) { s.Slave.PriorityBase = 8 },
		"init step":     func(s *PICState) { s.Master.InitStep = 4 },
		"elcr":          func(s *PICState) { s.Master.ELCR = 0x01 },
	} {
		bad := before
		mut(&bad)
		if err := r.pic.Restore(bad); err == nil {
			t.Errorf("Restore accepted bad %s", name)
		}
		if r.pic.Save() != before {
			t.Fatalf("failed Restore (%s) changed the PIC", name)
		}
	}
	q := NewPIC()
	if err := q.Restore(before); err != nil {
		t.Fatal(err)
	}
	expect(t, "restored acknowledge", q.Acknowledge(), uint8(0x3c))
}
