package devices

import (
	"bytes"
	"strings"
	"testing"
)

const (
	rbr = 0
	ier = 1
	iir = 2
	fcr = 2
	lcr = 3
	mcr = 4
	lsr = 5
	msr = 6
	scr = 7
)

func newUARTRig() (*UART, *irqLog, *bytes.Buffer) {
	l := &irqLog{}
	var out bytes.Buffer
	return NewUART(l, 4, &out), l, &out
}

func TestUARTResetState(t *testing.T) {
	u, l, _ := newUARTRig()
	expect(t, "IIR", rd(u, iir), byte(0x01))
	expect(t, "LSR", rd(u, lsr), byte(0x60))
	expect(t, "MSR", rd(u, msr), byte(0xb0))
	expect(t, "IER", rd(u, ier), byte(0))
	expect(t, "unknown offset", rd(u, 8), byte(0xff))
	expect(t, "IRQ events", len(l.events), 0)
}

func TestUARTDivisorLatch(t *testing.T) {
	u, _, out := newUARTRig()
	wr(u, lcr, 0x83)
	wr(u, 0, 0x01) // DLL
	wr(u, 1, 0x02) // DLM
	expect(t, "DLL", rd(u, 0), byte(0x01))
	expect(t, "DLM", rd(u, 1), byte(0x02))
	expect(t, "nothing transmitted through DLL", out.Len(), 0)
	wr(u, lcr, 0x03)
	expect(t, "IER with DLAB off", rd(u, ier), byte(0))
	wr(u, 0, 'A')
	expect(t, "transmitted", out.String(), "A")
	wr(u, lcr, 0x83)
	expect(t, "DLL kept", rd(u, 0), byte(0x01))
}

func TestUARTTransmitAndTHREInterrupt(t *testing.T) {
	u, l, out := newUARTRig()
	wr(u, mcr, 0x08) // OUT2: interrupts reach the PIC
	wr(u, ier, 0x02) // ETBEI with THR empty
	expect(t, "IRQ raised by ETBEI", l.level(4), true)
	expect(t, "IIR", rd(u, iir), byte(0x02))
	expect(t, "IRQ after IIR read", l.level(4), false)
	expect(t, "IIR after read", rd(u, iir), byte(0x01))

	n := len(l.events)
	for _, c := range []byte("ok\n") {
		wr(u, 0, c)
	}
	expect(t, "output", out.String(), "ok\n")
	// Each byte: THR written (THRE interrupt cleared), then emptied at
	// once (raised again): a fresh edge per byte.
	want := []irqEvent{{4, true}, {4, false}, {4, true}, {4, false}, {4, true}}
	got := l.events[n:]
	if len(got) != len(want) {
		t.Fatalf("IRQ events while transmitting = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("IRQ events while transmitting = %v, want %v", got, want)
		}
	}
	expect(t, "LSR while transmitting", rd(u, lsr), byte(0x60))
	wr(u, ier, 0x00)
	expect(t, "IRQ after ETBEI off", l.level(4), false)
	// Linux's THRE test: toggling ETBEI re-raises it.
	wr(u, ier, 0x02)
	expect(t, "IIR, first", rd(u, iir), byte(0x02))
	wr(u, ier, 0x00)
	wr(u, ier, 0x02)
	expect(t, "IIR after toggling ETBEI", rd(u, iir), byte(0x02))
}

func TestUARTOUT2GatesIRQ(t *testing.T) {
	u, l, _ := newUARTRig()
	wr(u, ier, 0x02)
	expect(t, "IIR reports the interrupt", rd(u, iir), byte(0x02))
	expect(t, "no IRQ without OUT2", len(l.events), 0)
	wr(u, ier, 0x00)
	wr(u, ier, 0x02)
	wr(u, mcr, 0x08)
	expect(t, "IRQ once OUT2 set", l.level(4), true)
	wr(u, mcr, 0x00)
	expect(t, "IRQ once OUT2 cleared", l.level(4), false)
}

