package devices

import "fmt"

// PIC is the PC/AT pair of 8259A programmable interrupt controllers: a
// master (ports 0x20-0x21, IRQ 0-7) with a slave (ports 0xa0-0xa1, IRQ
// 8-15) cascaded on its IR2 input, plus the PIIX-style edge/level control
// registers (ELCR, ports 0x4d0-0x4d1).
//
// Model choices, all matching what x86 operating systems rely on:
//   - Inputs are edge-triggered unless the line's ELCR bit selects level
//     triggering. An edge is latched in IRR on the rising edge and stays
//     latched until acknowledged, even if the line falls again first (so a
//     device may pulse its line). A level-triggered IRR bit follows the
//     line; if it falls before the INTA cycle, the INTA returns the
//     spurious IRQ 7 (or IRQ 15) vector.
//   - The ICW1 LTIM bit is recorded but ignored, as on PIIX chipsets where
//     the ELCR decides the trigger mode of each line.
//   - The master's IR2 input is the slave's INTR output, as a level. IRQ 2
//     itself is not an input: SetIRQ(2, ...) is ignored.
//   - ICW4's µPM (8080 mode), buffered-mode and master/slave bits, and the
//     ICW3 wiring, are recorded where useful but the pair is always wired
//     as on a PC: the slave sits on master IR2.
//
// The PIC reads no clock; it changes only on register accesses, SetIRQ and
// Acknowledge.
type PIC struct {
	st PICState
}

// PICChipState is the state of one 8259A.
type PICChipState struct {
	IRR   uint8 // interrupt request register
	IMR   uint8 // interrupt mask register (OCW1)
	ISR   uint8 // in-service register
	Lines uint8 // current level of each input, for edge detection
	ELCR  uint8 // 1 = level-triggered input

	Base         uint8 // vector base from ICW2; low three bits are zero
	PriorityBase uint8 // the IR level that currently has the highest priority (rotation)
	InitStep     uint8 // 0 = operational; 1, 2, 3 = ICW2, ICW3, ICW4 expected next
	NeedICW4     bool  // ICW1 IC4
	Single       bool  // ICW1 SNGL
	LTIM         bool  // ICW1 LTIM (recorded, ignored)
	ICW3         uint8
	ICW4         uint8

	AutoEOI            bool // ICW4 AEOI
	RotateOnAutoEOI    bool // OCW2 rotate-in-automatic-EOI mode
	SpecialFullyNested bool // ICW4 SFNM (only meaningful on the master)

	ReadISR     bool // OCW3 RIS: a read of the command port returns ISR, not IRR
	Poll        bool // OCW3 P: the next read is a poll
	SpecialMask bool // OCW3 special mask mode
}

// PICState is the saved state of the PIC pair.
type PICState struct {
	Master PICChipState
	Slave  PICChipState
}

const (
	picCascadeIR    = 2
	picMasterELCRok = 0xf8 // IRQ 0, 1, 2 are always edge-triggered
	picSlaveELCRok  = 0xde // IRQ 8 and 13 are always edge-triggered
)

// NewPIC returns a PIC pair in its power-on state: uninitialised chips
// (vector base 0), nothing masked, every input edge-triggered. The guest
// (BIOS or kernel) programs it with ICW1-ICW4 before use.
func NewPIC() *PIC { return &PIC{} }

// Master returns the master chip's register window (ports 0x20-0x21).
func (p *PIC) Master() Device {
	return deviceFuncs{
		read:  func(off uint64) byte { return p.readPort(&p.st.Master, true, off) },
		write: func(off uint64, v byte) { p.writePort(&p.st.Master, off, v) },
	}
}

// Slave returns the slave chip's register window (ports 0xa0-0xa1).
func (p *PIC) Slave() Device {
	return deviceFuncs{
		read:  func(off uint64) byte { return p.readPort(&p.st.Slave, false, off) },
		write: func(off uint64, v byte) { p.writePort(&p.st.Slave, off, v) },
	}
}

// ELCR returns the edge/level control registers (ports 0x4d0-0x4d1:
// offset 0 for IRQ 0-7, offset 1 for IRQ 8-15). Bits for IRQ 0, 1, 2, 8
// and 13 are hard-wired to edge and read as 0.
func (p *PIC) ELCR() Device {
	return deviceFuncs{
		read: func(off uint64) byte {
			switch off {
			case 0:
				return p.st.Master.ELCR
			case 1:
				return p.st.Slave.ELCR
			}
			return 0xff
		},
		write: func(off uint64, v byte) {
			switch off {
			case 0:
				p.st.Master.setELCR(v & picMasterELCRok)
			case 1:
				p.st.Slave.setELCR(v & picSlaveELCRok)
			default:
				return
			}
			p.sync()
		},
	}
}

