package vmm

import (
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// DeviceStates is the state of every device of a VM at a snapshot point:
// what CaptureDevices saves and RestoreDevices loads. Guest memory and
// the vCPU are saved beside it (package snapshot puts the three in one
// file).
type DeviceStates struct {
	PIC   devices.PICState
	PIT   devices.PITState
	UART  devices.UARTState
	CMOS  devices.CMOSState
	I8042 devices.I8042State
	// Virtio are the virtio devices, in the order added.
	Virtio []VirtioState
	// Bounce is the shared bounce engine's: the completions ready and the
	// receives to re-issue (bounce.State).
	Bounce bounce.State
	// InputBacklog is console input read from the host that COM1 has not
	// taken yet.
	InputBacklog []byte
	// Clock is the devices' clock at the snapshot, and Epoch (Unix
	// nanoseconds) the CMOS clock's time at Clock 0: a restored VM's
	// clock continues from Clock (HostClockAt) with the same Epoch, or the
	// PIT's and CMOS's saved times would lie in another timeline.
	Clock int64
	Epoch int64
}

// VirtioState is one virtio device's state: its transport's and its
// model's own (virtio.Stateful), with its name as ExtraDevices gives it.
type VirtioState struct {
	Name      string
	Transport virtio.MMIOState
	Device    []byte
}

// NewHostClockAt starts a HostClock that reads now at once: a VM
// restored from a snapshot continues the saved clock's timeline.
func NewHostClockAt(now int64) *HostClock {
	return &HostClock{start: time.Now().Add(-time.Duration(now))}
}

// Epoch is the guest's wall-clock time at Clock 0 (the CMOS clock's).
func (v *VM) Epoch() time.Time { return v.epoch() }

// CaptureDevices saves the vCPU and every device, at a synchronous exit of
// a run that ended there (a Driver's Deliver stopped it), on the vCPU
// thread. It first completes the exit's pending I/O (KVM applies an IN's
// value only at the next entry) and quiesces the bounce engine
// (bounce.Engine.Quiesce, bounded by ctx); the VM can run on afterwards.
// A VM with a device that cannot be saved (the DMA test device) is refused.
func (v *VM) CaptureDevices(ctx context.Context) (VCPUState, DeviceStates, error) {
	var ds DeviceStates
	if slices.Contains(v.extraDevices, "dma-test") {
		return VCPUState{}, ds, fmt.Errorf("snapshot: the DMA test device has no saved state")
	}
	if errno := v.complete(); errno != unix.EINTR {
		return VCPUState{}, ds, fmt.Errorf("snapshot: completing the last exit: KVM_RUN returned %v, want EINTR", errno)
	}
	cpu, err := machine{v}.CaptureVCPUState()
	if err != nil {
		return VCPUState{}, ds, fmt.Errorf("snapshot: vCPU: %w", err)
	}
	if v.bounce != nil {
		if err := v.bounce.Quiesce(ctx); err != nil {
			return VCPUState{}, ds, fmt.Errorf("snapshot: %w", err)
		}
		if ds.Bounce, err = v.bounce.Save(); err != nil {
			return VCPUState{}, ds, fmt.Errorf("snapshot: %w", err)
		}
	}
	ds.PIC, ds.PIT, ds.UART, ds.CMOS, ds.I8042 = v.PIC.Save(), v.PIT.Save(), v.UART.Save(), v.CMOS.Save(), v.I8042.Save()
	for i, m := range v.virtio {
		st, ok := v.virtioDevs[i].(virtio.Stateful)
		if !ok {
			return VCPUState{}, ds, fmt.Errorf("snapshot: virtio device %d has no saved state", i)
		}
		b, err := st.SaveState()
		if err != nil {
			return VCPUState{}, ds, fmt.Errorf("snapshot: virtio device %d: %w", i, err)
		}
		ds.Virtio = append(ds.Virtio, VirtioState{Name: v.virtioName(i), Transport: m.Save(), Device: b})
	}
	ds.InputBacklog = slices.Clone(v.inputBacklog)
	ds.Clock, ds.Epoch = v.clock.Now(), v.epoch().UnixNano()
	return cpu, ds, nil
}

// virtioName is the i-th virtio device's name in ExtraDevices.
func (v *VM) virtioName(i int) string {
	n := -1
	for _, name := range v.extraDevices {
		if name != "dma-test" {
			if n++; n == i {
				return name
			}
		}
	}
	return ""
}

// RestoreDevices loads a snapshot's vCPU and device states into a VM
// built for it and not yet run: the same configuration and devices
// added in the same order, a clock continuing the saved one
// (NewHostClockAt(ds.Clock), Config.Epoch at ds.Epoch), guest memory
// already loaded. Every state is checked by its device, and the first
// refused one is returned as an error, with that device unchanged; the VM
// is then half restored and should be closed.
func (v *VM) RestoreDevices(cpu VCPUState, ds DeviceStates) error {
	switch {
	case slices.Contains(v.extraDevices, "dma-test"):
		return fmt.Errorf("restore: the DMA test device has no saved state")
	case len(ds.Virtio) != len(v.virtio):
		return fmt.Errorf("restore: the snapshot has %d virtio devices, the VM %d", len(ds.Virtio), len(v.virtio))
	case v.clock.Now() < ds.Clock:
		return fmt.Errorf("restore: the devices' clock reads %d ns, before the snapshot's %d ns: it must continue the saved timeline", v.clock.Now(), ds.Clock)
	case v.epoch().UnixNano() != ds.Epoch:
		return fmt.Errorf("restore: the CMOS epoch is %v, the snapshot's %v", v.epoch().UTC(), time.Unix(0, ds.Epoch).UTC())
	}
	for i, s := range ds.Virtio {
		if name := v.virtioName(i); s.Name != name {
			return fmt.Errorf("restore: virtio device %d is %q in the snapshot, %q here", i, s.Name, name)
		}
	}
	for _, step := range []struct {
		what string
		err  func() error
	}{
		{"PIC", func() error { return v.PIC.Restore(ds.PIC) }},
		{"PIT", func() error { return v.PIT.Restore(ds.PIT) }},
		{"UART", func() error { return v.UART.Restore(ds.UART) }},
		{"CMOS", func() error { return v.CMOS.Restore(ds.CMOS) }},
		{"i8042", func() error { return v.I8042.Restore(ds.I8042) }},
	} {
		if err := step.err(); err != nil {
			return fmt.Errorf("restore: %s: %w", step.what, err)
		}
	}
	for i, s := range ds.Virtio {
		st, ok := v.virtioDevs[i].(virtio.Stateful)
		if !ok {
			return fmt.Errorf("restore: virtio device %d has no saved state", i)
		}
		if err := v.virtio[i].Restore(s.Transport); err != nil {
			return fmt.Errorf("restore: %s: %w", s.Name, err)
		}
		if err := st.RestoreState(s.Device); err != nil {
			return fmt.Errorf("restore: %s: %w", s.Name, err)
		}
	}
	if len(ds.Bounce.Ready)+len(ds.Bounce.Reissue) > 0 {
		if v.bounce == nil {
			return fmt.Errorf("restore: the snapshot has transfers in flight, the VM no device that makes them")
		}
		for _, t := range ds.Bounce.Reissue {
			if t.Tag>>TagShift >= uint64(len(v.bounceDevs)) {
				return fmt.Errorf("restore: transfer tag %#x belongs to no device", t.Tag)
			}
		}
		for _, c := range ds.Bounce.Ready {
			if c.Tag>>TagShift >= uint64(len(v.bounceDevs)) {
				return fmt.Errorf("restore: completion tag %#x belongs to no device", c.Tag)
			}
		}
		if err := v.bounce.Restore(ds.Bounce); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := (machine{v}).ApplyVCPUState(cpu); err != nil {
		return fmt.Errorf("restore: vCPU: %w", err)
	}
	v.inputBacklog = slices.Clone(ds.InputBacklog)
	return nil
}
