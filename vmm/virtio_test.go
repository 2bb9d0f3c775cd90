package vmm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
	"github.com/ftkvm/ftkvm/devices/virtio"
)

// toyDevice is a virtio device vmm has never heard of: one queue, no
// config space. It records what the VMM hands it.
type toyDevice struct {
	id        uint32
	engine    *bounce.Engine
	tagBase   uint64
	m         *virtio.MMIO
	completed []uint64
}

func (d *toyDevice) DeviceID() uint32             { return d.id }
func (d *toyDevice) Features() uint64             { return 0 }
func (d *toyDevice) NumQueues() int               { return 1 }
func (d *toyDevice) QueueMax(int) uint16          { return 8 }
func (d *toyDevice) ReadConfig(uint64, []byte)    {}
func (d *toyDevice) WriteConfig(uint64, []byte)   {}
func (d *toyDevice) Reset()                       {}
func (d *toyDevice) Notify(int, *virtio.Queue)    {}
func (d *toyDevice) Attach(m *virtio.MMIO)        { d.m = m }
func (d *toyDevice) Complete(c bounce.Completion) { d.completed = append(d.completed, c.Tag) }
func serveNothing(bounce.Request) ([]byte, error) { return nil, nil }

func toyAttachment(id uint32, devs *[]*toyDevice) virtio.Attachment {
	return virtio.Attachment{
		Kind:     "virtio-toy",
		Identity: fmt.Sprintf("id=%d", id),
		Backend:  serveNothing,
		New: func(e *bounce.Engine, tagBase uint64) (virtio.Device, error) {
			d := &toyDevice{id: id, engine: e, tagBase: tagBase}
			*devs = append(*devs, d)
			return d, nil
		},
	}
}

// Any device behind virtio.Attachment is placed, wired and declared the
// way blk and net are: the addresses, lines and command line are ABI
// with the guest kernel and the log header, so they are pinned here.
func TestAddVirtioPlacesAnyDevice(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	var devs []*toyDevice
	for i := range VirtioIRQs {
		dev, err := v.AddVirtio(toyAttachment(uint32(40+i), &devs))
		if err != nil {
			t.Fatal(err)
		}
		if dev != devs[i] || devs[i].m == nil || devs[i].engine != v.Machine().Bounce() || devs[i].tagBase != uint64(i)<<TagShift {
			t.Fatalf("device %d: not the one built, not attached, or not on its bounce slot (tag base %#x)", i, devs[i].tagBase)
		}
	}
	if _, err := v.AddVirtio(toyAttachment(99, &devs)); err == nil || len(devs) != len(VirtioIRQs) {
		t.Error("a seventh virtio device was added")
	}
	wantBases := []uint64{0xd0020000, 0xd0021000, 0xd0022000, 0xd0023000, 0xd0024000, 0xd0025000}
	wantIRQs := []int{10, 11, 9, 6, 3, 15}
	var args []string
	for i, base := range wantBases {
		var b [4]byte
		readMMIO(t, v, base+virtio.RegDeviceID, b[:])
		if id := binary.LittleEndian.Uint32(b[:]); id != uint32(40+i) {
			t.Errorf("device %d at %#x: ID %d", i, base, id)
		}
		args = append(args, fmt.Sprintf("virtio_mmio.device=0x200@%#x:%d", base, wantIRQs[i]))
		if got := v.ExtraDevices()[i]; got != fmt.Sprintf("virtio-toy@%#x id=%d", base, 40+i) {
			t.Errorf("ExtraDevices[%d] = %q", i, got)
		}
	}
	if !slices.Equal(v.virtioArgs, args) {
		t.Errorf("command line options %q, want %q", v.virtioArgs, args)
	}

	// A completion reaches the device of its tag's slot, and only it.
	v.Machine().DeliverAsync(Async{DMA: []bounce.Completion{{Tag: 2<<TagShift | 5}}})
	for i, d := range devs {
		if want := []uint64(nil); i == 2 {
			want = []uint64{2<<TagShift | 5}
			if !slices.Equal(d.completed, want) {
				t.Errorf("device 2 got completions %#x", d.completed)
			}
		} else if len(d.completed) != 0 {
			t.Errorf("device %d got completions %#x", i, d.completed)
		}
	}

	// Each transport drives its own PIC line.
	for i, d := range devs {
		d.m.ConfigChanged() // raises the configuration change interrupt
		if lines := picLines(v); lines != 1<<wantIRQs[i] {
			t.Errorf("device %d raised lines %#x, want %d", i, lines, wantIRQs[i])
		}
		d.m.Write(virtio.RegInterruptACK, []byte{virtio.InterruptConfigChange, 0, 0, 0})
		if lines := picLines(v); lines != 0 {
			t.Errorf("device %d: lines %#x after the acknowledgement", i, lines)
		}
	}
	if (machine{v}).ReplayWrites(bounce.Request{Tag: 1<<TagShift | 1, Write: true}) {
		t.Error("a device without ReplayWrites has its writes replayed")
	}
}

// picLines returns the level of the PIC inputs but the cascade (line 2,
// which follows the slave).
func picLines(v *VM) uint16 {
	s := v.PIC.Save()
	return (uint16(s.Master.Lines) | uint16(s.Slave.Lines)<<8) &^ (1 << 2)
}

func TestAddVirtioRefusesBrokenAttachments(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	var devs []*toyDevice
	noNew := toyAttachment(1, &devs)
	noNew.New = nil
	failing := toyAttachment(1, &devs)
	failing.New = func(*bounce.Engine, uint64) (virtio.Device, error) { return nil, errors.New("no such disk") }
	noQueues := toyAttachment(1, &devs)
	noQueues.New = func(*bounce.Engine, uint64) (virtio.Device, error) { return zeroQueues{&toyDevice{}}, nil }
	for name, a := range map[string]virtio.Attachment{"no New": noNew, "New fails": failing, "no queues": noQueues} {
		if _, err := v.AddVirtio(a); err == nil {
			t.Errorf("%s: added", name)
		}
	}
	if len(v.virtio) != 0 || len(v.virtioArgs) != 0 {
		t.Error("a refused device was mapped or declared")
	}
	// The next good device still goes first in the window.
	if _, err := v.AddVirtio(toyAttachment(7, &devs)); err != nil {
		t.Fatal(err)
	}
	if v.virtioArgs[0] != "virtio_mmio.device=0x200@0xd0020000:10" {
		t.Errorf("after refusals: %q", v.virtioArgs)
	}

	// A window already taken on the bus.
	v2, _, _ := kvmlessVM(t)
	if err := v2.MMIO.Register("squatter", VirtioBase, VirtioStride, devs[0].m); err != nil {
		t.Fatal(err)
	}
	if _, err := v2.AddVirtio(toyAttachment(8, &devs)); err == nil || len(v2.virtioArgs) != 0 {
		t.Error("a device was added over another")
	}
}

type zeroQueues struct{ *toyDevice }

func (zeroQueues) NumQueues() int { return 0 }