// SetIRQ drives input irq (0-15) high or low. IRQ 2 (the cascade) and
// numbers outside 0-15 are ignored.
func (p *PIC) SetIRQ(irq int, high bool) {
	if irq < 0 || irq > 15 || irq == picCascadeIR {
		return
	}
	c := &p.st.Master
	if irq >= 8 {
		c = &p.st.Slave
	}
	c.setInput(uint8(irq&7), high)
	p.sync()
}

// Pending reports whether the master's INTR output is asserted: some
// unmasked request has a higher priority than everything in service. The
// VMM injects an interrupt when Pending is true and the vCPU can take one.
func (p *PIC) Pending() bool { return p.st.Master.wanted(true) >= 0 }

// Acknowledge performs the INTA cycle and returns the vector to inject. It
// moves the highest-priority request into service (unless in automatic
// EOI mode), going through the slave for IR2. If no request is left (a
// level-triggered line fell, or Pending was false) it returns the spurious
// vector base+7 of the chip concerned without setting an ISR bit on it.
func (p *PIC) Acknowledge() uint8 {
	m := &p.st.Master
	irq := m.wanted(true)
	if irq < 0 {
		return m.Base + 7
	}
	var vector uint8
	if irq == picCascadeIR && !m.Single {
		s := &p.st.Slave
		if irq2 := s.wanted(false); irq2 >= 0 {
			s.intack(irq2)
			vector = s.Base + uint8(irq2)
		} else {
			vector = s.Base + 7
		}
	} else {
		vector = m.Base + uint8(irq)
	}
	m.intack(irq)
	p.sync()
	return vector
}

// sync feeds the slave's INTR output into the master's IR2, as a level.
func (p *PIC) sync() {
	const bit = 1 << picCascadeIR
	m := &p.st.Master
	if p.st.Slave.wanted(false) >= 0 {
		m.Lines |= bit
		m.IRR |= bit
	} else {
		m.Lines &^= bit
		m.IRR &^= bit
	}
}

func (p *PIC) readPort(c *PICChipState, master bool, off uint64) byte {
	if off > 1 {
		return 0xff
	}
	if c.Poll {
		// Poll mode: this read is the interrupt acknowledge.
		c.Poll = false
		irq := c.wanted(master)
		if irq < 0 {
			return 0
		}
		c.intack(irq)
		p.sync()
		return 0x80 | byte(irq)
	}
	if off == 1 {
		return c.IMR
	}
	if c.ReadISR {
		return c.ISR
	}
	return c.IRR
}

func (p *PIC) writePort(c *PICChipState, off uint64, v byte) {
	switch off {
	case 0:
		switch {
		case v&0x10 != 0:
			c.icw1(v)
		case v&0x08 != 0:
			c.ocw3(v)
		default:
			c.ocw2(v)
		}
	case 1:
		c.dataWrite(v)
	default:
		return
	}
	p.sync()
}

// priority returns the priority (0 = highest) of the highest-priority bit
// set in mask, taking rotation into account, or 8 if mask is empty.
func (c *PICChipState) priority(mask uint8) int {
	if mask == 0 {
		return 8
	}
	pr := 0
	for mask&(1<<((uint8(pr)+c.PriorityBase)&7)) == 0 {
		pr++
	}
	return pr
}

// wanted returns the IR level this chip would present at the next INTA,
// or -1 if its INTR output is low.
func (c *PICChipState) wanted(master bool) int {
	pr := c.priority(c.IRR &^ c.IMR)
	if pr == 8 {
		return -1
	}
	inService := c.ISR
	if c.SpecialMask {
		// Special mask mode: a masked level no longer blocks lower ones.
		inService &^= c.IMR
	}
	if master && c.SpecialFullyNested {
		// The slave may interrupt again while one of its requests is in
		// service; it arbitrates among its own levels itself.
		inService &^= 1 << picCascadeIR
	}
	if pr < c.priority(inService) {
		return int((uint8(pr) + c.PriorityBase) & 7)
	}
	return -1
}

func (c *PICChipState) intack(irq int) {
	bit := uint8(1) << irq
	if c.AutoEOI {
		if c.RotateOnAutoEOI {
			c.PriorityBase = uint8(irq+1) & 7
		}
	} else {
		c.ISR |= bit
	}
	if c.ELCR&bit == 0 {
		c.IRR &^= bit
	}
}