func TestUARTReceive(t *testing.T) {
	u, l, _ := newUARTRig()
	wr(u, mcr, 0x08)
	wr(u, ier, 0x01)
	expect(t, "accepted", u.Input([]byte("hi")), 2)
	expect(t, "LSR DR", rd(u, lsr), byte(0x61))
	expect(t, "IIR", rd(u, iir), byte(0x04))
	expect(t, "IRQ", l.level(4), true)
	expect(t, "first byte", rd(u, rbr), byte('h'))
	expect(t, "IRQ with a byte left", l.level(4), true)
	expect(t, "second byte", rd(u, rbr), byte('i'))
	expect(t, "LSR empty", rd(u, lsr), byte(0x60))
	expect(t, "IRQ when empty", l.level(4), false)
	expect(t, "IIR when empty", rd(u, iir), byte(0x01))

	// RX data outranks THRE.
	wr(u, ier, 0x03)
	u.Input([]byte("x"))
	expect(t, "IIR with both", rd(u, iir), byte(0x04))
	rd(u, rbr)
	expect(t, "IIR after draining", rd(u, iir), byte(0x02))
}

func TestUARTInputBounded(t *testing.T) {
	u, _, _ := newUARTRig()
	big := []byte(strings.Repeat("a", UARTInputLimit+100))
	expect(t, "accepted of too much", u.Input(big), UARTInputLimit)
	expect(t, "accepted when full", u.Input([]byte("b")), 0)
	rd(u, rbr)
	expect(t, "accepted after one read", u.Input([]byte("bc")), 1)
}

func TestUARTFIFO(t *testing.T) {
	u, _, _ := newUARTRig()
	wr(u, ier, 0x01)
	wr(u, fcr, 0xc7) // enable, reset both, trigger 14
	expect(t, "IIR bits 6-7 with FIFO", rd(u, iir), byte(0xc1))
	u.Input([]byte("abc"))
	expect(t, "below trigger: character timeout", rd(u, iir), byte(0xcc))
	u.Input([]byte("defghijklmn"))
	expect(t, "at trigger", rd(u, iir), byte(0xc4))
	wr(u, fcr, 0xc3) // reset RX FIFO
	expect(t, "LSR after RX reset", rd(u, lsr), byte(0x60))
	wr(u, fcr, 0x00)
	expect(t, "IIR with FIFO off", rd(u, iir), byte(0x01))
	u.Input([]byte("z"))
	expect(t, "data available without FIFO", rd(u, iir), byte(0x04))
}

func TestUARTLoopback(t *testing.T) {
	u, l, out := newUARTRig()
	wr(u, mcr, 0x1a) // loop, OUT2, RTS
	expect(t, "MSR status bits", rd(u, msr)&0xf0, byte(0x90))
	wr(u, 0, 'q')
	expect(t, "nothing sent out", out.Len(), 0)
	expect(t, "looped back", rd(u, lsr)&1, byte(1))
	expect(t, "looped byte", rd(u, rbr), byte('q'))
	expect(t, "host input refused", u.Input([]byte("x")), 0)

	// Without FIFO the receiver holds one byte; the second overruns.
	wr(u, ier, 0x05)
	wr(u, 0, 1)
	wr(u, 0, 2)
	expect(t, "IIR line status", rd(u, iir), byte(0x06))
	expect(t, "LSR with overrun", rd(u, lsr), byte(0x63))
	expect(t, "LSR overrun cleared", rd(u, lsr), byte(0x61))
	expect(t, "IIR then data", rd(u, iir), byte(0x04))
	expect(t, "no IRQ in loopback", l.level(4), false)

	// MSR deltas follow MCR changes in loopback.
	rd(u, msr)
	wr(u, mcr, 0x1f) // + DTR, OUT1
	expect(t, "MSR after DTR/OUT1", rd(u, msr), byte(0xf2))
	expect(t, "deltas cleared by read", rd(u, msr), byte(0xf0))
	wr(u, mcr, 0x1b) // OUT1 off: trailing edge of RI
	expect(t, "TERI", rd(u, msr), byte(0xb4))
}

