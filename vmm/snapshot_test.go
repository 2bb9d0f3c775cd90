package vmm_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/vmm"
	"github.com/ftkvm/ftkvm/vmm/vmmtest"
)

type fixedClock struct{ t int64 }

func (c *fixedClock) Now() int64 { return c.t }

var snapEpoch = time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)

// CaptureDevices and RestoreDevices carry the vCPU and every device from
// one VM to another built alike, and RestoreDevices refuses a VM that is
// not built alike, by what differs.
func TestCaptureRestoreDevices(t *testing.T) {
	a, cpuA := vmmtest.New(t, vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch}, Options: vmm.Options{Clock: &fixedClock{1000}}}, nil)
	cpuA.Registers.RIP, cpuA.Registers.RAX = 0x100123, 42
	a.PIC.SetIRQ(3, true)
	a.Machine().DeliverAsync(vmm.Async{Input: []byte("hello")})
	cpu, ds, err := a.CaptureDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ds.Clock != 1000 || ds.Epoch != snapEpoch.UnixNano() || len(ds.UART.RX) == 0 || ds.PIC.Master.IRR == 0 {
		t.Fatalf("captured %+v", ds)
	}

	b, cpuB := vmmtest.New(t, vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch}, Options: vmm.Options{Clock: &fixedClock{1000}}}, nil)
	if err := b.RestoreDevices(cpu, ds); err != nil {
		t.Fatal(err)
	}
	if cpuB.Registers.RIP != 0x100123 || cpuB.Registers.RAX != 42 {
		t.Errorf("vCPU registers after restore: %+v", cpuB.Registers)
	}
	_, got, err := b.CaptureDevices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ds) {
		t.Fatalf("restored devices differ:\n%+v\n%+v", got, ds)
	}

	for name, c := range map[string]struct {
		cfg  vmm.Config
		edit func(*vmm.DeviceStates)
		want string
	}{
		"clock behind": {vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch}, Options: vmm.Options{Clock: &fixedClock{999}}}, nil, "before the snapshot"},
		"epoch":        {vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch.Add(time.Second)}, Options: vmm.Options{Clock: &fixedClock{1000}}}, nil, "epoch"},
		"virtio":       {vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch}, Options: vmm.Options{Clock: &fixedClock{1000}}}, func(s *vmm.DeviceStates) { s.Virtio = make([]vmm.VirtioState, 1) }, "virtio devices"},
		"bad PIC":      {vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch}, Options: vmm.Options{Clock: &fixedClock{1000}}}, func(s *vmm.DeviceStates) { s.PIC.Master.InitStep = 9 }, "PIC"},
		"stray DMA": {vmm.Config{Spec: vmm.Spec{Epoch: snapEpoch}, Options: vmm.Options{Clock: &fixedClock{1000}}}, func(s *vmm.DeviceStates) {
			s.Bounce.Ready = []bounce.Completion{{Tag: 1}}
		}, "no device"},
	} {
		vm, _ := vmmtest.New(t, c.cfg, nil)
		s := ds
		if c.edit != nil {
			c.edit(&s)
		}
		before := vm.PIC.Save()
		if err := vm.RestoreDevices(cpu, s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, c.want)
		}
		if name == "bad PIC" && vm.PIC.Save() != before {
			t.Error("a refused PIC state changed the PIC")
		}
	}

	d, _ := vmmtest.New(t, vmm.Config{}, nil)
	if _, err := d.AddDMATest(func(bounce.Request) ([]byte, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.CaptureDevices(context.Background()); err == nil || !strings.Contains(err.Error(), "DMA") {
		t.Errorf("a VM with the DMA test device: %v", err)
	}
}

func TestNewHostClockAt(t *testing.T) {
	c := vmm.NewHostClockAt(5e9)
	if now := c.Now(); now < 5e9 || now > 6e9 {
		t.Fatalf("a clock started at 5 s reads %d ns", now)
	}
}
