package devices

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/internal/mpack"
)

// checkedLine sits between the devices and the PIC: it checks that every
// device drives its line with alternating levels (a UART changes level
// only on a change, a PIT edge is high then low) and records the calls.
type checkedLine struct {
	pic   *PIC
	level [16]bool
	err   error
	trace *[]string
}

func (l *checkedLine) SetIRQ(irq int, high bool) {
	if irq < 0 || irq > 15 {
		l.err = fmt.Errorf("device drove IRQ %d", irq)
		return
	}
	if l.level[irq] == high && l.err == nil {
		l.err = fmt.Errorf("IRQ %d driven %v twice in a row", irq, high)
	}
	l.level[irq] = high
	*l.trace = append(*l.trace, fmt.Sprintf("irq%d=%v", irq, high))
	l.pic.SetIRQ(irq, high)
}

type fuzzRig struct {
	clock  *fakeClock
	line   *checkedLine
	pic    *PIC
	pit    *PIT
	uart   *UART
	cmos   *CMOS
	kbc    *I8042
	out    bytes.Buffer
	resets int
	trace  []string
	wins   []Device
}

func newFuzzRig() *fuzzRig {
	r := &fuzzRig{clock: &fakeClock{}, pic: NewPIC()}
	r.line = &checkedLine{pic: r.pic, trace: &r.trace}
	r.pit = NewPIT(r.clock, r.line)
	r.uart = NewUART(r.line, 4, &r.out)
	r.cmos = NewCMOS(r.clock, testEpoch)
	r.kbc = NewI8042(func() { r.resets++ })
	r.wins = []Device{r.pic.Master(), r.pic.Slave(), r.pic.ELCR(), r.pit.Device(), r.pit.Port61(), r.uart, r.cmos, r.kbc}
	return r
}

type fuzzState struct {
	PIC  PICState
	PIT  PITState
	UART UARTState
	CMOS CMOSState
	KBC  I8042State
}

func (r *fuzzRig) save() fuzzState {
	return fuzzState{r.pic.Save(), r.pit.Save(), r.uart.Save(), r.cmos.Save(), r.kbc.Save()}
}

// clone restores r's saved state, through its snapshot encoding, into a
// fresh rig at the same clock time.
func (r *fuzzRig) clone() (*fuzzRig, error) {
	saved := r.save()
	b, err := mpack.Marshal(saved)
	if err != nil {
		return nil, err
	}
	var s fuzzState
	if err := mpack.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding a saved state: %w", err)
	}
	if !reflect.DeepEqual(s, saved) {
		return nil, fmt.Errorf("state changed through its encoding:\n%+v\n%+v", saved, s)
	}
	c := newFuzzRig()
	c.clock.t = r.clock.t
	c.line.level = r.line.level
	for _, err := range []error{c.pic.Restore(s.PIC), c.pit.Restore(s.PIT), c.uart.Restore(s.UART), c.cmos.Restore(s.CMOS), c.kbc.Restore(s.KBC)} {
		if err != nil {
			return nil, fmt.Errorf("restoring a reachable state: %w", err)
		}
	}
	if got := c.save(); !reflect.DeepEqual(got, s) {
		return nil, fmt.Errorf("state changed through Save/Restore:\n%+v\n%+v", s, got)
	}
	return c, nil
}

type fuzzOp struct {
	kind  byte
	win   int
	off   uint64
	data  []byte
	a, b  byte
	input []byte
}

// decodeOps turns fuzz input into operations.
func decodeOps(in []byte) []fuzzOp {
	pos := 0
	next := func() byte {
		if pos >= len(in) {
			return 0
		}
		pos++
		return in[pos-1]
	}
	var ops []fuzzOp
	for pos < len(in) && len(ops) < 2000 {
		op := fuzzOp{kind: next() % 16}
		switch {
		case op.kind < 9: // 0-7 write to window kind; 8 read
			op.win = int(op.kind)
			if op.kind == 8 {
				op.win = int(next() % 8)
			}
			o := next()
			op.off = uint64(o % 10)
			if o >= 0xf0 {
				op.off = ^uint64(0) - uint64(o&0x0f) // offsets that wrap
			}
			op.data = make([]byte, []int{1, 1, 2, 4, 8, 0, 3}[next()%7])
			for i := range op.data {
				op.data[i] = next()
			}
		case op.kind == 13:
			op.input = make([]byte, next()%64)
			for i := range op.input {
				op.input[i] = next()
			}
		default:
			op.a, op.b = next(), next()
		}
		ops = append(ops, op)
	}
	return ops
}

