package devices

import (
	"fmt"
	"io"
)

// UARTInputLimit is the most host console input a UART holds; Input
// accepts no more until the guest reads some.
const UARTInputLimit = 4096

// UART register offsets and bits.
const (
	uartIERRDI  = 0x01 // received data available
	uartIERTHRI = 0x02 // transmitter holding register empty
	uartIERRLSI = 0x04 // receiver line status
	uartIERMSI  = 0x08 // modem status

	uartLCRDLAB = 0x80

	uartMCRDTR  = 0x01
	uartMCRRTS  = 0x02
	uartMCROUT1 = 0x04
	uartMCROUT2 = 0x08
	uartMCRLoop = 0x10

	uartLSRDR   = 0x01
	uartLSROE   = 0x02
	uartLSRTHRE = 0x20
	uartLSRTEMT = 0x40

	uartMSRCTS = 0x10
	uartMSRDSR = 0x20
	uartMSRRI  = 0x40
	uartMSRDCD = 0x80

	uartIIRNone    = 0x01
	uartIIRMSI     = 0x00
	uartIIRTHRI    = 0x02
	uartIIRRDI     = 0x04
	uartIIRRLSI    = 0x06
	uartIIRTimeout = 0x0c
	uartIIRFIFO    = 0xc0

	uartFCREnable   = 0x01
	uartFCRClearRX  = 0x02
	uartFCRKeptBits = 0xc9 // enable, DMA mode, RX trigger level

	// The modem inputs of a connected console: carrier, data set ready,
	// clear to send.
	uartMSRConnected = uartMSRDCD | uartMSRDSR | uartMSRCTS
)

// UART is a 16550A serial port: registers at offsets 0-7 (RBR/THR/DLL,
// IER/DLM, IIR/FCR, LCR, MCR, LSR, MSR, SCR).
//
// Transmission is instantaneous: a byte written to THR goes straight to
// the output writer (or, in loopback, to the receiver), so THRE and TEMT
// always read 1. Writing THR clears a pending THRE interrupt and, since the
// holding register is empty again at once, raises it again: with ETBEI
// set, the interrupt line drops and rises around each byte, as it does on
// real hardware one character time later.
//
// Received bytes come from Input into a queue of up to UARTInputLimit
// bytes, which stands for the receive FIFO: the guest reads them from RBR
// one by one. With the FIFO enabled, the data-available interrupt is
// reported as such when the trigger level is reached and as a character
// timeout (IIR 0x0c) immediately below it. A receive-FIFO reset (FCR) or
// a FIFO enable change discards the queue. Loopback keeps the real
// receiver's size (16 bytes with the FIFO on, else 1) and sets OE when it
// overflows; host input is refused (Input returns 0) during loopback.
//
// The interrupt output is gated by MCR OUT2, as on a PC (the guest must
// set OUT2 to get interrupts; Linux does), and is off in loopback. The
// UART calls SetIRQ(line, level) on its IRQLine whenever that gated level
// changes. It reads no clock.
//
// Linux's 8250 probe finds a 16550A: IER keeps only its low four bits, the
// loopback MSR reflects MCR (DCD=OUT2, RI=OUT1, DSR=DTR, CTS=RTS), IIR bits
// 6-7 are 11 with the FIFO on, IIR bit 5 (64-byte FIFO) never sets, and
// setting ETBEI with THR empty raises the THRE interrupt each time.
type UART struct {
	irq  IRQLine
	line int
	out  io.Writer
	st   UARTState
	tx   [1]byte
}

// UARTState is the saved state of a UART.
type UARTState struct {
	IER, LCR, MCR, SCR uint8
	DLL, DLM           uint8
	FCR                uint8  // FIFO enable, DMA mode and trigger level bits of the last FCR write
	Overrun            bool   // LSR OE, until LSR is read
	THRInterrupt       bool   // THRE interrupt pending
	MSRDelta           uint8  // MSR bits 0-3 (DCTS, DDSR, TERI, DDCD), until MSR is read
	RX                 []byte // received bytes not yet read, oldest first
	IRQLevel           bool   // level last driven on the IRQ line
}

// NewUART returns a UART in its reset state (divisor 12, i.e. 9600 baud;
// every other register zero: interrupts disabled, FIFO off) whose
// interrupt output drives irq.SetIRQ(line, ...) and whose transmitted bytes
// go to out. Errors from out
// are ignored: the VMM's writer deals with them.
func NewUART(irq IRQLine, line int, out io.Writer) *UART {
	return &UART{irq: irq, line: line, out: out, st: UARTState{DLL: 12}}
}

