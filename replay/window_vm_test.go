package replay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

// windowGuest models, for vmm's real run loop, a guest that disables
// interrupts for stretches of its own: every fourth step clears IF, every
// fourth sets it again, and the step that sets it ends in an
// interrupt-window exit when the VMM asked for one (as KVM's would). Its
// handler acknowledges the PIC; it powers off after ticks interrupts.
// RAX counts its steps, so a window exit at another step is visible in
// the registers. With late, the window exit comes one instruction after
// the one that set IF, before the next exit (a host whose window exits
// do not land where the guest opened the window).
func windowGuest(ticks int, late bool) vmmtest.Guest {
	setup := []vmmtest.Step{
		vmmtest.Out(0x43, 0x34), vmmtest.Out(0x40, 0xA9), vmmtest.Out(0x40, 0x04), // PIT channel 0, periodic, 1 ms
	}
	taken := 0
	return func(c *vmmtest.VCPU) vmmtest.Step {
		if len(setup) > 0 {
			s := setup[0]
			setup = setup[1:]
			return s
		}
		if len(c.Entering()) > 0 {
			taken++
			c.Registers.RFLAGS &^= vmm.RFlagsIF
			c.Registers.R8 = c.Registers.R8*31 + c.Registers.RAX
			return vmmtest.Out(0x20, 0x20) // EOI
		}
		if taken >= ticks {
			return vmmtest.Out(vmm.ExitPort, 0)
		}
		c.Registers.RAX++
		c.Registers.RIP = c.Registers.RAX % 4
		switch c.Registers.RAX % 4 {
		case 1:
			c.Registers.RFLAGS &^= vmm.RFlagsIF
		case 3:
			c.Registers.RFLAGS |= vmm.RFlagsIF
			if c.Window() && late {
				c.Registers.RAX++ // one more instruction, no exit
			}
			if c.Window() {
				return vmmtest.Window()
			}
		}
		time.Sleep(20 * time.Microsecond) // guest work between exits
		return vmmtest.Out(0x80, byte(c.Registers.RAX))
	}
}

// TestWindowCountsOnTheRunLoop records windowGuest on vmm's real loop
// with WindowCounts and replays it: the replayer must ask for exactly the
// windows the log has (and the loop inject there), end in the recorded
// state, and take no landmark at a window.
func TestWindowCountsOnTheRunLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := &MemLog{}
	rec, err := NewRecorder(RecorderConfig{Sink: log, WindowCounts: true, KickAfter: time.Hour, FingerprintEvery: 5})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: rec}}, windowGuest(6, false))
	res, err := vm.Run(ctx)
	if err != nil || res.Reason != vmm.StopExitPort {
		t.Fatalf("recording: %+v, %v", res, err)
	}
	st := rec.Stats()
	checkDeliveryCounts(t, st)
	if st.DeliveriesAtWindows == 0 || st.LandmarksAtWindows != 0 {
		t.Fatalf("recorded %d deliveries at windows by count and %d landmarks at windows: want some and none", st.DeliveriesAtWindows, st.LandmarksAtWindows)
	}
	want, _ := vm.Fingerprint()

	rp, err := NewReplayer(ReplayerConfig{Source: &MemLog{Events: log.Events}})
	if err != nil {
		t.Fatal(err)
	}
	rvm, cpu := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: rp}}, windowGuest(6, false))
	rres, err := rvm.Run(ctx)
	if err != nil || rres != (vmm.Result{Reason: res.Reason, Status: res.Status, Stats: rres.Stats, Duration: rres.Duration}) {
		t.Fatalf("replay: %+v, %v", rres, err)
	}
	if got, _ := rvm.Fingerprint(); got != want {
		t.Fatal("the replay ended in another state")
	}
	if rp.Stats().Windows != st.DeliveriesAtWindows || rres.Stats.Windows != st.DeliveriesAtWindows {
		t.Errorf("replayed %d window deliveries over %d window exits; recorded %d", rp.Stats().Windows, rres.Stats.Windows, st.DeliveriesAtWindows)
	}
	asked := 0
	for _, c := range cpu.Calls() {
		if c == "window on" {
			asked++
		}
	}
	if asked != int(st.DeliveriesAtWindows) {
		t.Errorf("the replay asked for %d windows, the log has %d: %s", asked, st.DeliveriesAtWindows, strings.Join(cpu.Calls(), ", "))
	}
	t.Logf("%d deliveries: %d at exits, %d at windows by count, %d landmarks at kicks; %d injections", st.Delivers, st.DeliveriesAtExits, st.DeliveriesAtWindows, st.LandmarksAtKicks, st.Injects)
}

// TestWindowCountsCatchALateWindow replays a recording with window
// deliveries on a guest whose window exits land one step late: the
// replay must stop with a divergence at the first window exit, not end
// in another state.
func TestWindowCountsCatchALateWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := &MemLog{}
	rec, err := NewRecorder(RecorderConfig{Sink: log, WindowCounts: true, KickAfter: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: rec}}, windowGuest(3, false))
	if _, err := vm.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if rec.Stats().DeliveriesAtWindows == 0 {
		t.Fatal("no delivery at a window exit")
	}
	rp, err := NewReplayer(ReplayerConfig{Source: &MemLog{Events: log.Events}})
	if err != nil {
		t.Fatal(err)
	}
	rvm, _ := vmmtest.New(t, vmm.Config{Options: vmm.Options{Driver: rp}}, windowGuest(3, true))
	_, err = rvm.Run(ctx)
	var div *DivergenceError
	if !errors.As(err, &div) || !strings.Contains(div.Error(), "window") {
		t.Fatalf("replay with late window exits: %v, want a divergence at a window exit", err)
	}
	t.Log(div)
}