func (r *fuzzRig) apply(op fuzzOp) error {
	switch {
	case op.kind < 8:
		r.wins[op.win].Write(op.off, op.data)
	case op.kind == 8:
		buf := make([]byte, len(op.data))
		r.wins[op.win].Read(op.off, buf)
		r.trace = append(r.trace, fmt.Sprintf("rd%d@%d=%x", op.win, op.off, buf))
	case op.kind == 9:
		adv := int64(op.a) << (op.b % 44)
		if r.clock.t+adv < 1<<62 {
			r.clock.t += adv
		}
	case op.kind == 10:
		r.pic.SetIRQ(int(op.a%20)-2, op.b&1 != 0)
	case op.kind == 11:
		mb, sb := r.pic.st.Master.Base, r.pic.st.Slave.Base
		pending := r.pic.Pending()
		v := r.pic.Acknowledge()
		if v&^7 != mb && v&^7 != sb {
			return fmt.Errorf("vector %#x matches neither base %#x nor %#x", v, mb, sb)
		}
		if !pending && v != mb+7 {
			return fmt.Errorf("acknowledge without a request gave %#x, want spurious %#x", v, mb+7)
		}
		r.trace = append(r.trace, fmt.Sprintf("ack=%#x", v))
	case op.kind == 12:
		reads := r.clock.reads
		r.pit.Update()
		if r.clock.reads-reads != 1 {
			return fmt.Errorf("Update read the clock %d times", r.clock.reads-reads)
		}
		if d, ok := r.pit.NextDeadline(); ok && d <= r.clock.t {
			return fmt.Errorf("deadline %d not after the Update at %d", d, r.clock.t)
		}
		if r.clock.reads-reads != 1 {
			return fmt.Errorf("NextDeadline read the clock")
		}
	case op.kind == 13:
		n := r.uart.Input(op.input)
		if n < 0 || n > len(op.input) {
			return fmt.Errorf("Input accepted %d of %d", n, len(op.input))
		}
		r.trace = append(r.trace, fmt.Sprintf("in=%d", n))
	case op.kind == 14:
		d, ok := r.pit.NextDeadline()
		r.trace = append(r.trace, fmt.Sprintf("deadline=%d,%v", d, ok))
	default:
		r.trace = append(r.trace, fmt.Sprintf("pending=%v", r.pic.Pending()))
	}
	if len(r.uart.st.RX) > UARTInputLimit {
		return fmt.Errorf("UART holds %d bytes", len(r.uart.st.RX))
	}
	return r.line.err
}

// FuzzDevices throws random accesses of random widths at every device,
// with clock advances, IRQ changes, INTA cycles, PIT updates and console
// input, checking invariants; at a point chosen by the input it clones the
// devices through Save/Restore and checks that the clone behaves exactly
// like the original from there on (same reads, IRQs, clock readings).
func FuzzDevices(f *testing.F) {
	f.Add([]byte{})
	// PIC init as Linux does it, PIT mode 2, UART THRE interrupt, updates.
	f.Add([]byte{
		0, 0, 0, 0x11, 0, 1, 0, 0x30, 0, 1, 0, 0x04, 0, 1, 0, 0x01, 0, 1, 0, 0x00,
		3, 3, 0, 0x34, 3, 0, 0, 0x10, 3, 0, 0, 0x00,
		5, 4, 0, 0x08, 5, 1, 0, 0x02,
		9, 200, 8, 12, 0, 0, 15, 0, 0, 11, 0, 0, 9, 255, 20, 12, 0, 0, 11, 0, 0,
		8, 5, 2, 0, 13, 5, 'h', 'e', 'l', 'l', 'o', 8, 5, 0, 0,
		6, 0, 0, 0x0a, 8, 6, 1, 0, 7, 4, 0, 0xfe,
	})
	f.Add([]byte("\x04\x00\x00\x01\x03\x03\x00\xb6\x03\x02\x02\x05\x00\x09\x10\x04\x08\x04\x00\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		ops := decodeOps(in)
		split := -1
		if len(in) > 0 && len(ops) > 0 {
			split = int(in[0]) % (len(ops) + 1)
		}
		a := newFuzzRig()
		var b *fuzzRig
		var resetsAtSplit int
		for i, op := range ops {
			if i == split {
				var err error
				if b, err = a.clone(); err != nil {
					t.Fatal(err)
				}
				resetsAtSplit = a.resets
			}
			na, ra := len(a.trace), a.clock.reads
			if err := a.apply(op); err != nil {
				t.Fatalf("op %d %+v: %v", i, op, err)
			}
			if b == nil {
				continue
			}
			nb, rb := len(b.trace), b.clock.reads
			if err := b.apply(op); err != nil {
				t.Fatalf("clone: op %d %+v: %v", i, op, err)
			}
			if !slices.Equal(a.trace[na:], b.trace[nb:]) || a.clock.reads-ra != b.clock.reads-rb {
				t.Fatalf("op %d %+v: clone diverged: %v (%d clock reads) vs %v (%d)",
					i, op, a.trace[na:], a.clock.reads-ra, b.trace[nb:], b.clock.reads-rb)
			}
		}
		if b != nil && (a.resets-resetsAtSplit != b.resets || !bytes.HasSuffix(a.out.Bytes(), b.out.Bytes())) {
			t.Fatalf("clone diverged: resets %d/%d, output %q / %q", a.resets, b.resets, a.out.Bytes(), b.out.Bytes())
		}
		if _, err := a.clone(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDevicesDeterministic runs one long pseudo-random workload twice and
// requires identical results: no hidden state (maps, host time) leaks in.
func TestDevicesDeterministic(t *testing.T) {
	in := make([]byte, 20000)
	x := uint32(1)
	for i := range in {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		in[i] = byte(x)
	}
	run := func() []string {
		r := newFuzzRig()
		for _, op := range decodeOps(in) {
			if err := r.apply(op); err != nil {
				t.Fatal(err)
			}
		}
		return append(r.trace, fmt.Sprintf("out=%x resets=%d reads=%d", r.out.Bytes(), r.resets, r.clock.reads))
	}
	first, second := run(), run()
	if !reflect.DeepEqual(first, second) {
		t.Fatal("two runs of the same workload differ")
	}
	if len(first) < 100 {
		t.Fatalf("workload too small to mean anything: %d trace entries", len(first))
	}
}