// Input queues host console input for the guest and returns how many
// bytes were accepted (fewer than len(data) when the queue is full, 0 in
// loopback). The VMM keeps the rest and offers it again later.
func (u *UART) Input(data []byte) int {
	if u.st.MCR&uartMCRLoop != 0 {
		return 0
	}
	n := min(len(data), UARTInputLimit-len(u.st.RX))
	if n <= 0 {
		return 0
	}
	u.st.RX = append(u.st.RX, data[:n]...)
	u.updateIRQ()
	return n
}

// Read implements Device.
func (u *UART) Read(offset uint64, data []byte) { readBytes(offset, data, u.readReg) }

// Write implements Device.
func (u *UART) Write(offset uint64, data []byte) { writeBytes(offset, data, u.writeReg) }

func (u *UART) dlab() bool { return u.st.LCR&uartLCRDLAB != 0 }

func (u *UART) readReg(off uint64) byte {
	s := &u.st
	switch off {
	case 0:
		if u.dlab() {
			return s.DLL
		}
		if len(s.RX) == 0 {
			return 0
		}
		b := s.RX[0]
		s.RX = s.RX[1:]
		if len(s.RX) == 0 {
			s.RX = nil
		}
		u.updateIRQ()
		return b
	case 1:
		if u.dlab() {
			return s.DLM
		}
		return s.IER
	case 2:
		iir := u.iir()
		if iir&0x0f == uartIIRTHRI {
			// Reading IIR with THRE as the source clears it.
			s.THRInterrupt = false
			u.updateIRQ()
		}
		return iir
	case 3:
		return s.LCR
	case 4:
		return s.MCR
	case 5:
		lsr := byte(uartLSRTHRE | uartLSRTEMT)
		if len(s.RX) > 0 {
			lsr |= uartLSRDR
		}
		if s.Overrun {
			lsr |= uartLSROE
			s.Overrun = false
			u.updateIRQ()
		}
		return lsr
	case 6:
		msr := u.modemStatus() | s.MSRDelta
		if s.MSRDelta != 0 {
			s.MSRDelta = 0
			u.updateIRQ()
		}
		return msr
	case 7:
		return s.SCR
	}
	return 0xff
}

func (u *UART) writeReg(off uint64, v byte) {
	s := &u.st
	switch off {
	case 0:
		if u.dlab() {
			s.DLL = v
			return
		}
		u.transmit(v)
	case 1:
		if u.dlab() {
			s.DLM = v
			return
		}
		old := s.IER
		s.IER = v & 0x0f
		// Enabling ETBEI with THR empty raises the THRE interrupt, even
		// if an IIR read had cleared it (Linux's THRE test relies on it);
		// disabling it drops it.
		if (old^s.IER)&uartIERTHRI != 0 {
			s.THRInterrupt = s.IER&uartIERTHRI != 0
		}
		u.updateIRQ()
	case 2:
		if v&uartFCREnable != s.FCR&uartFCREnable || v&(uartFCREnable|uartFCRClearRX) == uartFCREnable|uartFCRClearRX {
			s.RX = nil
		}
		if v&uartFCREnable != 0 {
			s.FCR = v & uartFCRKeptBits
		} else {
			s.FCR = 0
		}
		u.updateIRQ()
	case 3:
		s.LCR = v
	case 4:
		oldMSR := u.modemStatus()
		s.MCR = v & 0x1f
		newMSR := u.modemStatus()
		changed := oldMSR ^ newMSR
		if changed&uartMSRCTS != 0 {
			s.MSRDelta |= 0x01
		}
		if changed&uartMSRDSR != 0 {
			s.MSRDelta |= 0x02
		}
		if oldMSR&uartMSRRI != 0 && newMSR&uartMSRRI == 0 {
			s.MSRDelta |= 0x04
		}
		if changed&uartMSRDCD != 0 {
			s.MSRDelta |= 0x08
		}
		u.updateIRQ()
	case 7:
		s.SCR = v
	}
	// LSR and MSR writes (factory test) are ignored.
}