// TestUARTLinuxProbe replays what Linux's 8250 autoconfig, the 16550A
// variant checks, size_fifo and the startup THRE test do.
func TestUARTLinuxProbe(t *testing.T) {
	u, _, _ := newUARTRig()
	// Scratch test on IER.
	save := rd(u, ier)
	wr(u, ier, 0)
	scratch2 := rd(u, ier) & 0x0f
	wr(u, ier, 0x0f)
	scratch3 := rd(u, ier) & 0x0f
	wr(u, ier, save)
	if scratch2 != 0 || scratch3 != 0x0f {
		t.Fatalf("IER test failed (%#x, %#x)", scratch2, scratch3)
	}
	// Loopback test.
	saveMCR := rd(u, mcr)
	wr(u, mcr, 0x10|0x0a)
	status := rd(u, msr) & 0xf0
	wr(u, mcr, saveMCR)
	if status != 0x90 {
		t.Fatalf("LOOP test failed (%#x)", status)
	}
	// FIFO type.
	wr(u, lcr, 0xbf)
	wr(u, 2, 0) // EFR on chips that have one: FCR here
	wr(u, lcr, 0)
	wr(u, fcr, 0x01)
	if kind := rd(u, iir) >> 6; kind != 3 {
		t.Fatalf("IIR>>6 = %d, want 3 (16550A)", kind)
	}
	// No EFR with DLAB set (ST16C650V1 test) or with LCR=0xbf.
	wr(u, lcr, 0x80)
	if rd(u, 2) == 0 {
		t.Fatal("EFR read as 0 with LCR=0x80: would probe as a 16650")
	}
	wr(u, lcr, 0xbf)
	if rd(u, 2) == 0 {
		t.Fatal("EFR read as 0 with LCR=0xbf: would probe as a 16650V2")
	}
	// Not a TI16750: IIR bit 5 stays clear with and without DLAB.
	wr(u, lcr, 0)
	wr(u, fcr, 0x21)
	s1 := rd(u, iir) >> 5
	wr(u, fcr, 0x01)
	wr(u, lcr, 0x80)
	wr(u, fcr, 0x21)
	s2 := rd(u, iir) >> 5
	wr(u, fcr, 0x01)
	wr(u, lcr, 0)
	if s1 == 6 && s2 == 7 {
		t.Fatal("probes as a TI16750")
	}
	// IER bit 6 (UUE) does not stick: not an XScale.
	wr(u, ier, 0x40)
	if rd(u, ier)&0x40 != 0 {
		t.Fatal("IER UUE sticks: probes as XScale")
	}
	wr(u, ier, 0)
	// size_fifo: 256 bytes in loopback, count what arrives: 16.
	wr(u, fcr, 0x07)
	wr(u, mcr, 0x10)
	wr(u, lcr, 0x80)
	wr(u, 0, 1)
	wr(u, 1, 0)
	wr(u, lcr, 0x03)
	for i := 0; i < 256; i++ {
		wr(u, 0, byte(i))
	}
	count := 0
	for ; rd(u, lsr)&1 != 0 && count < 256; count++ {
		rd(u, rbr)
	}
	expect(t, "FIFO size", count, 16)
	wr(u, mcr, 0x0b)
	// Startup: LSR must not read 0xff; THRE test.
	if rd(u, lsr) == 0xff {
		t.Fatal("LSR safety check")
	}
	wr(u, ier, 0x02)
	iir1 := rd(u, iir)
	wr(u, ier, 0)
	wr(u, ier, 0x02)
	iir2 := rd(u, iir)
	wr(u, ier, 0)
	if iir1&1 != 0 || iir2&1 != 0 {
		t.Fatalf("THRE test: IIR %#x then %#x, want an interrupt both times", iir1, iir2)
	}
	// Scratch register.
	wr(u, scr, 0xa5)
	expect(t, "SCR", rd(u, scr), byte(0xa5))
}

func TestUARTRestoreValidates(t *testing.T) {
	u, _, _ := newUARTRig()
	wr(u, mcr, 0x08)
	wr(u, ier, 0x03)
	u.Input([]byte("pending"))
	before := u.Save()
	for name, mut := range map[string]func(*UARTState){
		"rx too long": func(s *UARTState) { s.RX = make([]byte, UARTInputLimit+1) },
		"ier":         func(s *UARTState) { s.IER = 0x40 },
		"mcr":         func(s *UARTState) { s.MCR = 0x20 },
		"fcr":         func(s *UARTState) { s.FCR = 0x40 },
		"irq level":   func(s *UARTState) { s.IRQLevel = false },
	} {
		bad := u.Save()
		mut(&bad)
		if err := u.Restore(bad); err == nil {
			t.Errorf("Restore accepted bad %s", name)
		}
	}
	after := u.Save()
	if string(after.RX) != string(before.RX) || after.IER != before.IER || after.IRQLevel != before.IRQLevel {
		t.Fatal("a failed Restore changed the UART")
	}
	v, l, _ := newUARTRig()
	if err := v.Restore(before); err != nil {
		t.Fatal(err)
	}
	expect(t, "restored byte", rd(v, rbr), byte('p'))
	expect(t, "restore drives no IRQ", len(l.events), 0)
}
