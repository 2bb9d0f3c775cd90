package vmm

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestLiveDriverWithoutKVM runs the LiveDriver against a VM without a
// vCPU: console input and the PIT's timer reach the devices through
// Deliver, Halted waits for them, and reports ErrNoWakeup once nothing is
// left that could wake the guest.
func TestLiveDriverWithoutKVM(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	clock := v.clock.(*testClock)
	clock.now.Store(5)
	d := NewLiveDriver(strings.NewReader("hi"))
	d.SchedClock = func() int64 { return 0 }
	v.driver = d
	if err := d.Start(v); err != nil {
		t.Fatal(err)
	}
	defer d.Stop(v, Point{}, Result{}, nil)
	if !d.Windows() || d.NextEntry() != EntryRun || d.Injected(v, Point{}, 0x20) != nil || d.Read(v, Point{}, false, 0, nil) != nil {
		t.Error("LiveDriver's trivial answers")
	}
	if tsc, err := d.TSC(v, Point{}); err != nil || tsc != 5*TSCHz/1_000_000_000 {
		t.Errorf("TSC = %d, %v", tsc, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := Point{Exits: 1, Kind: Kicked}

	// Console input: delivered, then EOF leaves nothing to wait for.
	var got []byte
	for {
		if _, err := d.Deliver(v, p); err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		for v.pio(false, 0x3FD, b); b[0]&1 != 0; v.pio(false, 0x3FD, b) { // LSR data ready
			v.pio(false, 0x3F8, b)
			got = append(got, b[0])
			v.offerInput()
		}
		err := d.Halted(ctx, v, p)
		if errors.Is(err, ErrNoWakeup) {
			break
		}
		if err != nil {
			t.Fatalf("Halted: %v (input so far %q)", err, got)
		}
	}
	if string(got) != "hi" {
		t.Errorf("guest read %q, want %q", got, "hi")
	}
	if delivered, _ := d.Deliver(v, p); delivered {
		t.Error("Kicked point with nothing due is a delivery point")
	}
	if delivered, _ := d.Deliver(v, Point{Exits: 1, Kind: Window}); !delivered {
		t.Error("Window point is not a delivery point")
	}

	// The PIT's channel 0 in mode 2 with a count of 1193 (1 ms), and the
	// device clock 2 ms on: the host timer (for the driver, the time is
	// still 0) fires, Deliver hands it to the PIT, and IRQ 0 is raised.
	for _, b := range []byte{0x34, 0xA9, 0x04} {
		port := uint16(0x43)
		if b != 0x34 {
			port = 0x40
		}
		v.pio(true, port, []byte{b})
	}
	clock.now.Store(2_000_000)
	for !v.PIC.Pending() {
		if d.Pending() {
			if a := d.Poll(); !a.Timer {
				t.Fatalf("pending event is not the timer: %+v", a)
			} else {
				v.DeliverAsync(a)
			}
			continue
		}
		if _, err := d.Deliver(v, p); err != nil {
			t.Fatal(err)
		}
		if err := d.Halted(ctx, v, p); err != nil {
			t.Fatalf("Halted with the PIT armed: %v", err)
		}
	}
}
