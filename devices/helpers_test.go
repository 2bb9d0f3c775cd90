package devices

import "testing"

// fakeClock is a manual Clock that counts its readings.
type fakeClock struct {
	t     int64
	reads int
}

func (c *fakeClock) Now() int64 { c.reads++; return c.t }

// setTick moves the clock to the first nanosecond of PIT tick k.
func (c *fakeClock) setTick(k int64) { c.t = ticksToNs(k) }

type irqEvent struct {
	irq  int
	high bool
}

// irqLog records SetIRQ calls and optionally forwards them.
type irqLog struct {
	events []irqEvent
	next   IRQLine
}

func (l *irqLog) SetIRQ(irq int, high bool) {
	l.events = append(l.events, irqEvent{irq, high})
	if l.next != nil {
		l.next.SetIRQ(irq, high)
	}
}

func (l *irqLog) rising(irq int) int {
	n := 0
	for _, e := range l.events {
		if e.irq == irq && e.high {
			n++
		}
	}
	return n
}

func (l *irqLog) level(irq int) bool {
	lv := false
	for _, e := range l.events {
		if e.irq == irq {
			lv = e.high
		}
	}
	return lv
}

func rd(d Device, off uint64) byte {
	var b [1]byte
	d.Read(off, b[:])
	return b[0]
}

func wr(d Device, off uint64, vs ...byte) {
	for _, v := range vs {
		d.Write(off, []byte{v})
	}
}

func expect[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}
