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
	if err := d.Start(v.Machine()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop(v.Machine(), Point{}, Result{}, nil)
	if !d.Windows() || d.NextEntry() != EntryRun || d.Injected(v.Machine(), Point{}, 0x20) != nil || d.Read(v.Machine(), Point{}, false, 0, nil) != nil {
		t.Error("LiveDriver's trivial answers")
	}
	if tsc, err := d.TSC(v.Machine(), Point{}); err != nil || tsc != 5*TSCHz/1_000_000_000 {
		t.Errorf("TSC = %d, %v", tsc, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := Point{Exits: 1, Kind: Kicked}

	// Console input: delivered, then EOF leaves nothing to wait for.
	var got []byte
	for {
		if _, err := d.Deliver(v.Machine(), p); err != nil {
			t.Fatal(err)
		}
		b := []byte{0}
		for v.pio(false, 0x3FD, b); b[0]&1 != 0; v.pio(false, 0x3FD, b) { // LSR data ready
			v.pio(false, 0x3F8, b)
			got = append(got, b[0])
			v.offerInput()
		}
		err := d.Halted(ctx, v.Machine(), p)
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
	if delivered, _ := d.Deliver(v.Machine(), p); delivered {
		t.Error("Kicked point with nothing due is a delivery point")
	}
	if delivered, _ := d.Deliver(v.Machine(), Point{Exits: 1, Kind: Window}); !delivered {
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
				v.Machine().DeliverAsync(a)
			}
			continue
		}
		if _, err := d.Deliver(v.Machine(), p); err != nil {
			t.Fatal(err)
		}
		if err := d.Halted(ctx, v.Machine(), p); err != nil {
			t.Fatalf("Halted with the PIT armed: %v", err)
		}
	}
}

// TestLiveDriverTimerGuard: a timer tick that falls due before the guest
// has run for half the timer's period since the previous tick is held
// (the guest would otherwise do nothing but take ticks where exits are
// slow), delivered once the guest has run that long, and never held when
// the guest halted in between.
func TestLiveDriverTimerGuard(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	clock := v.clock.(*testClock)
	d := NewLiveDriver(nil)
	d.SchedClock = func() int64 { return clock.now.Load() }
	v.driver = d
	if err := d.Start(v.Machine()); err != nil {
		t.Fatal(err)
	}
	defer d.Stop(v.Machine(), Point{}, Result{}, nil)
	// Channel 0, mode 2, count 11932: a 10 ms period (the guard asks for
	// min(5 ms, maxShare) of guest time between ticks).
	for _, b := range []byte{0x34, 0x9C, 0x2E} {
		port := uint16(0x43)
		if b != 0x34 {
			port = 0x40
		}
		v.pio(true, port, []byte{b})
	}
	ms := int64(time.Millisecond)
	poll := func(at int64) bool {
		t.Helper()
		clock.now.Store(at)
		d.Arm()
		a := d.Poll()
		if a.Timer {
			v.Machine().DeliverAsync(a) // the PIT moves its deadline on
		}
		return a.Timer
	}
	if !poll(10*ms + ms/10) {
		t.Fatal("the first tick was held")
	}
	if poll(20*ms + ms/10) {
		t.Fatal("a tick was delivered before the guest ran at all since the previous one")
	}
	v.runTime += 4 * time.Millisecond
	if poll(21 * ms) {
		t.Fatal("a tick was delivered after 4 ms of guest time; the guard asks for 5")
	}
	v.runTime += time.Millisecond
	if !poll(22 * ms) {
		t.Fatal("the held tick was not delivered once the guest had its 5 ms")
	}
	// Due at once again, but the guest halted in between: not held.
	clock.now.Store(30*ms + ms/10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Halted(ctx, v.Machine(), Point{Exits: 1, Kind: AtExit}); err != nil {
		t.Fatal(err)
	}
	if !poll(30*ms + ms/10) {
		t.Fatal("a tick was held although the guest had halted since the previous one")
	}
}

// TestStallWarning: a run that goes StallAfter without a synchronous exit
// is reported once per stall, with its interrupt state.
func TestStallWarning(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	var warnings []string
	v.cfg.Warn = func(m string) { warnings = append(warnings, m) }
	t0 := time.Now()
	s := stallWatch{last: t0}
	s.kicked(v, t0.Add(StallAfter-time.Second))
	if len(warnings) != 0 {
		t.Fatalf("warned before StallAfter: %q", warnings)
	}
	s.kicked(v, t0.Add(StallAfter+time.Second))
	s.kicked(v, t0.Add(StallAfter+2*time.Second))
	if len(warnings) != 1 || !strings.Contains(warnings[0], "no exit for 31s") || !strings.Contains(warnings[0], "still at exit 5") {
		t.Fatalf("warnings = %q, want one about 31s at exit 5", warnings)
	}
	s.exited(t0.Add(40 * time.Second))
	s.kicked(v, t0.Add(40*time.Second+StallAfter+time.Second))
	if len(warnings) != 2 {
		t.Fatalf("a second stall after an exit was not reported: %q", warnings)
	}
}