func (c *PICChipState) setInput(bit uint8, high bool) {
	m := uint8(1) << bit
	switch {
	case c.ELCR&m != 0 && high:
		c.IRR |= m
	case c.ELCR&m != 0:
		c.IRR &^= m
	case high && c.Lines&m == 0:
		c.IRR |= m
	}
	if high {
		c.Lines |= m
	} else {
		c.Lines &^= m
	}
}

func (c *PICChipState) setELCR(v uint8) {
	c.ELCR = v
	// A level-triggered request is the line itself.
	c.IRR = c.IRR&^v | c.Lines&v
}

func (c *PICChipState) icw1(v byte) {
	// Datasheet: the edge-sense circuit is reset (an input must go low and
	// high again), IMR is cleared, IR7 gets the lowest priority, special
	// mask mode is cleared and IRR is selected for reads. ISR is cleared
	// as well, as chipsets do.
	c.IRR &= c.ELCR & c.Lines
	c.IMR = 0
	c.ISR = 0
	c.PriorityBase = 0
	c.ReadISR = false
	c.Poll = false
	c.SpecialMask = false
	c.AutoEOI = false
	c.RotateOnAutoEOI = false
	c.SpecialFullyNested = false
	c.ICW3 = 0
	c.ICW4 = 0
	c.NeedICW4 = v&0x01 != 0
	c.Single = v&0x02 != 0
	c.LTIM = v&0x08 != 0
	c.InitStep = 1
}

func (c *PICChipState) dataWrite(v byte) {
	switch c.InitStep {
	case 1: // ICW2
		c.Base = v & 0xf8
		switch {
		case !c.Single:
			c.InitStep = 2
		case c.NeedICW4:
			c.InitStep = 3
		default:
			c.InitStep = 0
		}
	case 2: // ICW3
		c.ICW3 = v
		if c.NeedICW4 {
			c.InitStep = 3
		} else {
			c.InitStep = 0
		}
	case 3: // ICW4
		c.ICW4 = v
		c.AutoEOI = v&0x02 != 0
		c.SpecialFullyNested = v&0x10 != 0
		c.InitStep = 0
	default: // OCW1
		c.IMR = v
	}
}

func (c *PICChipState) ocw2(v byte) {
	level := v & 7
	switch v >> 5 {
	case 0: // clear rotate in automatic EOI mode
		c.RotateOnAutoEOI = false
	case 4: // set rotate in automatic EOI mode
		c.RotateOnAutoEOI = true
	case 1, 5: // non-specific EOI (5: and rotate)
		inService := c.ISR
		if c.SpecialMask {
			inService &^= c.IMR
		}
		pr := c.priority(inService)
		if pr == 8 {
			return
		}
		irq := (uint8(pr) + c.PriorityBase) & 7
		c.ISR &^= 1 << irq
		if v>>5 == 5 {
			c.PriorityBase = (irq + 1) & 7
		}
	case 3: // specific EOI
		c.ISR &^= 1 << level
	case 6: // set priority: level becomes the lowest
		c.PriorityBase = (level + 1) & 7
	case 7: // rotate on specific EOI
		c.ISR &^= 1 << level
		c.PriorityBase = (level + 1) & 7
	}
}

func (c *PICChipState) ocw3(v byte) {
	if v&0x04 != 0 {
		c.Poll = true
	}
	if v&0x02 != 0 {
		c.ReadISR = v&0x01 != 0
	}
	if v&0x40 != 0 {
		c.SpecialMask = v&0x20 != 0
	}
}

// Save returns a copy of the PIC's state.
func (p *PIC) Save() PICState { return p.st }

// Restore replaces the PIC's state with s after checking it; on error the
// PIC is unchanged. The cascade input (master IR2) is recomputed from the
// slave.
func (p *PIC) Restore(s PICState) error {
	if err := s.Master.validate("master", picMasterELCRok); err != nil {
		return err
	}
	if err := s.Slave.validate("slave", picSlaveELCRok); err != nil {
		return err
	}
	p.st = s
	p.sync()
	return nil
}

func (c *PICChipState) validate(name string, elcrOK uint8) error {
	switch {
	case c.Base&7 != 0:
		return fmt.Errorf("devices: PIC %s: vector base %#x has low bits set", name, c.Base)
	case c.PriorityBase > 7:
		return fmt.Errorf("devices: PIC %s: priority base %d out of range 0-7", name, c.PriorityBase)
	case c.InitStep > 3:
		return fmt.Errorf("devices: PIC %s: init step %d out of range 0-3", name, c.InitStep)
	case c.ELCR&^elcrOK != 0:
		return fmt.Errorf("devices: PIC %s: ELCR %#x sets hard-wired edge bits (allowed %#x)", name, c.ELCR, elcrOK)
	}
	return nil
}