func (u *UART) transmit(v byte) {
	s := &u.st
	s.THRInterrupt = false
	u.updateIRQ()
	if s.MCR&uartMCRLoop != 0 {
		if len(s.RX) >= u.fifoSize() {
			s.Overrun = true
		} else {
			s.RX = append(s.RX, v)
		}
	} else if u.out != nil {
		u.tx[0] = v
		_, _ = u.out.Write(u.tx[:])
	}
	s.THRInterrupt = true // the holding register is empty again
	u.updateIRQ()
}

func (u *UART) fifoSize() int {
	if u.st.FCR&uartFCREnable != 0 {
		return 16
	}
	return 1
}

func (u *UART) rxTrigger() int {
	return [4]int{1, 4, 8, 14}[u.st.FCR>>6]
}

// modemStatus returns MSR bits 4-7: the console's lines, or in loopback
// the MCR outputs wired back.
func (u *UART) modemStatus() byte {
	mcr := u.st.MCR
	if mcr&uartMCRLoop == 0 {
		return uartMSRConnected
	}
	var msr byte
	if mcr&uartMCRRTS != 0 {
		msr |= uartMSRCTS
	}
	if mcr&uartMCRDTR != 0 {
		msr |= uartMSRDSR
	}
	if mcr&uartMCROUT1 != 0 {
		msr |= uartMSRRI
	}
	if mcr&uartMCROUT2 != 0 {
		msr |= uartMSRDCD
	}
	return msr
}

// iir returns the interrupt identification, highest priority first.
func (u *UART) iir() byte {
	s := &u.st
	id := byte(uartIIRNone)
	switch {
	case s.IER&uartIERRLSI != 0 && s.Overrun:
		id = uartIIRRLSI
	case s.IER&uartIERRDI != 0 && len(s.RX) > 0:
		id = uartIIRRDI
		if s.FCR&uartFCREnable != 0 && len(s.RX) < u.rxTrigger() {
			id = uartIIRTimeout
		}
	case s.IER&uartIERTHRI != 0 && s.THRInterrupt:
		id = uartIIRTHRI
	case s.IER&uartIERMSI != 0 && s.MSRDelta != 0:
		id = uartIIRMSI
	}
	if s.FCR&uartFCREnable != 0 {
		id |= uartIIRFIFO
	}
	return id
}

// irqLevel is the interrupt output as the PIC sees it: INTR gated by OUT2,
// and off in loopback.
func (u *UART) irqLevel() bool {
	return u.iir()&uartIIRNone == 0 && u.st.MCR&(uartMCROUT2|uartMCRLoop) == uartMCROUT2
}

func (u *UART) updateIRQ() {
	level := u.irqLevel()
	if level == u.st.IRQLevel {
		return
	}
	u.st.IRQLevel = level
	if u.irq != nil {
		u.irq.SetIRQ(u.line, level)
	}
}

// Save returns a copy of the UART's state.
func (u *UART) Save() UARTState {
	s := u.st
	s.RX = append([]byte(nil), u.st.RX...)
	return s
}

// Restore replaces the UART's state with s after checking it; on error the
// UART is unchanged. It does not drive the IRQ line: the PIC's saved state
// already holds the line's level.
func (u *UART) Restore(s UARTState) error {
	switch {
	case len(s.RX) > UARTInputLimit:
		return fmt.Errorf("devices: UART: %d received bytes exceed the limit %d", len(s.RX), UARTInputLimit)
	case s.IER&^0x0f != 0:
		return fmt.Errorf("devices: UART: IER %#x has reserved bits set", s.IER)
	case s.MCR&^0x1f != 0:
		return fmt.Errorf("devices: UART: MCR %#x has reserved bits set", s.MCR)
	case s.MSRDelta&^0x0f != 0:
		return fmt.Errorf("devices: UART: MSR delta %#x has bits above 3", s.MSRDelta)
	case s.FCR&^uartFCRKeptBits != 0 || s.FCR != 0 && s.FCR&uartFCREnable == 0:
		return fmt.Errorf("devices: UART: FCR %#x is not a state the FIFO control can hold", s.FCR)
	}
	n := UART{st: s}
	if n.irqLevel() != s.IRQLevel {
		return fmt.Errorf("devices: UART: IRQ level %v disagrees with the registers", s.IRQLevel)
	}
	u.st = s
	u.st.RX = append([]byte(nil), s.RX...)
	if len(u.st.RX) == 0 {
		u.st.RX = nil
	}
	return nil
}
